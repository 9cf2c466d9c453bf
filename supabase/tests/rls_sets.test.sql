-- Canvas RLS filters by the caller's set of canvases (internal.readable_canvas_ids), computed once
-- per query, and that set is exactly what the per-canvas rules (internal.canvas_role,
-- internal.token_allows) allow: workspace members, canvas-only guests, never a deleted canvas, and
-- a scoped token only within its scope.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(9);

-- Fixture: workspace W (owner rs_owner, viewer rs_viewer) with canvases C1, C2 and a deleted C3;
-- rs_guest is a member of C1 only (a canvas membership, no workspace role); rs_stranger has none.
create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
do $$
declare v_ws uuid; v_c1 uuid; v_c2 uuid; v_c3 uuid;
begin
  perform tests.create_user(n) from unnest(array['rs_owner', 'rs_viewer', 'rs_guest', 'rs_stranger']) n;
  perform tests.authenticate_as('rs_owner');
  v_ws := api.create_workspace('RLS sets') ->> 'workspace_id';
  perform api.set_workspace_member(v_ws, tests.user_id('rs_viewer'), 'viewer');
  v_c1 := api.create_canvas(v_ws, 'C1') ->> 'canvas_id';
  v_c2 := api.create_canvas(v_ws, 'C2') ->> 'canvas_id';
  v_c3 := api.create_canvas(v_ws, 'C3') ->> 'canvas_id';
  perform api.upsert_block_atomic(v_c1, null, 'create', 'rs-1', null, '{"type":"text"}');
  perform api.upsert_block_atomic(v_c2, null, 'create', 'rs-2', null, '{"type":"text"}');
  perform api.delete_canvas(v_c3);
  perform tests.clear_authentication();
  insert into app.canvas_members (canvas_id, user_id, role) values (v_c1, tests.user_id('rs_guest'), 'editor');
  insert into ids values ('c1', v_c1), ('c2', v_c2), ('c3', v_c3);
end $$;

-- For one caller (and claims), the canvases of the fixture the set holds vs those the per-canvas
-- rules allow, as two sorted text arrays.
create function pg_temp.compare(p_who text, p_claims jsonb, p_in_scope boolean) returns text[] language plpgsql as $$
declare v_set text[]; v_rule text[];
begin
  perform tests.authenticate_as(p_who, p_claims);
  perform set_config('role', 'postgres', true);  -- keep the claims; API roles have no USAGE on internal
  select coalesce(array_agg(i.name order by i.name), '{}') into v_set
  from ids i where i.id in (select internal.readable_canvas_ids(p_in_scope));
  select coalesce(array_agg(i.name order by i.name), '{}') into v_rule
  from ids i where internal.canvas_role(i.id, tests.user_id(p_who)) is not null
               and (not p_in_scope or internal.token_allows(i.id, false));
  perform tests.clear_authentication();
  return array[array_to_string(v_set, ','), array_to_string(v_rule, ',')];
end $$;

select is((pg_temp.compare('rs_owner', '{}', true))[1], 'c1,c2', 'the owner''s set: both live canvases, not the deleted one');
select is((pg_temp.compare('rs_owner', '{}', true))[1], (pg_temp.compare('rs_owner', '{}', true))[2],
          'the owner''s set is what canvas_role and token_allows allow');
select is((pg_temp.compare('rs_viewer', '{}', true))[1], 'c1,c2', 'a workspace viewer reads every live canvas of the workspace');
select is((pg_temp.compare('rs_guest', '{}', false))[1], 'c1', 'a canvas-only guest reads that canvas only');
select is((pg_temp.compare('rs_stranger', '{}', false))[1], '', 'a user of nothing reads nothing');
select is((pg_temp.compare('rs_owner', jsonb_build_object('scope', 'canvas:' || (select id from ids where name = 'c2') || ':read'), true)),
          array['c2', 'c2'], 'a token scoped to C2 reads C2 only, as token_allows says');
select is((pg_temp.compare('rs_owner', jsonb_build_object('scope', 'canvas:' || (select id from ids where name = 'c2') || ':read'), false))[1],
          'c1,c2', 'without the scope test (canvas_members, presence) the role alone decides');

-- No canvas policy calls the per-row rule: each filters by the set.
select is_empty(
  $$select tablename from pg_policies where schemaname = 'app' and qual ~ 'canvas_role'$$,
  'no app policy calls canvas_role for each row');

-- The set is computed once per query: the plan of a member's filtered count holds one hashed
-- SubPlan, not a function call per row.
select tests.authenticate_as('rs_viewer');
select matches(tests.plan_of(format('select count(*) from app.block_operations where canvas_id = %L and actor_id is not null',
                                      (select id from ids where name = 'c1'))),
               'hashed SubPlan', 'a member''s read of the log tests each row against the set, built once');
select tests.clear_authentication();

select * from finish();
rollback;
