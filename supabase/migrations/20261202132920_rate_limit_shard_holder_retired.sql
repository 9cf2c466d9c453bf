-- app.rate_limits.holder: the transaction that last counted a hit in a shard row of the per-user
-- mutation limit. The shards retired in the migration before this one (the limit counts in
-- app.rate_limit_slots: internal.take_limit_slot, sql/rpc/endpoint_limits.sql, which also carried
-- the open windows' counts over and dropped the shards' functions); nothing reads it.
alter table app.rate_limits drop column if exists holder;
