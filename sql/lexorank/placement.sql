-- Where a block goes: a rank key for an insert or move, made from the caller's intent
-- (`y_order`, `after_id`, or nothing = append). Inserts at one spot step one unit away from the
-- previous insert there (lexorank_near), so 1000 of them in a row keep keys at 4-5 characters
-- with no respacing. A valid placement never fails for lack of room: when no key of <= 10
-- characters fits, a small window of neighbours is respaced in the same transaction.
-- All of this runs under the canvas lock taken by the mutation, so keys cannot race.

-- Rewrites blocks' keys (version + 1, one logged `move` per block, broadcast like any change).
create or replace function internal.assign_ranks(p_canvas_id uuid, p_block_ids uuid[], p_keys text[], p_reason text)
returns integer language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_block app.blocks;
  v_seq bigint;
  v_moved integer := 0;
begin
  for i in 1 .. coalesce(array_length(p_block_ids, 1), 0) loop
    update app.blocks set y_order = p_keys[i], version = version + 1, updated_at = now()
    where block_id = p_block_ids[i] and canvas_id = p_canvas_id and y_order collate "C" <> p_keys[i]
    returning * into v_block;
    continue when not found;
    v_seq := nextval('app.seq_block_events');  -- under the canvas lock, as every applied operation's
    perform internal.record_applied_op(
      jsonb_build_object('role', 'system'), p_canvas_id, v_block.block_id, 'move',
      format('system:%s:%s', p_reason, v_seq), v_block.version - 1, v_block.version,
      jsonb_build_object('y_order', v_block.y_order), internal.block_json(v_block), v_seq, clock_timestamp(), 1);
    v_moved := v_moved + 1;
  end loop;
  return v_moved;
end $$;

-- Makes room between adjacent keys lo < hi (null = open end), ignoring `p_exclude` (the block
-- being moved): respaces a window of neighbours (4 on each side, then 4 times as many each
-- round), widening it until the keys fit in 10 characters and in 8 when possible, so the next
-- inserts have room (one free unit at 8 characters holds ~3800 more inserts at that spot), and
-- returns the key of the free slot left between the two sides. Only reached when no key of
-- <= 10 characters fits, i.e. after thousands of inserts at one spot or next to a client's
-- 10-character y_order.
create or replace function internal.respace_for_insert(p_canvas_id uuid, p_lo text, p_hi text, p_exclude uuid)
returns text language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  w integer := 4;
  v_before uuid[];
  v_after uuid[];
  v_lo_out text;
  v_hi_out text;
  v_keys text[];
  nb integer;
  na integer;
begin
  loop
    select coalesce(array_agg(block_id order by y_order), '{}') into v_before from (
      select block_id, y_order from app.blocks
      where canvas_id = p_canvas_id and block_id is distinct from p_exclude and p_lo is not null
        and y_order <= p_lo collate "C"
      order by y_order desc limit w) b;
    select coalesce(array_agg(block_id order by y_order), '{}') into v_after from (
      select block_id, y_order from app.blocks
      where canvas_id = p_canvas_id and block_id is distinct from p_exclude and p_hi is not null
        and y_order >= p_hi collate "C"
      order by y_order limit w) a;
    nb := coalesce(array_length(v_before, 1), 0);
    na := coalesce(array_length(v_after, 1), 0);
    select max(y_order) into v_lo_out from app.blocks
      where canvas_id = p_canvas_id and block_id is distinct from p_exclude and nb > 0
        and y_order < (select y_order from app.blocks where block_id = v_before[1]);
    select min(y_order) into v_hi_out from app.blocks
      where canvas_id = p_canvas_id and block_id is distinct from p_exclude and na > 0
        and y_order > (select y_order from app.blocks where block_id = v_after[na]);
    if nb = 0 then v_lo_out := p_lo; end if;
    if na = 0 then v_hi_out := p_hi; end if;
    begin
      v_keys := internal.lexorank_spread(nb + na + 1, v_lo_out, v_hi_out);
    exception when sqlstate '22023' then
      if v_lo_out is null and v_hi_out is null then raise; end if;
      w := w * 4;
      continue;
    end;
    -- keys that end up past 8 characters would need respacing again within a few inserts:
    -- widen the window until they are short (the whole canvas always fits)
    if (select max(length(k)) from unnest(v_keys) k) > 8 and (v_lo_out is not null or v_hi_out is not null) then
      w := w * 4;
      continue;
    end if;
    perform internal.assign_ranks(p_canvas_id, v_before || v_after, v_keys[1:nb] || v_keys[nb + 2:], 'respace');
    return v_keys[nb + 1];
  end loop;
end $$;
comment on function internal.respace_for_insert(uuid, text, text, uuid) is
  'Respaces a window of neighbours around the gap lo < hi (4 per side, x4 per round until keys fit in 8 chars, else 10), logging each moved block as a system move; returns the free key left between. Raises 22023 only if the whole canvas cannot fit.';

