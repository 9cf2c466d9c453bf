-- Purging a soft-deleted canvas (internal.cleanup step 6, up to 100 canvases a run) deletes its
-- operation log through the canvas foreign key (app.block_operations.canvas_id references
-- app.canvases on delete cascade): PostgreSQL runs `DELETE FROM ONLY app.block_operations WHERE $1
-- = canvas_id` once per purged canvas, from a plan it keeps for the session, generic after five
-- runs. Neither plan can use an index whose predicate the statement does not imply (server_seq or
-- canvas_seq not null): with only such indexes led by canvas_id, each canvas read the whole log
-- (600,000 operations over 600 canvases: 28,500 buffers and 80-230 ms a canvas, a run purging 100
-- canvases 9-17 s; docs/performance.md, "Purging deleted canvases"). An index led by canvas_id
-- with every row answers each run alone: block_operations_canvas_server_seq_idx.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(4);

select ok(exists (
  select from pg_index i
  where i.indrelid = 'app.block_operations'::regclass and i.indisvalid and i.indpred is null
    and i.indkey[0] = (select attnum from pg_attribute where attrelid = 'app.block_operations'::regclass and attname = 'canvas_id')),
  'a whole index of app.block_operations is led by canvas_id (the canvas foreign key''s column)');

-- Fixture: 1,000 canvases with 10 operations each, interleaved as a live log writes them; one in
-- 10 is refused (status failed: no server_seq, no canvas_seq). Analyzed, as a live table is.
do $$
declare v_user uuid := tests.create_user('bock_owner'); v_w uuid;
begin
  insert into app.workspaces (name, created_by) values ('W', v_user) returning workspace_id into v_w;
  insert into app.canvases (canvas_id, workspace_id, title, created_by)
  select ('00000000-0000-4000-b000-' || lpad(to_hex(g), 12, '0'))::uuid, v_w, 'bock ' || g, v_user
  from generate_series(1, 1000) g;
  insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                    base_version, new_version, patch)
  select case when ok then nextval('app.seq_block_events') end,
         case when ok then row_number() over (partition by c, ok order by g) end,
         'bock ' || g, v_user, ('00000000-0000-4000-b000-' || lpad(to_hex(c), 12, '0'))::uuid, gen_random_uuid(), 'update',
         case when ok then 'success' else 'failed' end, 1, case when ok then 2 end, '{"content":{"text":"an edit"}}'
  from (select g, 1 + g % 1000 as c, g % 10 <> 3 as ok from generate_series(1, 10000) g) s
  order by g;
end $$;
analyze app.canvases;
analyze app.block_operations;

-- the cascade's own statement, planned generically (as after its fifth run): an index scan, not
-- the whole log
set local plan_cache_mode = force_generic_plan;
prepare bock_cascade(uuid) as delete from only app.block_operations where $1 operator(pg_catalog.=) canvas_id;
select ok((select plan !~ 'Seq Scan' and plan ~ 'block_operations_canvas_server_seq_idx' from tests.plan_of('execute bock_cascade(gen_random_uuid())') plan),
          'the cascade''s generic plan reads block_operations_canvas_server_seq_idx, not the whole log');
deallocate bock_cascade;
reset plan_cache_mode;

-- the purge itself, as the cleanup runs it: 20 canvases soft-deleted past the retention (more than
-- the five custom plans), deleted in one statement; the log is never read whole (this
-- transaction's sequential scans of app.block_operations stay as they were)
update app.canvases set deleted_at = now() - interval '1 year'
where canvas_id in (select ('00000000-0000-4000-b000-' || lpad(to_hex(g), 12, '0'))::uuid from generate_series(1, 20) g);
create temp table bock_scans as
select seq_scan from pg_stat_xact_user_tables where relid = 'app.block_operations'::regclass;
delete from app.canvases where canvas_id in (
  select canvas_id from app.canvases
  where deleted_at < now() - make_interval(days => internal.setting_int('deleted_canvas_retention_days'))
  limit 100);
select is((select s.seq_scan - b.seq_scan from pg_stat_xact_user_tables s, bock_scans b where s.relid = 'app.block_operations'::regclass),
          0::bigint, 'purging 20 canvases reads their operations by index: no sequential scan of the log');
select is((select count(*) from app.block_operations
           where canvas_id in (select ('00000000-0000-4000-b000-' || lpad(to_hex(g), 12, '0'))::uuid from generate_series(1, 20) g)),
          0::bigint, 'their operations (the refused ones too) are gone');

select * from finish();
rollback;
