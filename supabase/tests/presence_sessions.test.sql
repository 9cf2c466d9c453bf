-- Presence sessions (sql/rpc/presence.sql, app.presence_sessions): a user's app.presence row on a
-- canvas lives while one of their sessions (a realtime-js channel, an H1 socket) there does.
--   - update_presence with p_session records the session with the row;
--   - leave_canvas with p_session removes that session; the row goes, with one presence_leave,
--     only when it was the user's last; a session not there changes and broadcasts nothing;
--   - leave_canvas without p_session (HTTP H6) removes the row and every session, as before;
--   - a session id is '<node>/<id>', and a user holds at most presence_sessions_max per canvas;
--   - nobody but the functions reads or writes sessions; a gateway removes a dead node's sessions
--     (internal.remove_node_presence_sessions, potentia_app only) with the same rule, and finds the
--     nodes that hold sessions (internal.presence_session_nodes, potentia_app only);
--   - the cleanup's expiry of a row takes its sessions: they never keep a row alive.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(52);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
-- presence_leave broadcasts for user p_who on canvas p_canvas (read as postgres, past RLS)
create function pg_temp.leaves(p_canvas text, p_who text) returns bigint language sql stable as $$
  select count(*) from realtime.messages
  where topic = 'canvas:' || pg_temp.id(p_canvas) and event = 'presence_leave' and payload ->> 'user_id' = tests.user_id(p_who)::text
$$;
create function pg_temp.present(p_canvas text, p_who text) returns boolean language sql stable as $$
  select exists (select from app.presence where canvas_id = pg_temp.id(p_canvas) and user_id = tests.user_id(p_who))
$$;
create function pg_temp.sessions(p_canvas text, p_who text) returns text[] language sql stable as $$
  select coalesce(array_agg(session_id order by session_id), '{}') from app.presence_sessions
  where canvas_id = pg_temp.id(p_canvas) and user_id = tests.user_id(p_who)
$$;

do $$
declare v_ws uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'viewer']) n;
  perform tests.authenticate_as('owner');
  v_ws := api.create_workspace('Sessions') ->> 'workspace_id';
  perform api.set_workspace_member(v_ws, tests.user_id('viewer'), 'viewer');
  insert into ids values ('c', (api.create_canvas(v_ws, 'C') ->> 'canvas_id')::uuid), ('d', (api.create_canvas(v_ws, 'D') ->> 'canvas_id')::uuid);
  perform tests.clear_authentication();
end $$;

-- ---------------------------------------------------------------------------------------------
-- Two sessions: leaving one keeps the row and broadcasts nothing; leaving the last leaves
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select lives_ok(format($$select api.update_presence(%L, null, false, 'node-1/1')$$, pg_temp.id('c')), 'a first tab (session node-1/1) writes presence');
select lives_ok(format($$select api.update_presence(%L, null, false, 'node-2/7')$$, pg_temp.id('c')), 'a second tab on another gateway (node-2/7) too');
select lives_ok(format($$select api.update_presence(%L, '{"x":1}', false, 'node-1/1')$$, pg_temp.id('c')), 'a repeated write of a session is idempotent');
select tests.clear_authentication();
select is(pg_temp.sessions('c', 'viewer'), array['node-1/1', 'node-2/7'], 'the viewer holds two sessions on C');
select is((select array_agg(node_id order by node_id) from app.presence_sessions where canvas_id = pg_temp.id('c')), array['node-1', 'node-2'],
          '... each named by its node (the part before /)');

select tests.authenticate_as('viewer');
select lives_ok(format($$select api.leave_canvas(%L, 'node-1/1')$$, pg_temp.id('c')), 'the first tab leaves');
select tests.clear_authentication();
select ok(pg_temp.present('c', 'viewer'), '... the row stays: the other tab is still there');
select is(pg_temp.sessions('c', 'viewer'), array['node-2/7'], '... with the other session');
select is(pg_temp.leaves('c', 'viewer'), 0::bigint, '... and no presence_leave was broadcast');

select tests.authenticate_as('viewer');
select lives_ok(format($$select api.leave_canvas(%L, 'node-1/1')$$, pg_temp.id('c')), 'the first tab''s leave again (a gateway repeating it)');
select tests.clear_authentication();
select ok(pg_temp.present('c', 'viewer'), '... changes nothing: the row stays');
select is(pg_temp.leaves('c', 'viewer'), 0::bigint, '... and broadcasts nothing');

