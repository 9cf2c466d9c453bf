-- mutation-rpc.sql as the H2 handler sends it (src/http/rpc.ts sendMutation, alone in its lane's
-- transaction): the endpoint limit api.hit_endpoint_limit('H2') in the RPC's statement, its FROM,
-- and the result as its status and JSON text. Against mutation-rpc.sql (`npm run bench:compare --
-- --script mutation-rpc,mutation-rpc-h2 --instructions`) it gives what the HTTP endpoint's limit
-- adds in the database. bench:compare raises the H2 limit in its databases (max_hits 10^8 per 1 s
-- window, as bench:http does), so every call counts and none is refused.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select r->>'status' as status, r::text as result
from (select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || md5(:op::text)::uuid, :version::int,
                                     jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random()))) as r
      from api.hit_endpoint_limit('H2', false) offset 0) x;
commit;
\endpipeline
