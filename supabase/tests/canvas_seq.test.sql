-- canvas_seq: per canvas, the applied operations are numbered 1, 2, 3, … with no gap, in commit
-- order (taken under the canvas lock, beside the global server_seq). Proven here: interleaved
-- writers on two canvases, rejected and repeated attempts take no number, batches number each op
-- (a failed batch none), system moves are numbered too, the numbers reach the result, the
-- operation row and the block_op broadcast, the migration numbers pre-existing history, and
-- replay resumes by canvas_seq (paging, retention gaps, bad input, access).
-- Concurrent writers in separate transactions: tests/integration/canvas-seq.test.ts.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(43);

select tests.create_user(u) from unnest(array['cseq_alice', 'cseq_bob', 'cseq_viewer', 'cseq_stranger']) u;
create temp table ids (workspace_id uuid, a uuid, b uuid, empty uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
select tests.authenticate_as('cseq_alice');
insert into ids (workspace_id) select (api.create_workspace('Canvas seq') ->> 'workspace_id')::uuid;
update ids set a = (api.create_canvas(workspace_id, 'A') ->> 'canvas_id')::uuid,
               b = (api.create_canvas(workspace_id, 'B') ->> 'canvas_id')::uuid,
               empty = (api.create_canvas(workspace_id, 'Empty') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('cseq_bob'), 'editor');
select api.set_workspace_member((select workspace_id from ids), tests.user_id('cseq_viewer'), 'viewer');
select tests.clear_authentication();

-- the canvas's operations in commit order (server_seq order), with their numbers
create function pg_temp.numbers(p_canvas uuid) returns bigint[] language sql stable as $$
  select coalesce(array_agg(canvas_seq order by server_seq), '{}') from app.block_operations
  where canvas_id = p_canvas and status = 'success'
$$;
create function pg_temp.last_canvas_seq(p_canvas uuid) returns bigint language sql stable as $$
  select last_canvas_seq from app.canvases where canvas_id = p_canvas
$$;
create function pg_temp.one_to(n bigint) returns bigint[] language sql immutable as $$
  select coalesce(array_agg(i order by i), '{}') from generate_series(1::bigint, n) i
$$;

-- ---------------------------------------------------------------- interleaved writers
-- alice and bob alternate; every third write goes to canvas B, the others to A
do $$
begin
  for i in 1 .. 12 loop
    perform tests.authenticate_as(case when i % 2 = 0 then 'cseq_alice' else 'cseq_bob' end);
    insert into r select 'w' || i, api.upsert_block_atomic(
      case when i % 3 = 0 then (select b from ids) else (select a from ids) end, null, 'create', 'cseq-w' || i, null,
      '{"type":"text"}');
  end loop;
  perform tests.clear_authentication();
end $$;

select is(pg_temp.numbers((select a from ids)), pg_temp.one_to(8), 'canvas A: its 8 operations are numbered 1..8 in commit order');
select is(pg_temp.numbers((select b from ids)), pg_temp.one_to(4), 'canvas B, written in between: its 4 are numbered 1..4');
select is((select array_agg((res ->> 'canvas_seq')::bigint order by substr(name, 2)::int) from r
           where name ~ '^w\d+$' and substr(name, 2)::int % 3 <> 0), pg_temp.one_to(8),
          'each result carries its canvas_seq, in the order the writes were made');
select ok((select max(server_seq) - min(server_seq) + 1 > count(*) from app.block_operations
           where canvas_id = (select a from ids) and status = 'success'),
          'while canvas A''s server_seqs have gaps (B''s writes took numbers from the same sequence)');
select is((select array[pg_temp.last_canvas_seq(a), pg_temp.last_canvas_seq(b), pg_temp.last_canvas_seq(empty)] from ids),
          array[8, 4, 0]::bigint[], 'canvases.last_canvas_seq is each canvas''s newest number (0 without operations)');
select is((select array_agg((payload ->> 'canvas_seq')::bigint order by (payload ->> 'server_seq')::bigint) from realtime.messages
           where topic = 'canvas:' || (select a from ids) and event = 'block_op'), pg_temp.one_to(8),
          'the block_op broadcasts carry the same numbers');
select is((select count(*) from realtime.messages m join app.block_operations o on o.client_op_id = m.payload ->> 'client_op_id'
           where m.topic = 'canvas:' || (select a from ids) and m.event = 'block_op'
             and (m.payload ->> 'canvas_seq')::bigint = o.canvas_seq and (m.payload ->> 'server_seq')::bigint = o.server_seq),
          8::bigint, 'each broadcast''s canvas_seq and server_seq are those of its operation row');
select is((select result ->> 'canvas_seq' from app.block_operations where client_op_id = 'cseq-w5'), '4',
          'the stored result (answered to a retry) holds the canvas_seq too');

-- ---------------------------------------------------------------- rejected attempts take no number
select tests.authenticate_as('cseq_alice');
insert into r select 'update', api.upsert_block_atomic((select a from ids), (select (res ->> 'block_id')::uuid from r where name = 'w1'),
                                                       'update', 'cseq-update', 1, '{"content":{"v":2}}');
insert into r select 'conflict', api.upsert_block_atomic((select a from ids), (select (res ->> 'block_id')::uuid from r where name = 'w1'),
                                                         'update', 'cseq-conflict', 1, '{"content":{"v":3}}');
insert into r select 'failed', api.upsert_block_atomic((select a from ids), null, 'create', 'cseq-failed', null, '{"type":"Not A Type"}');
insert into r select 'missing', api.upsert_block_atomic((select a from ids), gen_random_uuid(), 'update', 'cseq-missing', 1, '{"content":{}}');
insert into r select 'retry', api.upsert_block_atomic((select a from ids), null, 'create', 'cseq-w2', null, '{"type":"text"}');
select tests.authenticate_as('cseq_viewer');
insert into r select 'forbidden', api.upsert_block_atomic((select a from ids), null, 'create', 'cseq-viewer', null, '{"type":"text"}');
select tests.authenticate_as('cseq_alice');
insert into r select 'after', api.upsert_block_atomic((select a from ids), null, 'create', 'cseq-after', null, '{"type":"text"}');
select tests.clear_authentication();

select is((select res ->> 'canvas_seq' from r where name = 'update'), '9', 'the next applied operation is number 9');
select is((select array_agg(res ->> 'status' || ':' || coalesce(res ->> 'canvas_seq', 'null') order by name) from r
           where name in ('conflict', 'failed', 'missing', 'forbidden')),
          array['conflict:null', 'failed:null', 'failed:null', 'failed:null'],
          'a conflict, an invalid op, a missing block and a viewer''s write take no number (canvas_seq null)');
select is((select count(*) from app.block_operations where canvas_id = (select a from ids) and status <> 'success' and canvas_seq is null),
          (select count(*) from app.block_operations where canvas_id = (select a from ids) and status <> 'success'),
          'no rejected or duplicate operation row holds a canvas_seq');
select is((select res ->> 'canvas_seq' from r where name = 'retry'), '2',
          'a retried client_op_id answers its original canvas_seq (2) and takes no new one');
select is((select res ->> 'canvas_seq' from r where name = 'after'), '10',
          'the write after all of them is number 10: nothing was skipped');
select is(pg_temp.numbers((select a from ids)), pg_temp.one_to(10), 'canvas A is still 1..10 without a gap');

-- ---------------------------------------------------------------- batches
select tests.authenticate_as('cseq_bob');
insert into r select 'batch', api.upsert_blocks_atomic((select a from ids), '[
  {"action":"create","client_op_id":"cseq-b1","patch":{"type":"text"}},
  {"action":"create","client_op_id":"cseq-b2","patch":{"type":"text"}},
  {"action":"create","client_op_id":"cseq-b3","patch":{"type":"text"}}]');
insert into r select 'batch_failed', api.upsert_blocks_atomic((select a from ids), '[
  {"action":"create","client_op_id":"cseq-bf1","patch":{"type":"text"}},
  {"action":"create","client_op_id":"cseq-bf2","patch":{"type":"Bad Type"}}]');
insert into r select 'batch_retry', api.upsert_blocks_atomic((select a from ids), '[
  {"action":"create","client_op_id":"cseq-b2","patch":{"type":"text"}},
  {"action":"create","client_op_id":"cseq-b4","patch":{"type":"text"}}]');
select tests.clear_authentication();

select is((select array_agg((x ->> 'canvas_seq')::bigint order by n) from r, jsonb_array_elements(res -> 'results') with ordinality t(x, n)
           where name = 'batch'), array[11, 12, 13]::bigint[], 'a batch numbers each op, consecutively in array order');
select is((select res ->> 'canvas_seq' || ' ' || (res ->> 'server_seq') from r where name = 'batch'),
          '13 ' || (select max(server_seq) from app.block_operations where client_op_id in ('cseq-b1', 'cseq-b2', 'cseq-b3')),
          'the batch result''s canvas_seq (and server_seq) is its highest');
select is((select res ->> 'status' || ' ' || coalesce(res ->> 'canvas_seq', 'null') from r where name = 'batch_failed'), 'failed null',
          'a failed batch takes no number');
select is((select array_agg((x ->> 'canvas_seq')::bigint order by n) from r, jsonb_array_elements(res -> 'results') with ordinality t(x, n)
           where name = 'batch_retry'), array[12, 14]::bigint[],
          'its first op having rolled back, the next batch continues at 14; an op applied before keeps its number (12)');
select is(pg_temp.numbers((select a from ids)), pg_temp.one_to(14), 'canvas A is 1..14');

-- ---------------------------------------------------------------- system operations
select is(internal.assign_ranks((select a from ids), array[(select (res ->> 'block_id')::uuid from r where name = 'w1')], array['zzz'], 'cseqtest'),
          1, 'a system move (rank rewrite) is applied');
select is((select canvas_seq from app.block_operations where client_op_id like 'system:cseqtest:%'), 15::bigint,
          'and numbered like any operation (15)');

-- ---------------------------------------------------------------- constraints
select throws_ok(format($$insert into app.block_operations (server_seq, canvas_seq, client_op_id, canvas_id, action, status)
                          values (nextval('app.seq_block_events'), 3, 'cseq-dup', %L, 'create', 'success')$$, (select a from ids)),
                 '23505', null, 'a canvas_seq is unique per canvas');
select throws_ok(format($$insert into app.block_operations (server_seq, client_op_id, canvas_id, action, status)
                          values (nextval('app.seq_block_events'), 'cseq-none', %L, 'create', 'success')$$, (select a from ids)),
                 '23514', null, 'an applied operation must have a canvas_seq');
select throws_ok(format($$insert into app.block_operations (canvas_seq, client_op_id, canvas_id, action, status)
                          values (99, 'cseq-failed-numbered', %L, 'create', 'failed')$$, (select a from ids)),
                 '23514', null, 'a rejected one must not');

-- ---------------------------------------------------------------- backfill of existing history
-- The state before the migration: no canvas_seq anywhere. Canvas B lost its two oldest operations
-- to retention first. Then the migration itself runs.
create temp table before_backfill as
  select op_id, canvas_id, canvas_seq from app.block_operations where canvas_id in (select a from ids union select b from ids);
delete from app.block_operations where op_id in (
  select op_id from app.block_operations where canvas_id = (select b from ids) and status = 'success' order by server_seq limit 2);
alter table app.block_operations drop column canvas_seq;
alter table app.canvases drop column last_canvas_seq;
\ir ../migrations/20261121000400_canvas_seq.sql

select is((select count(*) from before_backfill f join app.block_operations o using (op_id)
           where f.canvas_id = (select a from ids) and o.canvas_seq is not distinct from f.canvas_seq),
          (select count(*) from before_backfill where canvas_id = (select a from ids)),
          'backfill: canvas A''s history gets exactly the numbers it was given when written (1..15 by commit order; none for rejections)');
select is(pg_temp.numbers((select b from ids)), pg_temp.one_to(2),
          'canvas B, whose oldest two were pruned, is numbered 1..2 from its oldest operation still logged');
select is((select array[pg_temp.last_canvas_seq(a), pg_temp.last_canvas_seq(b), pg_temp.last_canvas_seq(empty)] from ids),
          array[15, 2, 0]::bigint[], 'and each canvas''s counter is set to its last number');
select ok((select indisunique from pg_index where indexrelid = 'app.block_operations_canvas_seq_idx'::regclass),
          'the unique index (canvas_id, canvas_seq) is back');
select tests.authenticate_as('cseq_alice');
insert into r select 'post_a', api.upsert_block_atomic((select a from ids), null, 'create', 'cseq-post-a', null, '{"type":"text"}');
insert into r select 'post_b', api.upsert_block_atomic((select b from ids), null, 'create', 'cseq-post-b', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select array_agg(res ->> 'canvas_seq' order by name) from r where name in ('post_a', 'post_b')), array['16', '3'],
          'after the migration, writes continue each canvas''s numbers (A 16, B 3)');

