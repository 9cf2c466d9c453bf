-- Worker lifecycle in the database: a cleanly stopped worker leaves no heartbeat and no job lock
-- behind, so a job whose completion could not be recorded is retried by the next worker; a live
-- worker releases its locks on jobs it is not running, and only those.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(9);

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

select * from finish();
rollback;
