-- Presence: every update_presence is broadcast to the canvas topic (cursor, typing), but the
-- durable app.presence row is written at most once per presence_write_interval_seconds (30 s)
-- per user; leave_canvas removes the row and broadcasts the departure. Members only.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(54);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
-- what was broadcast on canvas C (read as postgres, past RLS)
create function pg_temp.broadcasts(p_event text, p_who text) returns setof jsonb language sql stable as $$
  select payload from realtime.messages
  where topic = 'canvas:' || pg_temp.id('c') and event = p_event and payload ->> 'user_id' = tests.user_id(p_who)::text
$$;

do $$
declare v_ws uuid; v_c uuid;
begin
  perform tests.create_user(n) from unnest(array['owner', 'viewer', 'outsider']) n;
  perform tests.authenticate_as('owner');
  v_ws := api.create_workspace('Presence') ->> 'workspace_id';
  perform api.set_workspace_member(v_ws, tests.user_id('viewer'), 'viewer');
  v_c := api.create_canvas(v_ws, 'C') ->> 'canvas_id';
  perform tests.clear_authentication();
  insert into ids values ('c', v_c);
end $$;

select is((select (value #>> '{}')::int from app.settings where key = 'presence_write_interval_seconds'), 30,
          'the durable presence write interval is 30 seconds by default');

-- ---------------------------------------------------------------------------------------------
-- The first update writes the durable row and broadcasts
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), '{"x":10,"y":20}', true) -> 'last_active_at_updated', 'true'::jsonb,
          'a first update_presence writes the durable row (last_active_at_updated = true)');
select tests.clear_authentication();
select is((select count(*) from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')), 1::bigint,
          'one app.presence row for the viewer on C');
select is((select typing from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')), true,
          '... recording typing');
select is((select count(*) from pg_temp.broadcasts('presence', 'viewer')), 1::bigint, 'one presence event was broadcast');
select is((select p from pg_temp.broadcasts('presence', 'viewer') p),
          jsonb_build_object('user_id', tests.user_id('viewer'), 'cursor', '{"x":10,"y":20}'::jsonb, 'typing', true),
          '... carrying user_id, cursor and typing');
select ok((select bool_and(private) from realtime.messages where topic = 'canvas:' || pg_temp.id('c') and event = 'presence'),
          '... on the private canvas channel');

-- ---------------------------------------------------------------------------------------------
-- Within the interval: broadcast, but no durable write
-- ---------------------------------------------------------------------------------------------
update app.presence set last_active_at = now() - interval '29 seconds'
where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer');
select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), '{"x":11,"y":21}', false) -> 'last_active_at_updated', 'false'::jsonb,
          '29 s after the last write, update_presence does not write (last_active_at_updated = false)');
select tests.clear_authentication();
select is((select last_active_at from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')),
          now() - interval '29 seconds', '... last_active_at is unchanged');
select is((select typing from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')), true,
          '... and so is typing');
select is((select count(*) from pg_temp.broadcasts('presence', 'viewer')), 2::bigint, '... but the update is still broadcast');
select ok(exists (select from pg_temp.broadcasts('presence', 'viewer') p
                  where p = jsonb_build_object('user_id', tests.user_id('viewer'), 'cursor', '{"x":11,"y":21}'::jsonb, 'typing', false)),
          '... with the new cursor and typing');

select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), '{"x":12}') -> 'last_active_at_updated', 'false'::jsonb,
          'an immediate repeat does not write either');
select tests.authenticate_as('owner');
select is(api.update_presence(pg_temp.id('c'), '{"x":1}') -> 'last_active_at_updated', 'true'::jsonb,
          'the interval is per user: another member''s first update writes');

-- ---------------------------------------------------------------------------------------------
-- After the interval: the next update writes again
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
update app.presence set last_active_at = now() - interval '31 seconds'
where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer');
select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), '{"x":13}', false) -> 'last_active_at_updated', 'true'::jsonb,
          '31 s after the last write, update_presence writes again');
select tests.clear_authentication();
select is((select last_active_at from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')),
          now(), '... last_active_at is now');
select is((select typing from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')), false,
          '... and typing is updated');

update app.settings set value = '10' where key = 'presence_write_interval_seconds';
update app.presence set last_active_at = now() - interval '15 seconds'
where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer');
select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), null, true) -> 'last_active_at_updated', 'true'::jsonb,
          'the interval comes from app.settings: at 10 s, 15 s later writes');
select tests.clear_authentication();
update app.settings set value = '30' where key = 'presence_write_interval_seconds';

-- ---------------------------------------------------------------------------------------------
-- Cursor validation: a JSON object of at most 1024 bytes
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select throws_ok(format($$select api.update_presence(%L, '[1,2]')$$, pg_temp.id('c')), 'PX400', null,
                 'a cursor that is an array is invalid_input');
