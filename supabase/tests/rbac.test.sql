-- RBAC: who may call which api function, what each role may see, and what nobody may touch.
-- Roles: workspace owner, admin, editor, viewer; "outsider" is a signed-in user of another
-- workspace; "nobody" is the authenticated role without claims; "anon" is the anon role.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(351);

-- ---------------------------------------------------------------------------------------------
-- Fixture: workspace A (owner, admin, editor, viewer) with canvases A1 (one block, presence),
-- A2 (for per-canvas overrides) and A3 (to be soft-deleted); workspace B of the outsider with
-- canvas B1 (one block, presence). `newbie` is a signed-in user who belongs to nothing.
-- ---------------------------------------------------------------------------------------------
create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;

do $$
declare
  v_ws_a uuid; v_ws_b uuid; v_a1 uuid; v_a2 uuid; v_a3 uuid; v_b1 uuid; v_block_a uuid; v_block_b uuid; v_file_a uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'admin', 'editor', 'viewer', 'outsider', 'newbie']) n;
  perform tests.authenticate_as('owner');
  v_ws_a := api.create_workspace('Workspace A') ->> 'workspace_id';
  perform api.set_workspace_member(v_ws_a, tests.user_id('admin'), 'admin');
  perform api.set_workspace_member(v_ws_a, tests.user_id('editor'), 'editor');
  perform api.set_workspace_member(v_ws_a, tests.user_id('viewer'), 'viewer');
  v_a1 := api.create_canvas(v_ws_a, 'Canvas A1') ->> 'canvas_id';
  v_a2 := api.create_canvas(v_ws_a, 'Canvas A2') ->> 'canvas_id';
  v_a3 := api.create_canvas(v_ws_a, 'Canvas A3') ->> 'canvas_id';
  v_block_a := api.upsert_block_atomic(v_a1, null, 'create', 'setup-a', null, '{"type":"text","content":{"text":"a"}}') ->> 'block_id';
  perform api.upsert_block_atomic(v_a3, null, 'create', 'setup-a3', null, '{"type":"text"}');
  perform api.update_presence(v_a1, '{"x":1}');
  v_file_a := api.create_file(v_a1, 'rbac.png', 'image/png', 10) #>> '{file,file_id}';
  perform tests.authenticate_as('outsider');
  v_ws_b := api.create_workspace('Workspace B') ->> 'workspace_id';
  v_b1 := api.create_canvas(v_ws_b, 'Canvas B1') ->> 'canvas_id';
  v_block_b := api.upsert_block_atomic(v_b1, null, 'create', 'setup-b', null, '{"type":"text","content":{"text":"b"}}') ->> 'block_id';
  perform api.update_presence(v_b1, '{"x":2}');
  perform tests.clear_authentication();
  insert into ids values ('ws_a', v_ws_a), ('ws_b', v_ws_b), ('a1', v_a1), ('a2', v_a2), ('a3', v_a3), ('b1', v_b1),
    ('block_a', v_block_a), ('block_b', v_block_b), ('file_a', v_file_a), ('newbie', tests.user_id('newbie')), ('owner', tests.user_id('owner'));
end $$;

-- {name} in a call becomes that fixture id
create function pg_temp.fill(p_sql text) returns text language plpgsql stable as $$
declare r record;
begin
  for r in select name, id from ids loop
    p_sql := replace(p_sql, '{' || r.name || '}', quote_literal(r.id) || '::uuid');
  end loop;
  return p_sql;
end $$;

