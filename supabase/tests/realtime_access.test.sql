-- Live re-authorization: every change that may take away (or change) someone's access to a canvas
-- writes an `access_changed` message on the canvas's private topic in the same transaction, so
-- the realtime gateways re-check that user's open sockets after commit — whoever made the change,
-- even by plain SQL. Payload {canvas_id, user_id, reason}; user_id null = everyone re-checks.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(38);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
-- the access_changed messages written since the last pg_temp.reset(), as comparable text
create function pg_temp.changes() returns text language sql stable as $$
  select coalesce(string_agg(format('%s/%s/%s', n.name, coalesce(u.name, '*'), m.payload ->> 'reason'), ' ' order by n.name, u.name), '')
  from realtime.messages m
  join ids n on m.topic = 'canvas:' || n.id and (m.payload ->> 'canvas_id')::uuid = n.id
  left join ids u on u.id = (m.payload ->> 'user_id')::uuid
  where m.event = 'access_changed'
$$;
create function pg_temp.reset() returns void language sql as $$ delete from realtime.messages where event = 'access_changed' $$;

-- Fixture: workspace W (owner, editor, viewer) with live canvases c1, c2 and soft-deleted c3;
-- workspace X of the outsider with canvas d; `guest` has no workspace role yet.
do $$
declare v_w uuid; v_x uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'editor', 'viewer', 'guest', 'outsider']) n;
  perform tests.authenticate_as('owner');
  v_w := api.create_workspace('W') ->> 'workspace_id';
  perform api.set_workspace_member(v_w, tests.user_id('editor'), 'editor');
  perform api.set_workspace_member(v_w, tests.user_id('viewer'), 'viewer');
  insert into ids values ('w', v_w),
    ('c1', (api.create_canvas(v_w, 'c1') ->> 'canvas_id')::uuid),
    ('c2', (api.create_canvas(v_w, 'c2') ->> 'canvas_id')::uuid),
    ('c3', (api.create_canvas(v_w, 'c3') ->> 'canvas_id')::uuid);
  perform api.delete_canvas(pg_temp.id('c3'));
  perform tests.authenticate_as('outsider');
  v_x := api.create_workspace('X') ->> 'workspace_id';
  insert into ids values ('x', v_x), ('d', (api.create_canvas(v_x, 'd') ->> 'canvas_id')::uuid);
  perform tests.clear_authentication();
  insert into ids select n, tests.user_id(n) from unnest(array['owner', 'editor', 'viewer', 'guest', 'outsider']) n;
end $$;
set constraints all immediate; set constraints all deferred; -- the fixture's pending messages, as at commit
select pg_temp.reset();

-- ---------------------------------------------------------------------------------------------
-- Workspace membership
-- ---------------------------------------------------------------------------------------------
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('editor');
select is(pg_temp.changes(), 'c1/editor/workspace_member c2/editor/workspace_member',
          'removing a workspace member by plain SQL re-checks that user on each live canvas of the workspace (not the deleted c3)');
select is((select count(*) from realtime.messages where event = 'access_changed'
           and private and extension = 'broadcast' and topic = 'canvas:' || (payload ->> 'canvas_id')), 2::bigint,
          '... as private broadcast messages on each canvas''s own topic');
select tests.authenticate_as('editor');
select set_config('realtime.topic', 'canvas:' || pg_temp.id('c1'), true);
select is((select count(*) from realtime.messages), 0::bigint,
          '... and the re-check (the RLS join probe) now refuses the removed member, who does not see the message');
-- the row is private: Supabase Realtime would deliver it to the canvas's members only
select tests.authenticate_as('viewer');
select is((select count(*) from realtime.messages where event = 'access_changed'), 1::bigint,
          'a member joined to canvas:c1 may read the c1 message (the gateway itself never forwards it)');
select tests.authenticate_as('outsider');
select is((select count(*) from realtime.messages where event = 'access_changed'), 0::bigint, 'a non-member may not');
select tests.clear_authentication();
select set_config('role', 'anon', true);
select throws_ok('select count(*) from realtime.messages', '42501', null, '... nor anon');
select tests.clear_authentication();

