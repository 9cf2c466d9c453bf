-- 8 usual edits per transaction as a canvas lane sends a group, through bench.rpc_ladder's top rung (context, authorization, rate-limit slot, then the canvas row and the writes: the canvas's turn taken at each mutation's write, as the RPC takes it). Against deferred-turn-grouped.sql (scripts/pgbench/deferred-turn.sql).
--   pgbench -n -M prepared -c 2 -j 2 -T 4 -D canvases=50 -D spread=1 -f scripts/pgbench/mutation-ladder-grouped.sql <bench db>
-- (-D spread=1: every client on one canvas; mutations per second = 8 × tps), on a database bench:mutate left.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 0, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 1, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 2, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 3, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 4, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 5, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 6, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.rpc_ladder(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 7, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random(), true, true);
commit;
\endpipeline
