-- The hot canvas's backends taking turns, in bench:mutate (scripts/bench-mutate.ts): the mutation's own writes in
-- one statement (bench.own_writes, scripts/pgbench/own-writes.sql), committed at once. With
-- -D spread=1 every client writes its own block on ONE canvas (the canvas row serializes them);
-- with -D spread=<canvases> on a random one of them, as mutation-writes.sql does.
\set k :client_id * :canvases + random(0, :spread - 1)
select t.canvas_id, t.block_id, t.user_id, b.version
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = :k \gset
select bench.own_writes(:canvas_id::uuid, :block_id::uuid, :user_id::uuid, :version::int);
