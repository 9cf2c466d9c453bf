-- One realtime.messages row as the mutation RPC writes it (sql/rpc/mutate.sql: a private broadcast
-- `block_op` on `canvas:<id>` with the operation's delta), in a transaction of its own: what the
-- table's indexes cost each mutation, apart from the rest of its work. The fixture is
-- bench:compare's (bench.pgbench_targets: client c's rows k = c * canvases + i): -D canvases=<canvases
-- per client in the table> -D spread=<how many of them a client writes to>.
\set k :client_id * :canvases + random(0, :spread - 1)
\set seq random(1, 1000000000)
select t.canvas_id, t.block_id, t.user_id from bench.pgbench_targets t where t.k = :k \gset
insert into realtime.messages (payload, event, topic, private, extension)
values (jsonb_build_object('canvas_id', :canvas_id::uuid, 'server_seq', :seq::bigint, 'canvas_seq', :seq::bigint, 'action', 'update',
                           'block_id', :block_id::uuid, 'version', 2, 'block', jsonb_build_object('content', jsonb_build_object('text', 'pgbench ' || random())),
                           'client_op_id', gen_random_uuid(), 'actor_id', :user_id::text),
        'block_op', 'canvas:' || :canvas_id::text, true, 'broadcast');
