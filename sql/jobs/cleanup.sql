-- cleanup: the periodic housekeeping job (Graphile Worker crontab, every minute). One call does
-- everything and returns what it did, so it is testable and runnable by hand:
--   select internal.cleanup();
-- Retention comes from app.settings: presence_expiry_seconds, oplog_retention_days,
-- audit_retention_days, deleted_canvas_retention_days, failed_job_retention_days (also for jobs of
-- a task no worker runs), realtime_messages_retention_days. Large backlogs are removed in bounded
-- batches (p_batch rows per table per run): the next run continues.

create or replace function internal.cleanup(p_batch integer default 50000) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '5s' as $$
declare
  v_presence integer;
  v_partitions integer;
  v_ops integer;
  v_audit integer;
  v_part text;
  v_parts_dropped integer := 0;
  v_tokens integer;
  v_canvases integer;
  v_windows integer;
  v_slots integer;
  v_jobs integer;
  v_unknown integer;
  v_unknown_tasks text[];
  v_realtime jsonb;
  v_result jsonb;
begin
  -- 1. stale presence: removed, and subscribers of the canvas told (same event as H6 leave). Its
  --    sessions go with it (app.presence_sessions, on delete cascade): a row lives by its writes,
  --    never by its sessions, so sessions no gateway will leave (their gateway gone unseen: the
  --    only one, or every one at once, killed) hold a row at most this long after its last write.
  with expired as (
    delete from app.presence
    where last_active_at < now() - make_interval(secs => internal.setting_int('presence_expiry_seconds'))
    returning canvas_id, user_id
  ), sent as (
    select realtime.send(jsonb_build_object('user_id', user_id, 'reason', 'expired'), 'presence_leave',
                         'canvas:' || canvas_id, true)
    from expired
  )
  select count(*) into v_presence from sent;

  -- 2. audit partitions for this month and the next three
  v_partitions := internal.create_audit_partitions(3);

  -- 3. operation-log retention
  delete from app.block_operations where op_id in (
    select op_id from app.block_operations
    where created_at < now() - make_interval(days => internal.setting_int('oplog_retention_days'))
    limit p_batch);
  get diagnostics v_ops = row_count;
  -- deleted blocks' last versions, kept as long as the log (app.block_tombstones)
  delete from app.block_tombstones where block_id in (
    select block_id from app.block_tombstones
    where deleted_at < now() - make_interval(days => internal.setting_int('oplog_retention_days'))
    limit p_batch);

  -- 4. audit retention: monthly partitions wholly past the cutoff are dropped (cheap, no bloat);
  --    what remains (the default partition, the cutoff's month) is deleted row by row. By the
  --    month of the name; a name that is not a real month is left alone (audit_partition_month)
  for v_part in
    select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid,
           internal.audit_partition_month(c.relname) m
    where i.inhparent = 'app.system_audit'::regclass
      and m + interval '1 month' <= now() - make_interval(days => internal.setting_int('audit_retention_days'))
  loop
    execute format('drop table app.%I', v_part);
    v_parts_dropped := v_parts_dropped + 1;
  end loop;
  delete from app.system_audit a using (
    select audit_id, created_at from app.system_audit
    where created_at < now() - make_interval(days => internal.setting_int('audit_retention_days'))
    limit p_batch) old
  where a.audit_id = old.audit_id and a.created_at = old.created_at;
  get diagnostics v_audit = row_count;

  -- 5. (refresh tokens: step 9b, below, late in the run)

  -- 6. canvases soft-deleted longer than the retention (blocks, log, members, presence cascade)
  delete from app.canvases where canvas_id in (
    select canvas_id from app.canvases
    where deleted_at < now() - make_interval(days => internal.setting_int('deleted_canvas_retention_days'))
    limit 100);
  get diagnostics v_canvases = row_count;

  -- 7. rate-limit windows long closed (the longest window is one day)
  delete from app.rate_limits where window_start < now() - interval '2 days';
  get diagnostics v_windows = row_count;
  -- the mutation limit's slots (a row per hit): only the current minute's are read (and the one
  -- before, by a transaction begun in it), so ten minutes are kept
  delete from app.rate_limit_slots where window_start < now() - interval '10 minutes';
  get diagnostics v_slots = row_count;

  -- 8. jobs that will never run again, kept a while for the operator: out of attempts, given up
  --    (internal.give_up_job), or left behind by a newer job of their key (Graphile's add_job
  --    takes the key of a job that is running or failed and uses up its attempts). Graphile never
  --    deletes them: under connection losses and a steady edit stream they piled up. Unlocked only
  --    (a running one may still finish); aged by the later of their last run (a failure pushes
  --    run_at past it) and their last change (Graphile keeps updated_at only in add_job).
  delete from graphile_worker._private_jobs where id in (
    select id from graphile_worker._private_jobs
    where attempts >= max_attempts and locked_at is null
      and greatest(run_at, updated_at) < now() - make_interval(days => internal.setting_int('failed_job_retention_days'))
    limit p_batch);
  get diagnostics v_jobs = row_count;

  -- 9. jobs of a task no worker runs: a typo in graphile_worker.add_job, a task a newer release
  --    enqueued, or one a later release dropped. Graphile Worker fetches only the tasks it has, so
  --    they never run, never fail, and sat in the queue forever. The tasks known are the ones some
  --    worker's heartbeat lists (a worker of any release that runs); with no heartbeat row none
  --    counts as unknown (a cleanup by hand while no worker runs deletes nothing). Kept
  --    failed_job_retention_days after they were due or last changed, as failed jobs: time to
  --    upgrade the workers, or to fix what enqueues them (the worker warns, naming the task).
  with known as (
    select array_agg(distinct t) as tasks from app.worker_heartbeats h cross join unnest(h.tasks) t
  ), gone as (
    delete from graphile_worker._private_jobs where id in (
      select j.id from graphile_worker._private_jobs j
      join graphile_worker._private_tasks t on t.id = j.task_id cross join known k
      where t.identifier <> all(k.tasks) and j.attempts < j.max_attempts and j.locked_at is null
        and greatest(j.run_at, j.updated_at) < now() - make_interval(days => internal.setting_int('failed_job_retention_days'))
      limit p_batch)
    returning task_id
  )
  select count(*), coalesce(array_agg(distinct t.identifier order by t.identifier), '{}')
  into v_unknown, v_unknown_tasks
  from gone join graphile_worker._private_tasks t on t.id = gone.task_id;

  -- 9b. refresh tokens that can never be used again: expired, or revoked (reuse of a purged
  --     token is still refused: an unknown token is invalid). Each token's user row first, as
  --     every writer of a user's tokens takes it (internal.rotate_refresh_token,
  --     internal.auth_sign_out, a deletion of the user). Until 2026-12-07 it was step 5 and
  --     locked token rows alone, held to the end of the run: a deletion of the user (holding the
  --     user row and the rows its cascade had deleted, their canvas memberships) waited for a
  --     token row while this run's purge of a canvas (step 6) waited for a membership, a deadlock
  --     (40P01, tests/integration/refresh-token-cleanup-deadlock.test.ts); a sign-out or a
  --     reuse's revocation of a user's expired tokens could deadlock with it too, whenever the two
  --     scans met the rows in different orders (plan-dependent). Now: at most p_batch dead
  --     tokens whose user row this run can lock, FOR NO KEY UPDATE (a rotation's lock) SKIP
  --     LOCKED, then those tokens. A user whose row another transaction holds (a refresh, a
  --     sign-out, a deletion in flight) is left to the next run, so this step never waits for a
  --     user nor for a token of one; the tokens of a held user are passed over, not counted in
  --     the batch (until 2026-12-07 p_batch tokens were chosen first and their held users then
  --     skipped: a held user owning the whole batch stopped the step for every user, run after
  --     run while their row was kept busy, e.g. by a used token resent back to back, which no
  --     limit counts; tests/integration/refresh-token-cleanup-deadlock.test.ts). A user's row is
  --     locked once per token of theirs chosen, never waited for, so the order does not matter.
  --     Late in the run (before the realtime step, which must be last, and whose lock waits
  --     give up after 200 ms), so the users are held briefly: their refreshes and sign-outs wait
  --     for this run's commit; their sign-ins and every other write (FOR KEY SHARE) do not
  with chosen as (
    select t.token_hash from app.refresh_tokens t join auth.users u on u.id = t.user_id
    where t.expires_at <= now() or t.revoked_at is not null
    limit p_batch
    for no key update of u skip locked)
  delete from app.refresh_tokens where token_hash in (select token_hash from chosen);
  get diagnostics v_tokens = row_count;

  -- 10. realtime.messages on plain Postgres: daily partitions ahead, and retention
  --     (sql/realtime/retention.sql; nothing on Supabase, whose Realtime server does it). Last:
  --     the locks it may take on realtime.messages, which every mutation writes, are held until
  --     this transaction commits
  v_realtime := internal.maintain_realtime_messages(p_batch);

  v_result := jsonb_build_object('presence_expired', v_presence, 'audit_partitions_created', v_partitions,
                                 'audit_partitions_dropped', v_parts_dropped,
                                 'operations_deleted', v_ops, 'audit_deleted', v_audit,
                                 'refresh_tokens_deleted', v_tokens, 'canvases_purged', v_canvases,
                                 'rate_limit_windows_deleted', v_windows, 'rate_limit_slots_deleted', v_slots,
                                 'failed_jobs_deleted', v_jobs, 'unknown_task_jobs_deleted', v_unknown,
                                 'unknown_tasks', to_jsonb(v_unknown_tasks)) || v_realtime;
  if v_ops + v_audit + v_tokens + v_canvases + v_partitions + v_parts_dropped + v_jobs + v_unknown
     + (v_realtime ->> 'realtime_partitions_created')::int + (v_realtime ->> 'realtime_partitions_dropped')::int
     + (v_realtime ->> 'realtime_messages_deleted')::int > 0 then
    perform internal.write_audit(jsonb_build_object('role', 'system'), 'system.cleanup', 'success', null, null, v_result,
                                 null, null, null, v_ops + v_audit + v_tokens + v_canvases + v_jobs + v_unknown
                                                   + (v_realtime ->> 'realtime_messages_deleted')::int);
  end if;
  return v_result;
end $$;

revoke execute on function internal.cleanup(integer) from public;
grant execute on function internal.cleanup(integer) to service_role;
