-- Worker lifecycle in the database: a cleanly stopped worker leaves no heartbeat and no job lock
-- behind, so a job whose completion could not be recorded is retried by the next worker; a live
-- worker releases its locks on jobs it is not running, and only those; both find a worker's locks
-- through the partial index on locked_by, not by reading every queued job. Locks of workers with no
-- heartbeat row at all (a restored dump) are freed once older than the stale bound.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(23);

select graphile_worker.add_job('embed_block', json_build_object('block_id', gen_random_uuid(), 'canvas_id', gen_random_uuid()),
                               job_key := 'worker-lifecycle-spec');
update graphile_worker._private_jobs set locked_by = 'pool-stopping', locked_at = now() where key = 'worker-lifecycle-spec';
insert into app.worker_heartbeats (worker_id, hostname, pid, tasks) values ('pool-stopping', 'spec', 1, '{embed_block}');

select internal.worker_stopped('pool-stopping');

select is((select count(*)::int from app.worker_heartbeats where worker_id = 'pool-stopping'), 0,
  'a worker that stopped cleanly has no heartbeat row left');
select is((select locked_by from graphile_worker.jobs where key = 'worker-lifecycle-spec'), null,
  '... and holds no job lock: a job it could not complete is free for the next worker');
select is((select locked_at from graphile_worker.jobs where key = 'worker-lifecycle-spec'), null,
  '... (its lock time is cleared too)');

-- a live worker: job a it runs, b and c it does not (outcome unrecorded), d locked after the
-- bound (its get_job may be in flight), e another worker's; each job's queue locked with it
select graphile_worker.add_job('embed_block', '{}', queue_name := 'lifecycle-' || k, job_key := 'lifecycle-' || k)
from unnest(array['a', 'b', 'c', 'd', 'e']) k;
update graphile_worker._private_jobs set locked_by = case when key = 'lifecycle-e' then 'pool-other' else 'pool-live' end,
  locked_at = case when key = 'lifecycle-d' then now() else now() - interval '1 minute' end
where key like 'lifecycle-%';
update graphile_worker._private_job_queues q set locked_by = j.locked_by, locked_at = j.locked_at
from graphile_worker._private_jobs j where j.job_queue_id = q.id and j.key like 'lifecycle-%';

select is(internal.release_orphaned_locks('pool-live', array[(select id from graphile_worker.jobs where key = 'lifecycle-a')],
                                          now() - interval '1 second'),
          (select array_agg(id order by id) from graphile_worker.jobs where key in ('lifecycle-b', 'lifecycle-c')),
  'a live worker releases its locks on jobs it is not running, locked before the bound, and returns their ids');
select results_eq($$select key, locked_by is not null from graphile_worker.jobs where key like 'lifecycle-%' order by key$$,
  $$values ('lifecycle-a', true), ('lifecycle-b', false), ('lifecycle-c', false), ('lifecycle-d', true), ('lifecycle-e', true)$$,
  '... the job it runs, the one locked after the bound and another worker''s stay locked');
select results_eq($$select queue_name, locked_by is not null from graphile_worker._private_job_queues where queue_name like 'lifecycle-%' order by 1$$,
  $$values ('lifecycle-a', true), ('lifecycle-b', false), ('lifecycle-c', false), ('lifecycle-d', true), ('lifecycle-e', true)$$,
  '... and so do their job queues');
select is((select details -> 'job_ids' from app.system_audit where action = 'worker.release_orphaned_locks' and entity_id = 'pool-live'),
          (select jsonb_agg(id order by id) from graphile_worker.jobs where key in ('lifecycle-b', 'lifecycle-c')),
  '... the release is audited');
select is(internal.release_orphaned_locks('pool-live', '{}', null), '{}'::bigint[],
  'with no bound (no heartbeat mark yet) nothing is released');
select is((select count(*)::int from graphile_worker.jobs where key like 'lifecycle-%' and locked_by is not null), 3,
  '... not even the job it no longer runs');

-- Every heartbeat of every worker releases its orphaned locks, and every stop unlocks: both look
-- jobs up by locked_by, which reads the locked jobs only through jobs_locked_by_idx
-- (supabase/migrations/20261203131600_jobs_locked_by_index.sql) instead of every queued job.
select has_index('graphile_worker', '_private_jobs', 'jobs_locked_by_idx', array['locked_by'],
  'the jobs have an index on locked_by');
select is((select pg_get_expr(indpred, indrelid) from pg_index where indexrelid = to_regclass('graphile_worker.jobs_locked_by_idx')),
  '(locked_by IS NOT NULL)', '... holding the locked jobs only');
-- 20,000 queued jobs, 3 locked by pool-busy (one it runs). ANALYZE samples up to 30,000 rows, so it
-- reads them all: the same statistics, so the same plan, at every run. The scans are counted by this
-- transaction's statistics (pg_stat_get_xact_numscans: a table's sequential scans, an index's
-- scans), read just before and after each call, with no other read of the jobs in between.
insert into graphile_worker._private_jobs (task_id, payload, key)
select (select id from graphile_worker._private_tasks where identifier = 'embed_block'), '{}', 'lifecycle-queued-' || i
from generate_series(1, 20000) i;
update graphile_worker._private_jobs set locked_by = 'pool-busy', locked_at = now() - interval '1 minute'
where key in ('lifecycle-queued-1', 'lifecycle-queued-10000', 'lifecycle-queued-20000');
analyze graphile_worker._private_jobs;
create temp table lifecycle_running as
  select array_agg(id) as ids from graphile_worker._private_jobs where key = 'lifecycle-queued-1';
