-- The mutation RPC: api.upsert_block_atomic and api.upsert_blocks_atomic.
-- Rules proven here: happy paths with versions; server_seq from seq_block_events; exactly-once
-- retries keyed by caller + client_op_id; base_version conflicts and the merge rule; validation
-- that writes nothing but is logged; roles and token scopes; realtime deltas; cascading delete;
-- all-or-nothing batches.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(120);

-- Cast: an owner, an editor, a viewer and a stranger (member of no workspace).
select tests.create_user(u) from unnest(array['mut_owner', 'mut_editor', 'mut_viewer', 'mut_stranger']) u;
create temp table ids (workspace_id uuid, canvas_id uuid, other_canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;

select tests.authenticate_as('mut_owner');
insert into ids (workspace_id) select (api.create_workspace('Mutations') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Main') ->> 'canvas_id')::uuid,
               other_canvas_id = (api.create_canvas(workspace_id, 'Other') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('mut_editor'), 'editor');
select api.set_workspace_member((select workspace_id from ids), tests.user_id('mut_viewer'), 'viewer');

-- Block ids used below: A (parent), B (child of A), O (on the other canvas)
create temp table k as select
  '00000000-0000-4000-8000-00000000000a'::uuid as a,
  '00000000-0000-4000-8000-00000000000b'::uuid as b,
  '00000000-0000-4000-8000-00000000000c'::uuid as o;
grant select on k to authenticated;

-- ---------------------------------------------------------------- create / update / move / delete
insert into r select 'create_a', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'create', 'op-create-a', null,
                                                         '{"type":"text","content":{"text":"hello"}}');
select tests.clear_authentication();
select is(r.res ->> 'status', 'success', 'create: status success') from r where name = 'create_a';
select is((r.res ->> 'version')::int, 1, 'create: a new block starts at version 1') from r where name = 'create_a';
select is((r.res ->> 'server_seq')::bigint, currval('app.seq_block_events'), 'create: server_seq is the value just taken from app.seq_block_events')
from r where name = 'create_a';
select is((select last_seq from app.canvases where canvas_id = (select canvas_id from ids)), (select (res ->> 'server_seq')::bigint from r where name = 'create_a'),
          'create: canvases.last_seq follows the newest server_seq');
select is((select jsonb_build_object('type', type, 'content', content, 'version', version, 'created_by', created_by)
           from app.blocks where block_id = (select a from k)),
          jsonb_build_object('type', 'text', 'content', '{"text":"hello"}'::jsonb, 'version', 1, 'created_by', tests.user_id('mut_owner')),
          'create: the block row holds type, content, version 1 and its author');
select is((select r.res -> 'block' from r where name = 'create_a'), internal.block_json(b), 'create: the result carries the block as stored')
from app.blocks b where b.block_id = (select a from k);
select is((select status || ':' || server_seq from app.block_operations where client_op_id = 'op-create-a'),
          'success:' || (select res ->> 'server_seq' from r where name = 'create_a'), 'create: one success operation row with its server_seq');

select tests.authenticate_as('mut_owner');
insert into r select 'create_b', api.upsert_block_atomic((select canvas_id from ids), (select b from k), 'create', 'op-create-b', null,
                                                         jsonb_build_object('type', 'text', 'parent_id', (select a from k)));
insert into r select 'create_o', api.upsert_block_atomic((select other_canvas_id from ids), (select o from k), 'create', 'op-create-o', null,
                                                         '{"type":"text"}');
insert into r select 'update_a', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-update-a', 1,
                                                         '{"content":{"text":"hello, world"}}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'create_b') || '/' || (select parent_id from app.blocks where block_id = (select b from k)),
          'success/' || (select a from k), 'create: a child block under a parent of the same canvas');
select is((select res ->> 'status' || ' v' || (res ->> 'version') from r where name = 'update_a'), 'success v2', 'update: version 1 -> 2');
select is((select content ->> 'text' from app.blocks where block_id = (select a from k)), 'hello, world', 'update: the content is written');
select cmp_ok((select (res ->> 'server_seq')::bigint from r where name = 'update_a'), '>',
              (select (res ->> 'server_seq')::bigint from r where name = 'create_b'), 'server_seq increases with every applied operation');
select is((select res ->> 'server_seq' from r where name = 'update_a'), (select last_seq::text from app.canvases where canvas_id = (select canvas_id from ids)),
          'canvases.last_seq follows');

select tests.authenticate_as('mut_owner');
insert into r select 'move_a', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'move', 'op-move-a', 2, '{"y_order":"zz"}');
select tests.clear_authentication();
select is((select res ->> 'status' || ' v' || (res ->> 'version') from r where name = 'move_a'), 'success v3', 'move: version 2 -> 3');
select is((select y_order from app.blocks where block_id = (select a from k)), 'zz', 'move: the rank key is written');

-- every applied operation is published to the canvas topic, once
select is((select count(*) from realtime.messages where topic = 'canvas:' || (select canvas_id from ids) and event = 'block_op'),
          (select count(*) from app.block_operations where canvas_id = (select canvas_id from ids) and status = 'success'),
          'one realtime.messages row (topic canvas:<id>, event block_op) per applied operation');
