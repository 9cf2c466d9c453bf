-- A text edit written directly writes its operation row, broadcast row and audit row itself
-- instead of calling internal.record_applied_op: a text edit of one key and nothing else (every
-- shared-text keystroke, behind or not) on its own path at the end of internal.apply_block_op's
-- step 2 (docs/performance.md, fiftieth session), any other in step 5 (forty-ninth session). This
-- file holds both copies to one shape: keystrokes on the current version and from a stale version,
-- and a two-key edit, all through the RPC, against record_applied_op called with the same
-- operation, must leave rows that differ only in the values that name the operation (ids, numbers,
-- versions, times). A change to record_applied_op's rows that is not made in apply_block_op's
-- copies fails here.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(21);

select tests.create_user('text_path_owner');
create temp table ids (workspace_id uuid, canvas_id uuid, ctx jsonb);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
select tests.authenticate_as('text_path_owner');
insert into ids (workspace_id) select (api.create_workspace('Text path') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Text edits') ->> 'canvas_id')::uuid;

set local request.headers = '{"x-forwarded-for":"203.0.113.9","user-agent":"pgtap-text/1.0","x-request-id":"req-text"}';
select tests.authenticate_as('text_path_owner', '{"session_id":"sess-text"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'create', 'text-create', null,
                               '{"type":"text","content":{"body":"hello"}}');
-- on the current version, then from version 1 while the block is at 2 (transformed over the first)
insert into r select 'current', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                        'text-current', 1, '{"text":{"body":[5, "!"]}}');
insert into r select 'behind', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                       'text-behind', 1, '{"text":{"body":["> "]}}');
-- the caller's context as the RPC read it (claims and headers still set), read as the owner
select set_config('role', 'postgres', true);
update ids set ctx = internal.request_context();
select tests.clear_authentication();

-- the same operation as text-behind, its rows written by record_applied_op
select internal.record_applied_op(i.ctx, o.canvas_id, o.block_id, 'update', 'text-reference', o.base_version, o.new_version,
                                  o.patch, o.block, nextval('app.seq_block_events'), now(), 1, o.patch -> 'text')
from app.block_operations o, ids i where o.client_op_id = 'text-behind';

create function pg_temp.shape(p jsonb) returns jsonb language sql immutable as $$
  select p - array['server_seq', 'canvas_seq', 'client_op_id', 'block_id', 'version', 'base_version', 'new_version',
                   'id', 'result', 'started_at', 'created_at', 'inserted_at', 'duration_ms', 'response_time_ms',
                   'entity_id', 'updated_at', 'op_id', 'audit_id']
$$;
create function pg_temp.keys(p jsonb) returns text[] language sql immutable as $$
  select array_agg(k order by k) from jsonb_object_keys(p) k
$$;

select is((select res ->> 'status' from r where name = 'current') || ' ' || (select res ->> 'status' from r where name = 'behind'),
          'success success', 'both text edits apply');
select is((select res -> 'block' -> 'content' ->> 'body' from r where name = 'behind'), '> hello!',
          'the stale edit was transformed over the one it missed');
select is((select res -> 'text' from r where name = 'behind'), '{"body": ["> "]}'::jsonb, 'the result carries the text operations as applied');

select is((select pg_temp.shape(to_jsonb(o)) from app.block_operations o where client_op_id = 'text-behind'),
          (select pg_temp.shape(to_jsonb(o)) from app.block_operations o where client_op_id = 'text-reference'),
          'the operation row: the same columns and values as record_applied_op writes, but those naming the operation');
select is((select pg_temp.keys(o.result) from app.block_operations o where client_op_id = 'text-current'),
          (select pg_temp.keys(o.result) from app.block_operations o where client_op_id = 'text-reference'),
          'the logged result: the same members');
select is((select pg_temp.shape(o.result) from app.block_operations o where client_op_id = 'text-behind'),
          (select pg_temp.shape(o.result) from app.block_operations o where client_op_id = 'text-reference'),
          'the logged result: the same values but those naming the operation');
select is((select o.result from app.block_operations o where client_op_id = 'text-behind'), (select res from r where name = 'behind'),
          'the operation row logs its result as answered');

select is((select pg_temp.shape(to_jsonb(a)) from app.system_audit a where client_op_id = 'text-behind'),
          (select pg_temp.shape(to_jsonb(a)) from app.system_audit a where client_op_id = 'text-reference'),
          'the audit row: the same action, status, details, ip, user agent, session, request and rows affected');

select is((select pg_temp.shape(m.payload) || jsonb_build_object('event', m.event, 'topic', m.topic, 'private', m.private, 'extension', m.extension)
           from realtime.messages m where m.payload ->> 'client_op_id' = 'text-behind'),
          (select pg_temp.shape(m.payload) || jsonb_build_object('event', m.event, 'topic', m.topic, 'private', m.private, 'extension', m.extension)
           from realtime.messages m where m.payload ->> 'client_op_id' = 'text-reference'),
          'the broadcast row: the same event, topic, privacy and payload, but the values naming the operation');
select is((select pg_temp.keys(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'text-current'),
          (select pg_temp.keys(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'text-reference'),
          'the broadcast payload: the same members');

-- A text edit of one key and nothing else has a path of its own (apply_block_op, end of step 2:
-- the block and the log read by one statement, its rows written there); anything else it leaves
-- to steps 3 to 5. Each case below answers as those steps answer it.
select tests.authenticate_as('text_path_owner', '{"session_id":"sess-text"}');
create temp table race (armed boolean);
grant all on race to authenticated;
insert into race values (false);
-- two keys: step 5's direct text edit, its rows held to record_applied_op's (below) as the one-key
-- path's are above
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e2', 'create', 'two-create', null,
                               '{"type":"text","content":{"a":"x","b":"y"}}');
insert into r select 'two', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e2', 'update',
                                                    'two-keys', 1, '{"text":{"a":[1, "1"],"b":["2"]}}');
