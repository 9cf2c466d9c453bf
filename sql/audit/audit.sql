-- System audit: one row per decision (accepted or rejected), with who, what, when and from where.
-- Read by no API role (see sql/auth/policies.sql): only service_role and database admins.
-- write_audit is PL/pgSQL so its insert's plan is cached per session (a SQL function called from
-- PL/pgSQL is planned again at each call). An applied block operation's row is written by
-- internal.record_applied_op itself (sql/rpc/mutate.sql), the same columns cut the same way
-- (audit.test.sql checks both): a change to the row here goes there too. Not SECURITY DEFINER and no
-- SET clause (each costs every mutation a GUC nest level and a security switch,
-- docs/performance.md): its callers are SECURITY DEFINER functions with search_path pinned to
-- pg_catalog, pg_temp and the upgrade script (src/upgrade/v1-write.ts, as the database owner), so
-- it runs with their owner's rights; it names only schema-qualified objects. No API role can
-- insert into app.system_audit, so called by one it fails.

create or replace function internal.write_audit(
  p_ctx jsonb,
  p_action text,
  p_status text,
  p_entity_type text default null,
  p_entity_id text default null,
  p_details jsonb default '{}',
  p_client_op_id text default null,
  p_server_seq bigint default null,
  p_started_at timestamptz default null,
  p_affected_rows integer default null
) returns void
language plpgsql as $$
begin
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
  values ((p_ctx ->> 'user_id')::uuid, p_action, p_entity_type, p_entity_id, coalesce(p_details, '{}'),
          p_client_op_id, p_server_seq, p_status, (p_ctx ->> 'ip')::inet, left(p_ctx ->> 'user_agent', 200),
          left(p_ctx ->> 'session_id', 200), left(p_ctx ->> 'request_id', 200),
          extract(epoch from clock_timestamp() - coalesce(p_started_at, statement_timestamp())) * 1000,
          p_affected_rows);
end $$;

-- The audit row of an attempt by a caller with no role on the canvas it aimed at (not a member,
-- no user, a missing or deleted canvas). It never reaches that canvas's operation log, which its
-- members read; here it records who (user, ip, user agent, session, request), what (action,
-- canvas, block, client_op_id) and when, with the error's code, message and field, each caller-
-- supplied text cut to 200 characters (client_op_id to 128) and never the payload: what an
-- outsider sends cannot grow anyone's storage beyond this bound.
create or replace function internal.audit_outside_attempt(
  p_ctx jsonb, p_action text, p_status text, p_canvas_id uuid, p_block_id uuid, p_client_op_id text,
  p_error jsonb, p_started_at timestamptz
) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  select internal.write_audit(
    p_ctx, left(p_action, 200), left(p_status, 40), 'block', p_block_id::text,
    jsonb_build_object('canvas_id', p_canvas_id, 'caller_role', 'none',
                       'error', jsonb_strip_nulls(jsonb_build_object('code', left(p_error ->> 'code', 200),
                                                                     'message', left(p_error ->> 'message', 200),
                                                                     'field', left(p_error ->> 'field', 200)))),
    left(p_client_op_id, 128), null, p_started_at, 0)
$$;

-- The month a partition's name of create_audit_partitions says (system_audit_YYYY_MM: its first
-- day), or null for any other name, a month that does not exist (system_audit_2026_13, _2026_00:
-- a table made by hand) included. internal.cleanup read the names with to_date, which refused
-- those ('date/time field value out of range'), failing every run, one transaction: no
-- housekeeping at all while the table was there. Such a table is left alone.
-- PL/pgSQL: a SQL function reading its match FROM regexp_match could never be inlined (the
-- foundation spec wants every plain SQL helper inlined), and this one runs once per partition.
create or replace function internal.audit_partition_month(p_name text) returns date
language plpgsql immutable strict set search_path = pg_catalog, pg_temp as $$
declare
  m text[] := regexp_match(p_name, '^system_audit_([0-9]{4})_([0-9]{2})$');
begin
  return case when m[1]::integer >= 1 and m[2]::integer between 1 and 12 then make_date(m[1]::integer, m[2]::integer, 1) end;
end $$;

-- Monthly partitions from this month for `months_ahead` more months. Rows that already landed
-- in the default partition for such a month are moved into the new partition, so nothing is lost
-- and the attach never fails.
create or replace function internal.create_audit_partitions(months_ahead integer default 3) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  m date;
  part text;
  created integer := 0;
begin
  for m in select generate_series(date_trunc('month', now())::date,
                                  (date_trunc('month', now()) + make_interval(months => months_ahead))::date,
                                  interval '1 month')::date
  loop
    part := 'system_audit_' || to_char(m, 'YYYY_MM');
    continue when to_regclass('app.' || part) is not null;
    execute format('create table app.%I (like app.system_audit including defaults including constraints)', part);
    execute format('with moved as (delete from app.system_audit_default where created_at >= %L and created_at < %L returning *)
                    insert into app.%I select * from moved', m, (m + interval '1 month')::date, part);
    execute format('alter table app.system_audit attach partition app.%I for values from (%L) to (%L)',
                   part, m, (m + interval '1 month')::date);
    created := created + 1;
  end loop;
  -- partitions do not inherit RLS from the parent: every app table has it enabled
  for part in select c.relname from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
              where i.inhparent = 'app.system_audit'::regclass and not c.relrowsecurity loop
    execute format('alter table app.%I enable row level security', part);
  end loop;
  return created;
end $$;

select internal.create_audit_partitions(3);
