-- Test helpers shared by every pgTAP file (runs first; `supabase test db` runs files in name
-- order too). They live in schema `tests`, which only test databases have.
--   tests.create_user(name)            a user in auth.users, email <name>@test.local, confirmed
--                                      (as every user is where confirmation is off)
--   tests.user_id(name)                that user's id
--   tests.authenticate_as(name[, claims])  act as that user, the way the Potentia server's
--                                      transactions do: role and claims as PostgREST sets them, and
--                                      potentia.endpoint_limits = 'server' (the endpoint limits
--                                      are the handlers', not counted by the api functions:
--                                      sql/rpc/endpoint_limits.sql)
--   tests.authenticate_as_postgrest(name)  act as that user, the way PostgREST does (role and claims
--                                      only: each limited api function counts its endpoint)
--   tests.clear_authentication()       back to the test's own role
--   tests.plan_of(query[, verbose])    the plan EXPLAIN (COSTS OFF[, VERBOSE]) prints for query, as one text
--   tests.error_of(sql)                the error sql raises, as {state, code, <DETAIL's keys>}; null if none
begin;
create extension if not exists pgtap with schema extensions;
create schema if not exists tests;
grant usage on schema tests to anon, authenticated, service_role;

create or replace function tests.create_user(p_name text) returns uuid
language sql security definer set search_path = '' as $$
  insert into auth.users (email, email_confirmed_at) values (p_name || '@test.local', now())
  on conflict (email) do update set email = excluded.email
  returning id
$$;

create or replace function tests.user_id(p_name text) returns uuid
language sql stable security definer set search_path = '' as $$
  select id from auth.users where email = p_name || '@test.local'
$$;

create or replace function tests.authenticate_as(p_name text, p_claims jsonb default '{}') returns void
language plpgsql set search_path = '' as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
    (jsonb_build_object('sub', tests.user_id(p_name), 'role', 'authenticated', 'email', p_name || '@test.local') || p_claims)::text, true);
  perform set_config('potentia.endpoint_limits', 'server', true);
end $$;

create or replace function tests.authenticate_as_postgrest(p_name text) returns void
language plpgsql set search_path = '' as $$
begin
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims',
    jsonb_build_object('sub', tests.user_id(p_name), 'role', 'authenticated', 'email', p_name || '@test.local')::text, true);
  perform set_config('potentia.endpoint_limits', '', true);
end $$;

create or replace function tests.clear_authentication() returns void
language plpgsql set search_path = '' as $$
begin
  perform set_config('role', 'postgres', true);
  perform set_config('request.jwt.claims', '', true);
  perform set_config('potentia.endpoint_limits', '', true);
end $$;

-- The plan of a statement (`execute name(args)` of a prepared one for its generic plan), its lines
-- as one text, for matches()/unalike() on what it reads: verbose shows each function a plan still
-- calls (an inlined one is gone). The caller's search_path and role: it plans as the test would run.
create or replace function tests.plan_of(p_query text, p_verbose boolean default false) returns text
language plpgsql as $$
declare v_line text; v_plan text := '';
begin
  for v_line in execute format('explain (costs off%s) ', case when p_verbose then ', verbose' else '' end) || p_query loop
    v_plan := v_plan || v_line || E'\n';
  end loop;
  return v_plan;
end $$;

-- The error a statement raises, as one value to compare with is(): every file checking a refusal's
-- SQLSTATE, code and field (the api's errors: sql/rpc/errors.sql) reads it the same way.
create or replace function tests.error_of(p_sql text) returns jsonb
language plpgsql as $$
declare v_state text; v_hint text; v_detail text; v_fields jsonb;
begin
  execute p_sql;
  return null;
exception when others then
  get stacked diagnostics v_state = returned_sqlstate, v_hint = pg_exception_hint, v_detail = pg_exception_detail;
  begin
    v_fields := v_detail::jsonb;
  exception when others then  -- no DETAIL (''), or Postgres's own prose
    v_fields := null;
  end;
  return case when jsonb_typeof(v_fields) = 'object' then v_fields
              when v_detail <> '' then jsonb_build_object('detail', v_detail) else '{}' end
         || jsonb_build_object('state', v_state)
         || case when v_hint <> '' then jsonb_build_object('code', v_hint) else '{}' end;
end $$;
comment on function tests.error_of(text) is
  'The error p_sql raises, run as the caller (role, claims, search_path): null when it raises none; '
  'else {"state": SQLSTATE, "code": HINT (the api''s error code; absent without a hint)} with the keys of '
  'its DETAIL when that is a JSON object (field, limit, reason...; state and code win over a key of theirs), '
  'else {"detail": DETAIL} when there is one. A statement that raises leaves no writes (a subtransaction). '
  'E.g. {"state": "PX400", "code": "invalid_input", "field": "name"}; {"state": "42501"} for a denied write.';

-- A deleted user's token: user p_name is deleted, and the caller authenticated with its claims,
-- which stay valid until they expire (tokens are checked by signature and expiry alone).
create or replace function tests.authenticate_as_deleted(p_name text) returns void
language plpgsql set search_path = '' as $$
declare v_id uuid := tests.user_id(p_name);
begin
  delete from auth.users where id = v_id;
  perform set_config('role', 'authenticated', true);
  perform set_config('request.jwt.claims', jsonb_build_object('sub', v_id, 'role', 'authenticated')::text, true);
  perform set_config('potentia.endpoint_limits', 'server', true);
end $$;

grant execute on all functions in schema tests to anon, authenticated, service_role;
commit;

begin;
set search_path = extensions, public;
select plan(1);
select has_function('tests', 'authenticate_as', array['text', 'jsonb'], 'test helpers are installed');
select * from finish();
rollback;
