-- One rung of bench.rpc_ladder (scripts/pgbench/rpc-ladder.sql): the same content update as
-- mutation-writes.sql and mutation-rpc.sql (same targets, same random UUID-shaped client_op_id),
-- called as mutation-rpc.sql calls the RPC: role and claims set in the transaction, then the call,
-- BEGIN to COMMIT as one pipeline. -D auth=0|1 -D limit=0|1 pick the rung.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int, 'pgbench-' || md5(:op::text)::uuid,
                        'pgbench ' || :client_id::int || ' ' || random(), :auth::int = 1, :limit::int = 1);
commit;
\endpipeline
