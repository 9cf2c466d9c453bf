-- The usual edit (an update whose patch is content alone, on the version the client names) is
-- written by its own short path in internal.apply_block_op (step 3), which writes the operation
-- row, the broadcast row and the audit row itself instead of calling internal.record_applied_op
-- (docs/performance.md, forty-fourth session). This file holds the two paths to one shape: the
-- same content edit, once on the current version (the short path) and once from a stale version
-- (the block moved on: the general path and record_applied_op), must leave rows that differ only
-- in the values that name the operation (ids, numbers, versions, times). A change to one path's
-- rows that is not made in the other fails here.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(16);

select tests.create_user('usual_owner');
create temp table ids (workspace_id uuid, canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
select tests.authenticate_as('usual_owner');
insert into ids (workspace_id) select (api.create_workspace('Usual') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Usual edits') ->> 'canvas_id')::uuid;

set local request.headers = '{"x-forwarded-for":"203.0.113.7","user-agent":"pgtap-usual/1.0","x-request-id":"req-usual"}';
select tests.authenticate_as('usual_owner', '{"session_id":"sess-usual"}');
-- two blocks at version 1
select api.upsert_block_atomic((select canvas_id from ids), b, 'create', 'usual-create-' || b, null, '{"type":"text","content":{"a":1}}')
from unnest(array['00000000-0000-4000-8000-0000000000d1', '00000000-0000-4000-8000-0000000000d2']::uuid[]) b;
-- the short path: block d1 edited on its current version
insert into r select 'short', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                      'usual-short', 1, '{"content":{"b":2}}');
-- the general path: block d2 moved on to version 2 (key a), then edited from version 1 (key b, merged)
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d2', 'update', 'usual-ahead', 1,
                               '{"content":{"a":3}}');
insert into r select 'general', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d2', 'update',
                                                        'usual-general', 1, '{"content":{"b":2}}');
select tests.clear_authentication();

-- the values that name an operation, set aside before comparing
create function pg_temp.shape(p jsonb) returns jsonb language sql immutable as $$
  select p - array['server_seq', 'canvas_seq', 'client_op_id', 'block_id', 'version', 'base_version', 'new_version',
                   'id', 'block', 'result', 'started_at', 'created_at', 'inserted_at', 'duration_ms', 'response_time_ms',
                   'entity_id', 'updated_at', 'op_id', 'audit_id']
$$;
create function pg_temp.keys(p jsonb) returns text[] language sql immutable as $$
  select array_agg(k order by k) from jsonb_object_keys(p) k
$$;

select is((select res ->> 'status' from r where name = 'short') || ' ' || (select res ->> 'status' from r where name = 'general'),
          'success success', 'both edits apply');
select is((select (res -> 'block' -> 'content') from r where name = 'general'), '{"a":3,"b":2}'::jsonb,
          'the stale edit merged over the version it missed (the general path)');
select is((select pg_temp.keys(res) from r where name = 'short'), (select pg_temp.keys(res) from r where name = 'general'),
          'the result: the same members');
select is((select pg_temp.keys(res -> 'block') from r where name = 'short'), (select pg_temp.keys(res -> 'block') from r where name = 'general'),
          'the result''s block: the same members');

select is((select pg_temp.shape(to_jsonb(o)) from app.block_operations o where client_op_id = 'usual-short'),
          (select pg_temp.shape(to_jsonb(o)) from app.block_operations o where client_op_id = 'usual-general'),
          'the operation row: the same columns set, the same values but those naming the operation');
select is((select jsonb_build_object('result', o.result, 'block', o.block) from app.block_operations o where client_op_id = 'usual-short'),
          (select jsonb_build_object('result', r.res, 'block', r.res -> 'block') from r where name = 'short'),
          'the operation row of the short path logs its result and block as answered');

select is((select pg_temp.shape(to_jsonb(a)) from app.system_audit a where client_op_id = 'usual-short'),
          (select pg_temp.shape(to_jsonb(a)) from app.system_audit a where client_op_id = 'usual-general'),
          'the audit row: the same action, status, details, ip, user agent, session, request and rows affected');
select is((select count(*) from app.system_audit where client_op_id = 'usual-short'), 1::bigint,
          'the short path leaves exactly one audit row');

