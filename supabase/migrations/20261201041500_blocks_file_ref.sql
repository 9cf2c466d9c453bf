-- app.blocks.file_ref: the block's content.file_id as a stored generated column, indexed in place
-- of the expression index on content (blocks_file_id_idx on (content ->> 'file_id')).
-- Why: an index whose expression or predicate reads `content` makes every UPDATE that changes
-- content a non-HOT update (PostgreSQL can only update a row in place, without touching indexes,
-- when no indexed column changed), so every edit of a block inserted a new entry into each of the
-- table's indexes and left a dead one behind. Measured in bench:mutate's text scenarios: 22 % of
-- a shared text's updates were HOT, vs 99 % for an update that does not change content. With the
-- index on file_ref, an edit that keeps content.file_id leaves the indexed columns equal: HOT.
-- Lookups by file (the file triggers, the files cleanup) read file_ref.
-- Adding a stored generated column rewrites app.blocks (an ACCESS EXCLUSIVE lock for the
-- duration, its indexes rebuilt): on a large table run it in a maintenance window.
alter table app.blocks add column file_ref text generated always as (content ->> 'file_id') stored;
comment on column app.blocks.file_ref is
  'content ->> ''file_id'' (generated): the file a file block refers to, indexed for lookups by file (sql/files/block_files.sql).';
drop index if exists app.blocks_file_id_idx;
create index blocks_file_ref_idx on app.blocks (file_ref) where file_ref is not null;
