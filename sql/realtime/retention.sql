-- realtime.messages on plain Postgres: its daily partitions made ahead and dropped past retention,
-- run by internal.cleanup (sql/jobs/cleanup.sql) every minute.
--
-- Every mutation writes a realtime.messages row (its delta), and sql/compat/realtime.sql makes
-- partitions only when it is applied (today and the next two days). Before, every later row landed
-- in realtime.messages_default and nothing deleted any: the table grew without bound (~86 M rows a
-- day at 1,000 mutations per second). On Supabase the table is the platform's and Supabase
-- Realtime's own server keeps it (supabase/realtime, commit 833cf36c, read for this):
--   - lib/realtime/tenants/janitor/maintenance_task.ex runs Realtime.Messages.delete_old_messages
--     and Realtime.Tenants.create_messages_partitions (lib/realtime/tenants/janitor.ex: every
--     JANITOR_SCHEDULE_TIMER_IN_MS, 4 hours; create_messages_partitions also runs when a tenant
--     connects, lib/realtime/tenants/connect.ex);
--   - create_messages_partitions (lib/realtime/tenants.ex) makes `messages_YYYY_MM_DD` for
--     yesterday through today + 3 (`CREATE TABLE IF NOT EXISTS … PARTITION OF realtime.messages
--     FOR VALUES FROM (day) TO (day + 1)`);
--   - delete_old_messages (lib/realtime/messages.ex, "Deletes messages older than 72 hours") drops
--     every `messages_YYYY_MM_DD` whose day is before the date of now - 72 hours, i.e. whose whole
--     day is at least 72 hours old; no row is deleted one by one (its table has no default
--     partition).
-- The same here: partitions up to today + 3, partitions wholly older than
-- realtime_messages_retention_days (app.settings, 3 = Supabase's 72 hours) dropped. Unlike
-- Supabase's, this table has a default partition (a row of a day with no partition must not fail
-- the mutation that wrote it), so rows that landed there are moved into a new partition of their
-- day, or deleted in batches once past the retention.
--
-- Whose schema it is: the test `npm run db:migrate` uses (src/db/migrate.ts, step 1; the same mark
-- src/db/push.ts sets): a realtime schema commented 'potentia compatibility schema' is ours. Any
-- other (Supabase's, hosted or local) is left alone: its Realtime server manages the table.
--
-- What reads the table, and how far back (the retention, at least one day, never cuts it):
--   - the gateway's bus (src/realtime/bus.ts), after a reconnect or while its stream is down, reads
--     back from its watermark minus a margin: at most the de-duplication window, ~10 minutes;
--   - broadcast replay at join (src/realtime/replay.ts) reads since any time the client asks: as
--     on Supabase, it reaches as far back as the retention keeps rows (at least 72 hours by default);
--   - untilVisible (src/realtime/access.ts) waits for rows written a moment ago.
-- H1 resume and api.get_canvas_changes_since read the operation log, not this table.
--
-- Time: inserted_at is `timestamp without time zone`, written as now() in the writer's TimeZone
-- (Supabase runs in UTC); days and the cutoff here are the cleanup session's (current_date,
-- localtimestamp), so with the server's TimeZone everywhere they agree.
--
-- Locks: every mutation writes realtime.messages, and on a database whose partitions ran out (one
-- from before this job) today's rows go to the default partition, which can hold tens of millions
-- of rows. Attaching a partition takes ACCESS EXCLUSIVE on the default partition and, to prove it
-- holds no row of the new day, scans it under that lock unless a valid CHECK constraint already
-- proves it; with the lock held to the commit, every writer into it waited for the scans (3
-- million rows: 4.4 s, a writer held 3.4 s). So a day is made in two runs: the first adds a CHECK
-- constraint to the default partition excluding the day, NOT VALID (a brief lock, no scan; from
-- then on no row of the day can enter it); a later run moves any older row of the day out
-- (DELETE: writers go on), validates the constraint (SHARE UPDATE EXCLUSIVE: writers go on) and
-- attaches (ACCESS EXCLUSIVE, no scan), one day per run so that no scan runs while the lock of an
-- attach is held. A default partition of at most 1 MB on disk (no row at all, as while cleanup
-- runs; one that once held many rows stays larger until VACUUM truncates it) has nothing to scan
-- for long: there every day ahead is made at once, in the run that marks it. Dropping a
-- partition takes ACCESS EXCLUSIVE on realtime.messages itself: done
-- last, and not in a run that took a lock on the default partition (a writer holding the parent
-- and waiting for the default would make the two wait for each other). Every lock is waited for
-- at most lock_timeout (200 ms: a writer queued behind the wait stalls no longer) and, not had,
-- left to the next run (counted as deferred): partitions are made three days ahead, so a run that
-- cannot have a lock loses nothing. cleanup calls this last, so what is taken is held only until
-- its commit.

