-- The same content update as mutation-writes.sql, through api.upsert_block_atomic called the way
-- the HTTP layer and the H1 socket call it (src/db/request.ts requestStatement): role and claims
-- set in the transaction, then the RPC, BEGIN to COMMIT sent as one pipeline (pgbench's pipeline
-- mode: one round trip, as mutation-writes.sql is sent). The client_op_id is random and
-- UUID-shaped, as clients send it, made the same way in both scripts (its unique index is one of
-- the writes). -D spread=<canvases> picks a random one of the client's blocks on the spread
-- canvases, as bench:mutate runs it; -D spread=1 puts every client on ONE canvas.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || md5(:op::text)::uuid, :version::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
commit;
\endpipeline
