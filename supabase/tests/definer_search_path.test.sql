-- SECURITY DEFINER functions run as their owner, so nothing the caller can create may take part
-- in them. Each pins its search path to `pg_catalog, pg_temp` (PostgreSQL's documented form,
-- "Writing SECURITY DEFINER Functions Safely"): pg_catalog first, and the session's temporary
-- schema last. An empty search path is not enough: pg_temp is then searched FIRST for relations
-- and types, so a caller allowed to create temporary objects (PUBLIC may, by default) could
-- create `pg_temp.uuid` as a domain whose CHECK calls its own function, and every `uuid` a definer
-- function names would run that function as the owner.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(5);

select is(
  (select array_agg(p.oid::regprocedure::text order by 1) from pg_proc p
   where p.prosecdef and p.pronamespace::regnamespace::text in ('api', 'internal', 'app')  -- (auth, realtime: Supabase's own on Supabase)
     and not coalesce('search_path=pg_catalog, pg_temp' = any(p.proconfig), false)),
  null, 'every SECURITY DEFINER function of Potentia pins search_path = pg_catalog, pg_temp');
select ok((select count(*) from pg_proc p where p.prosecdef and p.pronamespace in ('api'::regnamespace, 'internal'::regnamespace)) > 50,
          '(and there are such functions to check)');

-- the attack: a caller's temporary domain named like a built-in type, whose CHECK records who ran it
select tests.create_user('dsp_owner');
select tests.authenticate_as('dsp_owner');
create temp table dsp (canvas_id uuid);
grant all on dsp to public;
insert into dsp select (api.create_canvas((api.create_workspace('dsp') ->> 'workspace_id')::uuid, 'dsp') ->> 'canvas_id')::uuid;
select tests.clear_authentication();

-- created by the API role itself (PUBLIC may create temporary objects, by default)
set local role authenticated;
create function pg_temp.dsp_probe(pg_catalog.uuid) returns boolean language plpgsql as $$
begin
  perform pg_catalog.set_config('tests.dsp_ran_as', current_user::text, true);
  return true;
end $$;
create domain pg_temp.uuid as pg_catalog.uuid check (pg_temp.dsp_probe(value));
create domain pg_temp.jsonb as pg_catalog.jsonb check (pg_temp.dsp_probe(null));
reset role;
select tests.authenticate_as('dsp_owner');
select is((select api.upsert_block_atomic((select canvas_id from dsp), null, 'create', 'dsp-1', null, '{"type":"text"}') ->> 'status'),
          'success', 'a mutation with temporary types named uuid and jsonb in the caller''s session applies');
select is((select jsonb_array_length(api.list_blocks((select canvas_id from dsp)) -> 'items')), 1, 'and other RPCs answer as usual');
select tests.clear_authentication();
select is(nullif(current_setting('tests.dsp_ran_as', true), ''), null, 'and the caller''s temporary types never ran inside them');

select * from finish();
rollback;