select is((select array_agg((payload ->> 'server_seq')::bigint order by (payload ->> 'server_seq')::bigint) from realtime.messages
           where topic = 'canvas:' || (select canvas_id from ids)),
          (select array_agg(server_seq order by server_seq) from app.block_operations
           where canvas_id = (select canvas_id from ids) and status = 'success'),
          'each delta carries the server_seq of its operation');

-- ---------------------------------------------------------------- exactly once
-- A retry of an applied client_op_id returns the original result and changes nothing.
select tests.authenticate_as('mut_owner');
insert into r select 'retry_update_a', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-update-a', 1,
                                                               '{"content":{"text":"hello, world"}}');
select tests.clear_authentication();
select is((select res from r where name = 'retry_update_a'), (select res from r where name = 'update_a') || '{"duplicate": true}',
          'a retried client_op_id returns the identical result, marked duplicate: true');
select is((select version from app.blocks where block_id = (select a from k)), 3, 'and is not applied again (version unchanged)');
select is((select array_agg(status order by op_id) from app.block_operations
           where client_op_id = 'op-update-a' and actor_id = tests.user_id('mut_owner')),
          array['success', 'duplicate'], 'the log holds one success and one duplicate row for it');
-- The idempotency key is the caller plus client_op_id: another user's op with that id is new.
select tests.authenticate_as('mut_editor');
insert into r select 'editor_same_id', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-update-a', 3,
                                                               '{"content":{"text":"edited"}}');
select tests.clear_authentication();
select is((select res ->> 'status' || ' v' || (res ->> 'version') from r where name = 'editor_same_id'), 'success v4',
          'the same client_op_id from a different user is a different operation');
select is((select count(*) from app.block_operations where client_op_id = 'op-update-a' and status = 'success'), 2::bigint,
          'each user has applied their own op-update-a once');
-- Retries that would apply cleanly a second time are refused by the idempotency index of the
-- success rows (nothing looks the op up before trying it): a text op transforms against itself
-- and applies again, a create meets no block once its block was deleted.
select tests.authenticate_as('mut_owner');
insert into r select 'create_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'create',
                                                         'op-create-t', null, '{"type":"text","content":{"t":"ab"}}');
insert into r select 'type_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                       'op-type-t', 1, '{"text":{"t":[1,"X"]}}');
insert into r select 'retry_type_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                             'op-type-t', 1, '{"text":{"t":[1,"X"]}}');
select tests.clear_authentication();
select is((select res from r where name = 'retry_type_t'), (select res from r where name = 'type_t') || '{"duplicate": true}',
          'a retried text op (it would transform against itself and apply) returns its original result');
select is((select content ->> 't' || ' v' || version from app.blocks where block_id = '00000000-0000-4000-8000-0000000000d1'), 'aXb v2',
          '... and types nothing a second time');
select tests.authenticate_as('mut_owner');
insert into r select 'delete_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'delete',
                                                         'op-delete-t', 2, '{}');
insert into r select 'retry_create_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'create',
                                                               'op-create-t', null, '{"type":"text","content":{"t":"ab"}}');
select tests.clear_authentication();
select is((select res from r where name = 'retry_create_t'), (select res from r where name = 'create_t') || '{"duplicate": true}',
          'a retried create whose block was deleted since returns its original result');
select is((select count(*) from app.blocks where block_id = '00000000-0000-4000-8000-0000000000d1'), 0::bigint,
          '... and does not create the block again');

-- A client_op_id names one operation: reused by the same caller for another block, action or
-- canvas it is refused by field (answering with the other operation's result would report an
-- operation applied that never was), and nothing is written.
create temp table reuse_before as select * from app.blocks;
create temp table reuse_cases (name text, canvas_id uuid, block_id uuid, action text, base_version int, patch jsonb);
grant select on reuse_cases to authenticated;
insert into reuse_cases values
  ('another block', (select canvas_id from ids), (select b from k), 'update', 1, '{"content":{"text":"hello, world"}}'),
  ('another action', (select canvas_id from ids), (select a from k), 'move', 1, '{"y_order":"m"}'),
  ('another canvas', (select other_canvas_id from ids), (select o from k), 'update', 1, '{"content":{"text":"hello, world"}}'),
  ('an update without block_id', (select canvas_id from ids), null, 'update', 1, '{"content":{"text":"hello, world"}}');
select tests.authenticate_as('mut_owner');
insert into r select 'reuse: ' || c.name,
  api.upsert_block_atomic(c.canvas_id, c.block_id, c.action, 'op-update-a', c.base_version, c.patch) from reuse_cases c;