select is((select pg_temp.shape(m.payload) || jsonb_build_object('event', m.event, 'topic', m.topic, 'private', m.private, 'extension', m.extension)
           from realtime.messages m where m.payload ->> 'client_op_id' = 'usual-short'),
          (select pg_temp.shape(m.payload) || jsonb_build_object('event', m.event, 'topic', m.topic, 'private', m.private, 'extension', m.extension)
           from realtime.messages m where m.payload ->> 'client_op_id' = 'usual-general'),
          'the broadcast row: the same event, topic, privacy and payload members');
select is((select pg_temp.keys(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'usual-short'),
          (select pg_temp.keys(m.payload) from realtime.messages m where m.payload ->> 'client_op_id' = 'usual-general'),
          'the broadcast payload: the same members');

-- ---------------------------------------------------------------- the short path's own checks
-- step 2's two checks that the usual edit's shape does not answer are one expression on its path
-- (docs/performance.md, fiftieth session), in step 2's order: the input policy (walked here: the
-- transaction does not say potentia.input_policy = checked), then the size
select tests.authenticate_as('usual_owner');
insert into r select 'proto_and_large', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
  'usual-proto-large', 2, jsonb_build_object('content', jsonb_build_object('x', repeat('x', 70000), 'o', '{"__proto__":1}'::jsonb)));
insert into r select 'large', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
  'usual-large', 2, jsonb_build_object('content', jsonb_build_object('x', repeat('x', 70000))));
select tests.clear_authentication();
select is((select res -> 'error' ->> 'code' from r where name = 'proto_and_large') || ' ' || (select res -> 'error' ->> 'code' from r where name = 'large')
          || ' ' || (select res -> 'error' ->> 'field' from r where name = 'large'),
          'invalid_input payload_too_large patch.content',
          'a usual edit breaking the input policy is refused for it before its size is asked; one only too large, on patch.content');
select is((select version from app.blocks where block_id = '00000000-0000-4000-8000-0000000000d1'), 2, 'and neither wrote the block');

-- the rate limit's usual hit is take_limit_slot's first statement, written out in apply_block_op
-- with the window and key read beside the role; anything else is take_limit_slot's. Here the slot
-- above the highest is over the limit (the highest, n + 2, written directly), so that statement
-- takes nothing and the function takes the gap below it (n + 1); then the window is full
create temp table slots_before as select count(*)::int as n from app.rate_limit_slots
  where user_id = tests.user_id('usual_owner') and bucket = 'mutations' and window_start = internal.rate_window_start(60);
update app.settings set value = to_jsonb((select n from slots_before) + 2) where key = 'mutations_per_minute';
insert into app.rate_limit_slots (window_key, user_id, window_start, bucket, slot)
select internal.rate_limit_window_key(tests.user_id('usual_owner'), 'mutations', internal.rate_window_start(60)), tests.user_id('usual_owner'),
       internal.rate_window_start(60), 'mutations', (select n from slots_before) + 2;
select tests.authenticate_as('usual_owner');
insert into r select 'gap', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                    'usual-gap', 2, '{"content":{"c":3}}');
insert into r select 'full', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000d1', 'update',
                                                     'usual-full', 3, '{"content":{"d":4}}');
select tests.clear_authentication();
select is((select res ->> 'status' from r where name = 'gap') || ' ' || (select res ->> 'status' || ' ' || (res -> 'error' ->> 'code') from r where name = 'full'),
          'success failed rate_limited', 'a usual edit takes the gap below a highest slot at the limit; the next is refused');
select is((select array_agg(slot order by slot) from app.rate_limit_slots
           where user_id = tests.user_id('usual_owner') and bucket = 'mutations' and window_start = internal.rate_window_start(60)
             and slot > (select n from slots_before)),
          array[(select n from slots_before) + 1, (select n from slots_before) + 2], 'the gap''s slot is taken');
select is((select count(*) filter (where window_key <> internal.rate_limit_window_key(user_id, bucket, window_start)) from app.rate_limit_slots
           where user_id = tests.user_id('usual_owner')), 0::bigint,
          'every slot the mutations took is keyed as take_limit_slot keys it');
select is((select count(*) from app.rate_limit_slots where user_id = tests.user_id('usual_owner') and bucket = 'mutations'
             and window_start = internal.rate_window_start(60)), (select n from slots_before) + 2::bigint,
          'the minute holds the limit''s slots, and no more');

select * from finish();
rollback;
