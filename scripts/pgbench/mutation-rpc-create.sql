-- A block created through api.upsert_block_atomic as bench:mutate's clients create one (every tenth
-- mutation of its hot-canvas and 50-canvas rows: scripts/bench-mutate.ts): no block_id, no
-- y_order or after_id (appended at the canvas's end), a text block with its content; sent as
-- mutation-rpc.sql sends its update (role and claims set in the transaction, BEGIN to COMMIT as one
-- pipeline). Each run adds blocks to the client's canvases (-D spread=<canvases>: a random one of
-- them, as mutation-rpc.sql picks its block's).
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.user_id from bench.pgbench_targets t where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, null, 'create', 'pgbench-' || md5(:op::text)::uuid, null,
                               jsonb_build_object('type', 'text', 'content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
commit;
\endpipeline
