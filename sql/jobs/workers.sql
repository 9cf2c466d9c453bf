-- Worker liveness. Each worker pool upserts its heartbeat every few seconds (worker_id is the
-- Graphile pool id, the value graphile_worker jobs carry in locked_by). A live worker calls
-- internal.recover_stale_workers: the pools whose heartbeat went stale (a crashed or killed
-- process) lose their heartbeat row and their job locks, so another worker retries those jobs.
-- With its heartbeat it calls internal.release_orphaned_locks: its own locks on jobs it is not
-- running go too, so a live worker never sits on a job until Graphile's 4-hour lock timeout.

create or replace function internal.worker_heartbeat(p_worker_id text, p_hostname text, p_pid integer, p_tasks text[])
returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  insert into app.worker_heartbeats (worker_id, hostname, pid, tasks) values (p_worker_id, p_hostname, p_pid, p_tasks)
  on conflict (worker_id) do update set last_seen_at = now(), hostname = excluded.hostname, pid = excluded.pid,
                                        tasks = excluded.tasks
$$;

-- A clean stop: the worker's row goes away, and so does any lock it still holds. Graceful
-- shutdown releases the jobs it was running, but a job whose completion could not be recorded
-- (its connection was terminated) stays locked, and with no heartbeat row left nothing else
-- would ever unlock it.
create or replace function internal.worker_stopped(p_worker_id text) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  delete from app.worker_heartbeats where worker_id = p_worker_id;
  select graphile_worker.force_unlock_workers(array[p_worker_id]);
$$;

