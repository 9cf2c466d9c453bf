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

-- Slot counting, for the per-user mutation limit (sql/rpc/mutate.sql). A subject's bucket has
-- p_limit slots per window, numbered 1 .. p_limit, and each hit takes one: a row of
-- app.rate_limit_slots, keyed (user_id, window_start, bucket, slot).
--   Rule: the key is the bound. At most p_limit rows can exist in a window, so at most p_limit
--   hits commit in it, exactly, however they are spread over transactions, subtransactions and
--   processes; no count is read, and no hit counts another.
--   Which slot: the first above the highest this statement sees that no other transaction holds.
--   A hit holds its slot's transaction-level advisory lock, taken before it inserts the row, so
--   another hit skips that slot (pg_try_advisory_xact_lock) instead of waiting on the unique index;
--   a slot committed after this statement's snapshot is refused by the key (ON CONFLICT DO NOTHING,
--   no wait: the other committed) and the next is tried. So a hit never waits for another: a user's
--   concurrent hits take consecutive slots at once, and no transaction waits for a slot while it
--   holds others (or a canvas row), so hits cannot deadlock, in any order of locks around them.
--   Above the highest slot the window is full: a slot below left free by a hit that rolled back
--   (its row and its lock go with its subtransaction or transaction) is taken, lowest first; with
--   none, the hit is refused (rate_limited) and counts nothing.
--   Advisory key: the two-int4 form (the subject, bucket and window hashed; the slot number),
--   which no other lock of Potentia's uses (the migrator and the upgrade take the bigint form).
--   Two windows whose hashes collide only make a hit skip a slot the other holds.
-- Until 2026-12-02 (seventeenth session) the count lived in 16 shard rows per user and window
-- (internal.hit_sharded_limit), each hit in flight holding one and reading the sum: exact as well,
-- but three statements and a read of every shard's xmax per hit, and a hit waited for a shard when
-- all 16 were held (docs/performance.md has the measurements).
create or replace function internal.take_limit_slot(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns integer language plpgsql security definer set search_path = '' set plan_cache_mode = force_generic_plan as $$
-- one generic plan: the current window is always newer than the table's statistics, so a custom
-- plan always looks cheaper, and the lookups would be planned again at every call
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_key integer := hashtext(p_subject::text || ' ' || p_bucket || ' ' || extract(epoch from v_window)::bigint::text);
  v_top integer;
  v_try integer;
  v_slot integer;
begin
  -- the highest slot this statement sees: one index descent (max() would scan the window's rows)
  v_top := coalesce((select slot from app.rate_limit_slots
                     where user_id = p_subject and window_start = v_window and bucket = p_bucket
                     order by slot desc limit 1), 0);
  v_try := v_top + 1;
  while v_try <= p_limit loop
    if pg_try_advisory_xact_lock(v_key, v_try) then
      insert into app.rate_limit_slots (user_id, window_start, bucket, slot) values (p_subject, v_window, p_bucket, v_try)
      on conflict do nothing returning slot into v_slot;
      if v_slot is not null then
        return v_slot;
      end if;
    end if;
    v_try := v_try + 1;
  end loop;
  -- full above the highest: a free slot below, lowest first
  for v_try in
    select s from generate_series(1, least(v_top, p_limit)) s
    where not exists (select from app.rate_limit_slots r
                      where r.user_id = p_subject and r.window_start = v_window and r.bucket = p_bucket and r.slot = s)
  loop
    if pg_try_advisory_xact_lock(v_key, v_try) then
      insert into app.rate_limit_slots (user_id, window_start, bucket, slot) values (p_subject, v_window, p_bucket, v_try)
      on conflict do nothing returning slot into v_slot;
      if v_slot is not null then
        return v_slot;
      end if;
    end if;
  end loop;
  perform internal.raise_rate_limited(p_limit, p_window_seconds, v_window);
  return null;
end $$;
comment on function internal.take_limit_slot(uuid, text, integer, integer) is
  'Counts one hit of p_subject in bucket p_bucket: takes a free slot of the current fixed window of p_window_seconds '
  '(internal.rate_window_start) among 1 .. p_limit, a row of app.rate_limit_slots held by this transaction, and returns its number; '
  'raises rate_limited (PX429, retry_after seconds, limit) when none is free. Never waits for another hit. '
  'A rolled-back (sub)transaction gives its slot back. Rule and proof: sql/rpc/endpoint_limits.sql, docs/limits.md.';

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