-- content set on another key since base_version: the log is not text alone, steps 3 to 5 merge
insert into r select 'content-since', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                              'content-since', 3, '{"content":{"other":1}}');
insert into r select 'after-content', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                              'after-content', 3, '{"text":{"body":[1, "#"]}}');
-- refusals: a key that holds no text, a base_version out of range, a block that is not there
insert into r select 'not-text', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                         'not-text', 4, '{"text":{"other":["x"]}}');
insert into r select 'base-0', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                       'base-0', 0, '{"text":{"body":["x"]}}');
insert into r select 'no-block', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e9', 'update',
                                                         'no-block', 1, '{"text":{"body":["x"]}}');
-- another writer between the read and the write (as another process's lane would be): a trigger
-- on the canvas row's UPDATE, armed once, types "*" at the text's start and logs it, so the
-- keystroke's conditional UPDATE finds the block moved on and the edit is carried on over it
select set_config('role', 'postgres', true);
create function pg_temp.other_writer() returns trigger language plpgsql as $$
declare
  b app.blocks;
begin
  if not (select armed from race) then return new; end if;
  update race set armed = false;
  update app.blocks set content = jsonb_set(content, '{body}', to_jsonb('*' || (content ->> 'body'))), version = version + 1
  where block_id = '00000000-0000-4000-8000-0000000000e1' returning * into b;
  perform internal.record_applied_op((select ctx from ids), b.canvas_id, b.block_id, 'update', 'other-writer', b.version - 1, b.version,
                                     '{"text":{"body":["*"]}}', internal.block_json(b), nextval('app.seq_block_events'), now(), 1,
                                     '{"body":["*"]}', '{}', new.last_canvas_seq + 100);
  return new;
end $$;
create trigger other_writer before update on app.canvases for each row execute function pg_temp.other_writer();
update race set armed = true;
select tests.authenticate_as('text_path_owner', '{"session_id":"sess-text"}');
insert into r select 'raced', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000e1', 'update',
                                                      'raced', 5, '{"text":{"body":[9, "?"]}}');
select set_config('role', 'postgres', true);
drop trigger other_writer on app.canvases;
select tests.clear_authentication();
select internal.record_applied_op(i.ctx, o.canvas_id, o.block_id, 'update', 'two-reference', o.base_version, o.new_version,
                                  o.patch, o.block, nextval('app.seq_block_events'), now(), 1, o.patch -> 'text')
from app.block_operations o, ids i where o.client_op_id = 'two-keys';

select is((select res ->> 'status' || ' ' || (res -> 'block' -> 'content')::text from r where name = 'two'),
          'success {"a": "x1", "b": "2y"}', 'a text edit of two keys applies');
select is((select pg_temp.shape(to_jsonb(o)) || pg_temp.shape(o.result) from app.block_operations o where client_op_id = 'two-keys'),
          (select pg_temp.shape(to_jsonb(o)) || pg_temp.shape(o.result) from app.block_operations o where client_op_id = 'two-reference'),
          'step 5''s direct text edit: its operation row and result as record_applied_op writes them');
select is((select pg_temp.shape(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'two-keys'),
          (select pg_temp.shape(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'two-reference'),
          'step 5''s direct text edit: its broadcast as record_applied_op writes it');
select is((select res ->> 'status' || ' ' || (res -> 'block' -> 'content')::text || ' ' || (res ->> 'version') || ' ' || (res -> 'text')::text
           from r where name = 'after-content'),
          'success {"body": "># hello!", "other": 1} 5 {"body": [1, "#"]}',
          'a keystroke behind a content set on another key: merged with it and transformed');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') || ' ' || (res #>> '{error,message}')
           from r where name = 'not-text'),
          'failed invalid_input patch.text.other content key other holds a number, not text: set it with content instead',
          'a keystroke on a key that holds no text is refused on its field');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'base-0'),
          'failed invalid_input base_version', 'a keystroke from base_version 0 is refused on base_version');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'no-block'),
          'failed not_found block_id', 'a keystroke on a block that is not there: not_found');
select is((select res ->> 'status' || ' ' || (res -> 'block' -> 'content' ->> 'body') || ' ' || (res ->> 'version') || ' ' || (res -> 'text')::text
           from r where name = 'raced'),
          'success *># hello!? 7 {"body": [10, "?"]}',
          'a keystroke whose block another writer moved on between its read and its write: carried on over that write');
select is((select o.base_version || ' ' || o.new_version || ' ' || (o.patch)::text || ' ' || (o.result = r.res)::text
           from app.block_operations o, r where o.client_op_id = 'raced' and r.name = 'raced'),
          '6 7 {"text": {"body": [10, "?"]}} true', 'its operation row: logged after the other write, as applied, with its answer');
select is((select m.payload ->> 'canvas_seq' = (select res ->> 'canvas_seq' from r where name = 'raced')
           from realtime.messages m where m.payload ->> 'client_op_id' = 'raced'), true, 'and its broadcast');
select is((select content::text || ' ' || version from app.blocks where block_id = '00000000-0000-4000-8000-0000000000e1'),
          '{"body": "*># hello!?", "other": 1} 7', 'the block as written');

select * from finish();
rollback;