create temp table lifecycle_scans (step text, seq bigint, idx bigint);
insert into lifecycle_scans select 'before release', pg_stat_get_xact_numscans('graphile_worker._private_jobs'::regclass),
  pg_stat_get_xact_numscans(to_regclass('graphile_worker.jobs_locked_by_idx'));
create temp table lifecycle_released as
  select internal.release_orphaned_locks('pool-busy', (select ids from lifecycle_running), now()) as ids;
insert into lifecycle_scans select 'after release', pg_stat_get_xact_numscans('graphile_worker._private_jobs'::regclass),
  pg_stat_get_xact_numscans(to_regclass('graphile_worker.jobs_locked_by_idx'));
select internal.worker_stopped('pool-busy');
insert into lifecycle_scans select 'after stop', pg_stat_get_xact_numscans('graphile_worker._private_jobs'::regclass),
  pg_stat_get_xact_numscans(to_regclass('graphile_worker.jobs_locked_by_idx'));

select is((select cardinality(ids) from lifecycle_released), 2,
  'among 20,000 queued jobs, a live worker releases the 2 locks it holds on jobs it is not running');
select results_eq($$select a.seq - b.seq, a.idx - b.idx > 0 from lifecycle_scans a, lifecycle_scans b
                    where a.step = 'after release' and b.step = 'before release'$$,
  $$values (0::bigint, true)$$,
  '... finding them through jobs_locked_by_idx, without a sequential scan of the jobs');
select is((select count(*)::int from graphile_worker._private_jobs where key like 'lifecycle-queued-%' and locked_by is not null), 0,
  'its stop unlocks the job it ran');
select results_eq($$select a.seq - b.seq, a.idx - b.idx > 0 from lifecycle_scans a, lifecycle_scans b
                    where a.step = 'after stop' and b.step = 'after release'$$,
  $$values (0::bigint, true)$$,
  '... through the index too (graphile_worker.force_unlock_workers)');

-- A released job that never started on the worker (get_job locked it and charged an attempt, but
-- its answer was lost) gets that attempt back; one that started there (p_started) keeps it, or a
-- job whose run kills the connection would run forever. The previous release's 3-argument form
-- gives none back. Each job was charged one attempt by get_job.
select graphile_worker.add_job('embed_block', '{}', queue_name := 'attempts-' || k, job_key := 'attempts-' || k)
from unnest(array['lost', 'started', 'old-form']) k;
update graphile_worker._private_jobs set attempts = 1,
  locked_by = case when key = 'attempts-old-form' then 'pool-old-form' else 'pool-attempts' end,
  locked_at = now() - interval '1 minute'
where key like 'attempts-%';
select is(internal.release_orphaned_locks('pool-attempts', '{}', now(),
                                          array[(select id from graphile_worker.jobs where key = 'attempts-started')]),
          (select array_agg(id order by id) from graphile_worker.jobs where key in ('attempts-lost', 'attempts-started')),
  'with p_started, the jobs a live worker is not running are released as before');
select results_eq($$select key, attempts::int from graphile_worker.jobs where key in ('attempts-lost', 'attempts-started') order by key$$,
  $$values ('attempts-lost', 0), ('attempts-started', 1)$$,
  '... a released job that never started there gets its attempt back; one in p_started keeps it');
select is((select details -> 'attempts_returned' from app.system_audit
           where action = 'worker.release_orphaned_locks' and entity_id = 'pool-attempts'),
          (select jsonb_agg(id) from graphile_worker.jobs where key = 'attempts-lost'),
  '... and the attempts given back are audited (attempts_returned)');
select is(internal.release_orphaned_locks('pool-old-form', '{}', now()),
          (select array_agg(id) from graphile_worker.jobs where key = 'attempts-old-form'),
  'the 3-argument form (the previous release''s workers) releases the same jobs');
select is((select attempts::int from graphile_worker.jobs where key = 'attempts-old-form'), 1,
  '... and gives no attempt back');

-- A database restored from a dump taken without app.worker_heartbeats' rows (docs/self-hosting.md):
-- the jobs that were running are locked by workers that have no row. Their locks older than the
-- stale bound are freed with their queues; a younger one, and a worker's with a row, are kept.
select graphile_worker.add_job('embed_block', '{}', queue_name := 'restored-' || k, job_key := 'restored-' || k)
from unnest(array['old', 'young', 'live']) k;
update graphile_worker._private_jobs set locked_by = 'pool-restored-' || substr(key, 10),
  locked_at = now() - case when key = 'restored-young' then interval '5 seconds' else interval '1 hour' end
where key like 'restored-%';
update graphile_worker._private_job_queues q set locked_by = j.locked_by, locked_at = j.locked_at
from graphile_worker._private_jobs j where j.job_queue_id = q.id and j.key like 'restored-%';
insert into app.worker_heartbeats (worker_id, hostname, pid, tasks) values ('pool-restored-live', 'spec', 1, '{embed_block}');
create temp table restored_recovered as select internal.recover_stale_workers('30 seconds') as ids;

select ok((select 'pool-restored-old' = any(ids) and not ids && array['pool-restored-young', 'pool-restored-live'] from restored_recovered),
  'recover_stale_workers frees the locks of a worker with no heartbeat row once older than the stale bound, and names it');
select results_eq($$select key, locked_by is not null from graphile_worker.jobs where key like 'restored-%' order by key$$,
  $$values ('restored-live', true), ('restored-old', false), ('restored-young', true)$$,
  '... not a lock younger than the bound, nor the lock of a worker whose heartbeat is fresh');
select results_eq($$select queue_name, locked_by is not null from graphile_worker._private_job_queues where queue_name like 'restored-%' order by 1$$,
  $$values ('restored-live', true), ('restored-old', false), ('restored-young', true)$$,
  '... and the same for their job queues');

select * from finish();
rollback;
