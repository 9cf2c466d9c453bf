-- One error vocabulary for every api function. Each code has its own SQLSTATE (class PX, after
-- the HTTP status it maps to) and travels as the HINT, so SQL callers, the HTTP layer and the
-- operation log all see the same stable code. DETAIL carries JSON (e.g. the field at fault).
--   invalid_input PX400  unauthorized PX401  forbidden PX403  not_found PX404
--   conflict PX409 (and rebase_required)  payload_too_large PX413  rate_limited PX429  timeout PX504  internal PX500

create or replace function internal.raise_error(p_code text, p_message text, p_detail jsonb default '{}')
returns void language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  raise exception using
    errcode = case p_code
      when 'invalid_input' then 'PX400' when 'unauthorized' then 'PX401' when 'forbidden' then 'PX403'
      when 'not_found' then 'PX404' when 'conflict' then 'PX409' when 'rebase_required' then 'PX409' when 'payload_too_large' then 'PX413'
      when 'rate_limited' then 'PX429' when 'timeout' then 'PX504' else 'PX500' end,
    message = p_message,
    detail = coalesce(p_detail, '{}')::text,
    hint = p_code;
end $$;

-- One step of an error's field path, as every surface writes it (fieldStep of src/input-policy.ts):
-- `.key` for a plain key (letters, digits, _ $ -, not only digits: `.0` is an array's element),
-- and any other key in brackets as its JSON string, so a path reads one way: content key `a.b` is
-- `patch.text["a.b"]`, never the key `b` of `a`. An SQL function the planner inlines (one
-- expression, no SET clause): the text-edit path calls it per key.
create or replace function internal.field_step(p_key text) returns text
language sql immutable as $$
  select case when p_key ~ '^[A-Za-z0-9_$-]+$' and p_key !~ '^[0-9]+$' then '.' || p_key
              else '[' || to_jsonb(p_key)::text || ']' end
$$;

-- The error object for an exception caught in a handler: our own codes pass through; database
-- errors are mapped to the nearest stable code, as the HTTP layer maps the same SQLSTATEs raised
-- outside a handler (src/http/errors.ts apiErrorFromDatabase). A deadlock victim (40P01) or a
-- serialization failure (40001) had its work rolled back to let a concurrent transaction through
-- (a mutation beside a migration's DDL, say): nothing was done and a resend can succeed, so it is
-- unavailable with retry_after 1 (503 and Retry-After over HTTP; the client resends it with the
-- same client_op_id), not internal.
create or replace function internal.error_object(p_sqlstate text, p_message text, p_detail text, p_hint text)
returns jsonb language sql immutable set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object(
    'code', case
      when p_sqlstate like 'PX%' then p_hint
      when p_sqlstate in ('57014', '55P03') then 'timeout'
      when p_sqlstate in ('40P01', '40001') then 'unavailable'
      when p_sqlstate like '22%' or p_sqlstate like '23%' then 'invalid_input'
      else 'internal' end,
    'message', case when p_sqlstate in ('40P01', '40001')
                    then 'the database rolled the operation back to resolve a conflict with concurrent ones (' || p_message || '): resend it with the same client_op_id'
                    else p_message end
  ) || case when p_sqlstate like 'PX%' then coalesce(internal.try_jsonb(p_detail), '{}')
            when p_sqlstate in ('40P01', '40001') then '{"retry_after": 1}'
            else '{}' end
$$;

-- The per-minute mutation limit is counted in slots now (internal.take_limit_slot, sql/rpc/endpoint_limits.sql).
drop function if exists internal.hit_rate_limit(uuid, text, integer);
