-- The v1 → v2 upgrade's progress (npm run upgrade:v1, src/upgrade/, docs/upgrade-v1.md). One row
-- per v1 canvas moved, written in the same transaction as the canvas, its blocks and their
-- operations: a run that crashed resumes with the canvases that have no row here, and a finished
-- run run again changes nothing. No foreign key to app.canvases on purpose: a canvas deleted after
-- the upgrade keeps its row, so a later run does not bring it back.
create table app.upgrade_v1_progress (
  v1_canvas_id text primary key,            -- the canvas's id in the v1 database, as text
  canvas_id uuid not null unique,           -- its v2 id: the same uuid, or a name-based one (docs/upgrade-v1.md, "Ids")
  workspace_id uuid not null,
  workspace_per text not null check (workspace_per in ('owner', 'one')),
  blocks integer not null,                  -- blocks moved = create operations logged (canvas_seq 1..blocks)
  embedded integer not null,                -- blocks whose v1 embedding became blocks.vector
  queued integer not null,                  -- blocks left in app.embedding_outbox to be embedded
  first_server_seq bigint,
  last_server_seq bigint,
  checksum text not null,                   -- sha256 of the expected blocks (src/upgrade/v1-plan.ts, blockLine)
  upgraded_at timestamptz not null default now(),
  duration_ms numeric(12, 3)
);
alter table app.upgrade_v1_progress enable row level security;
-- no policy: read by the upgrade (the database owner) and service_role only
comment on table app.upgrade_v1_progress is
  'v1 upgrade: one row per v1 canvas moved, committed with it; a re-run skips canvases listed here (docs/upgrade-v1.md).';