-- Runs one call as `p_who` and rolls it back: 'ok', or the error code (PX4xx -> its name,
-- 42501 -> 'denied'). A mutation result that is not a success counts as its error code.
create function pg_temp.outcome(p_who text, p_sql text) returns text language plpgsql as $$
declare v_result text; v_state text; v_msg text;
begin
  begin
    if p_who = 'anon' then
      perform set_config('role', 'anon', true);
      perform set_config('request.jwt.claims', '{"role":"anon"}', true);
    elsif p_who = 'nobody' then
      perform set_config('role', 'authenticated', true);
      perform set_config('request.jwt.claims', '', true);
    else
      perform tests.authenticate_as(p_who);
    end if;
    execute 'select ' || pg_temp.fill(p_sql) into v_result;
    raise exception using errcode = 'PXOK0', message = coalesce(v_result, '');
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text;
  end;
  return case
    when v_state = 'PXOK0' then
      case when v_msg like '{%' and v_msg::jsonb ? 'status' and v_msg::jsonb ->> 'status' <> 'success'
           then coalesce(v_msg::jsonb #>> '{error,code}', v_msg::jsonb ->> 'status') else 'ok' end
    when v_state = '42501' then 'denied'
    when v_state = 'PX400' then 'invalid_input'
    when v_state = 'PX401' then 'unauthorized'
    when v_state = 'PX403' then 'forbidden'
    when v_state = 'PX404' then 'not_found'
    else format('error %s: %s', v_state, v_msg) end;
end $$;

-- The value of one call as `p_who` (text), rolled back like outcome().
create function pg_temp.value_as(p_who text, p_sql text) returns text language plpgsql as $$
declare v_result text; v_state text; v_msg text;
begin
  begin
    perform tests.authenticate_as(p_who);
    execute 'select ' || pg_temp.fill(p_sql) into v_result;
    raise exception using errcode = 'PXOK0', message = coalesce(v_result, '');
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text;
  end;
  return case when v_state = 'PXOK0' then v_msg else format('error %s: %s', v_state, v_msg) end;
end $$;

-- ---------------------------------------------------------------------------------------------
-- The matrix: every api function × owner/admin/editor/viewer/outsider/nobody, on canvas A1 of
-- workspace A. Reads: any member. Blocks: owner/admin/editor write, viewer forbidden.
-- update_canvas: owner/admin. delete_canvas: owner. create_canvas: owner/admin/editor.
-- set_workspace_member: owner/admin. create_workspace: anyone signed in. A non-member learns
-- nothing (not_found, never forbidden); no claims = unauthorized.
-- ---------------------------------------------------------------------------------------------
create temp table matrix (ord serial, fn text, call text, owner text, admin text, editor text, viewer text, outsider text, nobody text);
insert into matrix (fn, call, owner, admin, editor, viewer, outsider, nobody) values
  ('api.create_workspace(text,uuid)', $$api.create_workspace('Another workspace', gen_random_uuid())$$,
     'ok', 'ok', 'ok', 'ok', 'ok', 'unauthorized'),
  ('api.set_workspace_member(uuid,uuid,app.member_role)', $$api.set_workspace_member({ws_a}, {newbie}, 'editor')$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  -- workspaces and members (the full rules: supabase/tests/workspaces.test.sql); a member may remove themselves
  ('api.list_my_workspaces(text,integer)', $$api.list_my_workspaces()$$,
     'ok', 'ok', 'ok', 'ok', 'ok', 'unauthorized'),
  ('api.rename_workspace(uuid,text)', $$api.rename_workspace({ws_a}, 'Renamed A')$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.list_workspace_canvases(uuid,text,integer)', $$api.list_workspace_canvases({ws_a})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.list_workspace_members(uuid,text,integer)', $$api.list_workspace_members({ws_a})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.add_workspace_member(uuid,text,text)', $$api.add_workspace_member({ws_a}, 'rbac-invitee@test.local', 'editor')$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.update_workspace_member(uuid,uuid,text)', $$api.update_workspace_member({ws_a}, tests.user_id('viewer'), 'editor')$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.remove_workspace_member(uuid,uuid)', $$api.remove_workspace_member({ws_a}, tests.user_id('editor'))$$,
     'ok', 'ok', 'ok', 'forbidden', 'not_found', 'unauthorized'),
  ('api.list_workspace_invites(uuid,text,integer)', $$api.list_workspace_invites({ws_a})$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.revoke_workspace_invite(uuid,uuid)', $$api.revoke_workspace_invite({ws_a},
     (api.add_workspace_member({ws_a}, 'rbac-revoked@test.local', 'viewer') #>> '{invite,invite_id}')::uuid)$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.list_my_canvases(text,integer)', $$api.list_my_canvases()$$,
     'ok', 'ok', 'ok', 'ok', 'ok', 'unauthorized'),
  ('api.create_canvas(uuid,text,jsonb,uuid)', $$api.create_canvas({ws_a}, 'New canvas', '{}', gen_random_uuid())$$,
     'ok', 'ok', 'ok', 'forbidden', 'not_found', 'unauthorized'),
  ('api.update_canvas(uuid,text,jsonb)', $$api.update_canvas({a1}, 'Renamed', null)$$,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.delete_canvas(uuid)', $$api.delete_canvas({a1})$$,
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('api.list_blocks(uuid,text,integer)', $$api.list_blocks({a1}, null, 10)$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.get_block(uuid,uuid)', $$api.get_block({a1}, {block_a})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.get_canvas_permissions(uuid,text,integer)', $$api.get_canvas_permissions({a1})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  -- a per-user counter: a no-op without a user (the HTTP layer keys anonymous endpoints itself)
  ('api.hit_endpoint_limit(text,boolean)', $$api.hit_endpoint_limit('A1')$$,
     'ok', 'ok', 'ok', 'ok', 'ok', 'ok'),
  -- canary flags: members read their canvas's flags; only service_role changes flags
  ('api.get_canvas_flags(uuid)', $$api.get_canvas_flags({a1})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.set_feature_flag(text,numeric,text,uuid[],uuid[],uuid[],uuid[])', $$api.set_feature_flag('rbac-flag', 1)$$,
     'forbidden', 'forbidden', 'forbidden', 'forbidden', 'forbidden', 'unauthorized'),
  ('api.upsert_block_atomic(uuid,uuid,text,text,integer,jsonb)',
     $$api.upsert_block_atomic({a1}, null, 'create', 'rbac-op', null, '{"type":"text"}')$$,
     'ok', 'ok', 'ok', 'forbidden', 'not_found', 'unauthorized'),
  ('api.upsert_blocks_atomic(uuid,jsonb)',
     $$api.upsert_blocks_atomic({a1}, '[{"action":"create","client_op_id":"rbac-batch","patch":{"type":"text"}}]')$$,
     'ok', 'ok', 'ok', 'forbidden', 'not_found', 'unauthorized'),
  ('api.update_presence(uuid,jsonb,boolean,text)', $$api.update_presence({a1}, '{"x":3}', true)$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.leave_canvas(uuid,text)', $$api.leave_canvas({a1})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.get_canvas_changes(uuid,bigint,integer)', $$api.get_canvas_changes({a1}, 0, 100)$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.get_canvas_changes_since(uuid,bigint,integer)', $$api.get_canvas_changes_since({a1}, 0, 100)$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.get_canvas_snapshot(uuid,bigint,text)', $$api.get_canvas_snapshot({a1})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('api.search_blocks(uuid,vector,integer,text)', $$api.search_blocks({a1}, array_fill(0.1::real, array[1536])::extensions.vector, 5, 'local-hash-v1')$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  -- files (the full rules: supabase/tests/files.test.sql): editors upload, members read (completing
  -- an upload is internal.complete_file, the server's after its HEAD of the object)
  ('api.create_file(uuid,text,text,bigint,text)', $$api.create_file({a1}, 'rbac-upload.png', 'image/png', 10)$$,
     'ok', 'ok', 'ok', 'forbidden', 'not_found', 'unauthorized'),
  ('api.get_file(uuid,uuid)', $$api.get_file({a1}, {file_a})$$,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized');

select set_eq(
  $$select p.oid::regprocedure::text from pg_proc p where p.pronamespace = 'api'::regnamespace$$,
  $$select fn from matrix$$,
  'the matrix covers exactly the functions of schema api (a new api function needs a row here)');

select is(pg_temp.outcome(r.who, m.call), r.expected, format('%s as %s: %s', m.fn, r.who, r.expected))
from matrix m
cross join lateral (values (1, 'owner', m.owner), (2, 'admin', m.admin), (3, 'editor', m.editor), (4, 'viewer', m.viewer),
                           (5, 'outsider', m.outsider), (6, 'nobody', m.nobody)) r(ord, who, expected)
order by m.ord, r.ord;

-- the anon role gets nothing from any api function (no EXECUTE, or at least unauthorized)
select ok(pg_temp.outcome('anon', m.call) in ('denied', 'unauthorized'),
          format('%s as anon: refused (%s)', m.fn, pg_temp.outcome('anon', m.call)))
from matrix m order by m.ord;

-- Member management beyond the matrix: only an owner makes (or unmakes) an owner
select is(pg_temp.outcome('admin', $$api.set_workspace_member({ws_a}, {newbie}, 'owner')$$), 'forbidden',
          'an admin cannot grant the owner role');
select is(pg_temp.outcome('admin', $$api.set_workspace_member({ws_a}, {owner}, 'viewer')$$), 'forbidden',
          'an admin cannot demote an owner');
select is(pg_temp.outcome('owner', $$api.set_workspace_member({ws_a}, {newbie}, 'owner')$$), 'ok',
          'an owner may make another owner');
select is(pg_temp.outcome('admin', $$api.set_workspace_member({ws_a}, {newbie}, 'admin')$$), 'ok',
          'an admin may make another admin');
select is(pg_temp.outcome('newbie', $$api.create_workspace('Mine')$$), 'ok',
          'a signed-in user who belongs to nothing may create a workspace');

-- ---------------------------------------------------------------------------------------------
-- Cross-workspace isolation: the editor of A sees nothing of B through any read function ...
-- ---------------------------------------------------------------------------------------------
select ok((select count(*) from app.canvases where canvas_id = pg_temp.id('b1')) = 1
          and (select count(*) from app.blocks where canvas_id = pg_temp.id('b1')) = 1
          and (select count(*) from app.block_operations where canvas_id = pg_temp.id('b1')) = 1
          and (select count(*) from app.presence where canvas_id = pg_temp.id('b1')) = 1,
          'workspace B has a canvas, a block, an operation and a presence row (seen as postgres)');

select tests.authenticate_as('editor');
select throws_ok(format('select api.get_canvas_snapshot(%L)', pg_temp.id('b1')), 'PX404', null,
                 'get_canvas_snapshot of a canvas of B: not_found');
select throws_ok(format('select api.get_canvas_changes(%L, 0, 100)', pg_temp.id('b1')), 'PX404', null,
                 'get_canvas_changes of a canvas of B: not_found');
select throws_ok(format('select api.list_blocks(%L)', pg_temp.id('b1')), 'PX404', null,
                 'list_blocks of a canvas of B: not_found');
select throws_ok(format('select api.get_block(%L, %L)', pg_temp.id('b1'), pg_temp.id('block_b')), 'PX404', null,
                 'get_block of a block of B: not_found');
select throws_ok(format('select api.get_block(%L, %L)', pg_temp.id('a1'), pg_temp.id('block_b')), 'PX404', null,
                 'get_block of a block of B through a canvas of A: not_found');
select throws_ok(format('select api.get_canvas_permissions(%L)', pg_temp.id('b1')), 'PX404', null,
                 'get_canvas_permissions of a canvas of B: not_found');
select throws_ok(format('select api.search_blocks(%L, array_fill(0.1::real, array[1536])::extensions.vector, 5, %L)', pg_temp.id('b1'), 'local-hash-v1'),
                 'PX404', null, 'search_blocks on a canvas of B: not_found');
select throws_ok(format('select api.update_presence(%L, null, false)', pg_temp.id('b1')), 'PX404', null,
                 'update_presence on a canvas of B: not_found');
select throws_ok(format('select api.leave_canvas(%L)', pg_temp.id('b1')), 'PX404', null,
                 'leave_canvas of a canvas of B: not_found (nobody broadcasts into a canvas they cannot see)');
select is((select count(*) from jsonb_array_elements(api.list_my_canvases() -> 'canvases') c
           where (c ->> 'workspace_id')::uuid = pg_temp.id('ws_b')), 0::bigint,
          'list_my_canvases lists no canvas of B');
select is((select count(*) from jsonb_array_elements(api.list_my_canvases() -> 'canvases')), 3::bigint,
          '... and lists the three canvases of A');

-- ... nor through direct selects under RLS (and does see its own workspace's rows)
select is(array(select workspace_id from app.workspaces), array[pg_temp.id('ws_a')],
          'app.workspaces: the editor sees workspace A only');
select is((select count(*) from app.workspace_members where workspace_id = pg_temp.id('ws_b')), 0::bigint,
          'app.workspace_members: nothing of B');
select is((select count(*) from app.workspace_members where workspace_id = pg_temp.id('ws_a')), 4::bigint,
          'app.workspace_members: the four members of A');
select is((select count(*) from app.canvases where workspace_id = pg_temp.id('ws_b')), 0::bigint,
          'app.canvases: nothing of B');
select is((select count(*) from app.canvases where workspace_id = pg_temp.id('ws_a')), 3::bigint,
          'app.canvases: the three canvases of A');
select is((select count(*) from app.blocks where canvas_id = pg_temp.id('b1')), 0::bigint, 'app.blocks: nothing of B');
select is((select count(*) from app.blocks where canvas_id = pg_temp.id('a1')), 1::bigint, 'app.blocks: the block of A1');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('b1')), 0::bigint,
          'app.block_operations: nothing of B');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('a1')), 1::bigint,
          'app.block_operations: the operation on A1');
select is((select count(*) from app.presence where canvas_id = pg_temp.id('b1')), 0::bigint, 'app.presence: nothing of B');
select is((select count(*) from app.presence where canvas_id = pg_temp.id('a1')), 1::bigint, 'app.presence: the presence on A1');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Per-canvas overrides (app.canvas_members) replace the workspace role on that canvas only;
-- a workspace owner stays owner.
-- ---------------------------------------------------------------------------------------------
insert into app.canvas_members (canvas_id, user_id, role) values
  (pg_temp.id('a2'), tests.user_id('viewer'), 'editor'),
  (pg_temp.id('a2'), tests.user_id('editor'), 'viewer'),
  (pg_temp.id('a2'), tests.user_id('admin'), 'viewer'),
  (pg_temp.id('a2'), tests.user_id('owner'), 'viewer'),
  (pg_temp.id('a2'), tests.user_id('newbie'), 'viewer');

select is(pg_temp.outcome('viewer', $$api.upsert_block_atomic({a2}, null, 'create', 'raised', null, '{"type":"text"}')$$), 'ok',
          'a viewer raised to editor on A2 may write blocks there');
select is(pg_temp.outcome('viewer', $$api.upsert_block_atomic({a1}, null, 'create', 'raised', null, '{"type":"text"}')$$), 'forbidden',
          '... but still not on A1');
select is(pg_temp.value_as('viewer', $$api.get_canvas_permissions({a2}) ->> 'role'$$), 'editor',
          'get_canvas_permissions shows the raised role (editor) on A2');
select is(pg_temp.value_as('editor', $$api.get_canvas_permissions({a2}) ->> 'can_write'$$), 'false',
          'get_canvas_permissions shows the lowered editor cannot write A2');
select is(pg_temp.outcome('editor', $$api.upsert_block_atomic({a2}, null, 'create', 'lowered', null, '{"type":"text"}')$$), 'forbidden',
          'an editor lowered to viewer on A2 may not write blocks there');
select is(pg_temp.outcome('editor', $$api.list_blocks({a2})$$), 'ok', '... but may still read A2');
select is(pg_temp.outcome('admin', $$api.update_canvas({a2}, 'Nope', null)$$), 'forbidden',
          'an admin lowered to viewer on A2 may not change its title');
select is(pg_temp.outcome('owner', $$api.delete_canvas({a2})$$), 'ok',
          'a workspace owner stays owner despite a lower override');
select is(pg_temp.outcome('newbie', $$api.get_canvas_snapshot({a2})$$), 'ok',
          'an override gives a non-member of the workspace access to that canvas');
select is(pg_temp.outcome('newbie', $$api.get_canvas_snapshot({a1})$$), 'not_found', '... and to no other canvas');
select tests.authenticate_as('newbie');
select is((select array_agg((c ->> 'canvas_id')::uuid) from jsonb_array_elements(api.list_my_canvases() -> 'canvases') c), array[pg_temp.id('a2')],
          '... so list_my_canvases lists A2 only');
select is((select count(*) from app.blocks where canvas_id = pg_temp.id('a1')), 0::bigint,
          '... and RLS hides the blocks of A1 from them');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- A soft-deleted canvas vanishes for everyone, its owner included
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select lives_ok(format('select api.delete_canvas(%L)', pg_temp.id('a3')), 'the owner soft-deletes A3');
select tests.clear_authentication();
select is(pg_temp.outcome(w, $$api.get_canvas_snapshot({a3})$$), 'not_found', format('get_canvas_snapshot of A3 as %s: not_found', w))
from unnest(array['owner', 'admin', 'editor', 'viewer']) w;
select is(pg_temp.value_as(w, $$(select count(*) from jsonb_array_elements(api.list_my_canvases() -> 'canvases') c
                                where (c ->> 'canvas_id')::uuid = {a3})$$), '0', format('list_my_canvases as %s no longer lists A3', w))
from unnest(array['owner', 'admin', 'editor', 'viewer']) w;
select tests.authenticate_as('owner');
select is((select count(*) from app.canvases where canvas_id = pg_temp.id('a3')), 0::bigint, 'RLS hides the deleted canvas row');
select is((select count(*) from app.blocks where canvas_id = pg_temp.id('a3')), 0::bigint, 'RLS hides its blocks');
select is(pg_temp.outcome('owner', $$api.upsert_block_atomic({a3}, null, 'create', 'late', null, '{"type":"text"}')$$), 'not_found',
          'no block may be written to it');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- A tenant's log holds only its own members' attempts. Whatever api function someone without a
-- role on a canvas calls, and with whatever payload, nothing of it lands in that canvas's
-- app.block_operations or anywhere its members can read; a rejected write is audited in
-- app.system_audit only, bounded (no payload). Members' own rejected attempts stay in the log.
-- ---------------------------------------------------------------------------------------------
-- What a call left behind: rows in the log of canvas {p_canvas} (counted as postgres), rows of it
-- that p_reader reads under RLS, and the new system_audit rows (how many; all under 2 KB).
create function pg_temp.footprint(p_canvas text, p_reader text) returns jsonb language plpgsql as $$
declare v_ops bigint; v_visible bigint; v_audit bigint;
begin
  perform tests.clear_authentication();
  select count(*) into v_ops from app.block_operations where canvas_id = pg_temp.id(p_canvas);
  select coalesce(max(audit_id), 0) into v_audit from app.system_audit;
  perform tests.authenticate_as(p_reader);
  select count(*) into v_visible from app.block_operations where canvas_id = pg_temp.id(p_canvas);
  perform tests.clear_authentication();
  return jsonb_build_object('ops', v_ops, 'visible', v_visible, 'audit_id', v_audit);
end $$;

-- Runs one call as p_who (its own result does not matter here), rolls it back like outcome(), and
-- returns the difference it made: {ops, visible, audit, audit_bounded}.
create function pg_temp.trace(p_who text, p_sql text, p_canvas text, p_reader text) returns jsonb language plpgsql as $$
declare v_before jsonb := pg_temp.footprint(p_canvas, p_reader); v_after jsonb; v_state text; v_msg text;
begin
  begin
    if p_who = 'nobody' then
      perform set_config('role', 'authenticated', true);
      perform set_config('request.jwt.claims', '', true);
    else
      perform tests.authenticate_as(p_who);
    end if;
    begin
      execute 'select ' || pg_temp.fill(p_sql);
    exception when others then null;  -- a raised error rolls back its own writes: nothing to see
    end;
    v_after := pg_temp.footprint(p_canvas, p_reader);
    v_after := v_after || (select jsonb_build_object('audit', count(*), 'audit_bounded',
                                                     coalesce(bool_and(octet_length(a::text) < 2048), true))
                           from app.system_audit a where a.audit_id > (v_before ->> 'audit_id')::bigint);
    raise exception using errcode = 'PXOK0', message = v_after::text;
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text;
  end;
  if v_state <> 'PXOK0' then
    return jsonb_build_object('error', v_state || ': ' || v_msg);
  end if;
  v_after := v_msg::jsonb;
  return jsonb_build_object('ops', (v_after ->> 'ops')::bigint - (v_before ->> 'ops')::bigint,
                            'visible', (v_after ->> 'visible')::bigint - (v_before ->> 'visible')::bigint,
                            'audit', (v_after ->> 'audit')::bigint, 'audit_bounded', (v_after ->> 'audit_bounded')::boolean);
end $$;

-- every api function, called by an outsider or without claims against A1 / workspace A
select is(pg_temp.trace(r.who, m.call, 'a1', 'viewer') - 'audit', '{"ops": 0, "visible": 0, "audit_bounded": true}'::jsonb,
          format('%s as %s: no row in the log of A1, none visible to its viewer', m.fn, r.who))
from matrix m cross join (values (1, 'outsider'), (2, 'nobody')) r(ord, who)
order by m.ord, r.ord;

-- the writing functions with a 200 KB payload: audited once, bounded, never logged in the canvas
create temp table injections (ord serial, who text, canvas text, call text, label text);
insert into injections (who, canvas, call, label) values
  ('outsider', 'a1', $$api.upsert_block_atomic({a1}, null, 'create', 'inject-1', null,
                        jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))$$,
   'an outsider''s 200 KB create on A1'),
  ('outsider', 'a1', $$api.upsert_block_atomic({a1}, {block_a}, 'update', 'inject-2', 1,
                        jsonb_build_object('content', jsonb_build_object('t', repeat('x', 204800))))$$,
   'an outsider''s 200 KB update of a block of A1'),
  ('outsider', 'a1', $$api.upsert_blocks_atomic({a1}, jsonb_build_array(jsonb_build_object('action', 'create',
                        'client_op_id', 'inject-3', 'patch', jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))))$$,
   'an outsider''s 200 KB batch on A1'),
  ('outsider', 'a1', $$api.upsert_block_atomic({a1}, null, 'create', 'setup-b', null,
                        jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))$$,
   'an outsider''s retry of their own applied client_op_id aimed at A1 (the duplicate path)'),
  ('nobody', 'a1', $$api.upsert_block_atomic({a1}, null, 'create', 'inject-4', null,
                      jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))$$,
   'a 200 KB create on A1 without claims'),
  ('owner', 'a3', $$api.upsert_block_atomic({a3}, null, 'create', 'inject-5', null,
                     jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))$$,
   'its former owner''s 200 KB create on the soft-deleted A3');
select is(pg_temp.trace(i.who, i.call, i.canvas, 'viewer'), '{"ops": 0, "visible": 0, "audit": 1, "audit_bounded": true}'::jsonb,
          i.label || ': one bounded audit row, no row in the canvas''s log')
from injections i order by i.ord;

-- members' rejected attempts are the tenant's own: logged, and readable by its members
select is(pg_temp.trace('viewer', $$api.upsert_block_atomic({a1}, null, 'create', 'viewer-try', null, '{"type":"text"}')$$, 'a1', 'viewer'),
          '{"ops": 1, "visible": 1, "audit": 1, "audit_bounded": true}'::jsonb,
          'a viewer''s forbidden create on A1 is logged in A1 and visible to its viewer');
select is(pg_temp.trace('editor', $$api.upsert_blocks_atomic({a1}, '[{"action":"create","client_op_id":"editor-bad","patch":{"type":"Bad"}}]')$$,
                        'a1', 'viewer'),
          '{"ops": 1, "visible": 1, "audit": 1, "audit_bounded": true}'::jsonb,
          'an editor''s failed batch on A1 is logged in A1 and visible to its viewer');

-- the system audit spans all tenants: no API role reads it, directly or through a partition
select is_empty(
  $$select c.oid::regclass::text from pg_class c
    where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p')
      and (c.relname = 'system_audit' or c.oid in (select inhrelid from pg_inherits where inhparent = 'app.system_audit'::regclass))
      and (has_table_privilege('authenticated', c.oid, 'SELECT') or has_table_privilege('anon', c.oid, 'SELECT'))$$,
  'no API role may SELECT app.system_audit or any of its partitions');
select tests.authenticate_as('owner');
select throws_ok('select count(*) from app.system_audit', '42501', null,
                 'a workspace owner cannot read the system audit (not even the attempts against their canvas)');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Privileges: API roles never write tables directly; api functions are for `authenticated`
-- ---------------------------------------------------------------------------------------------
select is_empty(
  $$select c.oid::regclass::text from pg_class c
    where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p')
      and has_table_privilege('authenticated', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')$$,
  'authenticated has no INSERT/UPDATE/DELETE/TRUNCATE on any app table');
select is_empty(
  $$select c.oid::regclass::text from pg_class c
    where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p')
      and has_table_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')$$,
  'anon has no privilege at all on any app table');
select ok(not has_schema_privilege('anon', 'app', 'USAGE'), 'anon has no USAGE on schema app');
select ok(not has_schema_privilege('authenticated', 'internal', 'USAGE')
          and not has_schema_privilege('anon', 'internal', 'USAGE'),
          'API roles have no USAGE on schema internal (its security-definer helpers trust their arguments)');
select tests.authenticate_as('outsider');
select throws_ok(
  format($$select internal.apply_block_op(jsonb_build_object('user_id', %L::uuid), %L, null, 'create', 'spoof', null, '{"type":"text"}', now())$$,
         tests.user_id('owner'), pg_temp.id('a1')),
  '42501', null, 'an outsider cannot call an internal function to act as someone else');
select tests.clear_authentication();
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'api'::regnamespace and not has_function_privilege('authenticated', p.oid, 'EXECUTE')$$,
  'authenticated may EXECUTE every api function');
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
    where p.pronamespace = 'api'::regnamespace and a.grantee = 0 and a.privilege_type = 'EXECUTE'$$,
  'PUBLIC has EXECUTE on no api function');
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace = 'api'::regnamespace and has_function_privilege('anon', p.oid, 'EXECUTE')$$,
  'anon may EXECUTE no api function');
-- outside api, the API roles may run only what RLS policies and request code read: the auth.*
-- helpers and realtime.topic() (the compat schemas, sql/compat/; on Supabase the platform's)
select is_empty(
  $$select p.oid::regprocedure::text from pg_proc p
    where p.pronamespace in ('auth'::regnamespace, 'realtime'::regnamespace, 'app'::regnamespace, 'public'::regnamespace)
      and (has_function_privilege('anon', p.oid, 'EXECUTE') or has_function_privilege('authenticated', p.oid, 'EXECUTE'))
      and p.oid::regprocedure::text not in ('auth.uid()', 'auth.role()', 'auth.email()', 'auth.jwt()', 'realtime.topic()')$$,
  'anon and authenticated may EXECUTE no function of auth, realtime, app or public but the auth helpers and realtime.topic() (not realtime.create_partitions)');

select * from finish();
rollback;
