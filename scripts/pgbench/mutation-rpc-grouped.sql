-- A canvas lane's group commit (src/db/canvas-lanes.ts) as pgbench runs it: 8 calls of
-- api.upsert_block_atomic in ONE transaction, each after its own caller's settings, then one COMMIT,
-- the whole sent as one pipeline; here 8 updates of the client's block from the version each
-- leaves. Against mutation-rpc.sql (one call per transaction), per call:
--   pgbench -n -M prepared -c 1 -T 5 -D canvases=50 -D spread=1 -f scripts/pgbench/mutation-rpc.sql <db>
--   pgbench -n -M prepared -c 1 -T 5 -D canvases=50 -D spread=1 -f scripts/pgbench/mutation-rpc-grouped.sql <db>
-- (calls per second = tps, and 8 × tps here), on the database a bench:mutate run leaves (potentia_bench).
-- One block updated 8 times: PostgreSQL then checks its foreign keys at every update after the first
-- (a row its own transaction wrote), which a lane, one call per caller and block, does not pay;
-- mutation-rpc-lane.sql is the group as the hot canvas sends it.
\set k :client_id * :canvases + random(0, :spread - 1)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 0,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 1,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 2,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 3,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 4,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 5,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 6,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || gen_random_uuid(), :version::int + 7,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
commit;
\endpipeline
