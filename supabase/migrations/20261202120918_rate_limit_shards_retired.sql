-- The shard rows of the per-user mutation limit retire (internal.take_limit_slot counts in
-- app.rate_limit_slots since the migration before this one).
-- 1. The hits of the shard version still in flight finish first (SHARE ROW EXCLUSIVE waits for
--    them; nothing else writes mutation rows here any more), then each open window's committed
--    count becomes that many slots, the lowest free ones, so the minute the upgrade falls in allows
--    no more than the limit in all.
lock table app.rate_limits in share row exclusive mode;
insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
select w.user_id, w.window_start, 'mutations', free.slot
from (select user_id, window_start, sum(hits)::integer as hits from app.rate_limits
      where bucket ~ '^mutations(#[0-9]+|\+)?$' and window_start >= now() - interval '2 minutes' and hits > 0
      group by user_id, window_start) w
cross join lateral (
  select g as slot
  from generate_series(1, w.hits + (select count(*)::integer from app.rate_limit_slots s
                                    where s.user_id = w.user_id and s.window_start = w.window_start and s.bucket = 'mutations')) g
  where not exists (select from app.rate_limit_slots s
                    where s.user_id = w.user_id and s.window_start = w.window_start and s.bucket = 'mutations' and s.slot = g)
  order by g limit w.hits) free
on conflict do nothing;
delete from app.rate_limits where bucket ~ '^mutations(#[0-9]+|\+)?$';
-- 2. What only the shards used.
alter table app.rate_limits drop column holder;
drop function if exists internal.hit_sharded_limit(uuid, text, integer, integer);
drop function if exists internal.check_sharded_limit(uuid, text, integer, integer);
drop function if exists internal.expect_several_hits(uuid, integer);
drop function if exists internal.window_limit_hits(uuid, text, integer);
drop function if exists internal.window_limit_shards(text);
drop function if exists internal.xmax_unseen_update(xid, xid);
