-- Who is calling, read from the settings PostgREST (and Potentia's HTTP layer) set per request:
-- `request.jwt.claims` and `request.headers` (JSON, lower-cased header names).

-- The try_* casts run on every request (claims, headers): the common inputs (null, a canonical
-- uuid, a JSON object) return before the exception block, which costs a subtransaction per entry.
-- No SET clause on them (each call of a function with one builds a GUC nest level): they are not
-- SECURITY DEFINER and name nothing outside pg_catalog.
create or replace function internal.try_uuid(p text) returns uuid
language plpgsql immutable parallel safe as $$
begin
  if p is null then
    return null;
  -- the canonical form (8-4-4-4-12 hex digits), told without a regular expression (a match of
  -- one cost about 20 K instructions per call, docs/performance.md)
  elsif char_length(p) = 36 and translate(p, '0123456789abcdefABCDEF', '') = '----'
        and substr(p, 9, 1) = '-' and substr(p, 14, 1) = '-' and substr(p, 19, 1) = '-' and substr(p, 24, 1) = '-' then
    return p::uuid;
  end if;
  begin
    return p::uuid;
  exception when invalid_text_representation then
    return null;
  end;
end $$;

create or replace function internal.try_inet(p text) returns inet
language plpgsql immutable parallel safe as $$
begin
  if p is null then
    return null;
  end if;
  begin
    return trim(p)::inet;
  exception when invalid_text_representation then
    return null;
  end;
end $$;

create or replace function internal.try_jsonb(p text) returns jsonb
language plpgsql immutable parallel safe as $$
begin
  if p is null or p = '' then
    return null;
  end if;
  begin
    return p::jsonb;
  exception when invalid_text_representation then
    return null;
  end;
end $$;

-- The request context as one jsonb: user_id, ip, user_agent, session_id, request_id, scope.
-- PL/pgSQL rather than SQL: each setting is parsed once, and the plan is cached per session (a
-- SQL function called from PL/pgSQL is planned again at every call). The mutation RPC computes
-- it once per call and passes it down.
-- No SET clause: not SECURITY DEFINER, and it names only schema-qualified objects (a SET clause
-- costs a GUC nest level at each call).
-- A setting that is not JSON reads as absent (internal.try_jsonb). That costs a subtransaction
-- per setting present, so the mutation RPC, which has a subtransaction of its own already, reads
-- them inside it with internal.context_of instead, and calls this only when that read failed.
create or replace function internal.request_context() returns jsonb
language plpgsql stable as $$
begin
  return internal.context_of(internal.try_jsonb(current_setting('request.jwt.claims', true)),
                             internal.try_jsonb(current_setting('request.headers', true)));
end $$;

-- The request context (see request_context) from the claims and headers as JSON (null: none).
create or replace function internal.context_of(p_claims jsonb, p_headers jsonb) returns jsonb
language plpgsql stable as $$
declare
  v_claims jsonb := coalesce(p_claims, '{}');
  v_headers jsonb := coalesce(p_headers, '{}');
begin
  return jsonb_build_object(
    'user_id', internal.try_uuid(v_claims ->> 'sub'),
    'role', coalesce(v_claims ->> 'role', current_user),
    'ip', coalesce(internal.try_inet(split_part(v_headers ->> 'x-forwarded-for', ',', 1)),
                   internal.try_inet(v_headers ->> 'x-real-ip'),
                   inet_client_addr()),
    'user_agent', left(v_headers ->> 'user-agent', 512),
    'session_id', coalesce(v_claims ->> 'session_id', v_headers ->> 'x-session-id'),
    'request_id', left(v_headers ->> 'x-request-id', 128),
    'scope', v_claims -> 'scope'
  );
end $$;

-- Typed settings from app.settings.
create or replace function internal.setting_int(p_key text) returns integer
language plpgsql stable security definer set search_path = '' as $$
begin
  return (select (value #>> '{}')::integer from app.settings where key = p_key);
end $$;
