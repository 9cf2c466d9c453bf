-- Supabase-compatible `realtime` schema for plain Postgres ("Broadcast from Database").
-- Applied by `npm run db:migrate` only when the database has no `realtime` schema of its own, so
-- the same `realtime.send` calls and RLS policies on `realtime.messages` drive both Supabase
-- Realtime and Potentia's own gateway.

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

create table if not exists realtime.messages (
  id uuid not null default gen_random_uuid(),
  topic text not null,
  extension text not null,
  payload jsonb,
  event text,
  private boolean default false,
  updated_at timestamp without time zone not null default now(),
  inserted_at timestamp without time zone not null default now(),
  primary key (id, inserted_at)
) partition by range (inserted_at);

-- Rows outside every daily partition land here instead of failing the writer's transaction.
create table if not exists realtime.messages_default partition of realtime.messages default;

-- Supabase Realtime's replay index (migration CreateMessagesReplayIndex): broadcast replay at join
-- reads a topic's newest private broadcasts since a time (src/realtime/replay.ts).
create index if not exists messages_inserted_at_topic_index on realtime.messages (inserted_at desc, topic)
  where extension = 'broadcast' and private is true;

alter table realtime.messages enable row level security;
grant select on realtime.messages to authenticated;
-- A channel's authorization probe (src/realtime/authorize.ts) inserts these columns, and only
-- these; inserted_at, which picks the partition, stays its default: a row a member dated years
-- ahead sat in the default partition past every retention (and would replay for years).
revoke insert on realtime.messages from authenticated;
grant insert (topic, extension, event, payload, private) on realtime.messages to authenticated;
grant all on realtime.messages to service_role;

-- Daily partitions from `from_day` for `days` days (Supabase's realtime server does this itself).
create or replace function realtime.create_partitions(from_day date default current_date, days int default 3)
returns void language plpgsql as $$
declare d date;
begin
  for d in select generate_series(from_day, from_day + days - 1, interval '1 day')::date loop
    if to_regclass(format('realtime.messages_%s', to_char(d, 'YYYY_MM_DD'))) is null then
      execute format('create table realtime.%I partition of realtime.messages for values from (%L) to (%L)',
                     'messages_' || to_char(d, 'YYYY_MM_DD'), d, d + 1);
    end if;
  end loop;
end $$;

select realtime.create_partitions();

-- The topic of the channel being authorized (the gateway sets it, as Supabase Realtime does).
create or replace function realtime.topic() returns text
language sql stable as $$ select nullif(current_setting('realtime.topic', true), '')::text $$;

-- Same signature and behaviour as Supabase: never fails the caller's transaction, but for a
-- write refused as read-only (25006: the transaction, or the session, is read-only: a demoted
-- primary, a standby, default_transaction_read_only). That is the session's state, not the
-- message's: the caller's transaction can write nothing either, and the driver must see the
-- error to replace the session (sql/rpc/errors.sql, "Handlers and read-only refusals").
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into realtime.messages (payload, event, topic, private, extension)
  values (payload, event, topic, private, 'broadcast');
exception when read_only_sql_transaction then
  raise;
when others then
  raise warning 'realtime.send failed: %', sqlerrm;
end $$;
comment on function realtime.send(jsonb, text, text, boolean) is
  'Broadcast payload as event on topic (a realtime.messages row, delivered by the gateways after commit). Never fails the '
  'caller''s transaction (a failed insert is a warning), as on Supabase, except a write refused as read-only (SQLSTATE 25006), '
  'which is raised: the session''s state, which the driver must see to replace the session.';

grant execute on function realtime.topic() to anon, authenticated, service_role;
-- Postgres grants EXECUTE on a new function to PUBLIC: making partitions is the owner's (the
-- migration above), never a client's (sql/security/public_execute.sql does the same for api, internal)
revoke execute on function realtime.create_partitions(date, int) from public;
-- Clients never call send directly (it would bypass the insert policy); database functions do.
revoke execute on function realtime.send(jsonb, text, text, boolean) from public;
grant execute on function realtime.send(jsonb, text, text, boolean) to service_role;
