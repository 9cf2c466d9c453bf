-- A text edit written directly (internal.apply_block_op step 5: every shared-text keystroke,
-- behind or not) writes its operation row, broadcast row and audit row itself instead of calling
-- internal.record_applied_op (docs/performance.md, forty-ninth session). This file holds the two to
-- one shape: a text edit on the current version and one from a stale version, both through the
-- RPC, against record_applied_op called with the same operation, must leave rows that differ only
-- in the values that name the operation (ids, numbers, versions, times). A change to
-- record_applied_op's rows that is not made in apply_block_op's copy fails here.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(10);

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

select * from finish();
rollback;
