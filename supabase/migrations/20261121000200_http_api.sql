-- HTTP API support: per-endpoint rate limits (enforced in Postgres so they hold across
-- processes and edge instances) and refresh tokens (stored hashed, rotated, family-revoked).

create table app.endpoint_limits (
  endpoint text primary key,
  max_hits integer not null check (max_hits > 0),
  window_seconds integer not null check (window_seconds > 0)
);
alter table app.endpoint_limits enable row level security;
-- the seed's table: H2 10/s, H3 5/s, H4 1/s, H5 1/30s, H6 1/s, A1 5/s, A2 10/s, A3 20/s,
-- A4 2/s, A5 1/10s, A6 1/s, A7 1/day, A8 5/s, M3 1/s (search arrives with the jobs)
insert into app.endpoint_limits (endpoint, max_hits, window_seconds) values
  ('H2', 10, 1), ('H3', 5, 1), ('H4', 1, 1), ('H5', 1, 30), ('H6', 1, 1),
  ('A1', 5, 1), ('A2', 10, 1), ('A3', 20, 1), ('A4', 2, 1), ('A5', 1, 10), ('A6', 1, 1),
  ('A7', 1, 86400), ('A8', 5, 1), ('M3', 1, 1);

create table app.refresh_tokens (
  token_hash text primary key,             -- sha256 hex of the token; the token itself is never stored
  family_id uuid not null,                 -- every rotation of one sign-in shares a family
  user_id uuid not null references auth.users (id) on delete cascade,
  parent_hash text,
  created_at timestamptz not null default now(),
  expires_at timestamptz not null,
  used_at timestamptz,                     -- rotated: presenting it again is reuse
  revoked_at timestamptz
);
create index refresh_tokens_family_idx on app.refresh_tokens (family_id);
create index refresh_tokens_expires_idx on app.refresh_tokens (expires_at);
alter table app.refresh_tokens enable row level security;