select tests.clear_authentication();
select is(jsonb_build_object('status', r.res ->> 'status', 'code', r.res #>> '{error,code}', 'field', r.res #>> '{error,field}',
                             'duplicate', r.res ? 'duplicate',
                             'names block A', strpos(r.res #>> '{error,message}', 'update of block ' || (select a from k)) > 0),
          jsonb_build_object('status', 'failed', 'code', 'invalid_input', 'field', 'client_op_id', 'duplicate', false,
                             'names block A', c.canvas_id = (select canvas_id from ids)),
          format('a client_op_id reused for %s is refused: invalid_input on client_op_id, naming the first operation''s block only on its own canvas', c.name))
from reuse_cases c join r on r.name = 'reuse: ' || c.name order by c.name;
select is((select count(*) from (select * from app.blocks except select * from reuse_before) d), 0::bigint,
          'a reused client_op_id changes no block');
select is((select count(*) from app.block_operations where client_op_id = 'op-update-a' and actor_id = tests.user_id('mut_owner')
           and status = 'success'), 1::bigint, '... and applies nothing: the first operation stays its only success');
-- a create without block_id, resent, is the same create whatever id the server chose
select tests.authenticate_as('mut_owner');
insert into r select 'create_auto', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-create-auto', null, '{"type":"text"}');
insert into r select 'retry_create_auto', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-create-auto', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res from r where name = 'retry_create_auto'), (select res from r where name = 'create_auto') || '{"duplicate": true}',
          'a create without block_id, resent, returns its original result (the block id the server chose)');
-- in a batch, a reused client_op_id fails the batch at that op
select tests.authenticate_as('mut_owner');
insert into r select 'batch_reuse', api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(
  jsonb_build_object('action', 'create', 'client_op_id', 'op-reuse-fresh', 'block_id', '00000000-0000-4000-8000-0000000000d9',
                     'patch', '{"type":"text"}'::jsonb),
  jsonb_build_object('action', 'update', 'client_op_id', 'op-update-a', 'block_id', (select b from k), 'base_version', 1,
                     'patch', '{"content":{"x":1}}'::jsonb)));
select tests.clear_authentication();
select is((select jsonb_build_object('status', res ->> 'status', 'failed_index', res -> 'failed_index', 'code', res #>> '{error,code}',
                                     'field', res #>> '{error,field}') from r where name = 'batch_reuse'),
          '{"status":"failed","failed_index":1,"code":"invalid_input","field":"client_op_id"}',
          'a batch op reusing a client_op_id for another block fails the batch at its index, on client_op_id');
select is((select count(*) from (select * from app.blocks except select * from reuse_before) d), 1::bigint,
          '... and nothing of the batch persists (the one changed block is the create above)');

-- A block created again under a used block_id (d1: version 2, deleted as version 3) continues
-- its versions, so a version names one state of one block: an operation made for the deleted
-- block is a conflict, never applied to the new one, and the new block's own stale operations
-- rebase over its log alone.
select tests.authenticate_as('mut_owner');
insert into r select 'recreate_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'create',
                                                           'op-recreate-t', null, '{"type":"text","content":{"t":"new"}}');
insert into r select 'old_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                      'op-old-t', 2, '{"text":{"t":[2,"?"]}}');
insert into r select 'new_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                      'op-new-t', 4, '{"text":{"t":[3,"!"]}}');
insert into r select 'new_stale_t', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                            'op-new-stale-t', 4, '{"text":{"t":["<"]}}');
select tests.clear_authentication();
select is((select (res ->> 'version')::int from r where name = 'recreate_t'), 4,
          'a block created again under a used block_id continues its versions (deleted as 3, created as 4)');
select is((select jsonb_build_object('status', res ->> 'status', 'code', res #>> '{error,code}',
                                     'says', res #>> '{error,message}' like '%deleted and created again%') from r where name = 'old_t'),
          '{"status":"conflict","code":"conflict","says":true}',
          'an operation made for the deleted block is a conflict on the new one (it says the block was created again)');
select is((select res ->> 'status' from r where name = 'new_t') || ' ' || (select res ->> 'status' from r where name = 'new_stale_t'),
          'success success', 'the new block''s own operations apply, a stale one rebased over its log alone');
select is((select content ->> 't' || ' v' || version from app.blocks where block_id = '00000000-0000-4000-8000-0000000000d1'), '<new! v6',
          '... to the new block''s text only');

-- ---------------------------------------------------------------- base_version
-- Merge rule: a stale base_version is compared by field group — content, type, parent
-- (parent_id), position (y_order/after_id) — with what every applied op since base_version
-- changed. Overlap -> conflict carrying the current block; disjoint -> applied on top.
create temp table before_conflict as select b.*, (select last_seq from app.canvases where canvas_id = b.canvas_id) as last_seq
from app.blocks b where block_id = (select a from k);
select tests.authenticate_as('mut_owner');
insert into r select 'stale_content', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-stale-content', 1,
                                                              '{"content":{"text":"from v1"}}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'stale_content'), 'conflict',
          'stale base_version touching a field changed since (content) -> conflict');
select is((select res -> 'block' from r where name = 'stale_content'), internal.block_json(b),
          'the conflict carries the current block') from app.blocks b where b.block_id = (select a from k);
select is((select (res ->> 'version')::int from r where name = 'stale_content'), 4, 'and its current version');
select is((select res ->> 'server_seq' from r where name = 'stale_content'), null, 'a conflict has no server_seq');
select is((select b.content || jsonb_build_object('v', b.version) from app.blocks b where block_id = (select a from k)),
          (select b.content || jsonb_build_object('v', b.version) from before_conflict b), 'a conflict writes nothing to the block');
select is((select last_seq from app.canvases where canvas_id = (select canvas_id from ids)), (select last_seq from before_conflict),
          'a conflict takes no server_seq');
select is((select status from app.block_operations where client_op_id = 'op-stale-content'), 'conflict', 'the conflict is logged');

select tests.authenticate_as('mut_owner');
insert into r select 'stale_type', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-stale-type', 1,
                                                           '{"type":"heading"}');
