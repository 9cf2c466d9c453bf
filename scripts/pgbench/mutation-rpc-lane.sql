-- A canvas lane's group as the hot canvas runs it (src/db/canvas-lanes.ts, bench:mutate's "hot canvas, own
-- block per client"): 8 callers on ONE canvas, each updating its own block, in one transaction, each call
-- after its own caller's settings, then one COMMIT, sent as one pipeline. mutation-rpc-grouped.sql
-- updates one block 8 times, which makes PostgreSQL check the block's foreign keys at every update
-- after the first (a row its own transaction wrote); here, as in a lane, each block once, and the
-- canvas row (its counters) updated 8 times. The callers are editors 0-7 of the fixture, on a random
-- one of the -D spread canvases; per call, divide by 8.
\set c random(0, :spread - 1)
select t0.canvas_id, t0.block_id as b0, t0.user_id as u0, x0.version as v0,
       t1.block_id as b1, t1.user_id as u1, x1.version as v1,
       t2.block_id as b2, t2.user_id as u2, x2.version as v2,
       t3.block_id as b3, t3.user_id as u3, x3.version as v3,
       t4.block_id as b4, t4.user_id as u4, x4.version as v4,
       t5.block_id as b5, t5.user_id as u5, x5.version as v5,
       t6.block_id as b6, t6.user_id as u6, x6.version as v6,
       t7.block_id as b7, t7.user_id as u7, x7.version as v7
from bench.pgbench_targets t0 join app.blocks x0 on x0.block_id = t0.block_id and t0.k = 0 * :canvases + :c
  cross join bench.pgbench_targets t1 join app.blocks x1 on x1.block_id = t1.block_id and t1.k = 1 * :canvases + :c
  cross join bench.pgbench_targets t2 join app.blocks x2 on x2.block_id = t2.block_id and t2.k = 2 * :canvases + :c
  cross join bench.pgbench_targets t3 join app.blocks x3 on x3.block_id = t3.block_id and t3.k = 3 * :canvases + :c
  cross join bench.pgbench_targets t4 join app.blocks x4 on x4.block_id = t4.block_id and t4.k = 4 * :canvases + :c
  cross join bench.pgbench_targets t5 join app.blocks x5 on x5.block_id = t5.block_id and t5.k = 5 * :canvases + :c
  cross join bench.pgbench_targets t6 join app.blocks x6 on x6.block_id = t6.block_id and t6.k = 6 * :canvases + :c
  cross join bench.pgbench_targets t7 join app.blocks x7 on x7.block_id = t7.block_id and t7.k = 7 * :canvases + :c \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u0::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b0::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v0::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 0 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u1::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b1::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v1::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 1 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u2::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b2::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v2::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 2 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u3::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b3::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v3::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 3 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u4::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b4::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v4::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 4 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u5::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b5::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v5::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 5 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u6::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b6::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v6::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 6 || ' ' || random())));
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :u7::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :b7::uuid, 'update', 'pgbench-' || gen_random_uuid(), :v7::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || 7 || ' ' || random())));
commit;
\endpipeline
