-- api.update_presence as the realtime gateway calls it for a cursor move (src/realtime/h1-socket.ts
-- presence, phoenix-socket.ts writePresence, through src/db/request.ts withRequest): role and
-- claims set in the transaction, then the call, BEGIN to COMMIT sent as one pipeline (pgbench's
-- pipeline mode, so -M prepared or -M extended). The fixture is bench:compare's and bench:mutate's
-- (bench.pgbench_targets: client c's rows k = c * canvases + i, each client a member of every
-- canvas): -D canvases=<canvases per client in the table> -D spread=<how many of them a client
-- moves on>. The durable write (app.presence) is throttled to one per user and canvas every
-- presence_write_interval_seconds (30 s): past each pair's first call this measures the
-- throttled call, which every cursor move between two writes is, and its broadcast
-- (realtime.send: a realtime.messages row per call). With the socket's session, as an H1 socket sends
-- it at every call (app.presence_sessions: an insert that finds it there, past the pair's first).
\set k :client_id * :canvases + random(0, :spread - 1)
\set x random(0, 4000)
\set y random(0, 3000)
\set typing random(0, 1)
select t.canvas_id, t.user_id from bench.pgbench_targets t where t.k = :k \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('request.path', '/realtime/v1/websocket', true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.update_presence(:canvas_id::uuid, jsonb_build_object('x', :x::int, 'y', :y::int), :typing::int = 1, 'pgbench/' || :client_id);
commit;
\endpipeline
