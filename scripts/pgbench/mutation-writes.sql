-- The writes of one applied content update of api.upsert_block_atomic, as plain SQL in one
-- transaction: canvas row lock, block UPDATE (its triggers: the embedding outbox), the canvas's
-- last_seq / last_canvas_seq, the operation row, the audit row and the realtime.messages row.
-- The baseline of bench:mutate (scripts/bench-mutate.ts), run by pgbench -M prepared next to
-- mutation-rpc.sql and sent the way that script sends the RPC: BEGIN to COMMIT as ONE pipeline,
-- one round trip. Each statement takes what an earlier one wrote from the database (the
-- sequence's currval, the rows its transaction updated), never from the client, so none waits for
-- the answer of another (a baseline paying a round trip per statement would flatter the RPC:
-- docs/performance.md).
-- The operation's client_op_id is random and UUID-shaped, as clients send it and as
-- mutation-rpc.sql sends it (a sequential one, as this script had, goes to the same last leaf of
-- the idempotency index (actor_id, client_op_id) every time: cheaper writes than the RPC's).
-- The rows carry the fields the RPC's do (internal.record_applied_op: the result and the broadcast
-- name the client_op_id too). Not here: the RPC's rate-limit hit, which is what the RPC adds.
-- Same targets as mutation-rpc.sql (client :client_id's own block on a random one of :canvases
-- canvases, from bench.pgbench_targets), same read of the block's version before the transaction.
\set k :client_id * :canvases + random(0, :canvases - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select from app.canvases where canvas_id = :canvas_id::uuid for no key update;
update app.blocks set content = jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random()), version = version + 1,
                      updated_at = now(), updated_by = :user_id::uuid
where block_id = :block_id::uuid and version = :version::int;
update app.canvases set last_seq = nextval('app.seq_block_events'), last_canvas_seq = last_canvas_seq + 1 where canvas_id = :canvas_id::uuid;
insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                  base_version, new_version, patch, block, result, started_at, duration_ms)
select c.last_seq, c.last_canvas_seq, 'pgbench-' || md5(:op::text)::uuid, :user_id::uuid, :canvas_id::uuid, :block_id::uuid, 'update', 'success', :version::int, b.version,
       jsonb_build_object('content', b.block -> 'content'), b.block,
       jsonb_build_object('status', 'success', 'server_seq', c.last_seq, 'canvas_seq', c.last_canvas_seq, 'client_op_id', 'pgbench-' || md5(:op::text)::uuid,
                          'block_id', :block_id::uuid, 'version', b.version, 'block', b.block),
       now(), 0
from app.canvases c,
     lateral (select version, jsonb_build_object('block_id', block_id, 'canvas_id', canvas_id, 'parent_id', parent_id, 'type', type, 'content', content,
                                                 'y_order', y_order, 'version', version, 'created_at', created_at, 'created_by', created_by,
                                                 'updated_at', updated_at, 'updated_by', updated_by) as block
              from app.blocks where block_id = :block_id::uuid) b
where c.canvas_id = :canvas_id::uuid;
insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq, status, response_time_ms, affected_rows)
values (:user_id::uuid, 'block.update', 'block', :block_id::uuid, jsonb_build_object('canvas_id', :canvas_id::uuid),
        'pgbench-' || md5(:op::text)::uuid, currval('app.seq_block_events'), 'success', 0, 1);
insert into realtime.messages (payload, event, topic, private, extension)
select jsonb_build_object('canvas_id', :canvas_id::uuid, 'server_seq', o.server_seq, 'canvas_seq', o.canvas_seq, 'action', 'update', 'block_id', :block_id::uuid,
                          'version', o.new_version, 'block', o.block, 'client_op_id', o.client_op_id, 'actor_id', :user_id::uuid),
       'block_op', 'canvas:' || :canvas_id::uuid, true, 'broadcast'
from app.block_operations o where o.server_seq = (select currval('app.seq_block_events'));  -- an InitPlan: the index, not a scan
commit;
\endpipeline
