-- Per-endpoint rate limits (the seed's table, in app.endpoint_limits). The HTTP layer calls
-- api.hit_endpoint_limit first in each request's transaction; a rejection raises rate_limited
-- (PX429) with retry_after, which the HTTP layer answers with 429 and Retry-After.
--
-- Every limit counts hits in app.rate_limits rows (subject, bucket, fixed window of
-- p_window_seconds). hit_window_limit counts in one row, which the counting transaction holds
-- until it commits: exact, but a subject's concurrent transactions queue on it.

-- The start of the fixed window of p_window_seconds that now() falls in (windows start at
-- multiples of p_window_seconds since the epoch).
-- No SET clause (each call of a function with one builds a GUC nest level): not SECURITY
-- DEFINER, and it names nothing outside pg_catalog.
create or replace function internal.rate_window_start(p_window_seconds integer) returns timestamptz
language plpgsql stable as $$
begin
  return to_timestamp(floor(extract(epoch from now()) / p_window_seconds) * p_window_seconds);
end $$;

-- The rate_limited error for a window that is full.
create or replace function internal.raise_rate_limited(p_limit integer, p_window_seconds integer, p_window timestamptz)
returns void language plpgsql set search_path = '' as $$
begin
  perform internal.raise_error('rate_limited',
    format('rate limit reached (%s per %s s): retry after %s', p_limit, p_window_seconds, p_window + make_interval(secs => p_window_seconds)),
    jsonb_build_object('retry_after', greatest(1, ceil(extract(epoch from p_window + make_interval(secs => p_window_seconds) - now())))::int,
                       'limit', p_limit));
end $$;

create or replace function internal.hit_window_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql security definer set search_path = '' as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_hits integer;
begin
  insert into app.rate_limits as r (user_id, bucket, window_start, hits) values (p_subject, p_bucket, v_window, 1)
  on conflict (user_id, bucket, window_start) do update set hits = r.hits + 1
  returning hits into v_hits;
  if v_hits > p_limit then
    perform internal.raise_rate_limited(p_limit, p_window_seconds, v_window);
  end if;
end $$;

-- Sharded counting, for the per-user mutation limit (sql/rpc/mutate.sql), whose hit is taken at
-- the end of the mutation, just before commit. A bucket has 8 shard rows: `bucket` itself, then
-- `bucket#1` .. `bucket#7`. A hit goes to the first shard no concurrent transaction holds (FOR
-- UPDATE SKIP LOCKED; when all 8 are held, it waits for one), then the bucket's total is the sum
-- of the shards: its own shard's new count plus the committed counts of the others.
--   Rule: a hit is refused when that total exceeds the limit. While a subject's hits do not
--   overlap they all land in `bucket` and the count is exact; k hits in flight at once cannot see
--   each other's uncommitted counts, so at most min(k, 8) - 1 = 7 hits beyond the limit can commit
--   in one window. In exchange, up to 8 of a subject's transactions commit at once instead of
--   queueing on one row held through each commit (docs/limits.md).
create or replace function internal.window_limit_shards(p_bucket text) returns text[]
language plpgsql immutable as $$
begin
  return array[p_bucket, p_bucket || '#1', p_bucket || '#2', p_bucket || '#3',
               p_bucket || '#4', p_bucket || '#5', p_bucket || '#6', p_bucket || '#7'];
end $$;

-- The subject's hits in the current window, all shards: committed counts, and this transaction's
-- own. A plain read, waiting for no one: one full-key lookup per shard (the table is keyed
-- (user_id, window_start, bucket): only the current window's rows are ever read).
-- The shards are a VALUES list (the names of window_limit_shards), not unnest() of that array:
-- the planner counts 8 rows in it either way, so PL/pgSQL keeps one generic plan, where
-- unnest(<a parameter>) costs more than its folded custom plan and was planned again at each call.
create or replace function internal.window_limit_hits(p_subject uuid, p_bucket text, p_window_seconds integer)
returns bigint language plpgsql stable security definer set search_path = '' as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
begin
  return (select coalesce(sum(r.hits), 0)
          from (values (p_bucket), (p_bucket || '#1'), (p_bucket || '#2'), (p_bucket || '#3'),
                       (p_bucket || '#4'), (p_bucket || '#5'), (p_bucket || '#6'), (p_bucket || '#7')) s(bucket)
          cross join lateral (select hits from app.rate_limits
                              where user_id = p_subject and bucket = s.bucket and window_start = v_window limit 1) r);
end $$;

-- Refuses (rate_limited) a subject whose first shard `bucket` alone is full, without counting or
-- locking: the early check before a mutation does its work. It reads that one row, not all 8:
-- while a subject's hits do not overlap they all land there, so a full window is refused before
-- any work; hits that overlapped spread over the other shards, and a window full only in sum is
-- refused by the hit itself (hit_sharded_limit), after the work, which then rolls back. The check
-- is a shortcut for the refused; the rule is the hit's.
create or replace function internal.check_sharded_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql stable security definer set search_path = '' as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
begin
  if (select hits from app.rate_limits where user_id = p_subject and bucket = p_bucket and window_start = v_window) >= p_limit then
    perform internal.raise_rate_limited(p_limit, p_window_seconds, v_window);
  end if;
end $$;

-- Counts one hit (see the rule above); raises rate_limited when the total exceeds p_limit. In the
-- common case one statement: lock the first free shard row in this session's order, count, and
-- add the other shards' committed counts. Under contention it is still that one statement (the
-- shard rows held by concurrent transactions are skipped in it, not tried one statement each).
create or replace function internal.hit_sharded_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql security definer set search_path = '' as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_shards text[] := internal.window_limit_shards(p_bucket);
  v_order text[];
  v_shard text;
  v_total bigint;
begin
  -- `bucket` first (all of a subject's hits when they do not overlap), then the others from a
  -- place that differs per session, so concurrent hits do not all try the same held shards
  v_order := v_shards[1:1] || v_shards[2 + pg_backend_pid() % 7:] || v_shards[2:1 + pg_backend_pid() % 7];
  with free as (
    select bucket from app.rate_limits
    where user_id = p_subject and bucket = any(v_order) and window_start = v_window
    order by array_position(v_order, bucket)
    limit 1 for update skip locked
  ), hit as (
    update app.rate_limits r set hits = r.hits + 1 from free
    where r.user_id = p_subject and r.bucket = free.bucket and r.window_start = v_window
    returning r.bucket, r.hits
  )
  select hit.bucket, hit.hits + (   -- plus the other shards' committed counts
           select coalesce(sum(o.hits), 0) from app.rate_limits o
           where o.user_id = p_subject and o.bucket = any(v_shards) and o.window_start = v_window and o.bucket <> hit.bucket)
  into v_shard, v_total from hit;
  if v_shard is null then
    -- no shard row is free: create the first one (in this session's order) that does not exist
    -- yet, or, when all 8 exist and are held, queue on one of them
    select u.s into v_shard from unnest(v_order) with ordinality u(s, i)
    where not exists (select from app.rate_limits where user_id = p_subject and bucket = u.s and window_start = v_window)
    order by u.i limit 1;
    if v_shard is not null then
      insert into app.rate_limits as r (user_id, bucket, window_start, hits) values (p_subject, v_shard, v_window, 1)
      on conflict (user_id, bucket, window_start) do update set hits = r.hits + 1;
    else
      update app.rate_limits set hits = hits + 1
      where user_id = p_subject and bucket = v_shards[1 + pg_backend_pid() % cardinality(v_shards)] and window_start = v_window;
    end if;
    v_total := internal.window_limit_hits(p_subject, p_bucket, p_window_seconds);
  end if;
  if v_total > p_limit then
    perform internal.raise_rate_limited(p_limit, p_window_seconds, v_window);
  end if;
end $$;

drop function if exists api.hit_endpoint_limit(text);
-- The limit row (unknown endpoint: no count), the caller (no user: no count; auth.uid() read
-- once), then the hit through internal.hit_window_limit.
create or replace function api.hit_endpoint_limit(p_endpoint text, p_relaxed boolean default false) returns void
language plpgsql security definer set search_path = '' as $$
declare
  v_limit app.endpoint_limits;
  v_uid uuid;
begin
  select * into v_limit from app.endpoint_limits where endpoint = p_endpoint;
  if not found then return; end if;
  v_uid := auth.uid();
  if v_uid is null then return; end if;
  if p_relaxed then
    -- the development profile: 100x the hits in a window of at most 60 s (own bucket, so a
    -- relaxed process never spends a standard one's budget)
    perform internal.hit_window_limit(v_uid, 'endpoint-dev:' || p_endpoint, v_limit.max_hits * 100, least(v_limit.window_seconds, 60));
  else
    perform internal.hit_window_limit(v_uid, 'endpoint:' || p_endpoint, v_limit.max_hits, v_limit.window_seconds);
  end if;
end $$;
comment on function api.hit_endpoint_limit(text, boolean) is
  'Counts one call of endpoint p_endpoint (app.endpoint_limits: max_hits per window_seconds, per user); raises rate_limited (PX429) '
  'with retry_after seconds when over. p_relaxed (the development profile, POTENTIA_PROFILE=development): 100x the hits per window '
  'of at most 60 s. Calling it only ever counts against the caller.';

grant execute on function api.hit_endpoint_limit(text, boolean) to authenticated, service_role;