select tests.clear_authentication();
select is((select res ->> 'status' || ' v' || (res ->> 'version') from r where name = 'stale_type'), 'success v5',
          'stale base_version on a disjoint field (type; only content and position changed since) merges');
select is((select type || '/' || (content ->> 'text') || '/' || y_order from app.blocks where block_id = (select a from k)),
          'heading/edited/zz', 'the merge keeps the newer content and position');
select tests.authenticate_as('mut_owner');
insert into r select 'stale_move', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'move', 'op-stale-move', 2,
                                                           '{"y_order":"y"}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'stale_move'), 'conflict',
          'stale base_version touching position (moved at version 3) -> conflict');
-- make B stale, then delete it from its old version
select tests.authenticate_as('mut_owner');
select api.upsert_block_atomic((select canvas_id from ids), (select b from k), 'update', 'op-touch-b', 1, '{"content":{"n":1}}');
insert into r select 'stale_delete', api.upsert_block_atomic((select canvas_id from ids), (select b from k), 'delete', 'op-stale-delete', 1, '{}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'stale_delete'), 'conflict', 'a stale delete always conflicts');
select is((select count(*) from app.blocks where block_id = (select b from k)), 1::bigint, 'and the block is still there');

-- ---------------------------------------------------------------- validation
-- Each invalid request is `failed` with code invalid_input and the field at fault, writes
-- nothing to blocks, and still leaves a `failed` operation row and an audit row.
create temp table cases (name text, block_id uuid, action text, base_version int, patch jsonb, field text);
grant select on cases to authenticated;
insert into cases values
  ('y_order with a character outside base-62', (select a from k), 'move', 5, '{"y_order":"ab-c"}', 'patch.y_order'),
  ('y_order of 11 characters', (select a from k), 'move', 5, '{"y_order":"abcdefghijk"}', 'patch.y_order'),
  ('y_order ending in 0', (select a from k), 'move', 5, '{"y_order":"a0"}', 'patch.y_order'),
  ('parent on another canvas', (select b from k), 'move', 2, jsonb_build_object('parent_id', (select o from k)), 'patch.parent_id'),
  ('parent that is its own child (cycle)', (select a from k), 'move', 5, jsonb_build_object('parent_id', (select b from k)), 'patch.parent_id'),
  -- named by its path in the body, as the HTTP schema names it (it was `after_id`)
  ('after_id that is not a block id', (select a from k), 'move', 5, '{"after_id":"nope"}', 'patch.after_id'),
  ('after_id of a block on another canvas', (select a from k), 'move', 5, jsonb_build_object('after_id', (select o from k)), 'patch.after_id'),
  ('unknown patch field', (select a from k), 'update', 5, '{"colour":"red"}', 'patch.colour'),
  ('create without a type', '00000000-0000-4000-8000-0000000000f1', 'create', null, '{"content":{}}', 'patch.type'),
  ('content that is not an object', '00000000-0000-4000-8000-0000000000f2', 'create', null, '{"type":"text","content":[1,2]}', 'patch.content'),
  ('base_version 0 (versions start at 1)', (select a from k), 'update', 0, '{"content":{"x":1}}', 'base_version'),
  ('negative base_version', (select a from k), 'update', -3, '{"content":{"x":1}}', 'base_version');
create temp table blocks_before as select * from app.blocks where canvas_id = (select canvas_id from ids);
create temp table audit_before as select count(*) as n from app.system_audit where status = 'failed';
select tests.authenticate_as('mut_owner');
insert into r select 'invalid: ' || c.name,
  api.upsert_block_atomic((select canvas_id from ids), c.block_id, c.action, 'op-invalid-' || c.name, c.base_version, c.patch)
from cases c;
select tests.clear_authentication();
select is(jsonb_build_object('status', r.res ->> 'status', 'code', r.res #>> '{error,code}', 'field', r.res #>> '{error,field}'),
          jsonb_build_object('status', 'failed', 'code', 'invalid_input', 'field', c.field),
          format('%s -> failed, invalid_input, field %s', c.name, c.field))
from cases c join r on r.name = 'invalid: ' || c.name order by c.name;
select is((select count(*) from (select * from app.blocks where canvas_id = (select canvas_id from ids)
                                  except select * from blocks_before) d), 0::bigint, 'invalid requests change no block');
select is((select count(*) from app.blocks where block_id in ('00000000-0000-4000-8000-0000000000f1', '00000000-0000-4000-8000-0000000000f2')),
          0::bigint, 'invalid creates create nothing');
select is((select count(*) from app.block_operations where client_op_id like 'op-invalid-%' and status = 'failed' and error_code = 'invalid_input'),
          (select count(*) from cases), 'each invalid request leaves a failed operation row');
select is((select count(*) from app.system_audit where status = 'failed') - (select n from audit_before), (select count(*) from cases),
          'each invalid request leaves an audit row');

-- content size limit from app.settings
update app.settings set value = '200' where key = 'max_content_bytes';
select tests.authenticate_as('mut_owner');
insert into r select 'too_large', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-too-large', 5,
                                                          jsonb_build_object('content', jsonb_build_object('text', repeat('x', 300))));
insert into r select 'fits', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-fits', 5,
                                                     jsonb_build_object('content', jsonb_build_object('text', repeat('x', 100))));
