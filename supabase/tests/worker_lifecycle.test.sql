-- Worker lifecycle in the database: a cleanly stopped worker leaves no heartbeat and no job lock
-- behind, so a job whose completion could not be recorded is retried by the next worker.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(3);

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

select * from finish();
rollback;
