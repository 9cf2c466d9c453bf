-- Ordering: LexoRank keys through the mutation RPC. A valid insert never fails for lack of room,
-- keys never exceed 10 characters, long keys ask for a rebalance, and a rebalance rewrites a
-- canvas's keys short and in the same order.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(46);

update app.settings set value = '100000' where key = 'mutations_per_minute';
select isnt(tests.create_user('orderer'), null, 'a user who orders blocks');
select tests.authenticate_as('orderer');
create temp table ids as
select (api.create_workspace('Ordering') ->> 'workspace_id')::uuid as workspace_id;
alter table ids add column canvas_id uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Ordering') ->> 'canvas_id')::uuid;

-- anchor block A, then B after it: every later insert goes right after A (the same spot)
create temp table anchor as
select (api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'anchor', null,
                                '{"type":"text"}') ->> 'block_id')::uuid as block_id;
select is((api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'tail', null, '{"type":"text"}') ->> 'status'),
          'success', 'a block appended after the anchor');

create temp table inserted (n int, block_id uuid, status text);
do $$
declare r jsonb;
begin
  for i in 1 .. 1000 loop
    r := api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'same-spot-' || i, null,
                                 jsonb_build_object('type', 'text', 'after_id', (select block_id from anchor)));
    insert into inserted values (i, (r ->> 'block_id')::uuid, r ->> 'status');
  end loop;
end $$;

select is((select count(*) from inserted where status = 'success'), 1000::bigint,
          '1000 inserts at the same spot all succeed');
select is((select max(length(y_order)) <= 10 from app.blocks where canvas_id = (select canvas_id from ids)), true,
          'no key ever exceeds 10 characters');
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from ids)), 1002::bigint,
          'every block is there');
-- "right after the anchor" each time: the newest insert comes first, so rank order is the
-- anchor, then inserts newest to oldest, then the tail
select is(
  (select array_agg(block_id order by y_order) from app.blocks where canvas_id = (select canvas_id from ids)),
  (select array[(select block_id from anchor)] || array_agg(block_id order by n desc)
          || array[(select block_id from app.blocks b where b.canvas_id = (select canvas_id from ids)
                    and b.block_id not in (select block_id from inserted) and b.block_id <> (select block_id from anchor))]
   from inserted),
  'rank order is exactly the order of the intents');
select is((select count(*) from app.block_operations where canvas_id = (select canvas_id from ids)
           and client_op_id like 'system:%'), 0::bigint,
          'no insert needed room made: each key went one unit below the previous one, no block was respaced');
select is((select max(length(y_order)) from app.blocks where canvas_id = (select canvas_id from ids)), 4,
          'after 1000 inserts at one spot every key has at most 4 characters');

-- no key of <= 10 characters between two neighbours (a client set one 10-character key): a
-- small window of neighbours is respaced, and the inserts that follow at that spot have room
create temp table tight as
select (api.create_canvas((select workspace_id from ids), 'Tight') ->> 'canvas_id')::uuid as canvas_id;
-- pos: the expected place in rank order
create temp table tight_blocks (pos numeric, block_id uuid);
do $$
begin
  for i in 1 .. 20 loop
    insert into tight_blocks values (case when i = 1 then 1 else i + 1 end,
      (api.upsert_block_atomic((select canvas_id from tight), null, 'create', 'tight-' || i, null, '{"type":"text"}') ->> 'block_id')::uuid);
  end loop;
  -- a key just above the first block's 'V': no key of 10 characters fits between the two
  insert into tight_blocks values (2, (api.upsert_block_atomic((select canvas_id from tight), null, 'create', 'tight-long', null,
                                                              '{"type":"text","y_order":"V000000001"}') ->> 'block_id')::uuid);
  for i in 1 .. 100 loop
    insert into tight_blocks values (2 - i / 1000.0, (api.upsert_block_atomic((select canvas_id from tight), null, 'create', 'tight-after-' || i, null,
        jsonb_build_object('type', 'text', 'after_id', (select block_id from tight_blocks where pos = 1))) ->> 'block_id')::uuid);
  end loop;
