-- Who is calling, read from the settings PostgREST (and Potentia's HTTP layer) set per request:
-- `request.jwt.claims` and `request.headers` (JSON, lower-cased header names).

-- The try_* casts run on every request (claims, headers): the common inputs (null, a canonical
-- uuid, a JSON object) return before the exception block, which costs a subtransaction per entry.
-- STRICT: a null (an absent claim or header) is answered null without a call at all.
-- No SET clause on them (each call of a function with one builds a GUC nest level): they are not
-- SECURITY DEFINER and name nothing outside pg_catalog.
create or replace function internal.try_uuid(p text) returns uuid
language plpgsql immutable strict parallel safe as $$
begin
  -- the canonical form (8-4-4-4-12 hex digits), told in one expression: every hex digit mapped
  -- to 0 leaves the pattern (a regular expression cost about 20 K instructions per call, and five
  -- separate tests an expression each, docs/performance.md)
  if translate(p, '0123456789abcdefABCDEF', '0000000000000000000000') = '00000000-0000-0000-0000-000000000000' then
    return p::uuid;
  end if;
  begin
    return p::uuid;
  exception when invalid_text_representation then
    return null;
  end;
end $$;
create or replace function internal.try_inet(p text) returns inet
language plpgsql immutable strict parallel safe as $$
begin
  begin
    return trim(p)::inet;
  exception when invalid_text_representation then
    return null;
  end;
end $$;

create or replace function internal.try_jsonb(p text) returns jsonb
language plpgsql immutable strict parallel safe as $$
begin
  if p = '' then
    return null;
  end if;
  begin
    return p::jsonb;
  exception when invalid_text_representation or untranslatable_character then
    -- 22P05: a \u0000 escape, which jsonb cannot hold (a JSON string with a NUL character)
    return null;
  end;
end $$;

-- The request context as one jsonb: user_id, ip, user_agent, session_id, request_id, scope.
-- Each setting is parsed once, into a variable (internal.context_of uses each several times).
-- The mutation RPC computes it once per call and passes it down.
-- No SET clause: not SECURITY DEFINER, and it names only schema-qualified objects (a SET clause
-- costs a GUC nest level at each call).
-- A setting that is not JSON reads as absent (internal.try_jsonb). That costs a subtransaction
-- per setting present, so the mutation RPC, which has a subtransaction of its own already, reads
-- them inside it and calls internal.context_of itself, and calls this only when that read failed.
create or replace function internal.request_context() returns jsonb
language plpgsql stable as $$
declare
  v_claims jsonb := internal.try_jsonb(current_setting('request.jwt.claims', true));
  v_headers jsonb := internal.try_jsonb(current_setting('request.headers', true));
begin
  -- a sub that is not a UUID is no user
  return internal.context_of(v_claims, v_headers, internal.try_uuid(v_claims ->> 'sub'));
end $$;
-- The request context (see request_context) from the claims and headers as JSON (null: none) and
-- the user id, which the caller reads from the claims' sub: request_context tolerantly
-- (internal.try_uuid), the mutation RPC with a plain cast inside the subtransaction it has anyway
-- (a sub that is not a UUID fails the cast, and the RPC then calls request_context), which spares
-- each mutation try_uuid's check of the canonical form (about 26 K instructions, docs/performance.md).
-- An SQL function the planner inlines (one expression, not SECURITY DEFINER, no SET clause): a
-- call from PL/pgSQL costs what the expression costs. Pass it variables or columns: the body reads
-- each of claims and headers several times, so an argument that is itself an expression would be
-- evaluated as often (or, if costly, keep the call from being inlined, and an SQL function not
-- inlined is planned again at every call from PL/pgSQL); p_user_id is read once.
drop function if exists internal.context_of(jsonb, jsonb);
-- The context with the client's address given (p_ip): the mutation RPC's first attempt casts the
-- addresses plainly inside the subtransaction it has anyway, where internal.try_inet's exception
-- block costs a subtransaction of its own on every request that names an address (the server
-- always sends x-forwarded-for: 14 K instructions per mutation, docs/performance.md, forty-fifth
-- session); an address that is not one fails that cast (22P02) and the RPC runs again with
-- request_context, which reads it tolerantly, as it does the settings. Inlined as the other.
create or replace function internal.context_of(p_claims jsonb, p_headers jsonb, p_user_id uuid, p_ip inet) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'user_id', p_user_id,
    'role', coalesce(p_claims ->> 'role', current_user),
    'ip', p_ip,
    'user_agent', left(p_headers ->> 'user-agent', 512),
    'session_id', coalesce(p_claims ->> 'session_id', p_headers ->> 'x-session-id'),
    'request_id', left(p_headers ->> 'x-request-id', 128),
    'scope', p_claims -> 'scope'
  )
$$;
-- The address read tolerantly: the first x-forwarded-for entry, else x-real-ip, else the
-- connection's, each that is not an address skipped (internal.try_inet).
create or replace function internal.context_of(p_claims jsonb, p_headers jsonb, p_user_id uuid) returns jsonb
language sql stable as $$
  select internal.context_of(p_claims, p_headers, p_user_id,
                             coalesce(internal.try_inet(split_part(p_headers ->> 'x-forwarded-for', ',', 1)),
                                      internal.try_inet(p_headers ->> 'x-real-ip'),
                                      inet_client_addr()))
$$;
-- Typed settings from app.settings.
create or replace function internal.setting_int(p_key text) returns integer
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  return (select (value #>> '{}')::integer from app.settings where key = p_key);
end $$;
