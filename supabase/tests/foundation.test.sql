-- Foundation: the extensions, schemas and compatibility layers every feature relies on.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(20);

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

select * from finish();
rollback;
