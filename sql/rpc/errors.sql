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
-- expression, no SET clause): the text-edit path calls it per key. STABLE, as to_jsonb is: an
-- IMMUTABLE SQL function whose body is not is never inlined, and until 2026-12-05 each call was
-- parsed and planned again in every transaction (fmgr_sql), 7.7 % of a shared-text edit.
create or replace function internal.field_step(p_key text) returns text
language sql stable as $$
  select case when p_key ~ '^[A-Za-z0-9_$-]+$' and p_key !~ '^[0-9]+$' then '.' || p_key
              else '[' || to_jsonb(p_key)::text || ']' end
$$;

-- The input policy of src/input-policy.ts for a JSON argument of an api function called other
-- than through the Potentia server (PostgREST's /rpc on Supabase, SQL): what HTTP, H1 and realtime
-- refuse is refused here too, so no surface stores what another would not. A value nests at most 64
-- levels (counted from the argument), holds no object key __proto__ (JavaScript clients would take
-- it for the prototype), and no number an IEEE 754 double would change (I-JSON, RFC 7493 §2.2:
-- 1e400, 9007199254740993, 1e-400: a client's JSON.parse reads Infinity, a neighbour, 0; 1e21 and
-- 0.1 are kept). NUL and unpaired surrogates jsonb cannot hold already. Raises invalid_input on
-- p_field; returns true. The walk, for check_json_policy below.
create or replace function internal.walk_json_policy(p_value jsonb, p_field text) returns boolean
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare
  v_n numeric;
begin
  if jsonb_path_exists(p_value, 'strict $.**{64 to last} ? (@.type() == "object" || @.type() == "array")') then
    perform internal.raise_error('invalid_input', p_field || ': JSON nested deeper than 64 levels', jsonb_build_object('field', p_field));
  end if;
  if jsonb_path_exists(p_value, 'strict $.** ? (@.type() == "object" && exists(@."__proto__"))') then
    perform internal.raise_error('invalid_input', p_field || ': an object key __proto__ is not accepted (JavaScript would treat it as the '
      || 'prototype): use another name', jsonb_build_object('field', p_field));
  end if;
  for v_n in select (x #>> '{}')::numeric from jsonb_path_query(p_value, 'strict $.** ? (@.type() == "number")') x loop
    -- below the least subnormal or above the greatest double: not a double at all (the cast
    -- would fail); else the double's shortest text must be the same number
    if v_n <> 0 and (abs(v_n) < 5e-324 or abs(v_n) > 1.7976931348623157e308 or (v_n::float8)::text::numeric <> v_n) then
      perform internal.raise_error('invalid_input', format('%s: the number %s is beyond the magnitude or precision of an IEEE 754 double '
        || '(I-JSON, RFC 7493), which would not be read as sent: send it as a string', p_field, left(v_n::text, 40)),
        jsonb_build_object('field', p_field));
    end if;
  end loop;
  return true;
end $$;

-- The input policy's check of a JSON argument (internal.walk_json_policy's rules): true, or
-- invalid_input on p_field. The Potentia server sets potentia.input_policy = 'checked' for its
-- transactions (src/db/request.ts): it checked the whole request before (and names the exact
-- path), so its calls are not walked again, and cost no call either: an SQL function of one
-- expression, not SECURITY DEFINER and with no SET clause, is inlined into its caller's
-- expression, and only an unchecked value reaches the walk (with its pinned search path). Call it
-- in an assignment (`v_checked := internal.check_json_policy(…)`), not with PERFORM (a query).
do $$ begin  -- it returned void and walked in a PL/pgSQL call: its return type changes once, the drop only then
  if (select prorettype = 'void'::regtype from pg_proc where oid = to_regprocedure('internal.check_json_policy(jsonb, text)')) then
    drop function internal.check_json_policy(jsonb, text);
  end if;
end $$;
create or replace function internal.check_json_policy(p_value jsonb, p_field text) returns boolean
language sql stable as $$
  select case when p_value is null or current_setting('potentia.input_policy', true) = 'checked' then true
              else internal.walk_json_policy(p_value, p_field) end
$$;
comment on function internal.check_json_policy(jsonb, text) is
  'The input policy of src/input-policy.ts for a JSON argument (nesting at most 64, no __proto__ key, I-JSON numbers): true, or '
  'invalid_input on field p_field. Skipped (true) for a null value and in a transaction with potentia.input_policy = ''checked'' '
  '(the Potentia server''s). Inlined into its caller''s expression: call it in an assignment.';

-- Handlers and read-only refusals. A write refused as read-only (25006, read_only_sql_transaction:
-- a failover's demoted primary that the pooler still reaches, a hot standby, a provider's
-- read-only mode, default_transaction_read_only) is the session's state, not the operation's: a
-- session opened while the database was read-only keeps the setting for its life, and the driver
-- closes a connection that answered 25006 so that the pool opens a writable one
-- (patches/postgres+3.4.9.patch, src/worker/queue-pool.ts). A handler that catches `others` and
-- answers with a row (the mutation RPCs' rejections, realtime.send's warning) hid it from the
-- driver: the refusal became an answer, and the connection stayed read-only. So every handler
-- that catches `others` where a write can reach re-raises it first:
--   exception when read_only_sql_transaction then raise; when others then ...
-- (the HTTP layer answers it 503 unavailable with Retry-After, as error_object below would).
-- supabase/tests/read_only_escapes.test.sql checks each such handler, and that no function of
-- ours catches `others` without that clause but the ones it lists (no write reachable).
--
-- The error object for an exception caught in a handler: our own codes pass through; database
-- errors are mapped to the nearest stable code, as the HTTP layer maps the same SQLSTATEs raised
-- outside a handler (src/http/errors.ts apiErrorFromDatabase). A deadlock victim (40P01) or a
-- serialization failure (40001) had its work rolled back to let a concurrent transaction through
-- (a mutation beside a migration's DDL, say): nothing was done and a resend can succeed, so it is
-- unavailable with retry_after 1 (503 and Retry-After over HTTP; the client resends it with the
-- same client_op_id), not internal; so is a write refused by a read-only database (25006), which
-- the handlers re-raise before this (above), so that it reaches the driver.
-- A timeout says the HTTP layer's words, not Postgres's.
create or replace function internal.error_object(p_sqlstate text, p_message text, p_detail text, p_hint text)
returns jsonb language sql stable as $$
  select jsonb_build_object(
    'code', case
      when p_sqlstate like 'PX%' then p_hint
      when p_sqlstate in ('57014', '55P03') then 'timeout'
      when p_sqlstate in ('40P01', '40001', '25006') then 'unavailable'
      when p_sqlstate like '22%' or p_sqlstate like '23%' then 'invalid_input'
      else 'internal' end,
    'message', case when p_sqlstate in ('40P01', '40001')
                    then 'the database rolled the operation back to resolve a conflict with concurrent ones (' || p_message || '): resend it with the same client_op_id'
                    -- the words of the same timeout met outside a handler (apiErrorFromDatabase), not Postgres's
                    -- ("canceling statement due to lock timeout"): one answer for one cause, whichever layer caught it
                    when p_sqlstate in ('57014', '55P03') then 'the database did not finish in time: retry shortly'
                    -- read_only_sql_transaction: a failover's demoted primary, a standby, a provider's read-only mode; it passes
                    when p_sqlstate = '25006' then 'the database is read-only right now (a failover or maintenance): resend it with the same client_op_id'
                    else p_message end
  ) || case when p_sqlstate like 'PX%' then coalesce(internal.try_jsonb(p_detail), '{}')
            when p_sqlstate in ('40P01', '40001', '25006') then '{"retry_after": 1}'
            else '{}' end
$$;

-- The per-minute mutation limit is counted in slots now (internal.take_limit_slot, sql/rpc/endpoint_limits.sql).
drop function if exists internal.hit_rate_limit(uuid, text, integer);