-- ---------------------------------------------------------------- replay by canvas_seq
select tests.authenticate_as('cseq_viewer');
insert into r select 'all', api.get_canvas_changes_since((select a from ids), 0, 100);
insert into r select 'since', api.get_canvas_changes_since((select a from ids), 13, 100);
insert into r select 'page1', api.get_canvas_changes_since((select a from ids), 0, 6);
insert into r select 'page2', api.get_canvas_changes_since((select a from ids), (select (res ->> 'canvas_watermark')::bigint from r where name = 'page1'), 6);
insert into r select 'page3', api.get_canvas_changes_since((select a from ids), (select (res ->> 'canvas_watermark')::bigint from r where name = 'page2'), 6);
insert into r select 'at_end', api.get_canvas_changes_since((select a from ids), 16, 100);
insert into r select 'ahead', api.get_canvas_changes_since((select a from ids), 17, 100);
insert into r select 'by_server_seq', api.get_canvas_changes((select a from ids), 0, 100);
insert into r select 'snapshot', api.get_canvas_snapshot((select a from ids));
select tests.clear_authentication();

select is((select array(select (c ->> 'canvas_seq')::bigint from jsonb_array_elements(res -> 'changes') c) from r where name = 'all'),
          pg_temp.one_to(16), 'from 0: canvas_seq 1..16, in order (a viewer may replay)');