select tests.authenticate_as('viewer');
select lives_ok(format($$select api.leave_canvas(%L, 'node-2/7')$$, pg_temp.id('c')), 'the last tab leaves');
select tests.clear_authentication();
select ok(not pg_temp.present('c', 'viewer'), '... the row is deleted');
select is(pg_temp.leaves('c', 'viewer'), 1::bigint, '... and one presence_leave broadcast');
select is((select payload from realtime.messages where topic = 'canvas:' || pg_temp.id('c') and event = 'presence_leave'),
          jsonb_build_object('user_id', tests.user_id('viewer')), '... carrying the user_id, on canvas:<id>');

select tests.authenticate_as('viewer');
select lives_ok(format($$select api.leave_canvas(%L, 'node-2/7')$$, pg_temp.id('c')), 'the last tab''s leave repeated');
select tests.clear_authentication();
select is(pg_temp.leaves('c', 'viewer'), 1::bigint, '... broadcasts no second presence_leave');

-- a session recorded again after its row went (expired, its node taken for dead while alive) makes the row again
select tests.authenticate_as('viewer');
select lives_ok(format($$select api.update_presence(%L, null, false, 'node-2/7')$$, pg_temp.id('c')), 'a write of a session whose row went');
select tests.clear_authentication();
select ok(pg_temp.present('c', 'viewer') and pg_temp.sessions('c', 'viewer') = array['node-2/7'], '... makes the row and the session again');

-- ---------------------------------------------------------------------------------------------
-- A leave without a session (HTTP H6): the row and all its sessions, as before
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select api.update_presence(pg_temp.id('c'), null, false, 'node-3/1');
select api.leave_canvas(pg_temp.id('c'));
select tests.clear_authentication();
select ok(not pg_temp.present('c', 'viewer'), 'a leave without a session deletes the row though two sessions held it');
select is(pg_temp.sessions('c', 'viewer'), '{}'::text[], '... and every session');
select is(pg_temp.leaves('c', 'viewer'), 2::bigint, '... with a presence_leave');

-- an HTTP write (no session) beside a session: the row is the session's to end
select tests.authenticate_as('viewer');
select api.update_presence(pg_temp.id('c'));
select api.update_presence(pg_temp.id('c'), null, false, 'node-3/2');
select api.leave_canvas(pg_temp.id('c'), 'node-3/2');
select tests.clear_authentication();
select ok(not pg_temp.present('c', 'viewer'), 'an HTTP write beside one session: that session''s leave ends the row');

-- ---------------------------------------------------------------------------------------------
-- Session ids and their bound
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select is(tests.error_of(format($$select api.update_presence(%L, null, false, 'no-slash')$$, pg_temp.id('c'))),
          '{"state": "PX400", "code": "invalid_input", "field": "session"}'::jsonb, 'a session without a node part is invalid_input, field session');
select is(tests.error_of(format($$select api.update_presence(%L, null, false, %L)$$, pg_temp.id('c'), 'n/' || repeat('x', 65))),
          '{"state": "PX400", "code": "invalid_input", "field": "session"}'::jsonb, 'a session part over 64 characters is invalid_input, field session');
select is(tests.error_of(format($$select api.update_presence(%L, null, false, 'n/a b')$$, pg_temp.id('c'))),
          '{"state": "PX400", "code": "invalid_input", "field": "session"}'::jsonb, 'a session with a space is invalid_input, field session');
select is(tests.error_of(format($$select api.leave_canvas(%L, 'n/a%%')$$, pg_temp.id('c'))),
          '{"state": "PX400", "code": "invalid_input", "field": "session"}'::jsonb, 'leave_canvas checks the session too');
select tests.clear_authentication();
select ok(not pg_temp.present('c', 'viewer'), '... nothing was written');

update app.settings set value = '3' where key = 'presence_sessions_max';
select tests.authenticate_as('viewer');
select api.update_presence(pg_temp.id('c'), null, false, 'n/' || i) from generate_series(1, 3) i;
select is(tests.error_of(format($$select api.update_presence(%L, null, false, 'n/4')$$, pg_temp.id('c'))),
          '{"state": "PX400", "code": "invalid_input", "field": "session"}'::jsonb, 'a fourth session past presence_sessions_max 3 is invalid_input, field session');
select lives_ok(format($$select api.update_presence(%L, null, false, 'n/3')$$, pg_temp.id('c')), '... while one held already is written again');
select lives_ok(format($$select api.update_presence(%L, null, false, 'n/1')$$, pg_temp.id('d')), '... and the bound is per canvas');
select tests.clear_authentication();
select is(cardinality(pg_temp.sessions('c', 'viewer')), 3, '... the refused session was not recorded');
update app.settings set value = '256' where key = 'presence_sessions_max';