select pg_temp.reset();
select tests.authenticate_as('owner');
select lives_ok(format('select api.set_workspace_member(%L, %L, %L)', pg_temp.id('w'), pg_temp.id('viewer'), 'editor'),
                'the owner promotes the viewer through the api');
select tests.clear_authentication();
select is(pg_temp.changes(), 'c1/viewer/workspace_member c2/viewer/workspace_member', 'a role change re-checks the user on every live canvas');

select pg_temp.reset();
update app.workspace_members set role = 'viewer' where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('viewer');
select is(pg_temp.changes(), 'c1/viewer/workspace_member c2/viewer/workspace_member', 'a downgrade by plain SQL too');

select pg_temp.reset();
update app.workspace_members set role = role where workspace_id = pg_temp.id('w');
select is(pg_temp.changes(), '', 'an update that changes no role says nothing');

select pg_temp.reset();
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('guest'), 'viewer');
select is(pg_temp.changes(), '', 'a new workspace member had no access before: nothing to re-check');
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('guest');

select pg_temp.reset();
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('editor'), 'editor');
select pg_temp.reset();
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id in (pg_temp.id('editor'), pg_temp.id('viewer'));
select is(pg_temp.changes(), 'c1/editor/workspace_member c1/viewer/workspace_member c2/editor/workspace_member c2/viewer/workspace_member',
          'a bulk removal sends one message per canvas and user');
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('editor'), 'editor'),
                                                                      (pg_temp.id('w'), pg_temp.id('viewer'), 'viewer');

-- ---------------------------------------------------------------------------------------------
-- Losing read access also leaves the canvas (the member's own socket is closed and can no longer
-- call api.leave_canvas): the presence row goes, the others hear presence_leave; a role change
-- that keeps access keeps the presence
-- ---------------------------------------------------------------------------------------------
insert into app.presence (canvas_id, user_id) values (pg_temp.id('c1'), pg_temp.id('editor')), (pg_temp.id('c1'), pg_temp.id('viewer'))
on conflict do nothing;
delete from realtime.messages where event = 'presence_leave';
update app.workspace_members set role = 'editor' where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('viewer');
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('editor');
select is((select string_agg(u.name, ' ' order by u.name) from app.presence p join ids u on u.id = p.user_id where p.canvas_id = pg_temp.id('c1')),
          'viewer', 'a removed member''s presence row is deleted with the removal; a member whose role changed keeps theirs');
select is((select count(*) from realtime.messages where event = 'presence_leave' and topic = 'canvas:' || pg_temp.id('c1') and private
           and (payload ->> 'user_id')::uuid = pg_temp.id('editor')), 1::bigint,
          '... and the canvas hears presence_leave for them, in the same transaction');
select is((select count(*) from realtime.messages where event = 'presence_leave' and (payload ->> 'user_id')::uuid = pg_temp.id('viewer')), 0::bigint,
          '... not for the member who kept access');
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('editor'), 'editor');
update app.workspace_members set role = 'viewer' where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('viewer');
delete from app.presence;
select pg_temp.reset();


-- ---------------------------------------------------------------------------------------------
-- Canvas membership (a canvas role replaces the workspace role on one canvas)
-- ---------------------------------------------------------------------------------------------
select pg_temp.reset();
insert into app.canvas_members (canvas_id, user_id, role) values (pg_temp.id('c1'), pg_temp.id('guest'), 'editor');
select is(pg_temp.changes(), 'c1/guest/canvas_member', 'granting a canvas role re-checks that user on that canvas only');

select pg_temp.reset();
insert into app.canvas_members (canvas_id, user_id, role) values (pg_temp.id('c2'), pg_temp.id('editor'), 'viewer');
select is(pg_temp.changes(), 'c2/editor/canvas_member', 'a canvas role that downgrades a workspace editor on c2 re-checks them there');
select is((select internal.canvas_role(pg_temp.id('c2'), pg_temp.id('editor'))), 'viewer'::app.member_role, '... whose role on c2 is now viewer');

select pg_temp.reset();
update app.canvas_members set role = 'viewer' where canvas_id = pg_temp.id('c1') and user_id = pg_temp.id('guest');
select is(pg_temp.changes(), 'c1/guest/canvas_member', 'changing a canvas role re-checks the user');