select is((select array(select c ->> 'client_op_id' from jsonb_array_elements(res -> 'changes') c) from r where name = 'all'),
          (select array_agg(client_op_id order by server_seq) from app.block_operations where canvas_id = (select a from ids) and status = 'success'),
          'which are the canvas''s applied operations in commit order');
select is((select jsonb_build_object('has_more', res -> 'has_more', 'watermark', res -> 'watermark', 'canvas_watermark', res -> 'canvas_watermark',
                                     'snapshot_required', res -> 'snapshot_required') from r where name = 'all'),
          jsonb_build_object('has_more', false, 'watermark', (select last_seq from app.canvases where canvas_id = (select a from ids)),
                             'canvas_watermark', 16, 'snapshot_required', false),
          'with the server_seq and canvas_seq watermarks of the canvas');
select is((select array(select (c ->> 'canvas_seq')::bigint from jsonb_array_elements(res -> 'changes') c) from r where name = 'since'),
          array[14, 15, 16]::bigint[], 'since canvas_seq 13: 14, 15, 16');
select is((select array_agg((c ->> 'canvas_seq')::bigint order by p.name, n) from r p, jsonb_array_elements(p.res -> 'changes') with ordinality t(c, n)
           where p.name in ('page1', 'page2', 'page3')), pg_temp.one_to(16),
          'paging by canvas_watermark (6 at a time) returns 1..16 exactly once');
