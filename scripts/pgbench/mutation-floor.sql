-- The floor under api.upsert_block_atomic: the writes of mutation-writes.sql plus what the RPC must
-- guarantee besides them, each as plain SQL in the same pipeline, no PL/pgSQL:
--   the caller from the claims (set as the RPC's script sets them), their role on the canvas
--   (workspace or canvas membership, as internal.canvas_role) and the token's scope, in one
--   statement that fails (division by zero) unless they may write;
--   the per-user rate limit as internal.take_limit_slot takes it on its fast path: a slot of the
--   minute (app.rate_limit_slots, bucket 'floor'), the first above the highest not held by another
--   transaction's advisory lock, in one statement that fails unless it took one. No bound (the
--   bench's limit is 10^9) and no search below a full minute, which bench:mutate never reaches;
--   and it fails, where take_limit_slot tries the next slot, on one committed after its snapshot,
--   which each client's own user never meets here.
-- Exactly-once (the unique idempotency index), commit order (the canvas lock), the audit row and
-- the broadcast are in the writes already. So this is about what any implementation of the RPC
-- inside Postgres must cost at least; the RPC's distance from it is its own (docs/performance.md).
-- Run by bench:mutate next to the writes and the RPC, in the same rounds. As the writes, it runs as
-- the connecting role (no SET ROLE). chr(58) is ':' (pgbench reads ':write' in a literal as a variable).
\set k :client_id * :canvases + random(0, :canvases - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true);
select 1 / (case when x.role in ('owner', 'admin', 'editor')
                  and (x.scope is null or x.scope ?| array['canvas' || chr(58) || :canvas_id::text || chr(58) || 'write', 'canvas' || chr(58) || '*' || chr(58) || 'write']) then 1 else 0 end)
from (select case when wm.role = 'owner' then wm.role else coalesce(cm.role, wm.role) end as role, j.claims -> 'scope' as scope
      from (select current_setting('request.jwt.claims')::jsonb as claims) j
      join app.canvases c on c.canvas_id = :canvas_id::uuid and c.deleted_at is null
      left join app.workspace_members wm on wm.workspace_id = c.workspace_id and wm.user_id = (j.claims ->> 'sub')::uuid
      left join app.canvas_members cm on cm.canvas_id = c.canvas_id and cm.user_id = (j.claims ->> 'sub')::uuid) x;

with w as (select to_timestamp(floor(extract(epoch from now()) / 60) * 60) as start),
     s as (insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
           select :user_id::uuid, w.start, 'floor', g
           from w, lateral (select coalesce((select slot from app.rate_limit_slots
                                             where user_id = :user_id::uuid and window_start = w.start and bucket = 'floor'
                                             order by slot desc limit 1), 0) as top) m,
                lateral generate_series(m.top + 1, m.top + 64) g
           where pg_try_advisory_xact_lock(hashtextextended(:user_id::text || ' floor ' || extract(epoch from w.start)::bigint::text, 0) # g)
           limit 1
           on conflict do nothing returning 1)
select 1 / count(*) from s;

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
