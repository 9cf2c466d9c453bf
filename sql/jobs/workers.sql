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
-- idempotent). A null p_locked_before releases nothing. Returns the released job ids.
create or replace function internal.release_orphaned_locks(p_worker_id text, p_running bigint[], p_locked_before timestamptz)
returns bigint[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ids bigint[];
begin
  with released as (
    update graphile_worker._private_jobs set locked_at = null, locked_by = null
    where locked_by = p_worker_id and locked_at < p_locked_before and id <> all(p_running)
    returning id
  )
  select array_agg(id order by id) into v_ids from released;
  -- get_job locks a job's queue with it, and completing or failing the job unlocks both
  update graphile_worker._private_job_queues as q set locked_at = null, locked_by = null
  where q.locked_by = p_worker_id and q.locked_at < p_locked_before
    and not exists (select 1 from graphile_worker._private_jobs j where j.job_queue_id = q.id and j.id = any(p_running));
  if v_ids is null then
    return '{}';
  end if;
  perform internal.write_audit(jsonb_build_object('role', 'system'), 'worker.release_orphaned_locks', 'success', 'worker',
                               p_worker_id, jsonb_build_object('job_ids', v_ids), null, null, null, cardinality(v_ids));
  return v_ids;
end $$;

comment on function internal.release_orphaned_locks(text, bigint[], timestamptz) is
$$Called by a live worker with its heartbeat: unlocks the jobs (and job queues) that worker
p_worker_id locked before p_locked_before and is not running (p_running), so they run again;
audits and returns their ids. Null p_locked_before: nothing.$$;

-- Unlocks the jobs (and job queues) of every worker not seen for p_stale; returns their ids.
-- Safe when several live workers race: the delete decides which of them unlocks.
create or replace function internal.recover_stale_workers(p_stale interval default '30 seconds') returns text[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ids text[];
begin
  with stale as (
    delete from app.worker_heartbeats where last_seen_at < now() - p_stale returning worker_id
  )
  select array_agg(worker_id) into v_ids from stale;
  if v_ids is null then
    return '{}';
  end if;
  perform graphile_worker.force_unlock_workers(v_ids);
  perform internal.write_audit(jsonb_build_object('role', 'system'), 'worker.recover', 'success', 'worker',
                               array_to_string(v_ids, ','), jsonb_build_object('worker_ids', v_ids), null, null, null,
                               cardinality(v_ids));
  return v_ids;
end $$;

-- Queue depth by task (runnable now, scheduled later, locked by a worker, permanently failed),
-- for the metrics gauge; and the embedding outbox depth.
create or replace function internal.job_queue_depth() returns table (task text, state text, jobs bigint)
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select t.identifier, s.state, count(*)
  from graphile_worker._private_jobs j
  join graphile_worker._private_tasks t on t.id = j.task_id,
  lateral (select case when j.locked_at is not null then 'running'
                       when j.attempts >= j.max_attempts then 'failed'
                       when j.run_at > now() then 'scheduled'
                       else 'ready' end as state) s
  group by 1, 2
  union all
  select 'embed_block', 'outbox', count(*) from app.embedding_outbox
$$;

revoke execute on function internal.worker_heartbeat(text, text, integer, text[]), internal.worker_stopped(text),
  internal.release_orphaned_locks(text, bigint[], timestamptz), internal.recover_stale_workers(interval),
  internal.job_queue_depth() from public;
grant execute on function internal.worker_heartbeat(text, text, integer, text[]), internal.worker_stopped(text),
  internal.release_orphaned_locks(text, bigint[], timestamptz), internal.recover_stale_workers(interval),
  internal.job_queue_depth() to service_role;
