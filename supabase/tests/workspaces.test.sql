-- Workspaces and members (sql/rpc/workspaces.sql): who may create, list and rename workspaces,
-- list, add, invite, re-role and remove members, and list or revoke invites; a workspace always
-- keeps an owner; an invite becomes a membership once its email is confirmed; every change is
-- audited and announces access changes; a refused call writes nothing; a create with a
-- client-chosen workspace_id, resent, is answered again and never makes a second workspace.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(319);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;

-- ---------------------------------------------------------------------------------------------
-- Fixture, built through the api: workspace W of `owner` with a second owner `owner2`, an admin,
-- an editor, a viewer and `member` (a viewer), canvases c1 and c2, and two pending invites
-- (`pending` as viewer, `owner_invite` as owner). `stranger` owns workspace S with canvas s1;
-- `newbie` belongs to nothing.
-- ---------------------------------------------------------------------------------------------
do $$
declare v_w uuid; v_s uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'owner2', 'admin', 'editor', 'viewer', 'member', 'newbie', 'stranger']) n;
  perform tests.authenticate_as('owner');
  v_w := api.create_workspace('  Studio  ') ->> 'workspace_id';
  perform api.add_workspace_member(v_w, r.name || '@test.local', r.role)
  from (values ('owner2', 'owner'), ('admin', 'admin'), ('editor', 'editor'), ('viewer', 'viewer'), ('member', 'viewer')) r(name, role);
  insert into ids values ('w', v_w),
    ('c1', (api.create_canvas(v_w, 'c1') ->> 'canvas_id')::uuid),
    ('c2', (api.create_canvas(v_w, 'c2') ->> 'canvas_id')::uuid),
    ('pending', (api.add_workspace_member(v_w, 'pending@test.local', 'viewer') #>> '{invite,invite_id}')::uuid),
    ('owner_invite', (api.add_workspace_member(v_w, 'future-owner@test.local', 'owner') #>> '{invite,invite_id}')::uuid);
  perform tests.authenticate_as('stranger');
  v_s := api.create_workspace('Elsewhere') ->> 'workspace_id';
  insert into ids values ('s', v_s), ('s1', (api.create_canvas(v_s, 's1') ->> 'canvas_id')::uuid);
  perform tests.clear_authentication();
  insert into ids select n, tests.user_id(n) from unnest(array['owner', 'owner2', 'admin', 'editor', 'viewer', 'member', 'newbie', 'stranger']) n;
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

-- What the database holds, as comparable fingerprints (read as postgres, past RLS).
create function pg_temp.footprint() returns jsonb language sql stable as $$
  select jsonb_build_object(
    'workspaces', (select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from app.workspaces t),
    'members', (select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from app.workspace_members t),
    'canvas_members', (select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from app.canvas_members t),
    'invites', (select md5(coalesce(string_agg(t::text, ',' order by t::text), '')) from app.workspace_invites t),
    'audit', (select count(*) from app.system_audit),
    'messages', (select count(*) from realtime.messages))
$$;

-- Runs one call as p_who ('nobody': the authenticated role without claims) and rolls all of it
-- back. Returns {outcome: 'ok' | error code, field, reason, changed: [what it changed], audit:
-- [the actions it audited]}.
create function pg_temp.run(p_who text, p_sql text) returns jsonb language plpgsql as $$
declare
  v_before jsonb := pg_temp.footprint();
  v_audit bigint := (select coalesce(max(audit_id), 0) from app.system_audit);
  v_result jsonb; v_state text; v_msg text; v_hint text; v_detail text;
begin
  begin
    begin
      if p_who = 'nobody' then
        perform set_config('role', 'authenticated', true);
        perform set_config('request.jwt.claims', '', true);
      else
        perform tests.authenticate_as(p_who);
      end if;
      execute 'select ' || pg_temp.fill(p_sql);
      v_result := jsonb_build_object('outcome', 'ok');
    exception when others then
      get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text, v_hint = pg_exception_hint, v_detail = pg_exception_detail;
      v_result := case when v_state like 'PX%' then jsonb_build_object('outcome', v_hint) || coalesce(internal.try_jsonb(v_detail), '{}')
                       else jsonb_build_object('outcome', format('error %s: %s', v_state, v_msg)) end;
    end;
    perform tests.clear_authentication();
    v_result := v_result || jsonb_build_object(
      'changed', (select coalesce(jsonb_agg(a.key order by a.key), '[]') from jsonb_each(pg_temp.footprint()) a
                  where a.value is distinct from v_before -> a.key),
      'audit', (select coalesce(jsonb_agg(action order by audit_id), '[]') from app.system_audit where audit_id > v_audit));
    raise exception using errcode = 'PXOK0', message = v_result::text;
  exception when sqlstate 'PXOK0' then
    get stacked diagnostics v_msg = message_text;
  end;
  return v_msg::jsonb;
end $$;

-- The value of one call as p_who (jsonb), rolled back like run(); an error as {error: code, ...}.
create function pg_temp.value_as(p_who text, p_sql text) returns jsonb language plpgsql as $$
declare v_result jsonb; v_state text; v_msg text; v_hint text; v_detail text;
begin
  begin
    -- a fixture user, or one in ids (signed up with another email)
    perform tests.authenticate_as(p_who, case when tests.user_id(p_who) is null then jsonb_build_object('sub', pg_temp.id(p_who)) else '{}' end);
    execute 'select to_jsonb(' || pg_temp.fill(p_sql) || ')' into v_result;
    raise exception using errcode = 'PXOK0', message = coalesce(v_result, 'null'::jsonb)::text;
  exception when others then
    get stacked diagnostics v_state = returned_sqlstate, v_msg = message_text, v_hint = pg_exception_hint, v_detail = pg_exception_detail;
  end;
  return case when v_state = 'PXOK0' then v_msg::jsonb
              when v_state like 'PX%' then jsonb_build_object('error', v_hint) || coalesce(internal.try_jsonb(v_detail), '{}')
              else jsonb_build_object('error', format('%s: %s', v_state, v_msg)) end;
end $$;

-- ---------------------------------------------------------------------------------------------
-- The fixture: created through the api as described
-- ---------------------------------------------------------------------------------------------
select is((select name from app.workspaces where workspace_id = pg_temp.id('w')), 'Studio', 'create_workspace stores the name trimmed');
select is((select jsonb_object_agg(u.email, m.role) from app.workspace_members m join auth.users u on u.id = m.user_id
           where m.workspace_id = pg_temp.id('w')),
          '{"owner@test.local":"owner","owner2@test.local":"owner","admin@test.local":"admin","editor@test.local":"editor",
            "viewer@test.local":"viewer","member@test.local":"viewer"}'::jsonb,
          'the creator is owner; members added by email have the roles given');
select is((select jsonb_object_agg(email, role) from app.workspace_invites where workspace_id = pg_temp.id('w')),
          '{"pending@test.local":"viewer","future-owner@test.local":"owner"}'::jsonb, 'emails without a user are pending invites');

-- ---------------------------------------------------------------------------------------------
-- The role matrix: each action × owner/admin/editor/viewer/stranger/nobody. A refusal changes
-- nothing and audits nothing; a change that is allowed audits exactly its action.
-- ---------------------------------------------------------------------------------------------
create temp table matrix (ord serial, label text, call text, action text,
                          owner text, admin text, editor text, viewer text, stranger text, nobody text);
insert into matrix (label, call, action, owner, admin, editor, viewer, stranger, nobody) values
  ('create a workspace', $$api.create_workspace('Mine')$$, 'workspace.create',
     'ok', 'ok', 'ok', 'ok', 'ok', 'unauthorized'),
  ('list my workspaces', $$api.list_my_workspaces()$$, null,
     'ok', 'ok', 'ok', 'ok', 'ok', 'unauthorized'),
  ('rename the workspace', $$api.rename_workspace({w}, 'Renamed')$$, 'workspace.rename',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('list its canvases', $$api.list_workspace_canvases({w})$$, null,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('list its members', $$api.list_workspace_members({w})$$, null,
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('add an existing user, role editor', $$api.add_workspace_member({w}, 'newbie@test.local', 'editor')$$, 'workspace.member.add',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('add an existing user, role owner', $$api.add_workspace_member({w}, 'newbie@test.local', 'owner')$$, 'workspace.member.add',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('invite an unknown email', $$api.add_workspace_member({w}, 'someone@elsewhere.example', 'viewer')$$, 'workspace.member.invite',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('invite an unknown email, role owner', $$api.add_workspace_member({w}, 'someone@elsewhere.example', 'owner')$$, 'workspace.member.invite',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('change a viewer''s role to editor', $$api.update_workspace_member({w}, {member}, 'editor')$$, 'workspace.member.role',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('make a member owner', $$api.update_workspace_member({w}, {member}, 'owner')$$, 'workspace.member.role',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('demote an owner', $$api.update_workspace_member({w}, {owner2}, 'admin')$$, 'workspace.member.role',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('remove a member', $$api.remove_workspace_member({w}, {member})$$, 'workspace.member.remove',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('remove an owner', $$api.remove_workspace_member({w}, {owner2})$$, 'workspace.member.remove',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('leave (remove oneself)', $$api.remove_workspace_member({w}, auth.uid())$$, 'workspace.member.remove',
     'ok', 'ok', 'ok', 'ok', 'not_found', 'unauthorized'),
  ('list the invites', $$api.list_workspace_invites({w})$$, null,
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('revoke an invite', $$api.revoke_workspace_invite({w}, {pending})$$, 'workspace.invite.revoke',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('revoke an owner''s invite', $$api.revoke_workspace_invite({w}, {owner_invite})$$, 'workspace.invite.revoke',
     'ok', 'forbidden', 'forbidden', 'forbidden', 'not_found', 'unauthorized'),
  ('set a member by id (SQL callers)', $$api.set_workspace_member({w}, {newbie}, 'viewer')$$, 'workspace.member.set',
     'ok', 'ok', 'forbidden', 'forbidden', 'not_found', 'unauthorized');

select is(pg_temp.run(r.who, m.call) - 'field' - 'reason' - 'changed',
          jsonb_build_object('outcome', r.expected,
                             'audit', case when r.expected = 'ok' and m.action is not null then jsonb_build_array(m.action) else '[]' end),
          format('%s as %s: %s%s', m.label, r.who, r.expected,
                 case when r.expected <> 'ok' then ', nothing audited' when m.action is not null then ', audited ' || m.action else '' end))
from matrix m
cross join lateral (values (1, 'owner', m.owner), (2, 'admin', m.admin), (3, 'editor', m.editor), (4, 'viewer', m.viewer),
                           (5, 'stranger', m.stranger), (6, 'nobody', m.nobody)) r(ord, who, expected)
order by m.ord, r.ord;

-- nothing written on refusal; reads write nothing either; changes write
select is(pg_temp.run(r.who, m.call) -> 'changed', '[]'::jsonb,
          format('%s as %s: %s', m.label, r.who, case when r.expected <> 'ok' then 'refused, nothing written'
                                                       when m.action is null then 'a read, nothing written' else 'changes' end))
from matrix m
cross join lateral (values (1, 'owner', m.owner), (2, 'admin', m.admin), (3, 'editor', m.editor), (4, 'viewer', m.viewer),
                           (5, 'stranger', m.stranger), (6, 'nobody', m.nobody)) r(ord, who, expected)
where r.expected <> 'ok' or m.action is null
order by m.ord, r.ord;
select ok(jsonb_array_length(pg_temp.run('owner', m.call) -> 'changed') >= 2, format('%s as owner writes (%s)', m.label,
          pg_temp.run('owner', m.call) -> 'changed'))
from matrix m where m.action is not null order by m.ord;

-- the anon role reaches none of these functions
select ok((select bool_and(not has_function_privilege('anon', p.oid, 'EXECUTE')) from pg_proc p
           where p.pronamespace = 'api'::regnamespace and p.proname in ('create_workspace', 'list_my_workspaces', 'rename_workspace',
             'list_workspace_canvases', 'list_workspace_members', 'add_workspace_member', 'update_workspace_member',
             'remove_workspace_member', 'set_workspace_member', 'list_workspace_invites', 'revoke_workspace_invite')),
          'anon may EXECUTE none of the workspace functions');

-- ---------------------------------------------------------------------------------------------
-- Shapes
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.value_as('newbie', $$api.create_workspace('  Fresh  ')$$) - 'workspace_id' - 'created_at',
          jsonb_build_object('name', 'Fresh', 'role', 'owner', 'created_by', pg_temp.id('newbie')),
          'create_workspace returns the Workspace {workspace_id, name, role: owner, created_by, created_at}');
select is(pg_temp.value_as('admin', $$(select jsonb_agg(w - 'created_at' - 'created_by') from jsonb_array_elements(api.list_my_workspaces() -> 'workspaces') w)$$),
          jsonb_build_array(jsonb_build_object('workspace_id', pg_temp.id('w'), 'name', 'Studio', 'role', 'admin')),
          'list_my_workspaces: the caller''s workspaces with the caller''s role');
select is(pg_temp.value_as('stranger', $$(select jsonb_agg(w ->> 'name') from jsonb_array_elements(api.list_my_workspaces() -> 'workspaces') w)$$),
          '["Elsewhere"]'::jsonb, '... and never another''s');
select is(pg_temp.value_as('newbie', $$api.list_my_workspaces()$$), '{"workspaces": [], "next_cursor": null}'::jsonb,
          '... a user of no workspace gets no workspace, and no next page');
select is(pg_temp.value_as('admin', $$api.rename_workspace({w}, ' Atelier ') - 'created_at' - 'created_by'$$),
          jsonb_build_object('workspace_id', pg_temp.id('w'), 'name', 'Atelier', 'role', 'admin'),
          'rename_workspace returns the Workspace, name trimmed, with the caller''s role');
select is(pg_temp.value_as('viewer', $$(select jsonb_agg(m ->> 'email') from jsonb_array_elements(api.list_workspace_members({w}) -> 'members') m)$$),
          (select jsonb_agg(u.email order by m.created_at, m.user_id) from app.workspace_members m join auth.users u on u.id = m.user_id
           where m.workspace_id = pg_temp.id('w')),
          'list_workspace_members: every member, by when they joined (then user_id)');
select is(pg_temp.value_as('viewer', $$(select m - 'joined_at' from jsonb_array_elements(api.list_workspace_members({w}) -> 'members') m
                                        where m ->> 'email' = 'editor@test.local')$$),
          jsonb_build_object('user_id', pg_temp.id('editor'), 'email', 'editor@test.local', 'role', 'editor'),
          '... each a Member {user_id, email, role, joined_at}');
select ok((pg_temp.value_as('viewer', $$api.list_workspace_members({w}) -> 'members' -> 0 ->> 'joined_at'$$) #>> '{}')::timestamptz <= now(),
          '... joined_at is when they joined');
select is(pg_temp.value_as('editor', $$(select jsonb_agg(c ->> 'title' order by c ->> 'title') from jsonb_array_elements(api.list_workspace_canvases({w}) -> 'canvases') c)$$),
          '["c1","c2"]'::jsonb, 'list_workspace_canvases: the workspace''s canvases ...');
select is(pg_temp.value_as('editor', $$(select jsonb_agg(distinct c ->> 'role') from jsonb_array_elements(api.list_workspace_canvases({w}) -> 'canvases') c)$$),
          '["editor"]'::jsonb, '... with the caller''s role on each');
select is(pg_temp.value_as('owner', $$(select i - 'created_at' - 'invite_id' from jsonb_array_elements(api.list_workspace_invites({w}) -> 'invites') i where i ->> 'email' = 'pending@test.local')$$),
          jsonb_build_object('workspace_id', pg_temp.id('w'), 'email', 'pending@test.local', 'role', 'viewer', 'invited_by', pg_temp.id('owner')),
          'list_workspace_invites: Invite {invite_id, workspace_id, email, role, invited_by, created_at}');

-- ---------------------------------------------------------------------------------------------
-- Adding by email
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.value_as('admin', $$api.add_workspace_member({w}, '  NewBie@Test.LOCAL ', 'editor') #- '{member,joined_at}'$$),
          jsonb_build_object('kind', 'member', 'member', jsonb_build_object('user_id', pg_temp.id('newbie'), 'email', 'newbie@test.local', 'role', 'editor')),
          'an existing user''s email (any case, spaces trimmed): {kind: member, member} at once');
select is(pg_temp.value_as('admin', $$api.add_workspace_member({w}, 'Someone@Elsewhere.example', 'editor') #- '{invite,invite_id}' #- '{invite,created_at}'$$),
          jsonb_build_object('kind', 'invite', 'invite', jsonb_build_object('workspace_id', pg_temp.id('w'), 'email', 'someone@elsewhere.example',
                             'role', 'editor', 'invited_by', pg_temp.id('admin'))),
          'an unknown email: {kind: invite, invite}, the email stored lower-cased');
select is(pg_temp.value_as('owner', $$(select jsonb_build_object('same_id', a #>> '{invite,invite_id}' = {pending}::text, 'role', a #>> '{invite,role}',
                                                                  'count', (select count(*) from jsonb_array_elements(api.list_workspace_invites({w}) -> 'invites') i
                                                                            where i ->> 'email' = 'pending@test.local'))
                                       from api.add_workspace_member({w}, 'PENDING@test.local', 'admin') a)$$),
          '{"same_id": true, "role": "admin", "count": 1}'::jsonb, 'inviting a pending email again changes the invite''s role (same invite)');
select is(pg_temp.value_as('admin', $$api.add_workspace_member({w}, 'future-owner@test.local', 'viewer')$$),
          '{"error": "forbidden", "field": "email"}'::jsonb, 'an admin cannot change an owner''s invite');
select is(pg_temp.value_as('owner', $$api.add_workspace_member({w}, 'Editor@test.local', 'viewer')$$),
          jsonb_build_object('error', 'conflict', 'field', 'email', 'reason', 'already_member', 'user_id', pg_temp.id('editor')),
          'an existing member: conflict, reason already_member, naming the user');
select is(pg_temp.value_as('owner', format('api.add_workspace_member({w}, %L, %L)', e, 'viewer')), '{"error": "invalid_input", "field": "email"}'::jsonb,
          format('email %s: invalid_input naming email', coalesce(left(e, 20), 'null')))
from (values (1, 'not-an-email'), (2, ''), (3, 'a@'), (4, 'two words@x.y'), (5, null), (6, repeat('x', 320) || '@x.y')) v(ord, e) order by ord;
select is(pg_temp.value_as('owner', format('api.add_workspace_member({w}, %L, %L)', 'x@y.z', r)), '{"error": "invalid_input", "field": "role"}'::jsonb,
          format('role %s: invalid_input naming role', coalesce(r, 'null')))
from (values (1, 'superuser'), (2, 'Owner'), (3, null)) v(ord, r) order by ord;

-- ---------------------------------------------------------------------------------------------
-- Roles and removal
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.value_as('admin', $$api.update_workspace_member({w}, {member}, 'admin') - 'joined_at'$$),
          jsonb_build_object('user_id', pg_temp.id('member'), 'email', 'member@test.local', 'role', 'admin'),
          'update_workspace_member returns the Member with the new role');
select is(pg_temp.run('admin', $$api.update_workspace_member({w}, {member}, 'viewer')$$),
          '{"outcome": "ok", "changed": [], "audit": []}'::jsonb, 'the same role again: nothing changes, nothing audited');
select is(pg_temp.value_as('owner', $$api.update_workspace_member({w}, {newbie}, 'viewer')$$), '{"error": "not_found", "field": "user_id"}'::jsonb,
          'changing the role of a non-member: not_found naming user_id');
select is(pg_temp.value_as('owner', $$api.update_workspace_member({w}, {member}, 'boss')$$), '{"error": "invalid_input", "field": "role"}'::jsonb,
          'an unknown role: invalid_input naming role');
select is(pg_temp.value_as('admin', $$api.update_workspace_member({w}, {admin}, 'viewer') ->> 'role'$$), '"viewer"'::jsonb,
          'an admin may lower their own role');
select is(pg_temp.value_as('owner', $$api.remove_workspace_member({w}, {newbie})$$), '{"error": "not_found", "field": "user_id"}'::jsonb,
          'removing a non-member: not_found naming user_id');
select is(pg_temp.value_as('owner', $$api.revoke_workspace_invite({w}, gen_random_uuid())$$), '{"error": "not_found", "field": "invite_id"}'::jsonb,
          'revoking an invite that is not pending: not_found naming invite_id');
select is(pg_temp.value_as('stranger', $$api.revoke_workspace_invite({s}, {pending})$$), '{"error": "not_found", "field": "invite_id"}'::jsonb,
          '... also one of another workspace');
select is(pg_temp.value_as('owner', $$api.rename_workspace({w}, '   ')$$), '{"error": "invalid_input", "field": "name"}'::jsonb,
          'a blank name: invalid_input naming name');
select is(pg_temp.value_as('owner', $$api.rename_workspace({w}, repeat('n', 201))$$), '{"error": "invalid_input", "field": "name"}'::jsonb,
          'a name over 200 characters: invalid_input naming name');
select is(pg_temp.value_as('stranger', $$api.list_workspace_members(gen_random_uuid())$$), '{"error": "not_found", "field": "workspace_id"}'::jsonb,
          'a workspace that does not exist: not_found naming workspace_id, as for a non-member');

-- removal takes the member's per-canvas roles in this workspace, not elsewhere
insert into app.canvas_members (canvas_id, user_id, role) values
  (pg_temp.id('c1'), pg_temp.id('member'), 'editor'), (pg_temp.id('s1'), pg_temp.id('member'), 'viewer');
select is(pg_temp.value_as('admin', $$api.remove_workspace_member({w}, {member})$$),
          jsonb_build_object('workspace_id', pg_temp.id('w'), 'user_id', pg_temp.id('member'), 'removed', true),
          'remove_workspace_member returns {workspace_id, user_id, removed}');
select tests.authenticate_as('admin');
select api.remove_workspace_member(pg_temp.id('w'), pg_temp.id('member'));
select tests.clear_authentication();
select is((select array_agg(canvas_id) from app.canvas_members where user_id = pg_temp.id('member')), array[pg_temp.id('s1')],
          'a removed member loses their canvas roles in the workspace, keeps those of other workspaces');
select is((select internal.canvas_role(pg_temp.id('c1'), pg_temp.id('member'))), null, '... and has no access to its canvases');
select is((select jsonb_build_object('user', user_id, 'entity', entity_id, 'details', details, 'affected', affected_rows)
           from app.system_audit where action = 'workspace.member.remove' order by audit_id desc limit 1),
          jsonb_build_object('user', pg_temp.id('admin'), 'entity', pg_temp.id('w')::text, 'affected', 2,
                             'details', jsonb_build_object('user_id', pg_temp.id('member'), 'role', 'viewer', 'left', false, 'canvas_roles', 1)),
          'the removal is audited: who, which workspace, whom, their role, and the canvas roles taken');

-- ---------------------------------------------------------------------------------------------
-- A workspace always keeps an owner
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner2');
select is(api.remove_workspace_member(pg_temp.id('w'), pg_temp.id('owner2')) ->> 'removed', 'true', 'with two owners, one may leave');
select tests.clear_authentication();
select is(pg_temp.run('owner', $$api.update_workspace_member({w}, {owner}, 'admin')$$) - 'changed' - 'audit',
          '{"outcome": "invalid_input", "field": "role", "reason": "last_owner"}'::jsonb, 'the last owner cannot step down (reason last_owner)');
select is(pg_temp.run('owner', $$api.remove_workspace_member({w}, {owner})$$) - 'audit',
          '{"outcome": "invalid_input", "field": "user_id", "reason": "last_owner", "changed": []}'::jsonb,
          '... nor leave, and nothing is written');
select is(pg_temp.run('owner', $$api.set_workspace_member({w}, {owner}, 'viewer')$$) ->> 'reason', 'last_owner',
          '... nor be lowered through set_workspace_member');
select is(pg_temp.run('owner', $$api.update_workspace_member({w}, {owner}, 'owner')$$) - 'changed' - 'audit',
          '{"outcome": "ok"}'::jsonb, '... staying owner is fine');
select tests.authenticate_as('owner');
select is(api.update_workspace_member(pg_temp.id('w'), pg_temp.id('admin'), 'owner') ->> 'role', 'owner', 'the owner makes the admin an owner');
select is(api.update_workspace_member(pg_temp.id('w'), pg_temp.id('owner'), 'editor') ->> 'role', 'editor', '... and may then step down');
select tests.authenticate_as('admin');
select throws_ok(format('select api.remove_workspace_member(%L, %L)', pg_temp.id('w'), pg_temp.id('admin')), 'PX400', null,
                 'the new sole owner cannot leave');
select tests.clear_authentication();
select is((select count(*) from app.workspace_members where workspace_id = pg_temp.id('w') and role = 'owner'), 1::bigint,
          'the workspace has exactly one owner');

-- ---------------------------------------------------------------------------------------------
-- Access changes reach open sockets (the access_changed trigger), one message per canvas
-- ---------------------------------------------------------------------------------------------
delete from realtime.messages where event = 'access_changed';
select tests.authenticate_as('admin');
select api.update_workspace_member(pg_temp.id('w'), pg_temp.id('viewer'), 'editor');
select tests.clear_authentication();
select is((select jsonb_agg(payload - 'reason' order by payload ->> 'canvas_id') from realtime.messages where event = 'access_changed'),
          (select jsonb_agg(jsonb_build_object('canvas_id', c, 'user_id', pg_temp.id('viewer')) order by c::text)
           from unnest(array[pg_temp.id('c1'), pg_temp.id('c2')]) c),
          'a role change announces access_changed for the member on each live canvas of the workspace');
delete from realtime.messages where event = 'access_changed';
select tests.authenticate_as('viewer');
select api.remove_workspace_member(pg_temp.id('w'), pg_temp.id('viewer'));
select tests.clear_authentication();
select is((select count(*) from realtime.messages where event = 'access_changed' and private
           and (payload ->> 'user_id')::uuid = pg_temp.id('viewer') and topic = 'canvas:' || (payload ->> 'canvas_id')), 2::bigint,
          'leaving announces it on both canvases'' private topics');
select is((select details ->> 'left' from app.system_audit where action = 'workspace.member.remove' order by audit_id desc limit 1), 'true',
          '... audited as leaving');

-- ---------------------------------------------------------------------------------------------
-- Invites are accepted once the address is confirmed (at sign-up when it is confirmed at once)
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('stranger');
select api.add_workspace_member(pg_temp.id('s'), 'pending@test.local', 'editor');
select tests.clear_authentication();
-- a sign-up that must still confirm its address (AUTH_EMAIL_CONFIRM=true, Supabase Auth with
-- confirmations on): email_confirmed_at null
with u as (insert into auth.users (email) values ('Pending@Test.local') returning id) insert into ids select 'signup', id from u;
select is((select count(*) from app.workspace_members where user_id = pg_temp.id('signup')), 0::bigint,
          'a sign-up with an invited email that is not confirmed joins nothing: signing up does not prove the address');
select is((select count(*) from app.workspace_invites where email = 'pending@test.local'), 2::bigint, '... and its invites stay pending');
update auth.users set email_confirmed_at = now() where id = pg_temp.id('signup');
select is((select jsonb_object_agg(workspace_id::text, role) from app.workspace_members where user_id = pg_temp.id('signup')),
          jsonb_build_object(pg_temp.id('w'), 'viewer', pg_temp.id('s'), 'editor'),
          'once the address is confirmed, the user (signed up with an invited email, any case) becomes a member of every workspace that invited it, with the invited roles');
select is((select count(*) from app.workspace_invites where email = 'pending@test.local'), 0::bigint, '... and the invites are gone');
select is((select jsonb_agg(jsonb_build_object('user', user_id, 'ws', entity_id, 'role', details ->> 'role', 'affected', affected_rows) order by entity_id)
           from app.system_audit where action = 'workspace.invite.accept'),
          (select jsonb_agg(jsonb_build_object('user', pg_temp.id('signup'), 'ws', ws::text, 'role', r, 'affected', 1) order by ws::text)
           from (values (pg_temp.id('w'), 'viewer'), (pg_temp.id('s'), 'editor')) v(ws, r)),
          '... each acceptance audited as the new user');
select is(pg_temp.value_as('signup', $$(select jsonb_agg(w ->> 'role' order by w ->> 'name') from jsonb_array_elements(api.list_my_workspaces() -> 'workspaces') w)$$),
          '["editor","viewer"]'::jsonb, '... who lists both workspaces at once');

select tests.authenticate_as('admin');
select api.add_workspace_member(pg_temp.id('w'), 'later@test.local', 'viewer');
select tests.clear_authentication();
update auth.users set email = 'later@test.local' where id = pg_temp.id('newbie');  -- confirmed (tests.create_user)
select is(internal.workspace_role(pg_temp.id('w'), pg_temp.id('newbie')), 'viewer'::app.member_role,
          'a confirmed user whose email changes to an invited one is accepted too (GoTrue writes a new address once it is confirmed)');
select tests.authenticate_as('admin');
select api.add_workspace_member(pg_temp.id('w'), 'at-once@test.local', 'viewer');
select api.add_workspace_member(pg_temp.id('w'), 'never-confirmed@test.local', 'viewer');
select tests.clear_authentication();
with u as (insert into auth.users (email, email_confirmed_at) values ('at-once@test.local', now()) returning id) insert into ids select 'at_once', id from u;
select is(internal.workspace_role(pg_temp.id('w'), pg_temp.id('at_once')), 'viewer'::app.member_role,
          'a user inserted confirmed (confirmation off: the local sign-up, Supabase''s autoconfirm) is accepted at once');
with u as (insert into auth.users (email) values ('never-confirmed@test.local') returning id) insert into ids select 'unconfirmed', id from u;
update auth.users set raw_user_meta_data = '{"name": "x"}', email = 'never-confirmed@test.local' where id = pg_temp.id('unconfirmed');
select is(internal.workspace_role(pg_temp.id('w'), pg_temp.id('unconfirmed')), null,
          'an unconfirmed user''s other updates (even of its email) accept nothing');
delete from auth.users where id = pg_temp.id('unconfirmed');
delete from app.workspace_invites where email = 'never-confirmed@test.local';
insert into auth.users (email) values ('nobody-invited@test.local');
select is((select count(*) from app.workspace_members m join auth.users u on u.id = m.user_id where u.email = 'nobody-invited@test.local'),
          0::bigint, 'a sign-up without invites joins nothing');

-- ---------------------------------------------------------------------------------------------
-- An unconfirmed account is no account to add_workspace_member (GoTrue proves an address only at
-- its confirmation): whoever signed up first with someone else's address, never confirming it,
-- is not let in when a workspace adds that address. The address gets a pending invite, answered
-- as for an address nobody signed up with, and the confirmation takes it. `squatter` was stored
-- lower-cased (the local sign-up, GoTrue), `squatter2` as typed (found by lower(email)).
-- ---------------------------------------------------------------------------------------------
with u as (insert into auth.users (email) values ('squatter@test.local'), ('Squatter2@Test.local') returning id, email)
insert into ids select case when email = 'squatter@test.local' then 'squatter' else 'squatter2' end, id from u;
select is(pg_temp.run('admin', format('api.add_workspace_member({w}, %L, %L)', e, 'editor')),
          pg_temp.run('admin', $$api.add_workspace_member({w}, 'no-account-yet@test.local', 'editor')$$),
          format('adding %s, an unconfirmed user''s address: the outcome, writes and audit of an unknown address (an invite)', e))
from (values (1, 'squatter@test.local'), (2, 'SQUATTER2@test.local')) v(ord, e) order by ord;
select is(pg_temp.value_as('admin', format('api.add_workspace_member({w}, %L, %L) #- %L #- %L', e, 'editor', '{invite,invite_id}', '{invite,created_at}')),
          jsonb_build_object('kind', 'invite', 'invite', jsonb_build_object('workspace_id', pg_temp.id('w'), 'email', lower(e),
                             'role', 'editor', 'invited_by', pg_temp.id('admin'))),
          format('... answered {kind: invite, invite} for %s, nothing of the account in it', e))
from (values (1, 'squatter@test.local'), (2, 'Squatter2@test.local')) v(ord, e) order by ord;
select tests.authenticate_as('admin');
select api.add_workspace_member(pg_temp.id('w'), 'squatter@test.local', 'editor'), api.add_workspace_member(pg_temp.id('w'), 'squatter2@test.local', 'viewer');
select tests.clear_authentication();
select is((select jsonb_build_object('members', (select count(*) from app.workspace_members where user_id in (pg_temp.id('squatter'), pg_temp.id('squatter2'))),
                                     'invites', (select jsonb_object_agg(email, role) from app.workspace_invites where email like 'squatter%'))),
          '{"members": 0, "invites": {"squatter@test.local": "editor", "squatter2@test.local": "viewer"}}'::jsonb,
          'the unconfirmed accounts are members of nothing; their addresses are pending invites');
update auth.users set email_confirmed_at = now() where id in (pg_temp.id('squatter'), pg_temp.id('squatter2'));
select is((select jsonb_build_object('roles', jsonb_build_array(internal.workspace_role(pg_temp.id('w'), pg_temp.id('squatter')),
                                                                internal.workspace_role(pg_temp.id('w'), pg_temp.id('squatter2'))),
                                     'invites', (select count(*) from app.workspace_invites where email like 'squatter%'))),
          '{"roles": ["editor", "viewer"], "invites": 0}'::jsonb,
          '... until the address is confirmed: then the invite is taken, with the role given');
-- two accounts whose addresses differ only in case (auth.users.email is unique as written): the
-- confirmed one is added, never the unconfirmed one, whichever spelling is asked for
with u as (insert into auth.users (email, email_confirmed_at) values ('twin@test.local', null), ('Twin@Test.local', now()) returning id, email_confirmed_at)
insert into ids select case when email_confirmed_at is null then 'twin_unconfirmed' else 'twin_confirmed' end, id from u;
select is(pg_temp.value_as('admin', format('api.add_workspace_member({w}, %L, %L) #>> %L', e, 'viewer', '{member,user_id}')),
          to_jsonb(pg_temp.id('twin_confirmed')::text),
          format('adding %s, the address of a confirmed and an unconfirmed account: the confirmed one becomes the member', e))
from (values (1, 'twin@test.local'), (2, 'Twin@Test.local')) v(ord, e) order by ord;
delete from auth.users where id in (pg_temp.id('squatter'), pg_temp.id('squatter2'), pg_temp.id('twin_unconfirmed'), pg_temp.id('twin_confirmed'));

-- ---------------------------------------------------------------------------------------------
-- Tokens scoped to some canvases act on those canvases only
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('admin', jsonb_build_object('scope', format('canvas:%s:write', pg_temp.id('c1'))));
select throws_ok(format($$select api.add_workspace_member(%L, 'x@y.z', 'viewer')$$, pg_temp.id('w')), 'PX403', null,
                 'a canvas-scoped token cannot add members');
select throws_ok('select api.list_my_workspaces()', 'PX403', null, '... nor list workspaces');
select throws_ok(format('select api.list_workspace_members(%L)', pg_temp.id('w')), 'PX403', null, '... nor members');
select throws_ok($$select api.create_workspace('Scoped')$$, 'PX403', null, '... nor create a workspace');
select tests.authenticate_as('admin', '{"scope": "canvas:*:read"}');
select lives_ok(format('select api.list_workspace_members(%L)', pg_temp.id('w')), 'canvas:*:read reads members');
select throws_ok(format($$select api.rename_workspace(%L, 'R')$$, pg_temp.id('w')), 'PX403', null, '... but changes nothing');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Direct reads of app.workspace_invites (RLS): owners and admins of the workspace only. W has one
-- invite left (future-owner); by now admin is its owner, signup a viewer and `owner` an editor.
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.value_as(w, $$(select count(*) from app.workspace_invites)$$), to_jsonb(n),
          format('app.workspace_invites as %s: %s rows', w, n))
from (values (1, 'admin', 1), (2, 'signup', 0), (3, 'owner', 0), (4, 'editor', 0), (5, 'stranger', 0), (6, 'member', 0)) v(ord, w, n) order by ord;
select tests.authenticate_as('admin');
select throws_ok($$insert into app.workspace_invites (workspace_id, email, role) values (gen_random_uuid(), 'a@b.c', 'viewer')$$, '42501', null,
                 'no API role writes app.workspace_invites directly');
select tests.clear_authentication();
select is((select relrowsecurity from pg_class where oid = 'app.workspace_invites'::regclass), true, 'RLS is on');

-- ---------------------------------------------------------------------------------------------
-- A create with a client-chosen workspace_id is safe to resend (an answer lost with its
-- connection): the same caller and name answer the first call's Workspace again and write
-- nothing; anything else is a conflict naming the field, writing nothing. Two users of their own:
-- `maker` creates, `intruder` reuses the id.
-- ---------------------------------------------------------------------------------------------
create temp table answers (name text primary key, a jsonb);
grant all on answers to public;
do $$
begin
  perform tests.create_user(n) from unnest(array['maker', 'intruder', 'heir']) n;
  insert into ids select n, tests.user_id(n) from unnest(array['maker', 'intruder', 'heir']) n;
  insert into ids values ('chosen', gen_random_uuid()), ('other_id', gen_random_uuid());
  perform tests.authenticate_as('maker');
  insert into answers values ('first', api.create_workspace('  Chosen  ', pg_temp.id('chosen')));
  perform tests.clear_authentication();
end $$;
select is(answers.a - 'created_at', jsonb_build_object('workspace_id', pg_temp.id('chosen'), 'name', 'Chosen', 'role', 'owner',
                                                       'created_by', pg_temp.id('maker')),
          'create_workspace with workspace_id creates the workspace with that id: the Workspace, role owner')
from answers where name = 'first';
select is((select jsonb_build_object('members', (select jsonb_object_agg(user_id::text, role) from app.workspace_members
                                                 where workspace_id = pg_temp.id('chosen')),
                                     'audited', (select count(*) from app.system_audit
                                                 where action = 'workspace.create' and entity_id = pg_temp.id('chosen')::text))),
          jsonb_build_object('members', jsonb_build_object(pg_temp.id('maker'), 'owner'), 'audited', 1),
          '... the creator its owner, audited once');
select is(pg_temp.value_as('maker', $$api.create_workspace('Chosen', {chosen})$$), (select a from answers where name = 'first'),
          'resent with the same id and name: the first call''s answer, exactly (same created_at)');
select is(pg_temp.value_as('maker', $$api.create_workspace(' Chosen ', {chosen})$$), (select a from answers where name = 'first'),
          '... the name compared as stored (trimmed)');
select is(pg_temp.run('maker', $$api.create_workspace('Chosen', {chosen})$$), '{"outcome": "ok", "changed": [], "audit": []}'::jsonb,
          '... and nothing written: no second workspace, membership, audit row or access_changed');
select is(pg_temp.run('maker', $$api.create_workspace('Renamed', {chosen})$$),
          '{"outcome": "conflict", "field": "name", "changed": [], "audit": []}'::jsonb,
          'resent with another name: conflict naming name, nothing written');
select is(pg_temp.run('intruder', $$api.create_workspace('Chosen', {chosen})$$),
          '{"outcome": "conflict", "field": "workspace_id", "changed": [], "audit": []}'::jsonb,
          'another user''s workspace_id: conflict naming workspace_id, nothing written');
select is(pg_temp.value_as('intruder', $$api.create_workspace('Chosen', {chosen})$$),
          pg_temp.value_as('intruder', $$api.create_workspace('Guess', {chosen})$$),
          '... the same refusal whatever the name: nothing of the workspace is compared for another user');
select tests.authenticate_as('intruder');
select throws_ok(format($$select api.create_workspace('Chosen', %L)$$, pg_temp.id('chosen')), 'PX409',
                 'workspace_id is already taken: send a new one (a random UUID) to create a workspace',
                 '... and its message names nothing of it');
select tests.clear_authentication();
select is(pg_temp.value_as('intruder', $$api.list_my_workspaces() -> 'workspaces'$$), '[]'::jsonb, '... nor does it make the intruder a member');
select is(pg_temp.run('nobody', $$api.create_workspace('Chosen', {chosen})$$) ->> 'outcome', 'unauthorized',
          'no user: unauthorized, before the id is looked at');
select is(pg_temp.run('maker', $$api.create_workspace('   ', {chosen})$$) - 'changed' - 'audit',
          '{"outcome": "invalid_input", "field": "name"}'::jsonb, 'an invalid name: invalid_input naming name, id or not');
select tests.authenticate_as('maker', jsonb_build_object('scope', format('canvas:%s:write', pg_temp.id('c1'))));
select throws_ok(format($$select api.create_workspace('Chosen', %L)$$, pg_temp.id('chosen')), 'PX403', null,
                 'a canvas-scoped token: forbidden, resend or not');
select tests.clear_authentication();
select is(pg_temp.run('maker', $$api.create_workspace('Chosen', {other_id})$$) -> 'audit', '["workspace.create"]'::jsonb,
          'a new workspace_id with the same name: a second workspace (the id, not the name, is the creation)');

-- without workspace_id, as before: every call creates a workspace of its own
do $$
begin
  perform tests.authenticate_as('maker');
  insert into answers values ('twice_1', api.create_workspace('Twice')), ('twice_2', api.create_workspace('Twice'));
  perform tests.clear_authentication();
end $$;
select is((select count(distinct w.workspace_id) from answers a join app.workspaces w on w.workspace_id = (a.a ->> 'workspace_id')::uuid
           where a.name like 'twice_%' and w.name = 'Twice'), 2::bigint,
          'without workspace_id each call creates a workspace, with an id of the server''s');

-- the answer's role is the caller's now; a creator who has left has nothing to be answered
select tests.authenticate_as('maker');
select api.add_workspace_member(pg_temp.id('chosen'), 'heir@test.local', 'owner');
select api.update_workspace_member(pg_temp.id('chosen'), pg_temp.id('maker'), 'editor');
select tests.clear_authentication();
select is(pg_temp.value_as('maker', $$api.create_workspace('Chosen', {chosen})$$),
          (select a || '{"role": "editor"}' from answers where name = 'first'),
          'resent after the creator became an editor: the same Workspace with the role they have now');
select tests.authenticate_as('maker');
select api.remove_workspace_member(pg_temp.id('chosen'), pg_temp.id('maker'));
select tests.clear_authentication();
select is(pg_temp.run('maker', $$api.create_workspace('Chosen', {chosen})$$),
          '{"outcome": "conflict", "field": "workspace_id", "changed": [], "audit": []}'::jsonb,
          'resent after the creator left: conflict naming workspace_id, nothing written (no way back in)');

select * from finish();
rollback;