-- A key next to `p_key` on one side with nothing beyond it (append after the last block, or
-- prepend before the first): one unit past it at its own length, at least 2 and at most 4
-- characters (a longer key steps from its first 4), instead of the midpoint of the open end, so
-- thousands of appends keep keys short where bisecting would add a character every ~6 appends.
-- At its own length, not always 2: a canvas rebalanced to 3- or 4-character keys
-- (internal.lexorank_spread_with_room) has its room past the end at that length. Null when no
-- such key is beyond p_key: the end is full at that length (place_block then rebalances).
create or replace function internal.lexorank_step(p_key text, p_forward boolean) returns text
language plpgsql immutable parallel safe set search_path = pg_catalog, pg_temp as $$
declare
  len integer := least(greatest(length(p_key), 2), 4);
  k text := internal.lexorank_next(left(p_key, len), len, p_forward);
begin
  if k is null or (p_forward and k <= p_key collate "C") or (not p_forward and k >= p_key collate "C") then
    return null;
  end if;
  return k;
end $$;
comment on function internal.lexorank_step(text, boolean) is
  'The next key one unit after (p_forward) or before p_key at p_key''s length (2 to 4 characters; a longer key from its first 4), '
  'for appends and prepends; NULL when there is none beyond p_key at that length.';

-- Rewrites every key of a canvas but p_exclude's (a block being placed, which keeps its key until
-- its own write) with room at both ends (internal.lexorank_spread_with_room), in order: each
-- moved block takes a version and is logged as a system `move` and broadcast
-- (internal.assign_ranks), and one audit row `canvas.rebalance` says why (p_trigger: 'job' for
-- the background rebalance, 'append' for an append or prepend that found its end full). The
-- caller holds the canvas lock and checks the deferred unique key. Returns the new keys in
-- order and how many blocks moved. Cost: about 0.4 ms per block (2.8 s for 7,282 on the
-- development VM), once per >= 1.5n appends at one end.
create or replace function internal.respread_canvas(p_canvas_id uuid, p_exclude uuid, p_trigger text,
                                                    out o_keys text[], out o_moved integer)
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ids uuid[];
begin
  select coalesce(array_agg(block_id order by y_order collate "C"), '{}') into v_ids
  from app.blocks where canvas_id = p_canvas_id and block_id is distinct from p_exclude;
  o_keys := internal.lexorank_spread_with_room(coalesce(array_length(v_ids, 1), 0));
  o_moved := internal.assign_ranks(p_canvas_id, v_ids, o_keys, 'rebalance');
  perform internal.write_audit(jsonb_build_object('role', 'system'), 'canvas.rebalance', 'success', 'canvas',
                               p_canvas_id::text, jsonb_build_object('blocks', array_length(v_ids, 1), 'trigger', p_trigger),
                               null, null, null, o_moved);
end $$;
comment on function internal.respread_canvas(uuid, uuid, text) is
  'Rewrites every key of the canvas but p_exclude''s with room at both ends (lexorank_spread_with_room), logging each moved block '
  'as a system move and auditing canvas.rebalance (details.trigger = p_trigger); returns the keys in order and the number moved. '
  'Caller holds the canvas lock and checks app.blocks_canvas_y_order_key.';

-- Whether an end of the canvas's key space is full of blocks: at least 61 keys in its last 62nd
-- (>= 'z', p_at_end) or its first (< '1'), but p_exclude's (the block being placed; null: none).
-- A count limited to 61, so a canvas of any size pays at most 61 index entries. PL/pgSQL: an SQL
-- function around this subquery is not inlined, and is then planned at every call.
create or replace function internal.end_is_full(p_canvas_id uuid, p_exclude uuid, p_at_end boolean) returns boolean
language plpgsql stable as $$
begin
  if p_at_end then
    return (select count(*) from (select from app.blocks where canvas_id = p_canvas_id and block_id is distinct from p_exclude
                                  and y_order >= 'z' limit 61) e) >= 61;
  end if;
  return (select count(*) from (select from app.blocks where canvas_id = p_canvas_id and block_id is distinct from p_exclude
                                and y_order < '1' limit 61) e) >= 61;
end $$;
comment on function internal.end_is_full(uuid, uuid, boolean) is
  'Whether the last (p_at_end) or first 62nd of the canvas''s key space holds at least 61 keys, p_exclude''s not counted: '
  'the end place_block rebalances (or bisects toward, while a rebalance is pending) instead of stepping past.';