select pg_temp.reset();
update app.canvas_members set role = role;
select is(pg_temp.changes(), '', 'an update that changes no canvas role says nothing');

select pg_temp.reset();
insert into app.workspace_members (workspace_id, user_id, role) values (pg_temp.id('w'), pg_temp.id('guest'), 'owner');
select is(pg_temp.changes(), 'c1/guest/workspace_member',
          'a new workspace membership re-checks the canvases where the user already had a canvas role (an owner overrides it)');
delete from app.workspace_members where workspace_id = pg_temp.id('w') and user_id = pg_temp.id('guest');

select pg_temp.reset();
delete from app.canvas_members where canvas_id = pg_temp.id('c1') and user_id = pg_temp.id('guest');
select is(pg_temp.changes(), 'c1/guest/canvas_member', 'removing a canvas role re-checks the user');
select is((select internal.canvas_role(pg_temp.id('c1'), pg_temp.id('guest'))), null, '... who has no access left');

-- ---------------------------------------------------------------------------------------------
-- Canvases
-- ---------------------------------------------------------------------------------------------
select pg_temp.reset();
select tests.authenticate_as('owner');
select lives_ok(format('select api.upsert_block_atomic(%L, null, %L, %L, null, %L)', pg_temp.id('c1'), 'create', 'acc-1', '{"type":"text"}'),
                'a block mutation (which advances the canvas''s last_seq) ...');
select lives_ok(format('select api.update_canvas(%L, %L)', pg_temp.id('c1'), 'renamed'), '... and a rename ...');
select tests.clear_authentication();
select is(pg_temp.changes(), '', '... change nobody''s access: nothing to re-check');

select pg_temp.reset();
select tests.authenticate_as('owner');
select lives_ok(format('select api.delete_canvas(%L)', pg_temp.id('c2')), 'the owner deletes c2 through the api');
select tests.clear_authentication();
select is(pg_temp.changes(), '', 'the canvas triggers are deferred: nothing yet before commit ...');
set constraints all immediate; -- what commit does (and from here on, at the end of each statement)
select is(pg_temp.changes(), 'c2/*/canvas_deleted', '... then deleting a canvas re-checks everyone on it (user_id null)');
select is((select count(*) from realtime.messages where topic = 'canvas:' || pg_temp.id('c2') and event = 'canvas_deleted'), 1::bigint,
          '... beside the canvas_deleted broadcast the api sends');

select pg_temp.reset();
update app.canvases set deleted_at = now() where canvas_id = pg_temp.id('c1');
select is(pg_temp.changes(), 'c1/*/canvas_deleted', 'a soft delete by plain SQL too');
update app.canvases set deleted_at = null where canvas_id = pg_temp.id('c1');

select pg_temp.reset();
update app.canvases set deleted_at = now() where canvas_id = pg_temp.id('c3');
delete from app.canvases where canvas_id = pg_temp.id('c3');
select is(pg_temp.changes(), '', 'touching or purging an already deleted canvas says nothing new');

select pg_temp.reset();
update app.canvases set workspace_id = pg_temp.id('x') where canvas_id = pg_temp.id('c1');
select is(pg_temp.changes(), 'c1/*/canvas_moved', 'moving a canvas to another workspace re-checks everyone on it');
select is((select internal.canvas_role(pg_temp.id('c1'), pg_temp.id('viewer'))), null, '... (the old workspace''s members lost it)');

select pg_temp.reset();
delete from app.canvases where canvas_id = pg_temp.id('d');
select is(pg_temp.changes(), 'd/*/canvas_deleted', 'purging a live canvas re-checks everyone on it');

select pg_temp.reset();
delete from app.workspaces where workspace_id = pg_temp.id('x');
select is(pg_temp.changes(), 'c1/*/canvas_deleted', 'deleting a workspace re-checks everyone on each of its live canvases');

select tests.clear_authentication();
select is((select count(*) from pg_trigger where tgname like 'access_changed_%' and not tgisinternal), 8::bigint,
          'eight triggers: insert/update/delete on each membership table, update/delete on canvases');
select is((select count(*) from pg_trigger where tgname like 'access_changed_%' and tgdeferrable and tginitdeferred), 2::bigint,
          'the two on canvases run at commit, after the transaction''s own messages');

select * from finish();
rollback;