select is((select string_agg((res ->> 'has_more') || '@' || (res ->> 'canvas_watermark'), ' ' order by name) from r where name like 'page_'),
          'true@6 true@12 false@16', 'has_more and canvas_watermark per page');
select is((select jsonb_array_length(res -> 'changes') || ' ' || (res ->> 'snapshot_required') from r where name = 'at_end'), '0 false',
          'since the newest number: nothing, and no snapshot needed');
select is((select jsonb_array_length(res -> 'changes') || ' ' || (res ->> 'snapshot_required') || ' ' || (res ->> 'canvas_watermark') from r where name = 'ahead'),
          '0 true 16', 'since a number the canvas has not reached: snapshot_required');
select is((select array(select (c ->> 'canvas_seq')::bigint from jsonb_array_elements(res -> 'changes') c) from r where name = 'by_server_seq'),
          pg_temp.one_to(16), 'replay by server_seq (api.get_canvas_changes) carries canvas_seq too');
select is((select (res ->> 'canvas_watermark') || ' ' || (res ->> 'watermark') from r where name = 'snapshot'),
          '16 ' || (select last_seq from app.canvases where canvas_id = (select a from ids)),
          'the snapshot says which canvas_seq (and server_seq) its blocks are consistent with');

-- retention removed operations 1..3 of canvas A: resuming before them cannot be served from the log
delete from app.block_operations where canvas_id = (select a from ids) and canvas_seq <= 3;
select tests.authenticate_as('cseq_viewer');
insert into r select 'pruned_0', api.get_canvas_changes_since((select a from ids), 0, 100);
insert into r select 'pruned_3', api.get_canvas_changes_since((select a from ids), 3, 2);
select tests.clear_authentication();
select is((select jsonb_array_length(res -> 'changes') || ' ' || (res ->> 'snapshot_required') from r where name = 'pruned_0'), '0 true',
          'since 0 after 1..3 were pruned: snapshot_required, no changes');
select is((select array(select (c ->> 'canvas_seq')::bigint from jsonb_array_elements(res -> 'changes') c) from r where name = 'pruned_3'),
          array[4, 5]::bigint[], 'since 3: the log continues (4, 5)');

-- bad input and access
select tests.authenticate_as('cseq_viewer');
select throws_ok(format('select api.get_canvas_changes_since(%L, -1, 10)', (select a from ids)), 'PX400',
                 'since_canvas_seq must be a number >= 0', 'a negative since_canvas_seq is invalid_input (PX400)');
select tests.authenticate_as('cseq_stranger');
select throws_ok(format('select api.get_canvas_changes_since(%L, 0, 10)', (select a from ids)), 'PX404',
                 'canvas not found, or you are not a member of it', 'a non-member cannot replay by canvas_seq (PX404)');
select tests.clear_authentication();

select * from finish();
rollback;
