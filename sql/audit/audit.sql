-- System audit: one row per decision (accepted or rejected), with who, what, when and from where.

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
language sql security definer set search_path = '' as $$
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq,
                                status, ip, user_agent, session_id, request_id, response_time_ms, affected_rows)
  values ((p_ctx ->> 'user_id')::uuid, p_action, p_entity_type, p_entity_id, coalesce(p_details, '{}'),
          p_client_op_id, p_server_seq, p_status, (p_ctx ->> 'ip')::inet, p_ctx ->> 'user_agent',
          p_ctx ->> 'session_id', p_ctx ->> 'request_id',
          extract(epoch from clock_timestamp() - coalesce(p_started_at, statement_timestamp())) * 1000,
          p_affected_rows)
$$;

-- Monthly partitions from this month for `months_ahead` more months. Rows that already landed
-- in the default partition for such a month are moved into the new partition, so nothing is lost
-- and the attach never fails.
create or replace function internal.create_audit_partitions(months_ahead integer default 3) returns integer
language plpgsql security definer set search_path = '' as $$
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