end $$;
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from tight)), 121::bigint, 'every insert at the full spot succeeded');
select ok((select count(*) from app.block_operations where canvas_id = (select canvas_id from tight)
           and client_op_id like 'system:respace:%') between 1 and 8,
          'a small window of neighbours was respaced (logged as system moves), and the 100 inserts after it needed no more');
select ok((select bool_and(status = 'success' and server_seq is not null and actor_id is null and action = 'move')
           from app.block_operations where client_op_id like 'system:respace:%'),
          'respace moves are applied operations with their own server_seq');
select is(
  (select array_agg(canvas_seq order by canvas_seq) from app.block_operations where canvas_id = (select canvas_id from tight)),
  (select array_agg(i::bigint order by i) from generate_series(1, (select count(*) from app.block_operations
                                                                    where canvas_id = (select canvas_id from tight))::int) i),
  'canvas_seq counts the respace moves too: 1..n with no gap');
select is((select max(length(y_order)) <= 10 from app.blocks where canvas_id = (select canvas_id from tight)), true,
          'no key exceeds 10 characters at the full spot');
select is(
  (select array_agg(block_id order by y_order) from app.blocks where canvas_id = (select canvas_id from tight)),
  (select array_agg(block_id order by pos) from tight_blocks),
  'order at the full spot: the first block, the inserts newest first, the 10-character key, the rest');
select tests.clear_authentication();
select ok((select count(*) from realtime.messages where topic = 'canvas:' || (select canvas_id from tight)
           and payload ->> 'client_op_id' like 'system:respace:%') > 0,
          'respace moves are broadcast like any change');

-- appends and prepends step at 2-digit precision instead of bisecting the open end
select tests.authenticate_as('orderer');
create temp table ends as
select (api.create_canvas((select workspace_id from ids), 'Ends') ->> 'canvas_id')::uuid as canvas_id;
do $$
begin
  for i in 1 .. 500 loop
    perform api.upsert_block_atomic((select canvas_id from ends), null, 'create', 'append-' || i, null, '{"type":"text"}');
    perform api.upsert_block_atomic((select canvas_id from ends), null, 'create', 'prepend-' || i, null,
                                    '{"type":"text","after_id":null}');
  end loop;
end $$;
select ok((select max(length(y_order)) <= 2 from app.blocks where canvas_id = (select canvas_id from ends)),
          '500 appends and 500 prepends keep every key at 2 characters');
select is((select array_agg(client_op_id order by b.y_order) from app.blocks b
           join app.block_operations o on o.block_id = b.block_id and o.action = 'create'
           where b.canvas_id = (select canvas_id from ends)),
          (select array_agg('prepend-' || i order by i desc) || array_agg('append-' || i order by i) from generate_series(1, 500) i),
          'appends land last and prepends first, in order');
select tests.clear_authentication();

-- keys past 8 characters enqueue exactly one deduplicated rebalance job per canvas
select is((select count(*) from graphile_worker.jobs where task_identifier = 'rebalance_canvas'
           and key = 'rebalance_canvas:' || (select canvas_id from tight)), 1::bigint,
          'one rebalance_canvas job, deduplicated by its per-canvas job key');
select is((select payload ->> 'canvas_id' from graphile_worker._private_jobs where key = 'rebalance_canvas:' || (select canvas_id from tight)),
          (select canvas_id::text from tight), 'the job names the canvas');
select is((select count(*) from graphile_worker.jobs where key = 'rebalance_canvas:' || (select canvas_id from ids)), 0::bigint,
          'no job for the canvas of 1000 inserts at one spot: its keys never passed 8 characters');
select has_trigger('app', 'blocks', 'check_lexorank_length', 'the check_lexorank_length trigger is on app.blocks');

-- the rebalance itself
create temp table before_rebalance as
select block_id, version, row_number() over (order by y_order) as pos from app.blocks where canvas_id = (select canvas_id from ids);
select ok(internal.rebalance_canvas((select canvas_id from ids)) > 0, 'rebalance rewrites keys');
select is((select max(length(y_order)) from app.blocks where canvas_id = (select canvas_id from ids)), 3,
          'after rebalancing 1002 blocks every key has 3 characters: the shortest length whose middle quarter holds them (2 holds 946)');
