-- A text operation on a shared text, as bench:mutate's "one shared text (transformed)" scenario
-- sends it, for counting its cost (npm run bench:compare -- --instructions --script
-- mutation-rpc,mutation-text-behind): one character typed at a random place in the text of the
-- shared text block (bench.pgbench_targets row k = -1, which no other script edits), from the
-- version 15 before the current one (or its create), so each operation is transformed against the
-- 15 text operations committed since (16 clients taking turns on one text are that far behind).
-- Called as mutation-rpc.sql calls the RPC (role and claims in the transaction, BEGIN to COMMIT in
-- one pipeline), after a read of its target as cheap as that script's: until 2026-12-04 this read
-- also looked for the last content set in the log (a correlated aggregate over 15 log rows) and
-- the target's key (an aggregate), which counted 130 K instructions per transaction (4 %) that
-- bench:mutate's clients do not send, and its block began at its create, so the first 15 ops of
-- a run were not behind (docs/performance.md, thirty-fifth session). The fixture types 15
-- characters into the block after its create ({"text": "seed"}); an operation types one
-- character, or deletes one once the text is longer than 24, so the text keeps about that length
-- (as bench:mutate's does).
\set op random(1, 9223372036854775807)
\set at random(1, 4)
select t.canvas_id, t.block_id, t.user_id, greatest(b.version - 15, 1) as base, (length(b.content ->> 'text') > 24)::int as del
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = -1 \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true),
       set_config('potentia.input_policy', 'checked', true); -- as the server's calls (src/db/request.ts)
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || md5(:op::text)::uuid, :base::int,
                               jsonb_build_object('text', jsonb_build_object('text', jsonb_build_array(:at::int, case when :del = 1 then '{"d": 1}'::jsonb else '"x"' end))));
commit;
\endpipeline
