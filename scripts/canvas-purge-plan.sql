-- What purging soft-deleted canvases costs (internal.cleanup step 6; docs/performance.md, "Purging
-- deleted canvases"):
--   createdb purge_plan && npm run db:migrate -- --database-url postgres://…/purge_plan
--   psql -X -q -f scripts/canvas-purge-plan.sql postgres://…/purge_plan
-- 600 canvases with 20 blocks and 1,000 operations each (600,000, interleaved as a live log writes
-- them, one in 47 refused: no server_seq), 100 of them deleted 60 days ago (~30 s to insert). Then
-- EXPLAIN (ANALYZE, BUFFERS) of the step's delete as the cleanup runs it, first with the operation
-- log's indexes by canvas partial (block_operations_replay_idx, before migration
-- block_operations_canvas_index), then with block_operations_canvas_server_seq_idx whole: each
-- "Trigger for constraint" line is one foreign key's ON DELETE action, over the 100 canvases. One
-- transaction, rolled back: nothing stays, but it holds the tables it fills locked while it runs
-- (DROP INDEX), so use a scratch database.
\set ON_ERROR_STOP on
\set QUIET on
begin;
set local idle_in_transaction_session_timeout = '120s';
set local session_replication_role = replica;
insert into auth.users (id, email) values ('00000000-0000-4000-a000-00000000f001', 'purge-plan@example.com');
insert into app.workspaces (workspace_id, name, created_by)
values ('00000000-0000-4000-a000-00000000f002', 'purge plan', '00000000-0000-4000-a000-00000000f001');
insert into app.canvases (canvas_id, workspace_id, title, created_by, deleted_at)
select ('00000000-0000-4000-a000-' || lpad(to_hex(g), 12, '0'))::uuid, '00000000-0000-4000-a000-00000000f002', 'c' || g,
       '00000000-0000-4000-a000-00000000f001', case when g % 6 = 0 then now() - interval '60 days' end
from generate_series(1, 600) g;
insert into app.blocks (canvas_id, type, content, y_order, created_by, updated_by)
select ('00000000-0000-4000-a000-' || lpad(to_hex(c), 12, '0'))::uuid, 'text', jsonb_build_object('text', 'block ' || b),
       'a' || lpad(b::text, 4, '0') || 'V', '00000000-0000-4000-a000-00000000f001', '00000000-0000-4000-a000-00000000f001'
from generate_series(1, 600) c, generate_series(1, 20) b;
insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                  base_version, new_version, patch, block, result, error_code, created_at)
select case when ok then nextval('app.seq_block_events') end,
       case when ok then row_number() over (partition by c, ok order by g) end,
       'purge-plan ' || g, '00000000-0000-4000-a000-00000000f001',
       ('00000000-0000-4000-a000-' || lpad(to_hex(c), 12, '0'))::uuid, gen_random_uuid(), 'update',
       case when ok then 'success' else 'failed' end, 1, case when ok then 2 end,
       '{"content":{"text":"some edited text of a block, typical size"}}',
       '{"block_id":"x","content":{"text":"some edited text of a block, typical size"},"version":2}',
       '{"status":"success"}', case when not ok then 'invalid_input' end, now() - interval '1 day'
from (select g, 1 + g % 600 as c, g % 47 <> 7 as ok from generate_series(1, 600000) g) s
order by g;
set local session_replication_role = origin;
analyze app.canvases;
analyze app.blocks;
analyze app.block_operations;

set local client_min_messages = warning;
-- the step's time and each foreign key's action's over the 100 canvases
create function pg_temp.purge() returns setof text language plpgsql as $$
declare l text;
begin
  for l in execute $q$explain (analyze, buffers, costs off) delete from app.canvases where canvas_id in (
             select canvas_id from app.canvases
             where deleted_at < now() - make_interval(days => internal.setting_int('deleted_canvas_retention_days'))
             limit 100)$q$ loop
    if l ~ '^(Trigger for constraint|Execution Time)' then return next l; end if;
  end loop;
end $$;

\echo 'block_operations_replay_idx (canvas_id, server_seq) where server_seq is not null, the only one led by canvas_id beside canvas_seq_idx (partial too):'
savepoint before_purge;
drop index if exists app.block_operations_canvas_server_seq_idx;
create index if not exists block_operations_replay_idx on app.block_operations (canvas_id, server_seq) where server_seq is not null;
analyze app.block_operations;
select pg_temp.purge() as "partial";
rollback to savepoint before_purge;

\echo 'block_operations_canvas_server_seq_idx (canvas_id, server_seq), whole:'
create index if not exists block_operations_canvas_server_seq_idx on app.block_operations (canvas_id, server_seq);
drop index if exists app.block_operations_replay_idx;
analyze app.block_operations;
select pg_temp.purge() as "whole";
rollback;
