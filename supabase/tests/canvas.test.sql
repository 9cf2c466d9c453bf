-- Canvases: workspaces and canvases are created, renamed (version + 1), validated and
-- soft-deleted; a canvas created with a client-chosen canvas_id is answered again, not created
-- twice, when the create is resent; blocks are read one by one or keyset-paginated in rank order;
-- permissions are reported per role; a token's `scope` claim narrows what it may do.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(86);

create temp table ids (name text primary key, id uuid not null);
grant all on ids to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
create function pg_temp.remember(p_name text, p_id text) returns uuid language sql as $$
  insert into ids values (p_name, p_id::uuid) on conflict (name) do update set id = excluded.id returning id
$$;
do $$ begin perform tests.create_user(n) from unnest(array['owner', 'admin', 'editor', 'viewer']) n; end $$;
-- a refusal as {error, field, message}, or the value
create function pg_temp.outcome(p_sql text) returns jsonb language plpgsql as $$
declare v_result jsonb; v_msg text; v_hint text; v_detail text;
begin
  execute 'select to_jsonb(' || p_sql || ')' into v_result;
  return v_result;
exception when others then
  get stacked diagnostics v_msg = message_text, v_hint = pg_exception_hint, v_detail = pg_exception_detail;
  return jsonb_build_object('error', v_hint, 'message', v_msg) || case when v_detail like '{%' then v_detail::jsonb else '{}' end;
end $$;
-- the rows a create of p_id left: canvases with the id, and canvas.create audit rows of it
create function pg_temp.created(p_id uuid) returns jsonb language sql security definer as $$
  select jsonb_build_object('canvases', (select count(*) from app.canvases where canvas_id = p_id),
                            'audited', (select count(*) from app.system_audit where action = 'canvas.create' and entity_id = p_id::text))
$$;

-- ---------------------------------------------------------------------------------------------
-- create_workspace: the creator becomes its owner; the name is required
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select isnt(pg_temp.remember('ws', api.create_workspace('  Studio  ') ->> 'workspace_id'), null,
            'create_workspace returns {workspace_id}');
select tests.clear_authentication();
select is((select name from app.workspaces where workspace_id = pg_temp.id('ws')), 'Studio', 'the name is stored trimmed');
select is((select role::text from app.workspace_members where workspace_id = pg_temp.id('ws') and user_id = tests.user_id('owner')),
          'owner', 'the creator is the owner');
select tests.authenticate_as('owner');
select throws_ok($$select api.create_workspace('   ')$$, 'PX400', null, 'a blank workspace name is invalid_input');
select throws_ok($$select api.create_workspace(null)$$, 'PX400', null, 'a missing workspace name is invalid_input');
select lives_ok(format($$select api.set_workspace_member(%L, %L, %L)$$, pg_temp.id('ws'), tests.user_id(u), u), format('the owner adds the %s', u))
from unnest(array['admin', 'editor', 'viewer']) u;

-- ---------------------------------------------------------------------------------------------
-- create_canvas: defaults, trimming, validation
-- ---------------------------------------------------------------------------------------------
select isnt(pg_temp.remember('canvas', api.create_canvas(pg_temp.id('ws'), ' Board ', '{"grid":true}') ->> 'canvas_id'), null,
            'create_canvas returns {canvas_id}');
select isnt(pg_temp.remember('untitled', api.create_canvas(pg_temp.id('ws')) ->> 'canvas_id'), null,
            'create_canvas with only a workspace');
select is(api.get_canvas_snapshot(pg_temp.id('canvas')) -> 'canvas' ->> 'title', 'Board', 'the title is stored trimmed');
select is(api.get_canvas_snapshot(pg_temp.id('canvas')) -> 'canvas' -> 'settings', '{"grid":true}'::jsonb, 'the settings are stored');
select is(api.get_canvas_snapshot(pg_temp.id('canvas')) -> 'canvas' ->> 'version', '1', 'a new canvas is at version 1');
select is(api.get_canvas_snapshot(pg_temp.id('untitled')) -> 'canvas' ->> 'title', 'Untitled', 'the title defaults to Untitled');
select is(api.get_canvas_snapshot(pg_temp.id('untitled')) -> 'canvas' -> 'settings', '{}'::jsonb, 'the settings default to {}');
select throws_ok(format($$select api.create_canvas(%L, '')$$, pg_temp.id('ws')), 'PX400', null, 'an empty title is invalid_input');
select throws_ok(format($$select api.create_canvas(%L, repeat('x', 501))$$, pg_temp.id('ws')), 'PX400', null,
                 'a title over 500 characters is invalid_input');
