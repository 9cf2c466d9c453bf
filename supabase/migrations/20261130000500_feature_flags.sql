-- Canary flags per canvas (the potentia seed's task 39): a flag is on for a canvas when the canvas
-- or its workspace is on an allow list, off when on a deny list, and otherwise on for the canvases
-- whose stable hash bucket falls below the rollout percentage (sql/flags/flags.sql).
create table app.feature_flags (
  name text primary key check (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
  description text not null default '',
  rollout_percent numeric(5, 2) not null default 0 check (rollout_percent between 0 and 100),
  allow_canvases uuid[] not null default '{}',
  deny_canvases uuid[] not null default '{}',
  allow_workspaces uuid[] not null default '{}',
  deny_workspaces uuid[] not null default '{}',
  updated_at timestamptz not null default now(),
  updated_by text
);
-- no policy for the API roles: flags are read through api.get_canvas_flags (members, per canvas)
-- and changed through api.set_feature_flag (service_role only, audited)
alter table app.feature_flags enable row level security;
