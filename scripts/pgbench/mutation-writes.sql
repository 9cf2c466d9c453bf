-- The writes of one applied content update of api.upsert_block_atomic, as plain SQL in one
-- transaction: canvas row lock, block UPDATE (its triggers: the embedding outbox), the canvas's
-- last_seq / last_canvas_seq, the operation row, the audit row and the realtime.messages row.
-- The baseline of bench:mutate (scripts/bench-mutate.ts), run by pgbench -M prepared next to
-- mutation-rpc.sql: same targets (client :client_id's own block on a random one of :canvases
-- canvases, from bench.pgbench_targets), same read of the block's version before the transaction.
\set k :client_id * :canvases + random(0, :canvases - 1)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
begin;
select from app.canvases where canvas_id = :canvas_id::uuid for no key update;
update app.blocks set content = jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random()), version = version + 1,
                      updated_at = now(), updated_by = :user_id::uuid
where block_id = :block_id::uuid and version = :version::int
returning nextval('app.seq_block_events') as seq, version as new_version,
          jsonb_build_object('block_id', block_id, 'canvas_id', canvas_id, 'parent_id', parent_id, 'type', type, 'content', content,
                             'y_order', y_order, 'version', version, 'created_at', created_at, 'created_by', created_by,
                             'updated_at', updated_at, 'updated_by', updated_by) as block \gset
update app.canvases set last_seq = :seq::bigint, last_canvas_seq = last_canvas_seq + 1 where canvas_id = :canvas_id::uuid
returning last_canvas_seq as canvas_seq \gset
insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                  base_version, new_version, patch, block, result, started_at, duration_ms)
values (:seq::bigint, :canvas_seq::bigint, 'pgbench-' || :seq::bigint, :user_id::uuid, :canvas_id::uuid, :block_id::uuid, 'update', 'success', :version::int, :new_version::int,
        jsonb_build_object('content', :block::jsonb -> 'content'), :block::jsonb,
        jsonb_build_object('status', 'success', 'server_seq', :seq::bigint, 'canvas_seq', :canvas_seq::bigint, 'version', :new_version::int, 'block', :block::jsonb),
        now(), 0);
insert into app.system_audit (user_id, action, entity_type, entity_id, details, client_op_id, server_seq, status, response_time_ms, affected_rows)
values (:user_id::uuid, 'block.update', 'block', :block_id::uuid, jsonb_build_object('canvas_id', :canvas_id::uuid), 'pgbench-' || :seq::bigint, :seq::bigint, 'success', 0, 1);
insert into realtime.messages (payload, event, topic, private, extension)
values (jsonb_build_object('canvas_id', :canvas_id::uuid, 'server_seq', :seq::bigint, 'canvas_seq', :canvas_seq::bigint, 'action', 'update', 'block_id', :block_id::uuid,
                           'version', :new_version::int, 'block', :block::jsonb, 'actor_id', :user_id::uuid),
        'block_op', 'canvas:' || :canvas_id::uuid, true, 'broadcast');
commit;