select throws_ok(format($$select api.update_presence(%L, '"here"')$$, pg_temp.id('c')), 'PX400', null,
                 'a cursor that is a string is invalid_input');
select throws_ok(format($$select api.update_presence(%L, jsonb_build_object('pad', repeat('x', 1100)))$$, pg_temp.id('c')), 'PX400', null,
                 'a cursor over 1024 bytes is invalid_input');
select lives_ok(format($$select api.update_presence(%L, jsonb_build_object('pad', repeat('x', 1000)))$$, pg_temp.id('c')),
                'a cursor just under 1024 bytes is accepted');
-- the state every member's client shows: name and color (free text before), typing, cursor, selection
select is(tests.error_of(format('select api.update_presence(%L, %L::jsonb)', pg_temp.id('c'), s)),
          jsonb_build_object('state', 'PX400', 'code', 'invalid_input', 'field', f), format('a presence state %s: invalid_input %s', s, f))
  from (values ('{"name": "evil\u202etxt.exe"}', 'cursor.name'), ('{"name": "a\u0007b"}', 'cursor.name'), ('{"name": "   "}', 'cursor.name'),
               ('{"name": ""}', 'cursor.name'), ('{"name": 42}', 'cursor.name'), (format('{"name": "%s"}', repeat('n', 101)), 'cursor.name'),
               ('{"color": "red;position:fixed;inset:0"}', 'cursor.color'), ('{"color": "url(https://tracker.example/p.png)"}', 'cursor.color'),
               ('{"color": "var(--x, url(a))"}', 'cursor.color'), ('{"color": "#fff\""}', 'cursor.color'), ('{"color": ["red"]}', 'cursor.color'),
               ('{"typing": "yes"}', 'cursor.typing'), ('{"cursor": 1}', 'cursor.cursor'), ('{"selection": "all"}', 'cursor.selection'),
               ('{"phx_ref": "F1"}', 'cursor.phx_ref'), ('{"presence_ref": "F1"}', 'cursor.presence_ref')) t(s, f);
select is(tests.error_of(format('select api.update_presence(%L, %L::jsonb)', pg_temp.id('c'), s)), null, format('a presence state %s is accepted', s))
  from unnest(array['{"name": "Ann Lee", "color": "hsl(210 70% 45%)", "typing": true, "cursor": {"x": 1, "y": 2}, "selection": null}',
                    '{"name": "家族 👨‍👩‍👧", "color": "#1A2b3C"}', '{"color": "rebeccapurple"}', '{"color": "rgb(1 2 3 / 50%)"}',
                    format('{"name": "%s"}', repeat('n', 100)), '{"name": null, "color": null, "app": {"anything": "\u0007"}}']) s;

-- ---------------------------------------------------------------------------------------------
-- Members only
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('outsider');
select throws_ok(format($$select api.update_presence(%L, '{"x":0}')$$, pg_temp.id('c')), 'PX404', null,
                 'a non-member''s update_presence is not_found');
select throws_ok(format($$select api.leave_canvas(%L)$$, pg_temp.id('c')), 'PX404', null,
                 'a non-member''s leave_canvas is not_found');
select tests.clear_authentication();
select is((select count(*) from realtime.messages where topic = 'canvas:' || pg_temp.id('c')
           and payload ->> 'user_id' = tests.user_id('outsider')::text), 0::bigint,
          'nothing was broadcast on the outsider''s behalf');
select tests.authenticate_as('owner');
select is(array(select user_id from app.presence where canvas_id = pg_temp.id('c') order by user_id),
          array(select tests.user_id(u) from unnest(array['owner', 'viewer']) u order by 1),
          'members see who is present on C (RLS)');

-- ---------------------------------------------------------------------------------------------
-- leave_canvas: the row goes, the departure is broadcast
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('viewer');
select lives_ok(format('select api.leave_canvas(%L)', pg_temp.id('c')), 'the viewer leaves C');
select tests.clear_authentication();
select is((select count(*) from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('viewer')), 0::bigint,
          'the viewer''s presence row is removed');
select is((select count(*) from app.presence where canvas_id = pg_temp.id('c') and user_id = tests.user_id('owner')), 1::bigint,
          'the owner''s presence row stays');
select is((select count(*) from pg_temp.broadcasts('presence_leave', 'viewer')), 1::bigint,
          'a presence_leave event is broadcast to canvas:C');
select is((select p from pg_temp.broadcasts('presence_leave', 'viewer') p), jsonb_build_object('user_id', tests.user_id('viewer')),
          '... naming who left');
select tests.authenticate_as('viewer');
select is(api.update_presence(pg_temp.id('c'), '{"x":1}') -> 'last_active_at_updated', 'true'::jsonb,
          'coming back after leaving writes a fresh row');

select * from finish();
rollback;
