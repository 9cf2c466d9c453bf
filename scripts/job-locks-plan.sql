-- The plan and time of a worker heartbeat's internal.release_orphaned_locks on a large jobs table,
-- with graphile_worker.jobs_locked_by_idx and without it (README.md, Background jobs):
--   createdb jobs_plan && npm run db:migrate -- --database-url postgres://…/jobs_plan
--   psql -X -q -f scripts/job-locks-plan.sql postgres://…/jobs_plan
-- 1,000,000 queued jobs (~15 s to insert), 5 locked an hour ago by worker w1; the plans of the
-- statements inside the function go to stderr (auto_explain). One transaction, rolled back: nothing
-- stays, but it holds the jobs table locked while it runs (DROP INDEX), so use a scratch database.
\set ON_ERROR_STOP on
begin;
insert into graphile_worker._private_tasks (identifier) values ('embed_block') on conflict do nothing;
insert into graphile_worker._private_jobs (task_id, payload, run_at, key)
select (select id from graphile_worker._private_tasks where identifier = 'embed_block'), json_build_object('block_id', gen_random_uuid()),
       now() + (i % 1000) * interval '1 second', 'job-locks-plan:' || i
from generate_series(1, 1000000) i;
update graphile_worker._private_jobs set locked_by = 'w1', locked_at = now() - interval '1 hour'
where key in ('job-locks-plan:10', 'job-locks-plan:200000', 'job-locks-plan:400000', 'job-locks-plan:600000', 'job-locks-plan:800000');
analyze graphile_worker._private_jobs;
load 'auto_explain';
set auto_explain.log_min_duration = 0;
set auto_explain.log_nested_statements = on;
set auto_explain.log_analyze = on;
set auto_explain.log_buffers = on;
set client_min_messages = log;
\echo '== with jobs_locked_by_idx =='
savepoint with_index;
select internal.release_orphaned_locks('w1', '{}', now());
rollback to with_index;
\echo '== without it =='
drop index graphile_worker.jobs_locked_by_idx;
select internal.release_orphaned_locks('w1', '{}', now());
rollback;
