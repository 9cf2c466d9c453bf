-- Replay and snapshots. Writers on a canvas are serialized by the canvas lock and take their
-- server_seq under it, so on one canvas seq order is commit order: once a reader sees seq N, no
-- operation with a lower seq can still commit. Reading `server_seq > since_seq` therefore never
-- skips an operation, and canvases.last_seq is a watermark consistent with the blocks.
-- The same holds for canvas_seq (per canvas 1, 2, 3, … without gaps, see sql/rpc/mutate.sql):
-- canvases.last_canvas_seq is the canvas_seq watermark (`canvas_watermark`), and a reader that
-- resumes after canvas_seq N gets N + 1, N + 2, … or learns that it needs a snapshot.

create or replace function internal.require_canvas_reader(p_canvas_id uuid) returns app.member_role
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare v_role app.member_role;
begin
  if auth.uid() is null then
    perform internal.raise_error('unauthorized', 'a signed-in user is required');
  end if;
  v_role := internal.canvas_role(p_canvas_id, auth.uid());
  if v_role is null then
    perform internal.require_user_exists(auth.uid());  -- a deleted user's token: 401, as everywhere
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if not internal.token_allows(p_canvas_id, false) then
    perform internal.raise_error('forbidden', format('this token''s scope does not include canvas:%s', p_canvas_id));
  end if;
  return v_role;
end $$;

-- One applied operation as replay returns it. Like every plain SQL helper here (STABLE, no SET
-- clause, not SECURITY DEFINER), inlined into the query that calls it, per row of a replay page
-- (supabase/tests/foundation.test.sql checks each one is); with a SET clause it was a call per row.
create or replace function internal.change_json(o app.block_operations) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'server_seq', o.server_seq, 'canvas_seq', o.canvas_seq, 'action', o.action, 'block_id', o.block_id,
    'version', o.new_version, 'block', o.block, 'client_op_id', o.client_op_id, 'actor_id', o.actor_id,
    'patch', o.patch, 'deleted_ids', o.result -> 'deleted_ids', 'created_at', o.created_at)
$$;

-- Applied operations of a canvas in commit order, after server_seq p_since_seq or, when
-- p_since_canvas_seq is given, after that canvas_seq: {changes[], has_more, watermark,
-- canvas_watermark} (+ snapshot_required by canvas_seq). The caller checked read access.
--
-- A page holds at most p_limit changes and about internal.changes_page_bytes() bytes of them: a
-- change is left for the next page once the changes before it on this page (their block and
-- patch as JSON text) reach that many (the first is always on it, so a page is never empty while
-- there is more). Counted only, a page of 1,000 changes of 64 KB blocks was 120 MB of JSON, built
-- whole in one jsonb, then in the server process (parsed, serialized again): about 700 MB of a
-- process for one GET /canvas/{id}/changes, ten of which a user may send a second (H7). has_more
-- and the watermarks say where to go on, as for a page cut by the count.
create or replace function internal.changes_page_bytes() returns bigint
language sql immutable as $$ select 4194304::bigint $$;

-- What a change weighs on a page: its block and patch as JSON text (what the page carries of it
-- beyond a few fixed fields). An inlined SQL helper, as change_json.
create or replace function internal.change_bytes(o app.block_operations) returns bigint
language sql stable as $$
  select (octet_length(coalesce(o.block::text, '')) + octet_length(coalesce(o.patch::text, '')))::bigint
$$;

create or replace function internal.canvas_changes(p_canvas_id uuid, p_since_seq bigint, p_since_canvas_seq bigint, p_limit integer)
returns jsonb language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 500), 1), 1000);
  v_canvas app.canvases;
  v_changes jsonb;
  v_more boolean;
  v_last jsonb;
  v_snapshot_required boolean := false;