-- the content as merged is bounded, not only the patch: a key added to the 100 characters
-- already there would take the block past the limit, though the patch alone fits
insert into r select 'grows_too_large', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-grows', 6,
                                                              jsonb_build_object('content', jsonb_build_object('more', repeat('y', 100))));
-- and text typed op by op: one check on the row written, for content and text alike
insert into r select 'text_grows_too_large', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-text-grows', 6,
                                                                   jsonb_build_object('text', jsonb_build_object('text', jsonb_build_array(repeat('z', 100)))));
select tests.clear_authentication();
update app.settings set value = '65536' where key = 'max_content_bytes';
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'too_large'), 'failed payload_too_large',
          'content over app.settings max_content_bytes -> payload_too_large');
select is((select res ->> 'status' from r where name = 'fits'), 'success', 'content under the limit is accepted');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'grows_too_large'),
          'failed payload_too_large patch.content', 'a patch that fits but grows the content past the limit -> payload_too_large');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'text_grows_too_large'),
          'failed payload_too_large patch.text', 'a text op that types the content past the limit -> payload_too_large on patch.text');
select is((select version || ' ' || (content ? 'more')::text || ' ' || length(content ->> 'text') from app.blocks where block_id = (select a from k)),
          '6 false 100', 'and nothing of either is written');

-- ---------------------------------------------------------------- who may mutate
select tests.authenticate_as('mut_viewer');
insert into r select 'viewer', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-viewer', null, '{"type":"text"}');
select tests.authenticate_as('mut_stranger');
insert into r select 'stranger', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-stranger', null, '{"type":"text"}');
select tests.authenticate_as('mut_editor', jsonb_build_object('scope', format('canvas:%s:write', (select other_canvas_id from ids))));
insert into r select 'scope_other', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-scope-other', null, '{"type":"text"}');
select tests.authenticate_as('mut_editor', jsonb_build_object('scope', format('canvas:%s:write', (select canvas_id from ids))));
insert into r select 'scope_this', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-scope-this', null, '{"type":"text"}');
select tests.authenticate_as('mut_editor', jsonb_build_object('scope', format('canvas:%s:read', (select canvas_id from ids))));
insert into r select 'scope_read', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'op-scope-read', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'viewer'), 'failed forbidden', 'a viewer -> forbidden');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'stranger'), 'failed not_found',
          'a non-member -> not_found (the canvas is not revealed)');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'scope_other'), 'failed forbidden',
          'a token scoped to canvas:<other>:write -> forbidden');
select is((select res ->> 'status' from r where name = 'scope_this'), 'success', 'a token scoped to canvas:<this>:write passes');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'scope_read'), 'failed forbidden',
          'a read-only token scope cannot mutate');
select is((select count(*) from app.blocks where created_by in (tests.user_id('mut_viewer'), tests.user_id('mut_stranger'))), 0::bigint,
          'rejected callers wrote nothing');

-- Every refusal before any work, with its code and field, and which one answers when several
-- apply: who (no user), then the request's own fields in argument order (action, client_op_id,
-- canvas_id), then the caller's standing on the canvas (member, role, token scope), then the
-- patch's shape (a move with content before content that is not an object).
create temp table refusals (name text, who text, claims jsonb, canvas uuid, action text, client_op_id text, patch jsonb,
                            code text, field text, says text);
grant select on refusals to authenticated;
insert into refusals values
  ('no user, and a bad action', null, null, (select canvas_id from ids), 'explode', 'op-refuse-1', '{}', 'unauthorized', null, 'signed-in user'),
  ('an unknown action, and no client_op_id', 'mut_editor', '{}', (select canvas_id from ids), 'explode', null, '{}', 'invalid_input', 'action', 'action must be'),
  ('no action', 'mut_editor', '{}', (select canvas_id from ids), null, 'op-refuse-3', '{}', 'invalid_input', 'action', 'action must be'),
  ('an empty client_op_id, and no canvas', 'mut_editor', '{}', null, 'create', '', '{}', 'invalid_input', 'client_op_id', '1 to 128'),
  ('a client_op_id of 129 characters', 'mut_editor', '{}', (select canvas_id from ids), 'create', repeat('x', 129), '{}', 'invalid_input', 'client_op_id', '1 to 128'),
  ('no canvas', 'mut_editor', '{}', null, 'create', 'op-refuse-6', '{"type":"text"}', 'invalid_input', 'canvas_id', 'canvas_id is required'),
  ('not a member, with a read scope', 'mut_stranger', jsonb_build_object('scope', 'canvas:*:read'), (select canvas_id from ids), 'create', 'op-refuse-7', '{"type":"text"}', 'not_found', 'canvas_id', 'not a member'),
  ('a viewer, with a read scope', 'mut_viewer', jsonb_build_object('scope', format('canvas:%s:read', (select canvas_id from ids))), (select canvas_id from ids), 'create', 'op-refuse-8', '{"type":"text"}', 'forbidden', null, '(viewer)'),
  ('an editor with a read scope, and a move with content', 'mut_editor', jsonb_build_object('scope', format('canvas:%s:read', (select canvas_id from ids))), (select canvas_id from ids), 'move', 'op-refuse-9', '{"content":{}}', 'forbidden', null, 'scope'),
  ('a move with content, and content not an object', 'mut_editor', '{}', (select canvas_id from ids), 'move', 'op-refuse-10', '{"content":[1]}', 'invalid_input', 'patch', 'a move changes only'),
  ('content not an object', 'mut_editor', '{}', (select canvas_id from ids), 'create', 'op-refuse-11', '{"type":"text","content":"x"}', 'invalid_input', 'patch.content', 'JSON Merge Patch');
