-- Background jobs (Graphile Worker): the embedding outbox, worker heartbeats, and the settings
-- and rate limit the jobs and semantic search read. Functions and triggers are in sql/jobs/.

-- Blocks whose content changed since they were last handed to the worker. The trigger upserts
-- one row per block (a burst of edits stays one row, no NOTIFY on the write path); the worker
-- drains due rows in batches into ONE graphile_worker.add_jobs call (job key embed_block:<id>).
create table app.embedding_outbox (
  block_id uuid primary key,               -- no FK: a deleted block's row is drained and skipped
  canvas_id uuid not null,
  first_queued_at timestamptz not null default now(),  -- bounds the debounce under constant edits
  queued_at timestamptz not null default now()         -- last edit: due once it is debounce old
) with (fillfactor = 70);
-- deliberately no index on queued_at: each edit's upsert stays a HOT update (the table is small,
-- the drain scans it)
alter table app.embedding_outbox enable row level security;

-- One row per running worker pool (worker_id = the Graphile pool id, which is what
-- graphile_worker jobs.locked_by holds). /ready reads it; a live worker force-unlocks the jobs of
-- a worker whose heartbeat went stale (a crashed process), so another worker retries them.
create table app.worker_heartbeats (
  worker_id text primary key,
  hostname text not null,
  pid integer not null,
  started_at timestamptz not null default now(),
  last_seen_at timestamptz not null default now(),
  tasks text[] not null default '{}'
);
alter table app.worker_heartbeats enable row level security;

insert into app.settings (key, value, description) values
  ('presence_expiry_seconds', '120', 'presence rows idle longer than this are expired by cleanup (and a presence_leave sent)'),
  ('deleted_canvas_retention_days', '30', 'soft-deleted canvases are purged (with their blocks and log) after this many days'),
  ('search_max_results', '50', 'most results one semantic search returns');

-- S2: semantic search (embeds the query, then one nearest-neighbour query).
insert into app.endpoint_limits (endpoint, max_hits, window_seconds) values ('S2', 5, 1);