-- A live worker's locks on jobs it is not running: its connection was terminated while it
-- recorded a job's outcome (the job stays locked by it), or after get_job locked a job but before
-- the answer arrived (Graphile asks again; the first job stays locked). p_running: the jobs its
-- workers are running or still recording; p_locked_before: a time before which every lock it took
-- has reached it (src/worker/lock-ledger.ts), so a job about to start is never freed. Its other
-- locks from before then are released (and their job queues'), and the jobs run again (tasks are
-- idempotent). A null p_locked_before releases nothing. p_started: the jobs that started on this
-- worker and may still hold its lock (running, or their outcome could not be recorded; a recorded
-- outcome leaves no lock, so the list stays within the concurrency plus the lost outcomes, not the
-- job throughput); a released job not among them never ran here (get_job's answer was lost), so the
-- attempt get_job charged goes back, as Graphile Worker's returnJobs gives back the attempt of a
-- job it took and never started; a job that ran keeps its attempt (else one whose run kills its
-- connection would run forever). A null p_started gives none back. Returns the released job ids.
create or replace function internal.release_orphaned_locks(p_worker_id text, p_running bigint[], p_locked_before timestamptz,
                                                           p_started bigint[])
returns bigint[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ids bigint[];
  v_returned bigint[];
begin
  with released as (
    update graphile_worker._private_jobs set locked_at = null, locked_by = null,
      attempts = case when p_started is null or id = any(p_started) then attempts else greatest(0, attempts - 1) end
    where locked_by = p_worker_id and locked_at < p_locked_before and id <> all(p_running)
    returning id
  )
  select array_agg(id order by id), array_agg(id order by id) filter (where p_started is not null and id <> all(p_started))
  into v_ids, v_returned from released;
  -- get_job locks a job's queue with it, and completing or failing the job unlocks both
  update graphile_worker._private_job_queues as q set locked_at = null, locked_by = null
  where q.locked_by = p_worker_id and q.locked_at < p_locked_before
    and not exists (select 1 from graphile_worker._private_jobs j where j.job_queue_id = q.id and j.id = any(p_running));
  if v_ids is null then
    return '{}';
  end if;
  perform internal.write_audit(jsonb_build_object('role', 'system'), 'worker.release_orphaned_locks', 'success', 'worker',
                               p_worker_id, jsonb_build_object('job_ids', v_ids, 'attempts_returned', coalesce(v_returned, '{}')),
                               null, null, null, cardinality(v_ids));
  return v_ids;
end $$;

comment on function internal.release_orphaned_locks(text, bigint[], timestamptz, bigint[]) is
$$Called by a live worker with its heartbeat: unlocks the jobs (and job queues) that worker
p_worker_id locked before p_locked_before and is not running (p_running), so they run again;
gives back the attempt of those that never started there (not in p_started; none when null);
audits and returns their ids. Null p_locked_before: nothing.$$;

-- The form the previous release's workers call (a rolling upgrade): gives no attempt back.
create or replace function internal.release_orphaned_locks(p_worker_id text, p_running bigint[], p_locked_before timestamptz)
returns bigint[]
language sql security definer set search_path = pg_catalog, pg_temp as $$
  select internal.release_orphaned_locks(p_worker_id, p_running, p_locked_before, null)
$$;

comment on function internal.release_orphaned_locks(text, bigint[], timestamptz) is
$$The previous release's form of release_orphaned_locks(text, bigint[], timestamptz, bigint[]), with no
p_started: unlocks the same jobs and gives no attempt back.$$;

-- A job its task refuses for good (a payload the database never enqueues, src/worker/tasks.ts):
-- no attempts left, so the failure Graphile records next is final and no worker takes it again.
-- Only while p_worker_id holds it. Returns whether it did.
create or replace function internal.give_up_job(p_job_id bigint, p_worker_id text) returns boolean
language sql security definer set search_path = pg_catalog, pg_temp as $$
  with given_up as (
    update graphile_worker._private_jobs set max_attempts = attempts
    where id = p_job_id and locked_by = p_worker_id returning 1
  )
  select exists (select 1 from given_up)
$$;

-- Unlocks the jobs (and job queues) of every worker not seen for p_stale; returns their ids.
-- Safe when several live workers race: the delete decides which of them unlocks.
-- So are the locks, older than p_stale, of workers that have no heartbeat row at all: a database
-- restored from a dump taken without app.worker_heartbeats' rows (docs/self-hosting.md, "Backup
-- and restore") holds the jobs that were running when it was dumped locked by workers nothing
-- knows, which only Graphile's 4-hour lock timeout freed. A live worker's row is written within
-- WORKER_HEARTBEAT_MS of its start, so none of its locks is that old without one.
create or replace function internal.recover_stale_workers(p_stale interval default '30 seconds') returns text[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ids text[];
begin
  with stale as (
    delete from app.worker_heartbeats where last_seen_at < now() - p_stale returning worker_id
  ), unknown as (
    select j.locked_by as worker_id from graphile_worker._private_jobs j
    where j.locked_by is not null and j.locked_at < now() - p_stale
      and not exists (select from app.worker_heartbeats h where h.worker_id = j.locked_by)
    union
    select q.locked_by from graphile_worker._private_job_queues q
    where q.locked_by is not null and q.locked_at < now() - p_stale
      and not exists (select from app.worker_heartbeats h where h.worker_id = q.locked_by)
  )
  select array_agg(worker_id order by worker_id) into v_ids from (select worker_id from stale union select worker_id from unknown) w;
  if v_ids is null then
    return '{}';
  end if;
  perform graphile_worker.force_unlock_workers(v_ids);
  perform internal.write_audit(jsonb_build_object('role', 'system'), 'worker.recover', 'success', 'worker',
                               array_to_string(v_ids, ','), jsonb_build_object('worker_ids', v_ids), null, null, null,
                               cardinality(v_ids));
  return v_ids;
end $$;

-- Queue depth by task (runnable now, scheduled later, locked by a worker, permanently failed, or
-- of a task no live worker runs: 'unknown', which Graphile Worker never fetches; internal.cleanup
-- deletes those after failed_job_retention_days), for the metrics gauge; and the embedding outbox
-- depth. The tasks known are those of every heartbeat row; with none, no job counts as unknown.
create or replace function internal.job_queue_depth() returns table (task text, state text, jobs bigint)
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  with known as (
    select array_agg(distinct k) as tasks from app.worker_heartbeats h cross join unnest(h.tasks) k
  )
  select t.identifier, s.state, count(*)
  from graphile_worker._private_jobs j
  join graphile_worker._private_tasks t on t.id = j.task_id
  cross join known,
  lateral (select case when j.locked_at is not null then 'running'
                       when j.attempts >= j.max_attempts then 'failed'
                       when t.identifier <> all(known.tasks) then 'unknown'
                       when j.run_at > now() then 'scheduled'
                       else 'ready' end as state) s
  group by 1, 2
  union all
  select 'embed_block', 'outbox', count(*) from app.embedding_outbox
$$;

revoke execute on function internal.worker_heartbeat(text, text, integer, text[]), internal.worker_stopped(text),
  internal.release_orphaned_locks(text, bigint[], timestamptz), internal.release_orphaned_locks(text, bigint[], timestamptz, bigint[]),
  internal.give_up_job(bigint, text),
  internal.recover_stale_workers(interval), internal.job_queue_depth() from public;
grant execute on function internal.worker_heartbeat(text, text, integer, text[]), internal.worker_stopped(text),
  internal.release_orphaned_locks(text, bigint[], timestamptz), internal.release_orphaned_locks(text, bigint[], timestamptz, bigint[]),
  internal.give_up_job(bigint, text),
  internal.recover_stale_workers(interval), internal.job_queue_depth() to service_role;
