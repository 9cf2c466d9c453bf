-- app.rate_limits keyed by (user_id, window_start, bucket), was (user_id, bucket, window_start).
-- The sharded mutation limit reads and locks a user's shard rows of the current window with
-- `bucket = any(<shards>)`; under the old key order the planner took only user_id (and
-- window_start as a filter) as the index condition, so every hit walked ALL of the user's rows:
-- every bucket and every window of the 2 days the cleanup keeps (a user active every minute:
-- ~6,000 entries, ~0.8 ms more per mutation, growing with the history). With window_start second,
-- a lookup lands on the current window's few rows whatever the history. Exact-key lookups and
-- ON CONFLICT (user_id, bucket, window_start) are unchanged (the same three columns, unique).
alter table app.rate_limits drop constraint rate_limits_pkey;
alter table app.rate_limits add primary key (user_id, window_start, bucket);