begin
  select * into v_canvas from app.canvases where canvas_id = p_canvas_id;
  -- the next v_limit + 1 operations (one more: whether there is more), each with the bytes of the
  -- ones before it, by server_seq or by canvas_seq (two statements: each range is its own index's);
  -- kept while those bytes are under the page's and within v_limit
  if p_since_canvas_seq is null then
    select coalesce(jsonb_agg(internal.change_json(p.op) order by p.n) filter (where p.kept), '[]'), count(*) > count(*) filter (where p.kept)
      into v_changes, v_more
    from (select o.op, o.n, o.n <= v_limit and o.bytes - o.own < internal.changes_page_bytes() as kept
          from (select x.b as op, row_number() over w as n, sum(internal.change_bytes(x.b)) over w as bytes, internal.change_bytes(x.b) as own
                from (select b from app.block_operations b
                      where b.canvas_id = p_canvas_id and b.server_seq > coalesce(p_since_seq, 0)
                      order by b.server_seq limit v_limit + 1) x
                window w as (order by (x.b).server_seq)) o) p;
  else
    select coalesce(jsonb_agg(internal.change_json(p.op) order by p.n) filter (where p.kept), '[]'), count(*) > count(*) filter (where p.kept)
      into v_changes, v_more
    from (select o.op, o.n, o.n <= v_limit and o.bytes - o.own < internal.changes_page_bytes() as kept
          from (select x.b as op, row_number() over w as n, sum(internal.change_bytes(x.b)) over w as bytes, internal.change_bytes(x.b) as own
                from (select b from app.block_operations b
                      where b.canvas_id = p_canvas_id and b.canvas_seq > p_since_canvas_seq
                      order by b.canvas_seq limit v_limit + 1) x
                window w as (order by (x.b).canvas_seq)) o) p;
  end if;
  if p_since_canvas_seq is not null then
    -- the log cannot continue from there: the reader is ahead of the canvas, or retention
    -- (sql/jobs/cleanup.sql) removed the operations right after it
    v_snapshot_required := p_since_canvas_seq > v_canvas.last_canvas_seq
      or (p_since_canvas_seq < v_canvas.last_canvas_seq
          and coalesce((v_changes -> 0 ->> 'canvas_seq')::bigint, -1) <> p_since_canvas_seq + 1);
    if v_snapshot_required then
      v_changes := '[]';
      v_more := false;
    end if;
  end if;
  if v_more then
    v_last := v_changes -> -1;
  end if;
  return jsonb_build_object(
    'changes', v_changes,
    'has_more', v_more,
    -- everything up to the watermarks has been returned: the last change when there is more,
    -- otherwise the canvas's last committed seq and canvas_seq
    'watermark', case when v_more then (v_last ->> 'server_seq')::bigint else v_canvas.last_seq end,
    'canvas_watermark', case when v_more then (v_last ->> 'canvas_seq')::bigint else v_canvas.last_canvas_seq end)
    || case when p_since_canvas_seq is null then '{}' else jsonb_build_object('snapshot_required', v_snapshot_required) end;
end $$;

-- Applied operations after since_seq, in seq order: {changes[], has_more, watermark, canvas_watermark}.
create or replace function api.get_canvas_changes(p_canvas_id uuid, p_since_seq bigint default 0, p_limit integer default 500)
returns jsonb language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.require_canvas_reader(p_canvas_id);
  return internal.canvas_changes(p_canvas_id, coalesce(p_since_seq, 0), null, p_limit);
end $$;

comment on function api.get_canvas_changes(uuid, bigint, integer) is
  'Applied operations of a canvas with server_seq > since_seq, in commit order, at most limit (1..1000) and about 4 MB of them '
  '(internal.changes_page_bytes): {changes[], has_more, watermark, '
  'canvas_watermark}. Each change carries server_seq and canvas_seq. Resume from watermark (server_seq) or, preferably, use '
  'api.get_canvas_changes_since with canvas_watermark.';

-- Applied operations after since_canvas_seq, in canvas_seq order (the preferred way to resume).
create or replace function api.get_canvas_changes_since(p_canvas_id uuid, p_since_canvas_seq bigint default 0, p_limit integer default 500)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.count_endpoint_call('H7');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  if p_since_canvas_seq is null or p_since_canvas_seq < 0 then
    perform internal.raise_error('invalid_input', 'since_canvas_seq must be a number >= 0', '{"field":"since_canvas_seq"}');
  end if;
  return internal.canvas_changes(p_canvas_id, null, p_since_canvas_seq, p_limit);
end $$;

comment on function api.get_canvas_changes_since(uuid, bigint, integer) is
  'Applied operations of a canvas with canvas_seq > since_canvas_seq: since_canvas_seq + 1, + 2, … without gaps, in commit order, at most '
  'limit (1..1000) and about 4 MB of them (internal.changes_page_bytes): {changes[], has_more, watermark, canvas_watermark, snapshot_required}. canvas_seq numbers a canvas''s applied operations '
  '1, 2, 3, … (assigned under the canvas lock; rejected attempts take none), so the next page starts at canvas_watermark. snapshot_required: '
  'the log cannot continue from since_canvas_seq (it is ahead of the canvas, or retention removed the operations after it): load '
  'api.get_canvas_snapshot instead (changes is then empty).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H7 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- What a block weighs on a page: its content as JSON text (the rest is a few fixed fields). An
-- inlined SQL helper, as change_bytes.
create or replace function internal.block_bytes(b app.blocks) returns bigint
language sql stable as $$ select octet_length(b.content::text)::bigint $$;

-- One page of a canvas's blocks in rank order after y_order p_after (null: from the first): at
-- most p_limit blocks and about internal.changes_page_bytes() of their content, the first always
-- on it; with p_canvas_seq, without the blocks an operation after that canvas_seq touched (a
-- snapshot's later pages). {blocks[], has_more}. A loop, not one aggregate over the next p_limit
-- + 1 blocks: weighing them all read (detoasted, as text) up to 1,000 blocks of 64 KB a page to
-- keep about 60 of them. The caller checked read access.
create or replace function internal.blocks_page(p_canvas_id uuid, p_after text, p_canvas_seq bigint, p_limit integer)
returns jsonb language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_block app.blocks;
  v_items jsonb[] := '{}';
  v_bytes bigint := 0;
  v_more boolean := false;
begin
  -- a block changed after p_canvas_seq is one whose version an operation after it made: a
  -- block_id's versions only grow (sql/rpc/mutate.sql, create), so its newest operation (by
  -- version) made the state it has. One index probe a block of the page (block_operations_block_idx,
  -- read backwards: a hot block's thousands of operations are not read); collecting
  -- every operation after p_canvas_seq instead read the whole log since a cursor's watermark,
  -- which the caller writes (a forged 0 read all of it, each page).
  for v_block in
    select b.* from app.blocks b
    where b.canvas_id = p_canvas_id and (p_after is null or b.y_order > p_after collate "C")
      and (p_canvas_seq is null or coalesce((
            select o.canvas_seq from app.block_operations o  -- a probe a block, never a join over the log
            where o.block_id = b.block_id and o.status = 'success' order by o.new_version desc limit 1), 0) <= p_canvas_seq)
    order by b.y_order collate "C" limit p_limit + 1
  loop
    if cardinality(v_items) >= p_limit or (cardinality(v_items) > 0 and v_bytes >= internal.changes_page_bytes()) then
      v_more := true;
      exit;
    end if;
    v_items := array_append(v_items, internal.block_json(v_block));
    v_bytes := v_bytes + internal.block_bytes(v_block);
  end loop;
  return jsonb_build_object('blocks', to_jsonb(v_items), 'has_more', v_more);
end $$;

-- Canvas, its blocks in rank order and the watermarks they are consistent with (server_seq
-- `watermark`, canvas_seq `canvas_watermark`), one page at a time; with p_since_seq (first page
-- only) also the operations after it (H4: initial load plus replay).
--
-- A page holds at most 1,000 blocks and about internal.changes_page_bytes() of their content (the
-- first block always on it). Built whole, the snapshot of a canvas of thousands of 64 KB blocks
-- was hundreds of MB in one jsonb and again in the server process, for one request.
--
-- A canvas changes while its pages are read, and no database snapshot outlives a request, so
-- pages join the way a base backup joins its WAL: every page answers the first page's
-- watermarks (the cursor carries them), and a page after the first leaves out the blocks that an
-- operation after that canvas_watermark touched (it reads blocks and log in one snapshot).
-- Every block on any page is then as it was at canvas_watermark, and each block left out (or
-- created, moved or deleted since) is in the changes after it, each carrying the whole block:
-- the pages plus those changes, applied in order up to one read after the last page, are the
-- canvas at that change's canvas_watermark. The cursor expires when retention removed changes
-- right after its canvas_watermark (invalid_input, field cursor: start again without it).
drop function if exists api.get_canvas_snapshot(uuid);
drop function if exists api.get_canvas_snapshot(uuid, bigint);
create or replace function api.get_canvas_snapshot(p_canvas_id uuid, p_since_seq bigint default null, p_cursor text default null)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_role app.member_role;
  v_canvas app.canvases;
  v_cseq bigint;
  v_seq bigint;
  v_after text;
  v_page jsonb;
  v_blocks jsonb;
  v_more boolean;
begin
  perform internal.count_endpoint_call(case when p_cursor is null then 'H4' else 'H7' end, array['H4', 'H7', 'A1']);  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_role := internal.require_canvas_reader(p_canvas_id);
  select * into v_canvas from app.canvases where canvas_id = p_canvas_id;
  if p_cursor is null then
    v_cseq := v_canvas.last_canvas_seq;
    v_seq := v_canvas.last_seq;
  else
    if p_cursor !~ '^[0-9]{1,18}\.[0-9]{1,18}\.[0-9A-Za-z]{1,10}$' then
      perform internal.raise_error('invalid_input', 'cursor is not one this endpoint returned', '{"field":"cursor"}');
    end if;
    v_cseq := split_part(p_cursor, '.', 1)::bigint;
    v_seq := split_part(p_cursor, '.', 2)::bigint;
    v_after := split_part(p_cursor, '.', 3);
    if v_cseq > v_canvas.last_canvas_seq or v_seq > v_canvas.last_seq
       or (v_cseq < v_canvas.last_canvas_seq and not exists (
             select 1 from app.block_operations o where o.canvas_id = p_canvas_id and o.canvas_seq = v_cseq + 1)) then
      perform internal.raise_error('invalid_input',
        'cursor is not one this endpoint returned, or the changes after its watermark are gone (retention): start again without it',
        '{"field":"cursor"}');
    end if;
  end if;
  v_page := internal.blocks_page(p_canvas_id, v_after, case when v_after is not null then v_cseq end, 1000);
  v_blocks := v_page -> 'blocks';
  v_more := (v_page ->> 'has_more')::boolean;
  return jsonb_build_object(
    'canvas', internal.canvas_json(v_canvas) || jsonb_build_object('role', v_role),
    'blocks', v_blocks,
    'watermark', v_seq,
    'canvas_watermark', v_cseq,
    'flags', internal.canvas_flags(p_canvas_id, v_canvas.workspace_id),
    'has_more', v_more,
    'next_cursor', case when v_more then format('%s.%s.%s', v_cseq, v_seq, v_blocks -> -1 ->> 'y_order') end)
    || case when p_since_seq is null or p_cursor is not null then '{}'
            else jsonb_build_object('since', api.get_canvas_changes(p_canvas_id, p_since_seq, 1000)) end;
end $$;

comment on function api.get_canvas_snapshot(uuid, bigint, text) is
  'Canvas, blocks in rank order, and the watermarks they are consistent with, one page at a time: at most 1,000 blocks and about 4 MB '
  'of their content (internal.changes_page_bytes; the first always on it); has_more: ask again with cursor = next_cursor. watermark '
  '(server_seq) and canvas_watermark (canvas_seq) are the first page''s on every page. A single page is the result of the canvas''s '
  'operations 1 .. canvas_watermark. Pages after the first leave out the blocks changed after canvas_watermark, so the blocks of all '
  'pages plus api.get_canvas_changes_since(canvas_watermark) read after the last page, applied in order (each change carries its whole '
  'block), are the canvas at the changes'' canvas_watermark. An expired cursor (retention removed the changes after its watermark) is '
  'invalid_input, field cursor: start again. Also the canvas''s feature flags ({name: boolean}, api.get_canvas_flags). With since_seq '
  '(first page) also the operations after it.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H4 (a further page, p_cursor: H7; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

grant execute on function api.get_canvas_changes(uuid, bigint, integer), api.get_canvas_changes_since(uuid, bigint, integer),
                          api.get_canvas_snapshot(uuid, bigint, text)
  to authenticated, service_role;
revoke execute on function api.get_canvas_changes(uuid, bigint, integer), api.get_canvas_changes_since(uuid, bigint, integer),
                           api.get_canvas_snapshot(uuid, bigint, text) from public;
