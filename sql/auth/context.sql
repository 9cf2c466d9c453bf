-- Who is calling, read from the settings PostgREST (and Potentia's HTTP layer) set per request:
-- `request.jwt.claims` and `request.headers` (JSON, lower-cased header names).

create or replace function internal.try_uuid(p text) returns uuid
language plpgsql immutable parallel safe set search_path = '' as $$
begin
  return p::uuid;
exception when invalid_text_representation then
  return null;
end $$;

create or replace function internal.try_inet(p text) returns inet
language plpgsql immutable parallel safe set search_path = '' as $$
begin
  return trim(p)::inet;
exception when invalid_text_representation then
  return null;
end $$;

create or replace function internal.try_jsonb(p text) returns jsonb
language plpgsql immutable parallel safe set search_path = '' as $$
begin
  return nullif(p, '')::jsonb;
exception when invalid_text_representation then
  return null;
end $$;

-- The request context as one jsonb: user_id, ip, user_agent, session_id, request_id, scope.
create or replace function internal.request_context() returns jsonb
language sql stable set search_path = '' as $$
  with s as (
    select coalesce(internal.try_jsonb(current_setting('request.jwt.claims', true)), '{}') as claims,
           coalesce(internal.try_jsonb(current_setting('request.headers', true)), '{}') as headers
  )
  select jsonb_build_object(
    'user_id', internal.try_uuid(claims ->> 'sub'),
    'role', coalesce(claims ->> 'role', current_user),
    'ip', coalesce(internal.try_inet(split_part(headers ->> 'x-forwarded-for', ',', 1)),
                   internal.try_inet(headers ->> 'x-real-ip'),
                   inet_client_addr()),
    'user_agent', left(headers ->> 'user-agent', 512),
    'session_id', coalesce(claims ->> 'session_id', headers ->> 'x-session-id'),
    'request_id', left(headers ->> 'x-request-id', 128),
    'scope', claims -> 'scope'
  )
  from s
$$;

-- Typed settings from app.settings.
create or replace function internal.setting_int(p_key text) returns integer
language sql stable security definer set search_path = '' as $$
  select (value #>> '{}')::integer from app.settings where key = p_key
$$;