-- The key for block `p_block_id` given the intent in `p_patch`:
--   y_order   an explicit key (validated by the caller); if another block holds it (two clients
--             picked the same key), the block goes right after that holder instead
--   after_id  right after that block of the canvas; JSON null = first
--   neither   last
-- With nothing on one side the key steps one unit past the end (lexorank_step), and when that
-- end is full of blocks the canvas is rebalanced with room at both ends first (respread_canvas); between
-- two blocks it goes one unit from the longer (fresher) neighbour (lexorank_near); past 10
-- characters, respace.
create or replace function internal.place_block(p_canvas_id uuid, p_block_id uuid, p_patch jsonb)
returns text language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_lo text;
  v_hi text;
  v_key text;
  v_after uuid;
  v_keys text[];
  v_append boolean := not (p_patch ? 'y_order' or p_patch ? 'after_id');
begin
  if p_patch ? 'y_order' then
    v_lo := p_patch ->> 'y_order';
    if not exists (select from app.blocks where canvas_id = p_canvas_id and y_order = v_lo collate "C"
                   and block_id <> p_block_id) then
      return v_lo;
    end if;
  elsif p_patch ? 'after_id' and jsonb_typeof(p_patch -> 'after_id') <> 'null' then
    v_after := internal.try_uuid(p_patch ->> 'after_id');
    if v_after is null or v_after = p_block_id then
      perform internal.raise_error('invalid_input', 'after_id must be the id of another block of this canvas, or null',
                                   jsonb_build_object('field', 'patch.after_id'));
    end if;
    select y_order into v_lo from app.blocks where block_id = v_after and canvas_id = p_canvas_id;
    if not found then
      perform internal.raise_error('invalid_input', 'after_id is not a block of this canvas', jsonb_build_object('field', 'patch.after_id'));
    end if;
  elsif v_append then
    select max(y_order) into v_lo from app.blocks where canvas_id = p_canvas_id and block_id <> p_block_id;
  end if;
  if not v_append then
    select min(y_order) into v_hi from app.blocks
      where canvas_id = p_canvas_id and block_id <> p_block_id and (v_lo is null or y_order > v_lo collate "C");
  end if;
  if v_hi is null and v_lo is not null then
    v_key := internal.lexorank_step(v_lo, true);
  elsif v_lo is null and v_hi is not null then
    v_key := internal.lexorank_step(v_hi, false);
  end if;
  -- The end is full at its keys' length. When it is full of blocks (internal.end_is_full: at
  -- least 61 in the last 62nd of the key space, as after the 1,891 appends a canvas's first block
  -- leaves room for), every other block is rekeyed with room at both ends, and this one steps past
  -- the new end: bisecting toward the end instead lengthened each key and respaced the last few
  -- blocks every few appends (7.5 moves per append on a canvas grown to 7,000 blocks at its end,
  -- docs/performance.md). A few blocks at the very end (a client's y_order 'zz') are not worth
  -- moving every block for: the key bisects toward the end, as between two blocks. So moving
  -- all n blocks takes at least 61 placements at one end, never one.
  -- Only a canvas of at most 2,000 blocks is rebalanced here, inside the caller's request (about
  -- 0.5 ms per block: ~1 s, under the request's 5 s statement_timeout and the 3 s lock_timeout of
  -- the writers queued on the canvas lock meanwhile). A bigger one asks the rebalance job for it
  -- (internal.request_rebalance) and this key bisects toward the end as below until the job has
  -- run: rebalanced inline, 10,000 blocks took longer than the statement_timeout, so every append
  -- failed (timeout) and rolled the rebalance back with it, and the canvas took no append any more.
  -- The same for a smaller canvas on a machine slow enough: an append whose inline rebalance timed
  -- out asks for the job (internal.rebalance_after_timeout), and while it is pending the key
  -- bisects here too. So a pending job (internal.rebalance_pending, asked once) means neither an
  -- inline rebalance nor another request.
  if v_key is null and (v_lo is null) <> (v_hi is null) and internal.end_is_full(p_canvas_id, p_block_id, v_hi is null)
     and not internal.rebalance_pending(p_canvas_id) then
    if (select count(*) from (select from app.blocks where canvas_id = p_canvas_id and block_id <> p_block_id limit 2001) b) <= 2000 then
      v_keys := (internal.respread_canvas(p_canvas_id, p_block_id, 'append')).o_keys;
      v_key := internal.lexorank_step(case when v_hi is null then v_keys[array_length(v_keys, 1)] else v_keys[1] end, v_hi is null);
    else
      perform internal.request_rebalance(p_canvas_id);
    end if;
  end if;
  v_key := coalesce(v_key, internal.lexorank_near(v_lo, v_hi));
  if length(v_key) <= 10 then
    return v_key;
  end if;
  return internal.respace_for_insert(p_canvas_id, v_lo, v_hi, p_block_id);
end $$;
comment on function internal.place_block(uuid, uuid, jsonb) is
  'Rank key for a create or move from patch.y_order / patch.after_id / neither (append): lexorank_step at an open end (after respread_canvas when that end is full of blocks), lexorank_near between two blocks, respace_for_insert when no key of <= 10 chars fits. Raises invalid_input for a bad after_id.';