select throws_ok(format($$select api.create_canvas(%L, 'T', '[1]')$$, pg_temp.id('ws')), 'PX400', null,
                 'settings that are not an object are invalid_input');

-- ---------------------------------------------------------------------------------------------
-- create_canvas with a client-chosen canvas_id is safe to resend: the same caller, workspace,
-- title and settings answer {canvas_id} again and write nothing; anything else is a conflict
-- naming the field, writing nothing
-- ---------------------------------------------------------------------------------------------
select pg_temp.remember('chosen', gen_random_uuid()::text), pg_temp.remember('ws2', api.create_workspace('Second') ->> 'workspace_id');
select is(api.create_canvas(pg_temp.id('ws'), ' Chosen ', '{"grid":true,"zoom":2}', pg_temp.id('chosen')),
          jsonb_build_object('canvas_id', pg_temp.id('chosen')), 'create_canvas with canvas_id creates the canvas with that id: {canvas_id}');
select is(pg_temp.created(pg_temp.id('chosen')), '{"canvases": 1, "audited": 1}'::jsonb, '... one row, audited once');
select is(api.create_canvas(pg_temp.id('ws'), 'Chosen', '{"zoom":2,"grid":true}', pg_temp.id('chosen')),
          jsonb_build_object('canvas_id', pg_temp.id('chosen')),
          'resent with the same workspace, title (compared trimmed) and settings: the same answer');
