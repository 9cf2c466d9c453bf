-- bench.own_writes: the writes of one applied content update of api.upsert_block_atomic (the same
-- as mutation-writes.sql: canvas row lock, block UPDATE with its triggers, the canvas's last_seq /
-- last_canvas_seq, the operation row, the audit row, the realtime.messages row), in ONE statement,
-- so a transaction holds the canvas row for exactly these writes and its COMMIT: no round trip,
-- no check, no merge, no rate limit. Called by mutation-writes-serialized.sql on 1 canvas and on
-- 50, it measures what these writes reach when 16 backends take turns on one canvas row through
-- each commit (canvas_seq in commit order): scripts/bench-mutate.ts creates it in its bench database.
create or replace function bench.own_writes(p_canvas uuid, p_block uuid, p_user uuid, p_version integer) returns bigint
language plpgsql as $$
declare
  v_seq bigint;
  v_new integer;
  v_block jsonb;
  v_canvas_seq bigint;
begin
  perform from app.canvases where canvas_id = p_canvas for no key update;
  update app.blocks set content = jsonb_build_object('text', 'pgbench ' || random()), version = version + 1,
                        updated_at = now(), updated_by = p_user
  where block_id = p_block and version = p_version
  returning nextval('app.seq_block_events'), version,
            jsonb_build_object('block_id', block_id, 'canvas_id', canvas_id, 'parent_id', parent_id, 'type', type, 'content', content,
                               'y_order', y_order, 'version', version, 'created_at', created_at, 'created_by', created_by,
                               'updated_at', updated_at, 'updated_by', updated_by)
  into v_seq, v_new, v_block;
  if v_seq is null then
    return null; -- another client's run moved the block on: nothing written
  end if;
  update app.canvases set last_seq = v_seq, last_canvas_seq = last_canvas_seq + 1 where canvas_id = p_canvas
  returning last_canvas_seq into v_canvas_seq;
  -- client_op_id sequential, as the node-driven RPC it is compared with sends it (bench-mutate.ts
  -- opId: `<tag>-<n>`); mutation-writes.sql, compared with mutation-rpc.sql, uses random ones as both do
  insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                    base_version, new_version, patch, block, result, started_at, duration_ms)
  values (v_seq, v_canvas_seq, 'pgbench-' || v_seq, p_user, p_canvas, p_block, 'update', 'success', p_version, v_new,
          jsonb_build_object('content', v_block -> 'content'), v_block,
          jsonb_build_object('status', 'success', 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'version', v_new, 'block', v_block),
          now(), 0);
  insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq, status, response_time_ms, affected_rows)
  values (p_user, 'block.update', 'block', p_block, jsonb_build_object('canvas_id', p_canvas), 'pgbench-' || v_seq, v_seq, 'success', 0, 1);
  insert into realtime.messages (payload, event, topic, private, extension)
  values (jsonb_build_object('canvas_id', p_canvas, 'server_seq', v_seq, 'canvas_seq', v_canvas_seq, 'action', 'update', 'block_id', p_block,
                             'version', v_new, 'block', v_block, 'actor_id', p_user),
          'block_op', 'canvas:' || p_canvas, true, 'broadcast');
  return v_canvas_seq;
end $$;
