-- app.rate_limits.holder: the transaction that last counted a hit in the row (pg_current_xact_id()).
-- The sharded mutation limit (internal.hit_sharded_limit, sql/rpc/endpoint_limits.sql) gives each
-- uncommitted hit a shard row of its own, so a transaction carrying several hits of one user (a
-- canvas lane's group, a batch) must know which shards it already holds: the rows whose holder is
-- its own transaction id (a subtransaction rolled back takes its holder back with its hit).
alter table app.rate_limits add column holder xid8;
comment on column app.rate_limits.holder is
  'The transaction that last counted a hit here (pg_current_xact_id()); the sharded limit uses it to tell the shards its own transaction holds.';