select ok((select min(y_order) >= 'N' collate "C" and max(y_order) < 'd' collate "C" from app.blocks where canvas_id = (select canvas_id from ids)),
          'the rebalanced keys lie in the middle quarter of the key space (3/8 = ''N'' to 5/8 = ''c''): room at both ends');
select is(
  (select array_agg(block_id order by y_order) from app.blocks where canvas_id = (select canvas_id from ids)),
  (select array_agg(block_id order by pos) from before_rebalance),
  'rebalancing preserves the order');
select ok((select bool_and(b.version > r.version) from app.blocks b join before_rebalance r using (block_id)
           where b.y_order is distinct from null and b.block_id in
             (select block_id from app.block_operations where client_op_id like 'system:rebalance:%')),
          'moved blocks have their version bumped');
select is((select count(*) from app.block_operations where client_op_id like 'system:rebalance:%'
           and canvas_id = (select canvas_id from ids)),
          (select count(*) from app.blocks b join before_rebalance r using (block_id) where b.version > r.version),
          'each moved block is logged once');

-- a canvas that grows at its end: appends step one unit at a time through the 2-character keys
-- above the first block ('V1' to 'zz', 1,891 of them); the append that finds that end full
-- rebalances the canvas once, with room, and the appends after it step through the room. Until
-- 2026-12-03 they bisected toward the end instead and respaced the last blocks every few
-- appends (7.5 moves per append at 7,000 blocks).
select tests.authenticate_as('orderer');
create temp table grown as
select (api.create_canvas((select workspace_id from ids), 'Grown at its end') ->> 'canvas_id')::uuid as canvas_id;
create temp table grown_appends (n int, status text);
do $$
declare r jsonb;
begin
  for i in 1 .. 2500 loop
    r := api.upsert_block_atomic((select canvas_id from grown), null, 'create', 'grow-' || i, null, '{"type":"text"}');
    insert into grown_appends values (i, r ->> 'status');
  end loop;
end $$;
select tests.clear_authentication();
select is((select count(*) from grown_appends where status = 'success'), 2500::bigint, '2500 appends all succeed');
select is((select array_agg(o.client_op_id order by b.y_order collate "C") from app.blocks b
           join app.block_operations o on o.block_id = b.block_id and o.action = 'create'
           where b.canvas_id = (select canvas_id from grown)),
          (select array_agg('grow-' || i order by i) from generate_series(1, 2500) i),
          'every appended block is last, in order');
select is((select count(*) from app.system_audit where action = 'canvas.rebalance' and entity_id = (select canvas_id::text from grown)
           and details ->> 'trigger' = 'append'), 1::bigint,
          'the end filled once: one rebalance, by the append that found it full');
select is((select count(*) from app.block_operations where canvas_id = (select canvas_id from grown) and actor_id is null),
          1892::bigint, 'the rebalance moved the 1,892 blocks there were (''V'' and the 1,891 keys above it), once each; nothing was respaced');
select is((select max(length(y_order)) from app.blocks where canvas_id = (select canvas_id from grown)), 3,
          'every key has at most 3 characters');
select is((select count(*) from graphile_worker.jobs where key = 'rebalance_canvas:' || (select canvas_id from grown)), 0::bigint,
          'no key passed 8 characters: no rebalance job');