select is(pg_temp.created(pg_temp.id('chosen')), '{"canvases": 1, "audited": 1}'::jsonb, '... and nothing written: still one row, one audit row');
select is(pg_temp.outcome(format($$api.create_canvas(%L, 'Other', '{"grid":true,"zoom":2}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))) - 'message',
          '{"error": "conflict", "field": "title"}'::jsonb, 'resent with another title: conflict naming title');
select is(pg_temp.outcome(format($$api.create_canvas(%L, 'Chosen', '{"grid":false,"zoom":2}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))) - 'message',
          '{"error": "conflict", "field": "settings"}'::jsonb, 'with other settings: conflict naming settings');
select is(pg_temp.outcome(format($$api.create_canvas(%L, 'Chosen', '{"grid":true,"zoom":2}', %L)$$, pg_temp.id('ws2'), pg_temp.id('chosen'))) - 'message',
          '{"error": "conflict", "field": "workspace_id"}'::jsonb, 'in another workspace of the caller: conflict naming workspace_id');
select is(pg_temp.outcome(format($$api.create_canvas(%L, null, null, %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))) - 'message',
          '{"error": "conflict", "field": "title"}'::jsonb, 'with the defaults instead (Untitled, {}): conflict naming title');
select is(pg_temp.created(pg_temp.id('chosen')) || (select jsonb_build_object('title', title, 'settings', settings, 'version', version)
                                                     from app.canvases where canvas_id = pg_temp.id('chosen')),
          '{"canvases": 1, "audited": 1, "title": "Chosen", "settings": {"grid":true,"zoom":2}, "version": 1}'::jsonb,
          '... the refusals wrote nothing: the canvas is as first created');
select tests.authenticate_as('editor');
select is(pg_temp.outcome(format($$api.create_canvas(%L, 'Chosen', '{"grid":true,"zoom":2}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))),
          '{"error": "conflict", "field": "canvas_id", "message": "canvas_id is already taken: send a new one (a random UUID) to create a canvas"}'::jsonb,
          'another user''s canvas_id, same attributes and all: conflict naming canvas_id, its message naming nothing of the canvas');
select is(pg_temp.outcome(format($$api.create_canvas(%L, 'Guess', '{}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))),
          pg_temp.outcome(format($$api.create_canvas(%L, 'Chosen', '{"grid":true,"zoom":2}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen'))),
          '... the same refusal whatever the title and settings: nothing of it is compared for another user');
select tests.authenticate_as('viewer');
select throws_ok(format($$select api.create_canvas(%L, 'Chosen', '{"grid":true,"zoom":2}', %L)$$, pg_temp.id('ws'), pg_temp.id('chosen')),
                 'PX403', null, 'a viewer resending it: forbidden, as any create (the role is checked first)');
select tests.authenticate_as('owner');
select is(pg_temp.created(pg_temp.id('chosen')), '{"canvases": 1, "audited": 1}'::jsonb, 'still one canvas, audited once');

select pg_temp.remember('gone', gen_random_uuid()::text);
select is(api.create_canvas(pg_temp.id('ws'), null, null, pg_temp.id('gone')), jsonb_build_object('canvas_id', pg_temp.id('gone')),
          'created with canvas_id and the defaults ...');
select is(api.create_canvas(pg_temp.id('ws'), 'Untitled', '{}', pg_temp.id('gone')), jsonb_build_object('canvas_id', pg_temp.id('gone')),
          '... resent with the defaults spelt out: the same canvas');
select api.delete_canvas(pg_temp.id('gone'));
select is(pg_temp.outcome(format($$api.create_canvas(%L, null, null, %L)$$, pg_temp.id('ws'), pg_temp.id('gone'))) - 'message',
          '{"error": "conflict", "field": "canvas_id"}'::jsonb, 'resent after its deletion: conflict naming canvas_id (not brought back)');

select isnt(api.create_canvas(pg_temp.id('ws'), 'Twice') ->> 'canvas_id', api.create_canvas(pg_temp.id('ws'), 'Twice') ->> 'canvas_id',
            'without canvas_id each call creates a canvas, with an id of the server''s ...');
select is((select count(*) from jsonb_array_elements(api.list_workspace_canvases(pg_temp.id('ws')) -> 'canvases') c where c ->> 'title' = 'Twice'), 2::bigint,
          '... two canvases for two calls, as before');

-- ---------------------------------------------------------------------------------------------
-- update_canvas: each change bumps the version; invalid input changes nothing
-- ---------------------------------------------------------------------------------------------
select is(api.update_canvas(pg_temp.id('canvas'), 'Renamed') - 'created_at' - 'updated_at' - 'created_by' - 'canvas_id' - 'workspace_id',
          '{"title":"Renamed","settings":{"grid":true},"version":2}'::jsonb,
          'a new title: version 2, settings kept');
select is(api.update_canvas(pg_temp.id('canvas'), null, '{"grid":false}') - 'created_at' - 'updated_at' - 'created_by' - 'canvas_id' - 'workspace_id',
          '{"title":"Renamed","settings":{"grid":false},"version":3}'::jsonb,
          'new settings: version 3, title kept');
select throws_ok(format($$select api.update_canvas(%L, '')$$, pg_temp.id('canvas')), 'PX400', null, 'an empty title is invalid_input');
select throws_ok(format($$select api.update_canvas(%L, '   ')$$, pg_temp.id('canvas')), 'PX400', null, 'a blank title is invalid_input');
select throws_ok(format($$select api.update_canvas(%L, null, '[]')$$, pg_temp.id('canvas')), 'PX400', null,
                 'settings that are an array are invalid_input');
select throws_ok(format($$select api.update_canvas(%L, null, '"dark"')$$, pg_temp.id('canvas')), 'PX400', null,
                 'settings that are a string are invalid_input');
select throws_ok(format($$select api.update_canvas(%L)$$, pg_temp.id('canvas')), 'PX400', null,
                 'an update that changes nothing is invalid_input');
select is(api.get_canvas_snapshot(pg_temp.id('canvas')) -> 'canvas' ->> 'version', '3', 'rejected updates left the version at 3');
select tests.clear_authentication();
select is((select count(*) from realtime.messages where topic = 'canvas:' || pg_temp.id('canvas') and event = 'canvas_updated'),
          2::bigint, 'each accepted update is broadcast to the canvas topic');
select tests.authenticate_as('owner');

-- ---------------------------------------------------------------------------------------------
-- get_block and list_blocks: 25 blocks, pages of 10 in rank order
-- ---------------------------------------------------------------------------------------------
select is(api.upsert_blocks_atomic(pg_temp.id('canvas'),
            (select jsonb_agg(jsonb_build_object('action', 'create', 'client_op_id', 'page-' || i,
                                                 'patch', jsonb_build_object('type', 'text', 'content', jsonb_build_object('n', i))))
             from generate_series(1, 25) i)) ->> 'status',
          'success', '25 blocks are appended in one batch');
create temp table pages (n int, page jsonb);
do $$
declare v_page jsonb; v_cursor text; v_n int := 0;
begin
  loop
    v_page := api.list_blocks(pg_temp.id('canvas'), v_cursor, 10);
    v_n := v_n + 1;
    insert into pages values (v_n, v_page);
    v_cursor := v_page ->> 'next_cursor';
    exit when v_cursor is null or v_n >= 10;
  end loop;
end $$;
select is(array(select jsonb_array_length(page -> 'items') from pages order by n), array[10, 10, 5],
          'limit 10 over 25 blocks: three pages of 10, 10 and 5');
select ok((select bool_and(page ->> 'next_cursor' = page -> 'items' -> 9 ->> 'y_order') from pages where n < 3),
          'a full page''s next_cursor is the rank of its last item');
select is((select page -> 'next_cursor' from pages where n = 3), 'null'::jsonb, 'the last page has next_cursor null');
create temp table paged as
select row_number() over (order by p.n, i.ord) as pos, i.item
from pages p, jsonb_array_elements(p.page -> 'items') with ordinality i(item, ord);
select is((select count(distinct item ->> 'block_id') from paged), 25::bigint, 'the pages hold all 25 blocks, none twice');
select is(array(select item ->> 'y_order' from paged order by pos),
          array(select y_order from app.blocks where canvas_id = pg_temp.id('canvas') order by y_order collate "C"),
          'the pages follow rank order');
select is(array(select (item #>> '{content,n}')::int from paged order by pos), array(select generate_series(1, 25)),
          'appended blocks come back in the order they were appended');
select is(api.list_blocks(pg_temp.id('canvas'), null, 25) -> 'next_cursor', 'null'::jsonb,
          'a page that holds exactly the rest has next_cursor null');
select is(jsonb_array_length(api.list_blocks(pg_temp.id('untitled')) -> 'items'), 0, 'an empty canvas lists no items');
select throws_ok(format($$select api.list_blocks(%L, 'not a cursor!', 10)$$, pg_temp.id('canvas')), 'PX400', null,
                 'a malformed cursor is invalid_input');
select throws_ok(format($$select api.list_blocks(%L, '', 10)$$, pg_temp.id('canvas')), 'PX400', null,
                 'an empty cursor is invalid_input');

select is(api.get_block(pg_temp.id('canvas'), (select (item ->> 'block_id')::uuid from paged where pos = 7)) - 'created_at' - 'updated_at',
          (select item - 'created_at' - 'updated_at' from paged where pos = 7),
          'get_block returns the block as list_blocks does');
select is(api.get_block(pg_temp.id('canvas'), (select (item ->> 'block_id')::uuid from paged where pos = 7)) ->> 'version', '1',
          'a new block is at version 1');
select throws_ok(format($$select api.get_block(%L, gen_random_uuid())$$, pg_temp.id('canvas')), 'PX404', null,
                 'an unknown block is not_found');
select throws_ok(format($$select api.get_block(%L, %L)$$, pg_temp.id('untitled'), (select item ->> 'block_id' from paged where pos = 7)),
                 'PX404', null, 'a block asked for on another canvas is not_found');

-- ---------------------------------------------------------------------------------------------
-- get_canvas_permissions: {can_write, role, users[]} for each role
-- ---------------------------------------------------------------------------------------------
select tests.clear_authentication();
create temp table perms (who text, p jsonb);
grant all on perms to public;
do $$
declare w text;
begin
  foreach w in array array['owner', 'admin', 'editor', 'viewer'] loop
    perform tests.authenticate_as(w);
    insert into perms values (w, api.get_canvas_permissions(pg_temp.id('canvas')));
  end loop;
  perform tests.clear_authentication();
end $$;
select is((select p ->> 'role' from perms where who = w), w, format('%s: role is %s', w, w))
from unnest(array['owner', 'admin', 'editor', 'viewer']) w;
select is((select jsonb_object_agg(who, p -> 'can_write') from perms),
          '{"owner":true,"admin":true,"editor":true,"viewer":false}'::jsonb,
          'can_write: owner, admin and editor yes; viewer no');
select is((select p -> 'users' from perms where who = 'viewer'),
          (select jsonb_agg(jsonb_build_object('user_id', tests.user_id(u), 'email', u || '@test.local', 'role', u)
                            order by m.created_at, m.user_id)
           from unnest(array['owner', 'admin', 'editor', 'viewer']) u
           join app.workspace_members m on m.workspace_id = pg_temp.id('ws') and m.user_id = tests.user_id(u)),
          'users[] lists every member with email and role, by when they joined (then user_id)');

-- ---------------------------------------------------------------------------------------------
-- Token scope: `canvas:<id>:read` reads that canvas only and writes nothing;
-- `canvas:<id>:write` writes it
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner', jsonb_build_object('scope', format('canvas:%s:read', pg_temp.id('canvas'))));
select lives_ok(format('select api.get_canvas_snapshot(%L)', pg_temp.id('canvas')), 'a read-scoped token reads its canvas');
select is(jsonb_array_length(api.list_blocks(pg_temp.id('canvas'), null, 5) -> 'items'), 5, '... and lists its blocks');
select is(api.get_canvas_permissions(pg_temp.id('canvas')) -> 'can_write', 'false'::jsonb,
          '... but can_write is false even for the owner');
select is(api.upsert_block_atomic(pg_temp.id('canvas'), null, 'create', 'scoped-read', null, '{"type":"text"}') #>> '{error,code}',
          'forbidden', '... and a block mutation is forbidden');
select throws_ok(format($$select api.update_canvas(%L, 'Scoped')$$, pg_temp.id('canvas')), 'PX403', null,
                 '... and so is update_canvas');
select throws_ok(format($$select api.delete_canvas(%L)$$, pg_temp.id('canvas')), 'PX403', null, '... and delete_canvas');
select throws_ok(format($$select api.create_canvas(%L, 'Scoped')$$, pg_temp.id('ws')), 'PX403', null,
                 '... and create_canvas (a scoped token acts on its listed canvases only)');
select throws_ok(format($$select api.set_workspace_member(%L, %L, 'admin')$$, pg_temp.id('ws'), tests.user_id('viewer')), 'PX403', null,
                 '... and set_workspace_member');
select throws_ok(format('select api.get_canvas_snapshot(%L)', pg_temp.id('untitled')), 'PX403', null,
                 'a canvas outside the scope is forbidden');
select is(array(select (c ->> 'canvas_id')::uuid from jsonb_array_elements(api.list_my_canvases() -> 'canvases') c), array[pg_temp.id('canvas')],
          'list_my_canvases lists only the scoped canvas');

select tests.authenticate_as('editor', jsonb_build_object('scope', jsonb_build_array(format('canvas:%s:write', pg_temp.id('canvas')))));
select is(api.get_canvas_permissions(pg_temp.id('canvas')) -> 'can_write', 'true'::jsonb, 'a write-scoped token can_write');
select is(api.upsert_block_atomic(pg_temp.id('canvas'), null, 'create', 'scoped-write', null, '{"type":"text"}') ->> 'status',
          'success', '... and mutates its canvas');

-- ---------------------------------------------------------------------------------------------
-- delete_canvas: a soft delete
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('owner');
select lives_ok(format('select api.delete_canvas(%L)', pg_temp.id('untitled')), 'the owner deletes a canvas');
select is((select count(*) from jsonb_array_elements(api.list_my_canvases() -> 'canvases') c where (c ->> 'canvas_id')::uuid = pg_temp.id('untitled')),
          0::bigint, 'it is gone from list_my_canvases');
select throws_ok($$select api.list_my_canvases('9999999999999999999.00000000-0000-0000-0000-000000000000')$$, 'PX400', null,
                 'a cursor whose time is past bigint''s range is invalid_input (field cursor), not an overflow');
select throws_ok(format('select api.delete_canvas(%L)', pg_temp.id('untitled')), 'PX404', null, 'deleting it again: not_found');
select tests.clear_authentication();
select ok((select deleted_at is not null from app.canvases where canvas_id = pg_temp.id('untitled')),
          'the row stays, with deleted_at set (soft delete)');

-- a workspace always keeps an owner
select tests.authenticate_as('owner');
select throws_ok(format($$select api.set_workspace_member(%L, %L, 'admin')$$, pg_temp.id('ws'), tests.user_id('owner')), 'PX400', null,
                 'the last owner cannot step down');
select lives_ok(format($$select api.set_workspace_member(%L, %L, 'owner')$$, pg_temp.id('ws'), tests.user_id('admin')),
                'the owner makes the admin a second owner');
select lives_ok(format($$select api.set_workspace_member(%L, %L, 'admin')$$, pg_temp.id('ws'), tests.user_id('owner')),
                'with another owner, the first may step down');
select tests.clear_authentication();

select * from finish();
rollback;
