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
-- the end of the mutation, just before commit. A bucket has 16 shard rows: `bucket` itself, then
-- `bucket#1` .. `bucket#15`. Each uncommitted hit holds a shard row of its own: a hit goes to the
-- first shard of its range (below) that no transaction holds (FOR NO KEY UPDATE SKIP LOCKED; its own
-- transaction's are not free either: `holder`), and when none is, it waits for one. Holding its
-- shard, it reads the bucket's total (internal.window_limit_hits): the committed counts, its own
-- transaction's, and one for every shard another transaction holds in flight (or committed after
-- the read's snapshot), as if it had committed.
--   Rule: a hit is refused when that total exceeds the limit. So at most the limit commits in a
--   window, exactly, however the hits are spread over shards and transactions: of the hits that
--   commit, the one whose total was read last counted every other (each took its shard before
--   that read, so each had committed or held its shard then). The price of counting hits in
--   flight as committed: one refused while another, in flight, later rolls back was refused
--   early, only with the window nearly full. In exchange, up to 16 of a subject's hits commit at
--   once instead of queueing on one row held through each commit (docs/limits.md).
--   Several hits of one subject in one transaction (a canvas lane's group, a batch): each takes
--   another shard, and one that holds all 16 counts on, exactly, in the overflow row `bucket+`
--   (no other hit is in flight). Its
--   shards are taken in increasing order (a shard's position in the bucket's list), so when it
--   waits for one while holding others, it waits for one above all of them, and no two such
--   transactions wait for each other. (Nor does a shard's holder wait for a canvas row: every
--   mutation hit is taken under its canvas's lock, internal.count_rejected_attempt.) It says how
--   many more hits than one it will count before its first (setting potentia.several_hits,
--   `<subject>:<n> …`, n summed: the canvas lane's group, internal.expect_several_hits from a
--   batch), so that its first shard leaves room above for the rest (16 hits or more: it starts at
--   `bucket`, and takes all 16 in order). Only a transaction that counts more hits than it
--   announced, past the last shard, waits for one below (the lowest it does not hold): that wait
--   can deadlock, which Postgres breaks.
-- The shard list installed before this version, read before it is replaced: the end of this file
-- completes the open windows only when the list changes. Transaction-local (a migration is one
-- transaction); applied outside one, the setting is gone by the end, which then completes them.
do $$
declare
  v_installed text := '';
begin
  if to_regprocedure('internal.window_limit_shards(text)') is not null then
    execute $q$select array_to_string(internal.window_limit_shards('mutations'), ',')$q$ into v_installed;
  end if;
  perform set_config('potentia.installed_limit_shards', v_installed, true);
end $$;

create or replace function internal.window_limit_shards(p_bucket text) returns text[]
language plpgsql immutable as $$
begin
  return array[p_bucket, p_bucket || '#1', p_bucket || '#2', p_bucket || '#3',
               p_bucket || '#4', p_bucket || '#5', p_bucket || '#6', p_bucket || '#7',
               p_bucket || '#8', p_bucket || '#9', p_bucket || '#10', p_bucket || '#11',
               p_bucket || '#12', p_bucket || '#13', p_bucket || '#14', p_bucket || '#15'];
end $$;

-- Whether the row version a statement sees, with system columns p_xmin and p_xmax, has an update
-- it does not see: by a transaction still in flight, or by one that committed after the
-- statement's snapshot (whose newer version that snapshot cannot see). Not the statement's own
-- transaction, nor the version's creator (xmax = xmin: a lock of its creator's, kept on the
-- version it made; the creator's own later versions are visible with it). xmax is a 32-bit xid:
-- its epoch is the one of the snapshot's next xid, or the one before when the xid lies more than
-- 2^31 above it (xids at most 2^31 apart compare modulo 2^32; the PostgreSQL manual, "Preventing
-- Transaction ID Wraparound Failures"). Every other lock on a shard row is taken by its update's
-- own statement (internal.hit_sharded_limit), and a transaction updates a shard row once (its
-- hits past the 16th go to the overflow row), so an xmax is an update, or one about to be.
create or replace function internal.xmax_unseen_update(p_xmin xid, p_xmax xid) returns boolean
language plpgsql stable as $$
declare
  v_next bigint;
  v_xid bigint;
begin
  if p_xmax::text = '0' or p_xmax = p_xmin then
    return false;
  end if;
  v_next := pg_snapshot_xmax(pg_current_snapshot())::text::bigint;
  v_xid := (v_next >> 32 << 32) + p_xmax::text::bigint;
  if v_xid - v_next > 2147483648 then
    v_xid := v_xid - 4294967296;
  end if;
  if v_xid < 3 or pg_current_xact_id_if_assigned()::text::bigint = v_xid then
    return false;
  end if;
  if v_xid >= v_next then
    -- assigned after the snapshot, so in flight or committed since (pg_xact_status refuses an
    -- xid it deems in the future; nor is it ever asked about a value that is not an xid)
    return true;
  end if;
  return coalesce(pg_xact_status(v_xid::text::xid8), 'aborted') in ('in progress', 'committed');
end $$;

-- The subject's hits in the current window, all shards: committed counts, this transaction's own,
-- and one for each shard whose current version another transaction updates unseen (in flight, or
-- committed after this statement's snapshot: internal.xmax_unseen_update; a version this
-- transaction made, `holder`, carries only its own locks, from whichever of its
-- subtransactions), counted as if it had
-- committed. A hit in flight holds a shard of its own, so that is one hit per such shard (a
-- transaction counting more hits than shards holds them all, and counts the rest in the overflow
-- row `bucket+`: no other hit is in flight). A plain read, waiting for no one, of the subject's
-- rows of the current window: one range of the key (user_id, window_start, bucket), the shards
-- picked out by name (array_position: a filter; the VALUES list of names read before made one
-- index descent per shard, 16 in all). One generic plan (plan_cache_mode, here and in
-- hit_sharded_limit): the current window is newer than the table's statistics, so a custom plan
-- always looks cheaper and the statement was planned again at every call, half its time.
create or replace function internal.window_limit_hits(p_subject uuid, p_bucket text, p_window_seconds integer)
returns bigint language plpgsql stable security definer set search_path = '' set plan_cache_mode = force_generic_plan as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_shards text[] := internal.window_limit_shards(p_bucket);
  v_overflow text := p_bucket || '+';
  v_mine xid8 := pg_current_xact_id_if_assigned();
begin
  -- the overflow row, written only by a transaction holding all 16 shards (none of which another
  -- hit can hold meanwhile): its committed count, no xmax read. xmax_unseen_update only for a row
  -- with an xmax (left to right: most rows have none, and a call per shard was most of the time)
  -- with no xid of its own (a plain read) no row is its own: `holder is distinct from null`
  -- would skip every row no hit has held yet
  return (select coalesce(sum(r.hits + case when r.bucket <> v_overflow and r.xmax::text <> '0'
                                                 and (v_mine is null or r.holder is distinct from v_mine)
                                                 and internal.xmax_unseen_update(r.xmin, r.xmax) then 1 else 0 end), 0)
          from app.rate_limits r
          where r.user_id = p_subject and r.window_start = v_window
            and (array_position(v_shards, r.bucket) is not null or r.bucket = v_overflow));
end $$;

-- Refuses (rate_limited) a subject whose first shard `bucket` alone is full, without counting or
-- locking: the early check before a mutation does its work. It reads that one row, not all 16:
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

-- Announces that this transaction will count p_hits hits of p_subject more than one (a batch of
-- mutations): its first shard then leaves room above for them (see the rule above).
-- Transaction-local, like the hits.
create or replace function internal.expect_several_hits(p_subject uuid, p_hits integer) returns void
language plpgsql as $$
begin
  perform set_config('potentia.several_hits',
    coalesce(current_setting('potentia.several_hits', true), '') || ' ' || p_subject::text || ':' || p_hits::text, true);
end $$;

-- Counts one hit (see the rule above); raises rate_limited when the total exceeds p_limit. In the
-- common case three statements: which shards the transaction holds, then lock the first free
-- shard of its range and count in it (under contention still one statement: the shard rows held
-- by other transactions are skipped in it, not tried one statement each), then the total. What
-- the transaction announced (potentia.several_hits) is read only when it announced something.
create or replace function internal.hit_sharded_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql security definer set search_path = '' set plan_cache_mode = force_generic_plan as $$
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_shards text[] := internal.window_limit_shards(p_bucket);
  v_me xid8 := pg_current_xact_id();
  v_held text[];
  v_low integer;       -- the lowest position this hit may take: above every shard the transaction holds
  v_high integer;      -- the highest: room left above for the hits it announced after this one
  v_expected integer;  -- the hits of the subject this transaction announced: 1 + the announced more
  v_announced text;    -- potentia.several_hits
  v_shard text;
  v_total bigint;
  v_try integer;
begin
  select coalesce(array_agg(bucket), '{}'), coalesce(max(array_position(v_shards, bucket)), 0) + 1 into v_held, v_low
  from app.rate_limits
  where user_id = p_subject and window_start = v_window and array_position(v_shards, bucket) is not null and holder = v_me;
  if cardinality(v_held) = cardinality(v_shards) then
    -- it holds every shard: no other hit of the subject is in flight, so the sum is exact. Its
    -- hits past the 16th go to the overflow row `bucket+`, never to a shard a second time: a shard
    -- row updated again from another subtransaction keeps the first one's lock as the new
    -- version's xmax (or a MultiXact), which internal.xmax_unseen_update would count as another
    -- transaction's hit
    insert into app.rate_limits as r (user_id, bucket, window_start, hits) values (p_subject, p_bucket || '+', v_window, 1)
    on conflict (user_id, bucket, window_start) do update set hits = r.hits + 1;
  else
    -- this subject's entries only (whole words), each at most 9,999 hits; nothing announced (a
    -- single mutation), no statement
    v_announced := current_setting('potentia.several_hits', true);
    if v_announced is null or v_announced = '' then
      v_expected := 1;
    else
      select 1 + least(coalesce(sum(m[1]::integer), 0), 9999) into v_expected
      from regexp_matches(v_announced, '(?:^| )' || p_subject::text || ':(\d{1,4})(?= |$)', 'g') m;
    end if;
    -- room above for the announced hits after this one that will each need a shard: not more
    -- than the shards left above this one (a transaction announcing 16 hits or more ends up holding
    -- all 16, so it takes them from the lowest up, and counts its hits past 16 in the overflow row)
    v_high := cardinality(v_shards) - least(greatest(v_expected - cardinality(v_held) - 1, 0),
                                            cardinality(v_shards) - cardinality(v_held) - 1);
    if v_high < v_low then
      -- announced late (after hits that took their shards without leaving room): whatever is left
      v_high := cardinality(v_shards);
    end if;
    for v_try in 1..2 loop
      with free as (
        select bucket from app.rate_limits
        where user_id = p_subject and window_start = v_window and array_position(v_shards, bucket) between v_low and v_high
        order by array_position(v_shards, bucket)
        -- NO KEY UPDATE, the update's own lock: a stronger one (FOR UPDATE) would stay on the new
        -- row version as a lock (heap_update keeps it), read as an update by internal.xmax_unseen_update
        limit 1 for no key update skip locked
      ), hit as (
        update app.rate_limits r set hits = r.hits + 1, holder = v_me from free
        where r.user_id = p_subject and r.bucket = free.bucket and r.window_start = v_window
        returning r.bucket
      )
      select hit.bucket into v_shard from hit;
      exit when v_shard is not null or v_try = 2;
      -- none free among the rows that exist: make the window's rows that do not exist yet, all of
      -- them at once. A hit counted in a row its transaction inserted would be invisible to the
      -- others until it commits (no version of the row to carry an xmax); made all at once, by
      -- the window's first hit, no hit is ever counted in a row made while others are in flight:
      -- another maker waits here (the conflict on a row inserted in flight) until the first
      -- commits. Only the rows it does not see: a unique check also waits for the updater in
      -- flight of a row that exists, and waits for shards in no order can deadlock
      insert into app.rate_limits (user_id, bucket, window_start, hits)
      select p_subject, s, v_window, 0 from unnest(v_shards) s
      where not exists (select from app.rate_limits where user_id = p_subject and bucket = s and window_start = v_window)
      on conflict (user_id, bucket, window_start) do nothing;
    end loop;
    if v_shard is null then
      -- every row exists and none of the range is free: queue on one. Holding none, one chosen by
      -- the backend (waiters spread); holding some, the next one up; holding the last, the lowest
      -- it does not hold
      v_shard := case when cardinality(v_held) = 0 then v_shards[1 + pg_backend_pid() % v_high]
                      when v_low <= cardinality(v_shards) then v_shards[v_low]
                      else (select s from unnest(v_shards) with ordinality u(s, i) where s <> all(v_held) order by i limit 1) end;
      update app.rate_limits set hits = hits + 1, holder = v_me
      where user_id = p_subject and bucket = v_shard and window_start = v_window;
    end if;
  end if;
  -- the total in a statement of its own, after the shard is held: its snapshot sees every hit
  -- committed before, and counts the ones in flight, each on a shard of its own (read in the
  -- statement that took the shard, it missed those committed between that statement's start and
  -- the lock as well: hits that had given their shard to newer ones)
  v_total := internal.window_limit_hits(p_subject, p_bucket, p_window_seconds);
  if v_total > p_limit then
    perform internal.raise_rate_limited(p_limit, p_window_seconds, v_window);
  end if;
end $$;

-- A window open when a new shard list is installed may hold only some of its rows (made by the
-- version before, with its list), and a hit counted in a row it inserted next to rows others hold
-- would go unseen by them. So, when the list changes, every window still open gets all its rows
-- here, once the hits in flight are done (SHARE ROW EXCLUSIVE waits for them, and holds new ones
-- back until this transaction commits). With the list unchanged, nothing is locked: the version
-- before (since migration 20261202015448) makes all of a window's rows with its first hit, so no
-- open window lacks one, and a migration carrying this file holds no hit back.
do $$
begin
  if current_setting('potentia.installed_limit_shards', true) is distinct from
     array_to_string(internal.window_limit_shards('mutations'), ',') then
    lock table app.rate_limits in share row exclusive mode;
    insert into app.rate_limits (user_id, bucket, window_start, hits)
    select w.user_id, s.bucket, w.window_start, 0
    from (select distinct user_id, window_start from app.rate_limits
          where bucket like 'mutations%' and window_start >= internal.rate_window_start(60)) w
    cross join unnest(internal.window_limit_shards('mutations')) s(bucket)
    on conflict (user_id, bucket, window_start) do nothing;
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
