-- A text operation on a shared text, as bench:mutate's "one shared text (transformed)" scenario
-- sends it, for counting its cost (npm run bench:compare -- --instructions --script
-- mutation-rpc,mutation-text-behind): one character typed at a random place in the text of the
-- last target's block (the 16th client's on the 50th canvas), from the version 15 before the
-- current one, so each operation is transformed against the 15 text operations committed since
-- (16 clients taking turns on one text are that far behind); never from before the block's
-- content was last set as a whole (its create, another script's update), as that is a conflict,
-- and a conflict moves no version, so every later op would be one too. Called as
-- mutation-rpc.sql calls the RPC (role and claims in the transaction, BEGIN to COMMIT in one
-- pipeline). The bench fixture's blocks hold {"text": "seed"}; an operation types one character,
-- or deletes one once the text is longer than 24, so the text keeps about that length (as
-- bench:mutate's does).
\set op random(1, 9223372036854775807)
\set at random(1, 4)
select t.canvas_id, t.block_id, t.user_id,
       greatest(b.version - 15, (select max(o.new_version) from app.block_operations o  -- (of the last 15: a range of the index)
                                 where o.block_id = t.block_id and o.status = 'success' and o.new_version >= b.version - 15
                                   and o.patch ? 'content')) as base,
       (length(b.content ->> 'text') > 24)::int as del
from bench.pgbench_targets t join app.blocks b using (block_id) where t.k = (select max(k) from bench.pgbench_targets) \gset
\startpipeline
begin;
select set_config('role', 'authenticated', true),
       set_config('request.jwt.claims', json_build_object('sub', :user_id::text, 'role', 'authenticated')::text, true);
select api.upsert_block_atomic(:canvas_id::uuid, :block_id::uuid, 'update', 'pgbench-' || md5(:op::text)::uuid, :base::int,
                               jsonb_build_object('text', jsonb_build_object('text', jsonb_build_array(:at::int, case when :del = 1 then '{"d": 1}'::jsonb else '"x"' end))));
commit;
\endpipeline
