-- app.rate_limit_slots: the per-user mutation limit counted as slots, a row per hit (user, minute,
-- bucket, slot number 1 .. the limit). The key is the bound: at most the limit of rows can exist
-- in a window, so at most the limit of hits commit in it (internal.take_limit_slot,
-- sql/rpc/endpoint_limits.sql; docs/limits.md). Replaces the 16 shard rows per user and minute
-- in app.rate_limits (internal.hit_sharded_limit); the next migrations install the functions and
-- carry the open windows' counts over.
-- No CHECK on slot: a CHECK is parsed again at every insert's execution, and only
-- internal.take_limit_slot writes here (1 .. the limit).
create table app.rate_limit_slots (
  user_id uuid not null,
  window_start timestamptz not null,
  bucket text not null,
  slot integer not null,
  primary key (user_id, window_start, bucket, slot)
);
alter table app.rate_limit_slots enable row level security;
grant all on app.rate_limit_slots to service_role;
comment on table app.rate_limit_slots is
  'A hit of a per-user limit counted as a slot of its window (internal.take_limit_slot): at most the limit of rows per (user_id, window_start, bucket). No policy: no API role reads or writes it.';