-- ---------------------------------------------------------------------------------------------
-- Nobody but the functions reads or writes sessions
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select throws_ok('select * from app.presence_sessions', '42501', null, 'a member cannot read sessions (another user''s or their own)');
select throws_ok(format($$delete from app.presence_sessions where canvas_id = %L$$, pg_temp.id('c')), '42501', null, '... nor delete them');
select throws_ok(format($$insert into app.presence_sessions (canvas_id, user_id, session_id) values (%L, %L, 'x/1')$$,
                        pg_temp.id('c'), tests.user_id('viewer')), '42501', null, '... nor insert one');
select lives_ok(format($$select api.leave_canvas(%L, 'n/1')$$, pg_temp.id('c')), 'another user''s leave of the viewer''s session id');
select tests.clear_authentication();
select is(cardinality(pg_temp.sessions('c', 'viewer')), 3, '... touches only their own: the viewer''s sessions stay');
select ok(not has_function_privilege('authenticated', 'internal.remove_node_presence_sessions(text)', 'execute')
          and not has_function_privilege('service_role', 'internal.remove_node_presence_sessions(text)', 'execute')
          and has_function_privilege('potentia_app', 'internal.remove_node_presence_sessions(text)', 'execute'),
          'only the processes'' role (potentia_app) may remove a node''s sessions');

-- ---------------------------------------------------------------------------------------------
-- A gateway taken for dead: its sessions leave with the same rule
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select api.update_presence(pg_temp.id('c'), null, false, 'dead/1');
select api.update_presence(pg_temp.id('c'), null, false, 'alive/1');
select tests.authenticate_as('viewer');
select api.update_presence(pg_temp.id('c'), null, false, 'dead/2');
select tests.clear_authentication();
delete from realtime.messages where event = 'presence_leave';
select is(internal.remove_node_presence_sessions('dead'), 0, 'removing node dead: nobody leaves (the owner is on node alive, the viewer on node n)');
select ok(pg_temp.present('c', 'owner') and pg_temp.sessions('c', 'owner') = array['alive/1'], '... the owner''s row stays, with their live session');
select is(pg_temp.leaves('c', 'owner'), 0::bigint, '... and no presence_leave for them');
select ok(pg_temp.present('c', 'viewer') and pg_temp.sessions('c', 'viewer') = array['n/1', 'n/2', 'n/3'], '... the viewer''s session of node dead went, those of node n stay');
select is(internal.remove_node_presence_sessions('n'), 2, 'removing node n: the viewer leaves C and D (its sessions were their only ones)');
select is(pg_temp.leaves('c', 'viewer') + pg_temp.leaves('d', 'viewer'), 2::bigint, '... one presence_leave on each canvas');
select is(internal.remove_node_presence_sessions('n'), 0, 'removing it again (another gateway) changes nothing');
select is(pg_temp.leaves('c', 'viewer') + pg_temp.leaves('d', 'viewer'), 2::bigint, '... and broadcasts nothing more');

-- The nodes that hold sessions (a gateway removes those of the ones its cluster does not know)
select ok(not has_function_privilege('authenticated', 'internal.presence_session_nodes()', 'execute')
          and not has_function_privilege('service_role', 'internal.presence_session_nodes()', 'execute')
          and not has_function_privilege('anon', 'internal.presence_session_nodes()', 'execute')
          and has_function_privilege('potentia_app', 'internal.presence_session_nodes()', 'execute'),
          'only the processes'' role (potentia_app) may list the nodes that hold sessions');
select tests.authenticate_as('owner');
select api.update_presence(pg_temp.id('c'), null, false, 'alive/2');
select tests.clear_authentication();
select is(array(select n from internal.presence_session_nodes() n where n in ('alive', 'dead', 'n') order by n), array['alive'],
          'the nodes holding sessions: alive (the owner''s two); dead and n, removed, are not listed');
select is((select count(*) from internal.presence_session_nodes() n where n = 'alive'), 1::bigint, '... each node once, however many sessions it holds');

-- ---------------------------------------------------------------------------------------------
-- Expiry: a row not written for presence_expiry_seconds goes with its sessions (the backstop for
-- the sessions of a gateway nobody saw die): sessions never keep a row alive
-- ---------------------------------------------------------------------------------------------
update app.presence set last_active_at = now() - interval '121 seconds' where canvas_id = pg_temp.id('c') and user_id = tests.user_id('owner');
select ok((select (internal.cleanup() ->> 'presence_expired')::int >= 1), 'the cleanup expires the owner''s row, though a session held it');
select ok(not pg_temp.present('c', 'owner') and pg_temp.sessions('c', 'owner') = '{}', '... and its session went with it');

select * from finish();
rollback;
