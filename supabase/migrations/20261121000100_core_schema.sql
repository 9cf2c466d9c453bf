-- Core schema: tenants, canvases, blocks, the operation log, audit, presence, rate limits.
-- RLS is enabled on every table with its policies beside it. Clients never write tables
-- directly: every write goes through an `api` function that checks roles itself; the select
-- policies make direct reads (and Supabase Realtime's authorization) member-only.

-- Settings the database logic reads (rate limits, size limits); change with an UPDATE, no deploy.
create table app.settings (
  key text primary key,
  value jsonb not null,
  description text not null
);
alter table app.settings enable row level security;
insert into app.settings (key, value, description) values
  ('mutations_per_minute', '100', 'block mutations one user may make per minute'),
  ('max_content_bytes', '65536', 'largest block content (jsonb text length, bytes)'),
  ('max_batch_ops', '100', 'most operations in one batch mutation'),
  ('presence_write_interval_seconds', '30', 'least time between durable presence writes per user'),
  ('audit_retention_days', '365', 'age after which audit rows may be removed'),
  ('oplog_retention_days', '90', 'age after which operation-log rows may be removed');

create type app.member_role as enum ('owner', 'admin', 'editor', 'viewer');

create table app.workspaces (
  workspace_id uuid primary key default gen_random_uuid(),
  name text not null check (char_length(name) between 1 and 200),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now()
);
alter table app.workspaces enable row level security;

create table app.workspace_members (
  workspace_id uuid not null references app.workspaces on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role app.member_role not null,
  created_at timestamptz not null default now(),
  primary key (workspace_id, user_id)
);
create index workspace_members_user_idx on app.workspace_members (user_id);
alter table app.workspace_members enable row level security;

create table app.canvases (
  canvas_id uuid primary key default gen_random_uuid(),
  workspace_id uuid not null references app.workspaces on delete cascade,
  title text not null default 'Untitled' check (char_length(title) between 1 and 500),
  settings jsonb not null default '{}' check (jsonb_typeof(settings) = 'object'),
  version integer not null default 1,
  -- highest server_seq committed on this canvas; written under the canvas lock, so it is the
  -- watermark a snapshot is consistent with
  last_seq bigint not null default 0,
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  deleted_at timestamptz
);
create index canvases_workspace_idx on app.canvases (workspace_id) where deleted_at is null;
alter table app.canvases enable row level security;

-- Optional per-canvas role that replaces the workspace role for one user on one canvas.
create table app.canvas_members (
  canvas_id uuid not null references app.canvases on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role app.member_role not null check (role <> 'owner'),
  primary key (canvas_id, user_id)
);
alter table app.canvas_members enable row level security;

create table app.blocks (
  block_id uuid primary key default gen_random_uuid(),
  canvas_id uuid not null references app.canvases on delete cascade,
  parent_id uuid,
  type text not null check (type ~ '^[a-z][a-z0-9_]{0,39}$'),
  content jsonb not null default '{}' check (jsonb_typeof(content) = 'object'),
  -- LexoRank key: base-62, 1..10 chars, never ending in '0'; compared bytewise (collation C)
  y_order text collate "C" not null check (y_order ~ '^[0-9A-Za-z]{0,9}[1-9A-Za-z]$'),
  version integer not null default 1 check (version >= 1),
  created_at timestamptz not null default now(),
  created_by uuid references auth.users (id) on delete set null,
  updated_at timestamptz not null default now(),
  updated_by uuid references auth.users (id) on delete set null,
  -- embedding state: the job embeds content_hash and stores the vector only if it still matches
  content_hash text generated always as (md5(content::text)) stored,
  vector extensions.vector(1536),
  embedding_model text,
  embedded_hash text,
  embedded_at timestamptz,
  unique (canvas_id, block_id),
  -- the parent is a block of the same canvas (composite FK); deleting it deletes the subtree
  foreign key (canvas_id, parent_id) references app.blocks (canvas_id, block_id) on delete cascade,
  constraint blocks_canvas_y_order_key unique (canvas_id, y_order) deferrable initially deferred
);
create index blocks_parent_idx on app.blocks (parent_id) where parent_id is not null;
create index blocks_vector_hnsw_idx on app.blocks using hnsw (vector extensions.vector_cosine_ops)
  with (m = 16, ef_construction = 128) where vector is not null;
alter table app.blocks enable row level security;

create sequence app.seq_block_events as bigint;

-- One row per mutation attempt. No FK to blocks: the replay log outlives deleted blocks.
create table app.block_operations (
  op_id bigint generated always as identity primary key,
  server_seq bigint unique,                 -- set for applied operations only
  client_op_id text not null check (char_length(client_op_id) between 1 and 128),
  actor_id uuid,                            -- null for system operations (rebalance)
  canvas_id uuid not null references app.canvases on delete cascade,
  block_id uuid,
  action text not null check (action in ('create', 'update', 'move', 'delete')),
  status text not null check (status in ('success', 'conflict', 'failed', 'duplicate')),
  base_version integer,
  new_version integer,
  patch jsonb not null default '{}',
  block jsonb,                              -- the block after the operation (null after delete)
  result jsonb,                             -- what the caller got back; replayed on a retry
  error_code text,
  error_message text,
  started_at timestamptz not null default now(),
  duration_ms numeric(10, 3),
  created_at timestamptz not null default now(),
  check ((status = 'success') = (server_seq is not null))
);
-- exactly-once: a client op id is applied at most once per caller
create unique index block_operations_idempotency_idx on app.block_operations (actor_id, client_op_id)
  where status = 'success';
create index block_operations_replay_idx on app.block_operations (canvas_id, server_seq) where server_seq is not null;
create index block_operations_block_idx on app.block_operations (block_id, new_version) where status = 'success';
create index block_operations_created_idx on app.block_operations (created_at);
alter table app.block_operations enable row level security;

-- System audit, partitioned by month; the default partition catches any gap so no row is lost.
create table app.system_audit (
  audit_id bigint generated always as identity,
  created_at timestamptz not null default now(),
  user_id uuid,
  action text not null,
  entity_type text,
  entity_id text,
  details jsonb not null default '{}',
  client_op_id text,
  server_seq bigint,
  status text not null,
  ip inet,
  user_agent text,
  session_id text,
  request_id text,
  response_time_ms numeric(10, 3),
  affected_rows integer,
  primary key (audit_id, created_at)
) partition by range (created_at);
create table app.system_audit_default partition of app.system_audit default;
create index system_audit_user_idx on app.system_audit (user_id, created_at);
alter table app.system_audit enable row level security;

create table app.presence (
  canvas_id uuid not null references app.canvases on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  typing boolean not null default false,
  last_active_at timestamptz not null default now(),
  primary key (canvas_id, user_id)
);
alter table app.presence enable row level security;

-- Fixed one-minute windows per user and bucket (mutations, endpoints).
create table app.rate_limits (
  user_id uuid not null,
  bucket text not null,
  window_start timestamptz not null,
  hits integer not null default 0,
  primary key (user_id, bucket, window_start)
);
alter table app.rate_limits enable row level security;