create temp table refused (name text, res jsonb);
grant all on refused to authenticated;
do $$
declare c record;
begin
  for c in select * from refusals loop
    if c.who is null then
      perform tests.clear_authentication();
      perform set_config('role', 'authenticated', true);
    else
      perform tests.authenticate_as(c.who, c.claims);
    end if;
    insert into refused select c.name, api.upsert_block_atomic(c.canvas, (select a from k), c.action, c.client_op_id, 1, c.patch);
  end loop;
  perform tests.clear_authentication();
end $$;
select is(jsonb_build_object('code', f.res #>> '{error,code}', 'field', f.res #>> '{error,field}', 'says', strpos(f.res #>> '{error,message}', c.says) > 0),
          jsonb_build_object('code', c.code, 'field', c.field, 'says', true),
          format('%s -> %s%s', c.name, c.code, coalesce(' on ' || c.field, '')))
from refusals c join refused f using (name) order by c.name;

select is((select array_agg(f) from unnest(array['api.upsert_block_atomic(uuid,uuid,text,text,integer,jsonb)', 'api.upsert_blocks_atomic(uuid,jsonb)']) f
           where has_function_privilege('anon', f, 'execute')), null, 'anon (and PUBLIC) may not even call the mutation RPCs');

-- ---------------------------------------------------------------- cascading delete
create temp table seq_before_delete as select count(*) as msgs from realtime.messages where topic = 'canvas:' || (select canvas_id from ids);
select tests.authenticate_as('mut_owner');
insert into r select 'delete_a', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'delete', 'op-delete-a',
                                                         (select version from app.blocks where block_id = (select a from k)), '{}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'delete_a'), 'success', 'delete: status success');
select is((select count(*) from app.blocks where block_id in ((select a from k), (select b from k))), 0::bigint,
          'deleting a parent removes its children');
select is((select array(select jsonb_array_elements_text(res -> 'deleted_ids') order by 1)::uuid[] from r where name = 'delete_a'),
          array[(select a from k), (select b from k)], 'the result reports every deleted id (deleted_ids)');
select is((select (res ->> 'version')::int from r where name = 'delete_a'), 7, 'a delete reports the version it ended');
select is((select jsonb_object_agg(case block_id when (select a from k) then 'a' else 'b' end, version) from app.block_tombstones
           where block_id in ((select a from k), (select b from k))),
          jsonb_build_object('a', 7, 'b', (select max(new_version) from app.block_operations where block_id = (select b from k) and status = 'success')),
          'the delete keeps each removed block''s last version (the delete''s own for A, B''s current one) in app.block_tombstones');
select is((select count(*) from realtime.messages where topic = 'canvas:' || (select canvas_id from ids)) - (select msgs from seq_before_delete),
          1::bigint, 'a delete is published once');
select is((select payload -> 'deleted_ids' from realtime.messages where topic = 'canvas:' || (select canvas_id from ids)
           and payload ->> 'client_op_id' = 'op-delete-a'), (select res -> 'deleted_ids' from r where name = 'delete_a'),
          'and its delta names the deleted ids');
select is((select count(*) from app.block_operations where block_id = (select a from k)) > 0, true,
          'the deleted block keeps its history in the log');
select tests.authenticate_as('mut_owner');
insert into r select 'update_deleted', api.upsert_block_atomic((select canvas_id from ids), (select a from k), 'update', 'op-update-deleted', 7,
                                                               '{"content":{}}');
select tests.clear_authentication();
select is((select res #>> '{error,code}' from r where name = 'update_deleted'), 'not_found', 'a deleted block is not_found');
-- a child deleted with its parent took no version of its own: created again, it continues from
-- its last logged one, and an op made at that version (for the deleted child) is a conflict
create temp table b_last as select max(new_version) as v from app.block_operations where block_id = (select b from k) and status = 'success';
grant select on b_last to authenticated;
select tests.authenticate_as('mut_owner');
insert into r select 'recreate_b', api.upsert_block_atomic((select canvas_id from ids), (select b from k), 'create', 'op-recreate-b', null,
                                                           '{"type":"text"}');
insert into r select 'old_b', api.upsert_block_atomic((select canvas_id from ids), (select b from k), 'update', 'op-old-b',
                                                      (select v from b_last), '{"content":{"z":1}}');
select tests.clear_authentication();
select is((select (r.res ->> 'version')::int || ' ' || (r2.res ->> 'status') from r, r r2 where r.name = 'recreate_b' and r2.name = 'old_b'),
          ((select v from b_last) + 1) || ' conflict',
          'a child deleted with its parent, created again, continues its versions; an op made for the deleted child conflicts');

-- ---------------------------------------------------------------- batches
-- All or nothing: a failing third op leaves nothing of ops one and two.
create temp table batch_before as select (select last_seq from app.canvases where canvas_id = (select canvas_id from ids)) as last_seq,
  (select count(*) from app.blocks where canvas_id = (select canvas_id from ids)) as blocks;
select tests.authenticate_as('mut_owner');
insert into r select 'batch_fail', api.upsert_blocks_atomic((select canvas_id from ids), '[
  {"action":"create","client_op_id":"batch-1","block_id":"00000000-0000-4000-8000-0000000000e1","patch":{"type":"text"}},
  {"action":"create","client_op_id":"batch-2","block_id":"00000000-0000-4000-8000-0000000000e2","patch":{"type":"text"}},
  {"action":"create","client_op_id":"batch-3","block_id":"00000000-0000-4000-8000-0000000000e3","patch":{"type":"text","y_order":"bad!"}}]');
select tests.clear_authentication();
select is((select jsonb_build_object('status', res ->> 'status', 'failed_index', res -> 'failed_index', 'field', res #>> '{error,field}')
           from r where name = 'batch_fail'),
          '{"status":"failed","failed_index":2,"field":"patch.y_order"}', 'a batch whose third op is invalid fails with failed_index 2');
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from ids)), (select blocks from batch_before),
          'nothing from ops 1 and 2 persists');
select is((select count(*) from app.block_operations where client_op_id in ('batch-1', 'batch-2') and status = 'success'), 0::bigint,
          'ops 1 and 2 left no applied operation');
select is((select last_seq from app.canvases where canvas_id = (select canvas_id from ids)), (select last_seq from batch_before),
          'the failed batch advanced no watermark');
select is((select count(*) from realtime.messages where payload ->> 'client_op_id' in ('batch-1', 'batch-2')), 0::bigint,
          'and published nothing');
select is((select status || ':' || error_code from app.block_operations where client_op_id = 'batch-3'), 'failed:invalid_input',
          'the failing op is logged as failed');

-- A batch op's block_id that is not a UUID is refused by field, not read as absent (which would
-- create under a new id, or say block_id is required)
create temp table bad_ids_before as select count(*) as n from app.blocks where canvas_id = (select canvas_id from ids);
select tests.authenticate_as('mut_owner');
insert into r select 'batch_bad_id_' || i, api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(
  jsonb_build_object('action', a, 'client_op_id', 'batch-bad-id-' || i, 'block_id', b, 'base_version', 1, 'patch', p)))
