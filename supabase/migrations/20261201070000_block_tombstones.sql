-- app.block_tombstones: the last version of every block a delete removed, for as long as the
-- operation log is kept. A block created again under a used block_id continues that id's versions
-- (sql/rpc/mutate.sql), so an operation made for the deleted block can never pass as one on the
-- new block. The operation log alone cannot say the last version of a child deleted with its
-- parent (the delete logs one row, for the parent): once the child's own rows aged out of the log,
-- it would start over at 1 while the delete itself is recent. The delete writes one row here per
-- block of the subtree; internal.cleanup() removes rows older than oplog_retention_days.
-- Internal: RLS on and no policy, no grant to API roles (only SECURITY DEFINER functions use it).
create table app.block_tombstones (
  block_id uuid primary key,
  version integer not null,
  deleted_at timestamptz not null default now()
);
create index block_tombstones_deleted_at_idx on app.block_tombstones (deleted_at);
alter table app.block_tombstones enable row level security;
revoke all on app.block_tombstones from public, anon, authenticated;
comment on table app.block_tombstones is
  'Last version of each deleted block (the delete''s own version for the block deleted, the current one for its descendants); '
  'a create under that block_id continues from it. Kept oplog_retention_days (internal.cleanup).';
grant all on app.block_tombstones to service_role;
