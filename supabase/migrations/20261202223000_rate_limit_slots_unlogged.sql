-- app.rate_limit_slots becomes UNLOGGED: a mutation's rate-limit hit (a slot row and its index
-- entry) no longer writes WAL, so the mutation RPC writes as much WAL as its own writes plus its
-- subtransaction's records (docs/performance.md). The slots are a minute's counts: a crash or a
-- failover starts the current minute from zero (docs/limits.md). The table is small (ten minutes
-- of hits, internal.cleanup), so the rewrite SET UNLOGGED does is brief.
alter table app.rate_limit_slots set unlogged;
comment on table app.rate_limit_slots is
  'A hit of a per-user limit counted as a slot of its window (internal.take_limit_slot): at most the limit of rows per (user_id, window_start, bucket). '
  'UNLOGGED: a crash or a failover empties it, starting the current window''s counts from zero (docs/limits.md). No policy: no API role reads or writes it.';