-- an end full of blocks on a canvas too big to rebalance inside the request (more than 2,000
-- blocks): the append asks the rebalance job for it and bisects toward the end, moving no block.
-- Until 2026-12-03 it rebalanced inline whatever the size: at 10,000 blocks that took longer than
-- the request's statement_timeout, so every append to the canvas failed (and rolled back the
-- rebalance with it), and the writers queued behind it failed on their lock_timeout.
select tests.authenticate_as('orderer');
create temp table big as
select (api.create_canvas((select workspace_id from ids), 'Big, full at its end') ->> 'canvas_id')::uuid as canvas_id;
select tests.clear_authentication();
-- 2,000 blocks in the middle and 61 at the very end ('zzzz1' .. 'zzzzz': no step past it at 4 characters)
insert into app.blocks (canvas_id, type, y_order)
select (select canvas_id from big), 'text', k from unnest(internal.lexorank_spread_with_room(2000)) k
union all
select (select canvas_id from big), 'text', 'zzzz' || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', i + 1, 1)
from generate_series(1, 61) i;
select tests.authenticate_as('orderer');
create temp table big_append as
select api.upsert_block_atomic((select canvas_id from big), null, 'create', 'big-append', null, '{"type":"text"}') as r;
select tests.clear_authentication();
select is((select r ->> 'status' from big_append), 'success', 'an append to a big canvas whose end is full succeeds');
select is((select max(y_order) from app.blocks where canvas_id = (select canvas_id from big)),
          (select r #>> '{block,y_order}' from big_append), 'the appended block is last');
select is((select count(*) from app.system_audit where action = 'canvas.rebalance' and entity_id = (select canvas_id::text from big)),
          0::bigint, 'the big canvas is not rebalanced inside the append');
select is((select count(*) from app.block_operations where canvas_id = (select canvas_id from big) and actor_id is null),
          0::bigint, 'no block of the big canvas moved');
select is((select count(*) from graphile_worker.jobs where key = 'rebalance_canvas:' || (select canvas_id from big)), 1::bigint,
          'the append asked the rebalance job for it');

-- When an end is full (internal.end_is_full, what place_block and rebalance_canvas ask): 61 or
-- more keys in the end's 62nd of the key space ('z' and above at the end, below '1' at the
-- start), the block being placed not counted. 60 are not full: a 61st key there still has room.
select tests.authenticate_as('orderer');
create temp table full_ends as
select (api.create_canvas((select workspace_id from ids), 'Full ends') ->> 'canvas_id')::uuid as canvas_id;
select tests.clear_authentication();
-- 60 keys at each end ('z1' .. 'zy', '01' .. '0y'), and one just outside each end ('yz', '1')
insert into app.blocks (canvas_id, type, y_order)
select (select canvas_id from full_ends), 'text', e || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', i + 1, 1)
from generate_series(1, 60) i, unnest(array['z', '0']) e
union all values ((select canvas_id from full_ends), 'text', 'yz'), ((select canvas_id from full_ends), 'text', '1');
select is(internal.end_is_full((select canvas_id from full_ends), null, true), false,
          'an end with 60 keys at or above ''z'' is not full (a key just below ''z'' is not at the end)');
select is(internal.end_is_full((select canvas_id from full_ends), null, false), false,
          'a start with 60 keys below ''1'' is not full (''1'' itself is not at the start)');
insert into app.blocks (canvas_id, type, y_order)
values ((select canvas_id from full_ends), 'text', 'zz'), ((select canvas_id from full_ends), 'text', '0z');
select is(internal.end_is_full((select canvas_id from full_ends), null, true), true, 'the 61st key at the end makes it full');
select is(internal.end_is_full((select canvas_id from full_ends), null, false), true, 'the 61st key at the start makes it full');
select is(internal.end_is_full((select canvas_id from full_ends),
                                (select block_id from app.blocks where canvas_id = (select canvas_id from full_ends) and y_order = 'zz'), true),
          false, 'the block being placed is not counted: with it excluded the end holds 60 and is not full');
select is(internal.end_is_full((select canvas_id from full_ends),
                                (select block_id from app.blocks where canvas_id = (select canvas_id from full_ends) and y_order = '0z'), false),
          false, '... nor at the start');
select is(internal.end_is_full((select canvas_id from full_ends),
                                (select block_id from app.blocks where canvas_id = (select canvas_id from full_ends) and y_order = 'yz'), true),
          true, 'excluding a block outside the end changes nothing: still full');
select tests.authenticate_as('orderer');
create temp table empty_ends as
select (api.create_canvas((select workspace_id from ids), 'Empty ends') ->> 'canvas_id')::uuid as canvas_id;
select tests.clear_authentication();
select is(internal.end_is_full((select canvas_id from empty_ends), null, true) or internal.end_is_full((select canvas_id from empty_ends), null, false),
          false, 'another canvas''s keys are not counted: an empty canvas''s ends are not full');

select * from finish();
rollback;
