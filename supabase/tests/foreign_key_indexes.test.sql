-- Every foreign key of the app schemas has an index its look-ups use (sql/core/foreign_key_indexes.sql):
-- deleting a referenced row (a user, a canvas) looks up the referencing rows by the key's columns
-- once per deleted row, and without such an index each look-up reads the whole table. An index
-- serves a key when its leading columns are the key's columns (in any order) and it is whole or
-- partial on `<one of them> is not null` (a null references nothing). The exceptions are listed
-- below, each with the reason it has no index; an exception that has one, or names no key, fails.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(2);

create temp table exceptions (conname text primary key, reason text not null);
insert into exceptions values
  -- a user's deletion (docs/self-hosting.md, "Deleting a user": decided there, user_references.test.sql)
  ('app.blocks.blocks_updated_by_fkey',
   'every edit by another user than the block''s last editor writes updated_by: an index on it would make those edits non-HOT '
   '(merge.test.sql asserts a text edit changes no indexed column); no partial index avoids it'),
  ('app.blocks.blocks_created_by_fkey',
   'with updated_by read in full anyway it would only halve a user''s deletion, for one more index entry per block created'),
  ('app.presence.presence_user_id_fkey',
   'a row per user present on a canvas, stale ones removed by the cleanup job: the table is as small as the people online'),
  -- a canvas's or workspace's deletion
  ('app.canvases.canvases_workspace_id_fkey',
   'no function deletes a workspace (a user''s deletion sets workspaces.created_by null): the cascade does not run; '
   'canvases_workspace_updated_idx (workspace_id, ...) where deleted_at is null serves the reads');
  -- (app.block_operations.canvas_id: block_operations_canvas_server_seq_idx, whole, serves the purge of a
  -- soft-deleted canvas; block_operations_canvas_key_index.test.sql)

create temp view unindexed_keys as
select c.conrelid::regclass::text || '.' || c.conname as conname
from pg_constraint c
where c.contype = 'f'
  and c.connamespace::regnamespace::text in ('app', 'internal', 'api')
  and not exists (
    select from pg_index i
    where i.indrelid = c.conrelid and i.indisvalid
      and (select array_agg(k order by k) from unnest((i.indkey::int2[])[0:cardinality(c.conkey) - 1]) k)
          = (select array_agg(k order by k) from unnest(c.conkey) k)
      and (i.indpred is null
           or pg_get_expr(i.indpred, i.indrelid) in (
                select format('(%I IS NOT NULL)', a.attname) from pg_attribute a
                where a.attrelid = c.conrelid and a.attnum = any (c.conkey))));

select is(array(select conname from unindexed_keys where conname not in (select conname from exceptions) order by 1),
          '{}'::text[],
          'every foreign key of app, internal and api has an index led by its columns, or is an exception with its reason');
select is(array(select conname from exceptions where conname not in (select conname from unindexed_keys) order by 1),
          '{}'::text[],
          'each exception is a foreign key without such an index (none stale)');

select * from finish();
rollback;
