-- Graphile Worker's jobs by the worker that holds them. Every worker's heartbeat calls
-- internal.release_orphaned_locks (sql/jobs/workers.sql), and a clean stop or a stale worker's
-- recovery calls graphile_worker.force_unlock_workers: each updates the jobs "where locked_by =
-- <worker>", and graphile-worker has no index on locked_by, so each of those calls read the whole
-- jobs table (1,000,000 queued jobs: 166 MB, ~120 ms per heartbeat per worker; README.md,
-- Background jobs; scripts/job-locks-plan.sql).
-- Partial: only the locked jobs (at most the workers' concurrency) are in it, so it stays a
-- page or two however many jobs wait (an unlocked job's row has no entry). get_job's lock
-- update already writes the jobs' other indexes (is_available is in their predicates, so it is
-- never a HOT update); this adds one small index entry per locked job.
-- _private_job_queues is left as it is: it holds a row per named queue (Potentia names none), so
-- its scan reads next to nothing, and an index on locked_by would turn its lock updates from HOT
-- into index writes.
-- A future graphile-worker schema revision that rebuilds _private_jobs would drop this index:
-- the generated migration carrying it must create it again (supabase/tests/worker_lifecycle.test.sql
-- checks that it exists and that the heartbeat's release uses it).
create index if not exists jobs_locked_by_idx on graphile_worker._private_jobs (locked_by)
  where locked_by is not null;
comment on index graphile_worker.jobs_locked_by_idx is
  'Potentia (supabase/migrations/20261203131600_jobs_locked_by_index.sql): the locked jobs by worker, for internal.release_orphaned_locks and graphile_worker.force_unlock_workers, which run at every heartbeat and worker stop/recovery.';
