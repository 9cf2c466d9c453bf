-- Foundation: the extensions, schemas and compatibility layers every feature relies on.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(22);

select has_extension('vector', 'pgvector is installed');
select is((select extnamespace::regnamespace::text from pg_extension where extname = 'vector'), 'extensions',
          'pgvector lives in schema extensions, as on Supabase');
select has_schema(s, format('schema %s exists', s)) from unnest(array['app', 'api', 'internal', 'auth', 'realtime']) s;
select has_role(r, format('API role %s exists', r)) from unnest(array['anon', 'authenticated', 'service_role']) r;
select has_function('auth', 'uid', 'auth.uid() exists');

set local request.jwt.claims = '{"sub":"00000000-0000-4000-8000-000000000001","role":"authenticated"}';
select is(auth.uid(), '00000000-0000-4000-8000-000000000001'::uuid, 'auth.uid() reads the sub claim from request.jwt.claims');
select is(auth.role(), 'authenticated', 'auth.role() reads the role claim');

select has_table('realtime', 'messages', 'realtime.messages exists');
select has_function('realtime', 'send', array['jsonb', 'text', 'text', 'boolean'], 'realtime.send(payload, event, topic, private) exists');
select has_table('supabase_migrations', 'schema_migrations', 'migrations are recorded where the Supabase CLI reads them');
select ok(exists (select from supabase_migrations.schema_migrations where name = 'foundation'), 'the foundation migration is recorded');
select has_table('graphile_worker', '_private_jobs', 'the Graphile Worker schema is installed');

-- the API a client calls documents itself: shapes, units and errors in each function's comment
select is((select array_agg(p.oid::regprocedure::text order by 1) from pg_proc p
           where p.pronamespace = 'api'::regnamespace and coalesce(obj_description(p.oid, 'pg_proc'), '') = ''),
          null, 'every api function has a comment (comment on function)');
select ok((select count(*) from pg_proc where pronamespace = 'api'::regnamespace) >= 30, '(and there are api functions to check)');


-- A plain SQL helper (one expression, not SECURITY DEFINER) is there to be inlined
-- into its caller's expression: called, rather than inlined, it is parsed and planned again in
-- every transaction (fmgr_sql). The planner gives up on one silently: with a SET clause, or
-- IMMUTABLE around a body that is only STABLE (to_jsonb, jsonb_build_object, to_char):
-- internal.field_step did, 7.7 % of a shared-text edit, and eleven more until 2026-12-05. Each is planned here as a prepared statement with parameters (a generic plan,
-- nothing folded), and its name must not be left in the plan. Not inlined, on purpose:
-- lexorank_after and lexorank_before (STRICT around a body that is not: a NULL key must answer
-- NULL; no server path calls them).
create function pg_temp.sql_helpers_called() returns text[] language plpgsql as $$
declare
  r record;
  v_line text;
  v_plan text;
  v_called text[] := '{}';
begin
  set local plan_cache_mode = force_generic_plan;
  for r in select n.nspname, p.proname, p.oid::regprocedure::text as sig,
                  coalesce(string_agg(format_type(a.t, null), ', ' order by a.i), '') as types,
                  coalesce(string_agg('$' || a.i, ', ' order by a.i), '') as params,
                  coalesce(string_agg('null', ', '), '') as nulls
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           left join unnest(p.proargtypes::oid[]) with ordinality a(t, i) on true
           where n.nspname in ('api', 'internal', 'app') and p.prolang = (select oid from pg_language where lanname = 'sql')
             and not p.prosecdef and not p.proretset and p.prokind = 'f'
             and p.oid not in ('internal.lexorank_after(text)'::regprocedure, 'internal.lexorank_before(text)'::regprocedure)
           group by n.nspname, p.proname, p.oid loop
    execute format('prepare sql_helper_probe%s as select %I.%I(%s)', case when r.types = '' then '' else '(' || r.types || ')' end,
                   r.nspname, r.proname, r.params);
    v_plan := '';
    for v_line in execute format('explain (verbose, costs off) execute sql_helper_probe%s',
                                 case when r.nulls = '' then '' else '(' || r.nulls || ')' end) loop
      v_plan := v_plan || v_line || E'\n';
    end loop;
    deallocate sql_helper_probe;
    if v_plan like '%' || r.proname || '(%' then
      v_called := v_called || r.sig;
    end if;
  end loop;
  return v_called;
end $$;
select is(pg_temp.sql_helpers_called(), '{}', 'every plain SQL helper in api, internal and app is inlined where it is called');
select ok((select count(*) from pg_proc where prolang = (select oid from pg_language where lanname = 'sql') and not prosecdef
             and pronamespace = 'internal'::regnamespace) >= 10, '(and there are SQL helpers to check)');

select * from finish();
rollback;