-- The day a name of the maintenance's own says (messages_YYYY_MM_DD, or with p_suffix: its
-- messages_YYYY_MM_DD_elsewhere marks), or null for any other name, a date that does not exist
-- (messages_2026_02_30, messages_2026_13_01: a table made by hand) included. to_date refused those
-- (date/time field value out of range), and its error failed every run of internal.cleanup, one
-- transaction, for as long as the table was there: no housekeeping at all. Such a table is left
-- alone (its owner made it; it is neither made nor dropped here).
-- PL/pgSQL, as internal.audit_partition_month: a SQL function reading FROM regexp_match is never
-- inlined, and this runs once per partition.
create or replace function internal.realtime_partition_day(p_name text, p_suffix text default '') returns date
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  m text[] := regexp_match(p_name, '^messages_([0-9]{4})_([0-9]{2})_([0-9]{2})' || p_suffix || '$');
begin
  return case when m[1]::integer >= 1 and m[2]::integer between 1 and 12 then
           case when m[3]::integer between 1 and extract(day from make_date(m[1]::integer, m[2]::integer, 1) + interval '1 month - 1 day')
             then make_date(m[1]::integer, m[2]::integer, m[3]::integer) end end;
end $$;

-- Whether a partition of realtime.messages other than the default (any name: one made by hand,
-- a week's) already takes rows of p_day. Such a day is neither marked nor made: its rows have a
-- place, and an attach of the day's own partition would overlap it (42P17), which failed every
-- cleanup run. Read from the partitions' bounds (pg_get_expr: FOR VALUES FROM (…) TO (…)).
create or replace function internal.realtime_day_covered(p_day date) returns boolean
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  v_bound text;
  m text[];
begin
  for v_bound in select pg_get_expr(c.relpartbound, c.oid) from pg_inherits i join pg_class c on c.oid = i.inhrelid
                 where i.inhparent = 'realtime.messages'::regclass loop
    m := regexp_match(v_bound, '^FOR VALUES FROM \((.*)\) TO \((.*)\)$');
    continue when m is null; -- the default partition
    if (m[1] = 'MINVALUE' or btrim(m[1], '''')::timestamp < (p_day + 1)::timestamp)
       and (m[2] = 'MAXVALUE' or btrim(m[2], '''')::timestamp > p_day::timestamp) then
      return true;
    end if;
  end loop;
  return false;
end $$;

create or replace function internal.maintain_realtime_messages(p_batch integer default 50000) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '200ms' as $$
declare
  -- Supabase: create_messages_partitions makes up to Date.add(today, 3)
  c_days_ahead constant integer := 3;
  v_cutoff timestamp;
  v_day date;
  v_part text;
  v_check text;
  v_n integer;
  v_pending integer := 0;
  v_created integer := 0;
  v_moved integer := 0;
  v_dropped integer := 0;
  v_deleted integer := 0;
  v_deferred integer := 0;
  v_small boolean;
begin
  if obj_description(to_regnamespace('realtime'), 'pg_namespace') is distinct from 'potentia compatibility schema'
     or to_regclass('realtime.messages_default') is null then
    return jsonb_build_object('realtime_messages_maintained', false, 'realtime_partitions_created', 0,
                              'realtime_partitions_dropped', 0, 'realtime_messages_moved', 0,
                              'realtime_messages_deleted', 0, 'realtime_partitions_deferred', 0,
                              'realtime_partitions_pending', 0);
  end if;
  -- at least a day: the bus reads back ~10 minutes (above), which a retention of 0 would cut
  v_cutoff := localtimestamp - make_interval(days => greatest(1, coalesce(
    internal.setting_int('realtime_messages_retention_days'), 3)));

  -- 1. rows past the retention in the default partition, p_batch a run (the next run continues).
  --    No index on inserted_at there: the scan stops at p_batch rows found, and the partition
  --    holds rows only while some day had no partition (cleanup not run for three days, or a
  --    database from before this job: docs/self-hosting.md)
  --    Its lock, too, is waited for at most lock_timeout, then left to the next run: another
  --    cleanup's attach (by hand beside the worker's) holds ACCESS EXCLUSIVE on the default
  --    partition to its commit; not caught, the lock timeout failed the whole of internal.cleanup,
  --    presence and every other retention with it, for as long as the lock was held.
  begin
    delete from realtime.messages_default where ctid = any(array(
      select ctid from realtime.messages_default where inserted_at < v_cutoff limit p_batch));
    get diagnostics v_deleted = row_count;
  exception when lock_not_available then
    v_deferred := v_deferred + 1;
  end;

  -- 2. the partitions of the next c_days_ahead days, each in two runs (see Locks above; one where
  --    the default partition is small). Those
  --    days have not begun on this session's clock, so the default partition holds of them only
  --    rows from a clock or TimeZone ahead of it: moved into the new partition, not lost. Today's
  --    partition is not made here: made by the migration and then as a day ahead, it is missing
  --    only if cleanup has not run for three days (or on a database from before this job), and
  --    then today's rows are in the default partition with writers adding more; they stay there
  --    until step 1 deletes them, and from tomorrow rows go to tomorrow's partition.
  --  a. a day with no partition and no constraint yet: the default partition refuses its rows
  for v_day in select generate_series(current_date + 1, current_date + c_days_ahead, interval '1 day')::date loop
    v_part := 'messages_' || to_char(v_day, 'YYYY_MM_DD');
    v_check := v_part || '_elsewhere';
    continue when to_regclass('realtime.' || v_part) is not null
      or exists (select from pg_constraint where conrelid = 'realtime.messages_default'::regclass and conname = v_check)
      or internal.realtime_day_covered(v_day);
    begin
      execute format('alter table realtime.messages_default add constraint %I check (not (inserted_at >= %L and inserted_at < %L)) not valid',
                     v_check, v_day::timestamp, (v_day + 1)::timestamp);
      v_pending := v_pending + 1;
    exception when lock_not_available or duplicate_object then
      v_deferred := v_deferred + 1;
      exit;
    end;
  end loop;
  --  b. in a run that took no lock on the default partition: one day whose constraint is there.
  --     Or, where the default partition is small (at most 1 MB on disk: every scan of it under the
  --     lock of step a or of an attach takes a moment; it holds no row at all while cleanup runs),
  --     every such day, in this run: a day marked in step a and not yet made is a day whose writes
  --     fail (its rows may no longer enter the default partition), should cleanup stop before a
  --     second run and stay stopped until the day begins (a worker down for three days lost only
  --     cleanup before; with the mark left, every mutation of that day failed with check_violation)
  --     Also a day already begun whose mark is still there (cleanup stopped between the two runs
  --     until after its day began): its rows are refused until its partition is made, so it is
  --     made first. Before, the days looked at began tomorrow, and such a day refused its rows,
  --     and every mutation of it, to its end.
  --     pg_relation_size takes ACCESS SHARE on the default partition: read only in a run that had
  --     step 1's lock (no ACCESS EXCLUSIVE can be held elsewhere then), and its lock timeout too
  --     defers; unread, it made an attach held beside the worker's fail the whole of cleanup again
  v_small := false;
  if v_deferred = 0 then
    begin
      v_small := pg_relation_size('realtime.messages_default') <= 1048576;
    exception when lock_not_available then
      v_deferred := v_deferred + 1;
    end;
  end if;
  if v_deferred = 0 and (v_pending = 0 or v_small) then
    for v_day in
      select d from pg_constraint c, internal.realtime_partition_day(c.conname, '_elsewhere') d
      where c.conrelid = 'realtime.messages_default'::regclass and d is not null
      union
      select generate_series(current_date + 1, current_date + c_days_ahead, interval '1 day')::date
      order by 1
    loop
      v_part := 'messages_' || to_char(v_day, 'YYYY_MM_DD');
      v_check := v_part || '_elsewhere';
      -- a day another partition takes (made by hand) keeps its mark, if any: harmless, its rows
      -- go to that partition first
      continue when to_regclass('realtime.' || v_part) is not null or internal.realtime_day_covered(v_day);
      begin
        execute format('create table realtime.%I (like realtime.messages including defaults including constraints)', v_part);
        execute format('with moved as (delete from realtime.messages_default where inserted_at >= %L and inserted_at < %L returning *)
                        insert into realtime.%I select * from moved', v_day::timestamp, (v_day + 1)::timestamp, v_part);
        get diagnostics v_n = row_count;
        execute format('alter table realtime.messages_default validate constraint %I', v_check);
        execute format('alter table realtime.messages attach partition realtime.%I for values from (%L) to (%L)',
                       v_part, v_day::timestamp, (v_day + 1)::timestamp);
        -- the partition's bound says it now
        execute format('alter table realtime.messages_default drop constraint %I', v_check);
        v_created := v_created + 1;
        v_moved := v_moved + v_n;
      exception when lock_not_available or duplicate_table or undefined_object or check_violation then
        -- undefined_object: another run (cleanup by hand beside the worker's) made the day meanwhile;
        -- check_violation: a row of the day still in the default partition (none should be: the
        -- check refuses new ones, and the older ones were moved above); the next run moves it
        v_deferred := v_deferred + 1;
      end;
      exit when v_deferred > 0 or not v_small; -- one day a run (see Locks above)
    end loop;
  end if;

  -- 3. daily partitions wholly past the retention (Supabase: day < date(now - 72 hours)), oldest
  --    first; last, and only in a run that took no lock on the default partition (see Locks)
  if v_pending = 0 and v_created = 0 and v_deferred = 0 then
    for v_part in
      select c.relname from pg_inherits i join pg_class c on c.oid = i.inhrelid,
             internal.realtime_partition_day(c.relname) d
      where i.inhparent = 'realtime.messages'::regclass and c.relnamespace = 'realtime'::regnamespace
        and d + 1 <= v_cutoff
      order by c.relname
    loop
      begin
        execute format('drop table realtime.%I', v_part);
        v_dropped := v_dropped + 1;
      exception when lock_not_available then
        v_deferred := v_deferred + 1;
        exit; -- the others wait for the same lock
      end;
    end loop;
  end if;

  return jsonb_build_object('realtime_messages_maintained', true, 'realtime_partitions_created', v_created,
                            'realtime_partitions_dropped', v_dropped, 'realtime_messages_moved', v_moved,
                            'realtime_messages_deleted', v_deleted, 'realtime_partitions_deferred', v_deferred,
                            'realtime_partitions_pending', v_pending);
end $$;

comment on function internal.maintain_realtime_messages(integer) is
  'Keeps realtime.messages of the compat realtime schema (plain Postgres) as Supabase Realtime keeps its own: daily partitions up to today + 3 (on a default partition over 1 MB each in two runs, one a run: a NOT VALID check on the default partition first, realtime_partitions_pending; then rows of the day in the default partition moved into it, the check validated and the partition attached without a scan under lock; on a smaller one in the same run), partitions wholly older than realtime_messages_retention_days (app.settings) dropped (in a run that took no lock on the default partition), older rows of the default partition deleted, p_batch a run. Does nothing on Supabase''s own realtime schema. Called by internal.cleanup; returns what it did.';

revoke execute on function internal.maintain_realtime_messages(integer) from public;