from (values (1, 'create', '"not-a-uuid"'::jsonb, '{"type":"text"}'::jsonb), (2, 'create', '42', '{"type":"text"}'),
             (3, 'update', '"not-a-uuid"', '{"content":{"x":1}}')) v(i, a, b, p);
select tests.clear_authentication();
select is((select array_agg(res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') order by name)
           from r where name like 'batch_bad_id_%'),
          array['failed invalid_input block_id', 'failed invalid_input block_id', 'failed invalid_input block_id'],
          'a batch op whose block_id is not a UUID (a string, a number; create or update) -> invalid_input on block_id');
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from ids)), (select n from bad_ids_before),
          '... and creates nothing');
select tests.authenticate_as('mut_owner');
insert into r select 'batch_bad_type_' || i, api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(o))
from (values (1, '{"action":"update","client_op_id":"batch-bad-type-1","block_id":"00000000-0000-4000-8000-00000000000a","base_version":"3","patch":{"content":{"x":1}}}'::jsonb),
             (2, '{"action":"create","client_op_id":42,"patch":{"type":"text"}}'),
             (3, '{"action":["create"],"client_op_id":"batch-bad-type-3","patch":{"type":"text"}}')) v(i, o);
select tests.clear_authentication();
select is((select array_agg(res #>> '{error,code}' || ' ' || (res #>> '{error,field}') order by name) from r where name like 'batch_bad_type_%'),
          array['invalid_input base_version', 'invalid_input client_op_id', 'invalid_input action'],
          'a batch op with a base_version that is a string, a client_op_id that is a number, or an action that is an array -> invalid_input on that field');

-- a base_version is a JSON number: a whole one written 2.0 or 2e0 is 2 (JSON does not tell them apart,
-- nor does the HTTP API's schema), not a cast error
select tests.authenticate_as('mut_owner');
insert into r select 'batch_fraction', api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(
  jsonb_build_object('action', 'update', 'client_op_id', 'batch-fraction-1', 'block_id', (select b from k),
                     'base_version', (select version from app.blocks where block_id = (select b from k))::numeric(10,1),
                     'patch', '{"content":{"fraction":1}}'::jsonb)));
select tests.clear_authentication();
select is((select res ->> 'status' || ' ' || (res -> 'results' -> 0 ->> 'version') from r where name = 'batch_fraction'),
          'success ' || (select version from app.blocks where block_id = (select b from k)),
          'a batch op whose base_version is a whole number written with a fraction (N.0) applies as base_version N');
select tests.authenticate_as('mut_owner');
insert into r select 'batch_fraction_bad', api.upsert_blocks_atomic((select canvas_id from ids),
  '[{"action":"update","client_op_id":"batch-fraction-2","block_id":"00000000-0000-4000-8000-00000000000a","base_version":1.5,"patch":{"content":{"x":1}}}]');
select tests.clear_authentication();
select is((select res #>> '{error,code}' || ' ' || (res #>> '{error,field}') from r where name = 'batch_fraction_bad'),
          'invalid_input base_version', '... and one with a fraction (1.5) -> invalid_input on base_version');

select tests.authenticate_as('mut_owner');
insert into r select 'batch_ok', api.upsert_blocks_atomic((select canvas_id from ids), '[
  {"action":"create","client_op_id":"batch-ok-1","block_id":"00000000-0000-4000-8000-0000000000d3","patch":{"type":"text"}},
  {"action":"create","client_op_id":"batch-ok-2","block_id":"00000000-0000-4000-8000-0000000000d4","patch":{"type":"text","after_id":"00000000-0000-4000-8000-0000000000d3"}},
  {"action":"update","client_op_id":"batch-ok-3","block_id":"00000000-0000-4000-8000-0000000000d3","base_version":1,"patch":{"content":{"x":1}}}]');
insert into r select 'batch_retry', api.upsert_blocks_atomic((select canvas_id from ids), '[
  {"action":"create","client_op_id":"batch-ok-1","block_id":"00000000-0000-4000-8000-0000000000d3","patch":{"type":"text"}},
  {"action":"create","client_op_id":"batch-ok-2","block_id":"00000000-0000-4000-8000-0000000000d4","patch":{"type":"text"}},
  {"action":"update","client_op_id":"batch-ok-3","block_id":"00000000-0000-4000-8000-0000000000d3","base_version":1,"patch":{"content":{"x":1}}}]');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'batch_ok'), 'success', 'a valid batch succeeds');
select is((select array(select x ->> 'client_op_id' from jsonb_array_elements(res -> 'results') with ordinality t(x, n) order by n)
           from r where name = 'batch_ok'), array['batch-ok-1', 'batch-ok-2', 'batch-ok-3'], 'its results come in op order');
select ok((select bool_and((x ->> 'server_seq')::bigint > coalesce(lag, 0)) from (
             select x, lag((x ->> 'server_seq')::bigint) over (order by n) as lag
             from r, jsonb_array_elements(res -> 'results') with ordinality t(x, n) where name = 'batch_ok') s),
          'with increasing server_seq');
select is((select (res ->> 'server_seq')::bigint from r where name = 'batch_ok'),
          (select last_seq from app.canvases where canvas_id = (select canvas_id from ids)), 'the batch reports its last server_seq');
select is((select array_agg(b.y_order < c.y_order) from app.blocks b, app.blocks c
           where b.block_id = '00000000-0000-4000-8000-0000000000d3' and c.block_id = '00000000-0000-4000-8000-0000000000d4'),
          array[true], 'later ops in a batch see earlier ones (after_id a block created in the same batch)');
select is((select res -> 'results' from r where name = 'batch_retry'),
          (select jsonb_agg(x || '{"duplicate": true}' order by o) from r, jsonb_array_elements(res -> 'results') with ordinality e(x, o) where name = 'batch_ok'),
          'a retried batch returns the original results, each marked duplicate: true');
select is((select version from app.blocks where block_id = '00000000-0000-4000-8000-0000000000d3'), 2, 'and applies nothing twice');

-- A deleted user's token (valid until it expires: tokens are checked by signature and expiry
-- alone) is unauthorized here as everywhere else (internal.require_user), not not_found (its
-- memberships went with it): a single op and a batch, nothing applied (nothing in the canvas's log).
select tests.create_user('mut_ghost');
select tests.authenticate_as('mut_owner');
select api.set_workspace_member((select workspace_id from ids), tests.user_id('mut_ghost'), 'editor');
select tests.clear_authentication();
select tests.authenticate_as_deleted('mut_ghost');
insert into r select 'ghost_op', api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'ghost-1', null, '{"type":"text"}');
insert into r select 'ghost_batch', api.upsert_blocks_atomic((select canvas_id from ids),
  '[{"action":"create","client_op_id":"ghost-2","patch":{"type":"text"}}]');
select tests.clear_authentication();
select is((select res #>> '{status}' || ' ' || (res #>> '{error,code}') || ': ' || (res #>> '{error,message}') from r where name = 'ghost_op'),
          'failed unauthorized: the user this token was issued to no longer exists',
          'a deleted user''s token: the mutation RPC answers unauthorized (as require_user does), not not_found');
select is((select res #>> '{status}' || ' ' || (res #>> '{error,code}') from r where name = 'ghost_batch'), 'failed unauthorized',
          'and so does a batch');
select is((select count(*)::int from app.block_operations where client_op_id in ('ghost-1', 'ghost-2')), 0,
          'nothing of it in the canvas''s log');

select * from finish();
rollback;
