-- mutation-rpc.sql with the request headers the server sends with every call (src/http/rpc.ts:
-- the client's address as x-forwarded-for, its user agent, the request id), so that the part of
-- the caller's context that reads them (internal.context_of: the address, the user agent, the
-- request id, written into the audit row) is counted as on the server's path; mutation-rpc.sql
-- sends none. The same content update, targets and client_op_id.
\set k :client_id * :canvases + random(0, :spread - 1)
\set op random(1, 9223372036854775807)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('request.headers', json_build_object('x-forwarded-for', '203.0.113.' || (:client_id::int % 250 + 1),
                                                       'user-agent', 'Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0',
                                                       'x-request-id', md5(:op::text)::uuid)::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || md5(:op::text)::uuid, :version::int,
                               jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || :client_id::int || ' ' || random())));
commit;
\endpipeline
