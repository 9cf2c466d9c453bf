-- Deleting a block deletes its subtree through the parent foreign key (app.blocks (canvas_id,
-- parent_id) references app.blocks (canvas_id, block_id) on delete cascade): PostgreSQL runs
-- `DELETE FROM ONLY app.blocks WHERE $1 = canvas_id AND $2 = parent_id` once per deleted block,
-- from a plan it keeps for the session, generic after five runs. With an index on parent_id alone
-- beside the canvas's (canvas_id, y_order), that generic plan could AND the two, reading every
-- entry of the canvas at each level: deleting a chain 2,000 deep on a canvas of 44,000 blocks took
-- 2-4.5 s instead of 35-110 ms (docs/performance.md, "Cascading deletes of a subtree"). An index
-- led by both columns answers each run alone.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(2);

select ok(exists (
  select from pg_index i join pg_constraint c on c.conrelid = i.indrelid
  where c.conname = 'blocks_canvas_id_parent_id_fkey' and i.indrelid = 'app.blocks'::regclass
    and (select array_agg(x order by x) from unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) x)
        = (select array_agg(x order by x) from unnest(c.conkey) x)),
  'an index of app.blocks is led by the parent foreign key''s columns (canvas_id, parent_id)');

-- the cascade's own statement, planned generically (as after its fifth run): one index scan
-- answers both columns, no BitmapAnd with a canvas-wide index
set local plan_cache_mode = force_generic_plan;
prepare bpk_cascade(uuid, uuid) as delete from only app.blocks where $1 operator(pg_catalog.=) canvas_id and $2 operator(pg_catalog.=) parent_id;
select ok((select plan !~ 'BitmapAnd' and plan ~ 'blocks_parent_canvas_idx' from tests.plan_of('execute bpk_cascade(gen_random_uuid(), gen_random_uuid())') plan),
          'the cascade''s generic plan reads blocks_parent_canvas_idx alone');
deallocate bpk_cascade;

select * from finish();
rollback;
