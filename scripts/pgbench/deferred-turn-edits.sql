-- deferred-turn-grouped.sql without its numbering (the stash dropped instead): with --instructions, its difference from deferred-turn-grouped.sql is the work of the canvas's turn (scripts/pgbench/deferred-turn.sql).
--   pgbench -n -M prepared -c 2 -j 2 -T 4 -D canvases=50 -D spread=1 -f scripts/pgbench/deferred-turn-edits.sql <bench db>
-- (-D spread=1: every client on one canvas; mutations per second = 8 × tps), on a database bench:mutate left.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 0, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 1, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 2, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 3, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 4, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 5, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 6, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('role', 'authenticated', true), set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true), set_config('potentia.input_policy', 'checked', true);
select bench.deferred_edit(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int + 7, 'pgbench-' || gen_random_uuid(), 'pgbench ' || :client_id::int || ' ' || random());
select set_config('bench.pending', '', true);
commit;
\endpipeline
