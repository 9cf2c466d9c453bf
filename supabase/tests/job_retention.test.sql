-- Jobs that will never run (sql/jobs/cleanup.sql, step 9; sql/jobs/workers.sql, job_queue_depth):
-- a job of a task no worker runs (a typo in add_job, a task of a newer or an older release) is
-- never fetched by Graphile Worker. The tasks known are the ones some worker's heartbeat lists
-- (app.worker_heartbeats.tasks); with no heartbeat row no task counts as unknown. internal.cleanup
-- deletes such a job failed_job_retention_days after the later of its due time and its last
-- change, and reports it; the queue-depth gauge counts it as 'unknown' meanwhile. The retention
-- here is 10 years and this file's jobs are aged past it or just short of it: no other job of the
-- database (an upgraded one holds real jobs) is that old, so the counts are this file's alone.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(14);

update app.settings set value = '3650' where key = 'failed_job_retention_days';
-- this file's workers only: the tasks known are spec_current (one worker) and spec_other_release
-- (another, of another release); spec_typo is run by none
delete from app.worker_heartbeats;

-- key: what the job is; its due time and last change, in days ago (the retention is 3650)
create temp table spec_jobs (key text, task text, due_days int, changed_days int);
insert into spec_jobs values
  ('unknown-old', 'spec_typo', 3651, 3651),              -- unknown, past the retention on both counts
  ('unknown-due-recently', 'spec_typo', 3649, 3651),     -- due (a retry pushed run_at) within the retention
  ('unknown-changed-recently', 'spec_typo', 3651, 3649), -- changed (add_job again) within the retention
  ('unknown-locked', 'spec_typo', 3651, 3651),           -- locked by a worker: it may still finish
  ('known-old', 'spec_current', 4000, 4000),             -- a task some worker runs: waits however long
  ('other-release-old', 'spec_other_release', 4000, 4000);
select graphile_worker.add_job(task, '{}', job_key := 'retention-' || key) from spec_jobs;
update graphile_worker._private_jobs j set run_at = now() - make_interval(days => s.due_days),
  updated_at = now() - make_interval(days => s.changed_days),
  locked_by = case when s.key = 'unknown-locked' then 'pool-retention' end,
  locked_at = case when s.key = 'unknown-locked' then now() end
from spec_jobs s where j.key = 'retention-' || s.key;
create temp view spec_left as
  select substr(key, 11) as key from graphile_worker._private_jobs where key like 'retention-%';

-- no heartbeat row (a cleanup by hand while no worker runs): no task is unknown
create temp table no_workers as select internal.cleanup() as res;
select is((select res -> 'unknown_task_jobs_deleted' from no_workers), '0'::jsonb,
          'with no heartbeat row no task counts as unknown: cleanup deletes none of their jobs');
select is((select count(*)::int from spec_left), 6, '... every job is still there');
select is((select jobs from internal.job_queue_depth() where task = 'spec_typo' and state = 'unknown'), null,
          '... and the queue depth counts none as unknown');

insert into app.worker_heartbeats (worker_id, hostname, pid, tasks) values
  ('pool-current', 'spec', 1, '{spec_current}'), ('pool-other-release', 'spec', 2, '{spec_other_release}');

select results_eq($$select task, state, jobs::int from internal.job_queue_depth() where task like 'spec\_%' order by 1, 2$$,
  $$values ('spec_current', 'ready', 1), ('spec_other_release', 'ready', 1),
           ('spec_typo', 'running', 1), ('spec_typo', 'unknown', 3)$$,
  'the queue depth counts a job of a task no heartbeat lists as unknown (a locked one as running)');

create temp table with_workers as select internal.cleanup() as res;
select ok((select not 'unknown-old' = any(array_agg(key)) from spec_left),
  'cleanup deletes the job of a task no heartbeat lists once due and last changed over failed_job_retention_days ago');
select ok((select 'unknown-due-recently' = any(array_agg(key)) from spec_left),
  '... not one due within the retention');
select ok((select 'unknown-changed-recently' = any(array_agg(key)) from spec_left),
  '... nor one changed within it');
select ok((select 'unknown-locked' = any(array_agg(key)) from spec_left),
  '... nor one a worker holds');
select ok((select 'known-old' = any(array_agg(key)) from spec_left),
  'a job of a task a worker runs is never deleted as unknown, however old');
select ok((select 'other-release-old' = any(array_agg(key)) from spec_left),
  '... a task is known when any heartbeat lists it (a worker of another release)');
select is((select res -> 'unknown_task_jobs_deleted' from with_workers), '1'::jsonb,
  'the result reports the jobs deleted (unknown_task_jobs_deleted)');
select is((select res -> 'unknown_tasks' from with_workers), '["spec_typo"]'::jsonb,
  '... and names their tasks (unknown_tasks)');
select is((select details -> 'unknown_task_jobs_deleted' from app.system_audit where action = 'system.cleanup'
           order by created_at desc, audit_id desc limit 1), '1'::jsonb,
  'the deletion is audited (system.cleanup)');

-- the same job of a task that went unknown, once it has failed for good, is a failed job (step 8)
update graphile_worker._private_jobs set attempts = max_attempts, locked_by = null, locked_at = null
where key = 'retention-unknown-locked';
select is((select (res -> 'failed_jobs_deleted', res -> 'unknown_task_jobs_deleted')::text from (select internal.cleanup() as res) c),
          '(1,0)', 'a job of an unknown task out of attempts is deleted as failed, not counted as unknown');

select * from finish();
rollback;
