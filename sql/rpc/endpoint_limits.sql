-- Per-endpoint rate limits (the seed's table, in app.endpoint_limits). The HTTP layer calls
-- api.hit_endpoint_limit first in each request's transaction; a rejection raises rate_limited
-- (PX429) with retry_after, which the HTTP layer answers with 429 and Retry-After.
--
-- The endpoint limits count hits in app.rate_limits rows (subject, bucket, fixed window of
-- p_window_seconds): hit_window_limit counts in one row, which the counting transaction holds
-- until it commits: exact, but a subject's concurrent transactions queue on it. The per-user
-- mutation limit, taken by every mutation, counts in slots instead (take_limit_slot, below),
-- where they never queue.

-- The start of the fixed window of p_window_seconds that now() falls in (windows start at
-- multiples of p_window_seconds since the epoch).
-- An SQL function the planner inlines (one expression, not SECURITY DEFINER, no SET clause):
-- it names nothing outside pg_catalog. date_bin, the same instant as
-- to_timestamp(floor(extract(epoch from now()) / p) * p) (its form until 2026-12-06, which
-- rate_limit.test.sql compares it with): with a constant p (the mutation RPC's 60) the stride is
-- folded at planning, and the expression is two calls where that one was eight (numeric
-- arithmetic), each set up in every transaction (docs/performance.md, fiftieth session).
create or replace function internal.rate_window_start(p_window_seconds integer) returns timestamptz
language sql stable as $$
  select date_bin(make_interval(secs => p_window_seconds), now(), timestamptz 'epoch')
$$;

-- The rate_limited error for a window that is full.
create or replace function internal.raise_rate_limited(p_limit integer, p_window_seconds integer, p_window timestamptz)
returns void language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.raise_error('rate_limited',
    format('rate limit reached (%s per %s s): retry after %s', p_limit, p_window_seconds, p_window + make_interval(secs => p_window_seconds)),
    jsonb_build_object('retry_after', greatest(1, ceil(extract(epoch from p_window + make_interval(secs => p_window_seconds) - now())))::int,
                       'limit', p_limit));
end $$;

create or replace function internal.hit_window_limit(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns void language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
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
-- app.rate_limit_slots (user_id, window_start, bucket, slot), keyed (window_key, slot), where
-- window_key is internal.rate_limit_window_key of the row's user_id, bucket and window_start (a
-- 64-bit hash of the three; below).
--   Rule: the key is the bound. Every row of a (subject, window, bucket) has the same window_key,
--   so at most p_limit rows can exist in a window, so at most p_limit hits commit in it, exactly,
--   however they are spread over transactions, subtransactions and processes; no count is read,
--   and no hit counts another's (but for a shared window_key, below).
--   Why one bigint: every read of a window (the highest slot, the gaps) walks its index entries a
--   leaf page at a time, and PostgreSQL 15's B-tree checks each entry it reads against every key
--   column the statement names: one int8 per entry, where (user_id, window_start, bucket) cost a
--   uuid, a timestamptz and a text comparison each (docs/performance.md, forty-sixth session).
--   A shared window_key: two (subject, window, bucket) of the table (ten minutes of windows,
--   internal.cleanup) with the same hash share one sequence of slots, p_limit between them, for
--   that one window each. That can only refuse (never allow more than p_limit to either); its
--   chance is 2^-64 per pair of them, under 3 * 10^-8 for a table of 10^6 of them (T^2 / 2^65),
--   so under 1.5 * 10^-3 a year at 10^6 windows every ten minutes, and it then refuses only
--   when the two together take more than p_limit in their minutes.
--   Which slot: the first above the highest this statement sees that no other transaction holds.
--   A hit holds its slot's transaction-level advisory lock, taken before it inserts the row, so
--   another hit skips that slot (pg_try_advisory_xact_lock) instead of waiting on the unique index;
--   a slot committed after this statement's snapshot is refused by the key (ON CONFLICT DO NOTHING,
--   no wait: the other committed) and the next is tried. So a hit never waits for another: a user's
--   concurrent hits take consecutive slots at once, and no transaction waits for a slot while it
--   holds others (or a canvas row), so hits cannot deadlock, in any order of locks around them.
--   Above the highest slot the window is full: a slot below left free by a hit that rolled back
--   (its row and its lock go with its subtransaction or transaction) is taken; with none free,
--   the hit is refused (rate_limited) and counts nothing. The price: a hit refused because the
--   free slots are held by hits in flight that then roll back was refused early, only with the
--   window full in flight; its caller retries after retry_after, as for any refusal.
--   Cost: a hit is one statement (the highest slot, an index descent, and the insert above it).
--   When that slot was taken meanwhile, the highest is read again and the slots above it tried
--   one by one; the search below, only with every slot above taken, walks the window's rows in
--   slot order to the first gap: a refusal of a full window reads its p_limit rows, once.
--   Advisory key: the window's key XOR the slot. Another lock of Potentia's (the migrator's, the
--   upgrade's) or another window on the same key is a 2^-64 chance, and only makes a hit skip
--   that slot.
--   Under REPEATABLE READ or SERIALIZABLE (the RPC runs READ COMMITTED), a slot committed after
--   the transaction's snapshot raises a serialization failure (40001) instead of being skipped.
-- Until 2026-12-02 (eighteenth session) the count lived in 16 shard rows per user and window
-- (internal.hit_sharded_limit), each hit in flight holding one and reading the sum: exact as well,
-- but four statements per mutation (an early check, then the shards held, the update of a free
-- one, the total with every shard's xmax), and a hit waited for a shard when all 16 were held
-- (docs/performance.md, eighteenth session). Until 2026-12-06 the slots were keyed (user_id,
-- window_start, bucket, slot), and the advisory key hashed the three's text.
--
-- A window's key: a 64-bit hash of subject, bucket and window, app.rate_limit_slots.window_key.
-- Every writer of the table computes it with this function (take_limit_slot, the upgrades below,
-- the tests' direct inserts): a row under another key is outside its window (not read, not under
-- its bound). A column GENERATED from the row would guarantee that, but PostgreSQL 15 reads and
-- plans a generated column's expression again at every insert's execution: 40-50 K instructions
-- per hit, as much as the key saves (docs/performance.md, forty-sixth session); a CHECK, the same.
-- An SQL function the planner inlines (one expression, not SECURITY DEFINER, no SET clause).
create or replace function internal.rate_limit_window_key(p_subject uuid, p_bucket text, p_window timestamptz) returns bigint
language sql immutable parallel safe as $$
  select pg_catalog.uuid_hash_extended(p_subject, pg_catalog.hashtextextended(p_bucket,
           pg_catalog.interval_hash_extended(p_window - timestamptz 'epoch', 0)))
$$;
comment on function internal.rate_limit_window_key(uuid, text, timestamptz) is
  'The key of a (subject, bucket, window) in app.rate_limit_slots.window_key: a 64-bit hash of the three. Every writer of that table computes it here.';

-- The key (once: the block below ends it). The table's rows stay as they are, each given its
-- key (the open windows carry over: the limit holds across the change). The lock waits for the
-- hits in flight (each holds the table until it commits), in the transaction that installs the
-- take_limit_slot below. The migration that made the key (20261206073441) also made a trigger,
-- rate_limit_slot_key (BEFORE INSERT, WHEN (new.window_key is null)), for the release before it:
-- its take_limit_slot, caught by that migration inside the function, inserted no window_key, and
-- the trigger gave the row its key and the slot's advisory lock. The release after it drops the
-- trigger (below): every writer of it and of the release before it names window_key, and a row
-- without one now fails (not null), counting nothing (docs/self-hosting.md, Upgrades: add first,
-- remove a release later; tests/integration/rate-limit-slot-key-drop-migration.test.ts).
do $$
begin
  if not exists (select from pg_catalog.pg_attribute where attrelid = 'app.rate_limit_slots'::regclass
                 and attname = 'window_key' and not attisdropped) then
    lock table app.rate_limit_slots in access exclusive mode;
    alter table app.rate_limit_slots add column window_key bigint;
    update app.rate_limit_slots set window_key = internal.rate_limit_window_key(user_id, bucket, window_start);
    alter table app.rate_limit_slots
      alter column window_key set not null,
      drop constraint rate_limit_slots_pkey,
      add constraint rate_limit_slots_pkey primary key (window_key, slot);
    comment on table app.rate_limit_slots is
      'A hit of a per-user limit counted as a slot of its window (internal.take_limit_slot), keyed (window_key, slot): at most the limit of rows per (user_id, window_start, bucket). '
      'UNLOGGED: a crash or a failover empties it, starting the current window''s counts from zero (docs/limits.md). No policy: no API role reads or writes it.';
  end if;
end $$;
-- The previous release's trigger for rows without window_key (above): its WHEN was tested at every
-- insert (about 8 K instructions per hit, docs/performance.md, forty-seventh session). DROP TRIGGER
-- locks the table (ACCESS EXCLUSIVE): it waits for the hits in flight, and a hit that comes
-- meanwhile waits at its insert, then runs it (planned again) without the trigger. Only while it
-- is there: DROP TRIGGER IF EXISTS takes that lock even when there is none, and every later
-- migration that carries this file would hold up the mutations for it.
do $$
begin
  if exists (select from pg_catalog.pg_trigger where tgrelid = 'app.rate_limit_slots'::regclass and tgname = 'rate_limit_slot_key') then
    drop trigger rate_limit_slot_key on app.rate_limit_slots;
  end if;
end $$;
drop function if exists internal.rate_limit_slot_key();
comment on column app.rate_limit_slots.window_key is
  'internal.rate_limit_window_key(user_id, bucket, window_start): the key with slot (internal.take_limit_slot, sql/rpc/endpoint_limits.sql). '
  'Every writer computes it there; a row inserted without it fails (not null).';

create or replace function internal.take_limit_slot(p_subject uuid, p_bucket text, p_limit integer, p_window_seconds integer)
returns integer language plpgsql set plan_cache_mode = force_generic_plan as $$
-- one generic plan: the current window is always newer than the table's statistics, so a custom
-- plan always looks cheaper, and the lookups would be planned again at every call.
-- Not SECURITY DEFINER and no search_path of its own (each SET costs at every call): its callers
-- (the mutation RPC's apply_block_op and count_rejected_attempt) are SECURITY DEFINER with
-- search_path pinned to pg_catalog, pg_temp, and it names only schema-qualified objects
declare
  v_window timestamptz := internal.rate_window_start(p_window_seconds);
  v_key bigint := internal.rate_limit_window_key(p_subject, p_bucket, v_window);  -- inlined
  v_top integer;
  v_try integer;
begin
  if p_limit is null then
    perform internal.raise_error('internal', format('the limit of %s is not configured: set it in app.settings (mutations_per_minute for mutations)', p_bucket));
  end if;
  -- a slot is taken when no other transaction holds it (its advisory lock, v_key # slot, taken
  -- first) and none committed it (the key); the statement is written out in each place below, as
  -- a helper function would cost a call per hit.
  -- The usual hit: the slot above the highest this statement sees, found and taken in one
  -- statement (the highest: one index descent; max() would scan the window's rows)
  insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
  select v_key, t.slot, p_subject, v_window, p_bucket
  from (select coalesce((select s.slot from app.rate_limit_slots s
                         where s.window_key = v_key order by s.slot desc limit 1), 0) + 1 as slot
        offset 0) t  -- kept a subquery: pulled up, each use of t.slot would read the highest again
  where t.slot <= p_limit and pg_try_advisory_xact_lock(v_key # t.slot)
  on conflict do nothing
  returning slot into v_try;
  if found then
    return v_try;
  end if;
  -- otherwise (held or committed meanwhile, or the window is full): the slots above the highest,
  -- then the gaps below it
  v_top := coalesce((select slot from app.rate_limit_slots where window_key = v_key order by slot desc limit 1), 0);
  for v_try in v_top + 1 .. p_limit loop
    insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
    select v_key, v_try, p_subject, v_window, p_bucket where pg_try_advisory_xact_lock(v_key # v_try)
    on conflict do nothing;
    if found then
      return v_try;
    end if;
  end loop;
  -- every slot above taken: the gaps below, in slot order (the first free slot of each: 1 if
  -- free, then each slot after a taken one that is free), found in one ordered pass over the
  -- window's rows (each row against the one before it), read as the loop goes, so it stops at
  -- the first it can take. (Until 2026-12-02 each candidate was looked up again in the window,
  -- which the generic plan did as a nested loop: quadratic in the limit, 52 ms to refuse a full
  -- window of 1,500 against 1.5 ms now, docs/limits.md.)
  for v_try in
    select coalesce(g.prev, 0) + 1 from (
      select r.slot, lag(r.slot) over (order by r.slot) as prev from app.rate_limit_slots r
      where r.window_key = v_key and r.slot <= v_top
    ) g
    where g.slot > coalesce(g.prev, 0) + 1 and coalesce(g.prev, 0) + 1 <= least(v_top, p_limit)
    order by g.slot
  loop
    insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
    select v_key, v_try, p_subject, v_window, p_bucket where pg_try_advisory_xact_lock(v_key # v_try)
    on conflict do nothing;
    if found then
      return v_try;
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

drop function if exists internal.claim_limit_slot(uuid, timestamptz, text, bigint, integer);  -- written out in take_limit_slot

-- Upgrade from the shard rows (once: the drops below end it): a database that still has the
-- shards' code gets each recent window's committed count as that many slots, the lowest, and
-- loses the rows. This runs in the transaction that installs take_limit_slot and switches the
-- mutations to it (the migration carrying this file and sql/rpc/mutate.sql), after the hits of
-- the shards still in flight are done (SHARE ROW EXCLUSIVE waits for them, a window's first hit
-- making its rows included): no hit counts in slots before these are there, so the minute of the
-- upgrade allows the limit in all.
do $$
begin
  if to_regprocedure('internal.hit_sharded_limit(uuid, text, integer, integer)') is not null then
    lock table app.rate_limits in share row exclusive mode;
    insert into app.rate_limit_slots (window_key, slot, user_id, window_start, bucket)
    select internal.rate_limit_window_key(w.user_id, 'mutations', w.window_start), n, w.user_id, w.window_start, 'mutations'
    from (select user_id, window_start, sum(hits)::integer as hits from app.rate_limits
          where bucket ~ '^mutations(#[0-9]+|\+)?$' and window_start >= now() - interval '2 minutes' and hits > 0
          group by user_id, window_start) w
    cross join lateral generate_series(1, w.hits) n
    on conflict do nothing;
    delete from app.rate_limits where bucket ~ '^mutations(#[0-9]+|\+)?$';
  end if;
end $$;
-- The shards' functions, in the same transaction: a transaction of the shards' code still
-- running after it (it waited for the lock above) fails instead of counting where no one reads.
drop function if exists internal.hit_sharded_limit(uuid, text, integer, integer);
drop function if exists internal.check_sharded_limit(uuid, text, integer, integer);
drop function if exists internal.expect_several_hits(uuid, integer);
drop function if exists internal.window_limit_hits(uuid, text, integer);
drop function if exists internal.window_limit_shards(text);
drop function if exists internal.xmax_unseen_update(xid, xid);

drop function if exists api.hit_endpoint_limit(text);
-- One hit of endpoint p_endpoint for p_uid (app.endpoint_limits; unknown endpoint: no count).
create or replace function internal.hit_endpoint(p_uid uuid, p_endpoint text, p_relaxed boolean) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_limit app.endpoint_limits;
begin
  select * into v_limit from app.endpoint_limits where endpoint = p_endpoint;
  if not found then return; end if;
  if p_relaxed then
    -- the development profile: 100x the hits in a window of at most 60 s (own bucket, so a
    -- relaxed process never spends a standard one's budget)
    perform internal.hit_window_limit(p_uid, 'endpoint-dev:' || p_endpoint, v_limit.max_hits * 100, least(v_limit.window_seconds, 60));
  else
    perform internal.hit_window_limit(p_uid, 'endpoint:' || p_endpoint, v_limit.max_hits, v_limit.window_seconds);
  end if;
end $$;
comment on function internal.hit_endpoint(uuid, text, boolean) is
  'Counts one call of endpoint p_endpoint for p_uid (app.endpoint_limits; an unknown endpoint counts nothing); raises rate_limited (PX429) when over. '
  'p_relaxed: the development profile''s 100x per window of at most 60 s, in a bucket of its own.';

-- The caller (no user: no count; auth.uid() read once), the hit, then the mark that tells the
-- api function this call is for that its endpoint is counted (internal.count_endpoint_call).
create or replace function api.hit_endpoint_limit(p_endpoint text, p_relaxed boolean default false) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_uid uuid := auth.uid();
begin
  if v_uid is null then return; end if;
  perform internal.hit_endpoint(v_uid, p_endpoint, p_relaxed);
  perform set_config('potentia.endpoint_counted', v_uid::text || ':' || p_endpoint, true);
end $$;
comment on function api.hit_endpoint_limit(text, boolean) is
  'Counts one call of endpoint p_endpoint (app.endpoint_limits: max_hits per window_seconds, per user); raises rate_limited (PX429) '
  'with retry_after seconds when over. p_relaxed (the development profile, POTENTIA_PROFILE=development): 100x the hits per window '
  'of at most 60 s. Calling it only ever counts against the caller. The next api function of the endpoint called in the same '
  'transaction by the same user does not count it again (internal.count_endpoint_call).';

grant execute on function api.hit_endpoint_limit(text, boolean) to authenticated, service_role;

-- The endpoint limits in the api functions themselves. Every api function that an HTTP endpoint
-- with a limit calls counts that endpoint first thing, strict (never relaxed), so a caller of the
-- function itself (PostgREST, with api exposed on Supabase: docs/supabase.md) is limited as the
-- endpoint is. Not counted again:
--   - a call whose endpoint api.hit_endpoint_limit counted for the same user earlier in the
--     transaction (its mark, potentia.endpoint_counted = '<user>:<endpoint>', a transaction-local
--     setting): the mark is consumed by the next counted call, so one hit covers one call;
--   - a call in a transaction of the Potentia server (src/db/request.ts sets
--     potentia.endpoint_limits = 'server' for each, as it sets potentia.input_policy): the server
--     counts each endpoint where it answers it (its handler, relaxed under the development
--     profile, before any canvas row lock: docs/limits.md), and its own calls (a socket's
--     presence and leaves, a gap fill, the pages of an H1 snapshot after the first) are not
--     endpoint calls.
-- PostgREST sets neither (it sets role and request.* settings only, and runs one function a
-- transaction). A session with SQL of its own can set both, as it can set potentia.input_policy:
-- these limits are for the API's callers, not for SQL sessions.
-- The mutation RPCs (api.upsert_block_atomic, api.upsert_blocks_atomic, H2) do not call this: they
-- count the per-user mutation limit themselves, whoever calls them (sql/rpc/mutate.sql), and a
-- lane's transaction takes its requests' H2 hits before any of their RPCs (src/http/rpc.ts).
-- p_counted_as: the endpoints whose hit covers this call (default: p_endpoint alone), for a
-- function several endpoints call (api.get_canvas_snapshot: H4, H7, A1).
-- Not SECURITY DEFINER and no SET (each costs at every call): every caller is SECURITY DEFINER
-- with search_path pinned; the hit itself is internal.hit_endpoint.
create or replace function internal.count_endpoint_call(p_endpoint text, p_counted_as text[] default null) returns void
language plpgsql as $$
declare
  v_uid uuid;
  v_mark text;
begin
  if pg_catalog.current_setting('potentia.endpoint_limits', true) = 'server' then return; end if;
  v_uid := auth.uid();
  if v_uid is null then return; end if;
  v_mark := pg_catalog.current_setting('potentia.endpoint_counted', true);
  if v_mark is not null and v_mark <> '' then
    perform pg_catalog.set_config('potentia.endpoint_counted', '', true);
    if v_mark = any (select v_uid::text || ':' || e from pg_catalog.unnest(coalesce(p_counted_as, array[p_endpoint])) e) then
      return;
    end if;
  end if;
  perform internal.hit_endpoint(v_uid, p_endpoint, false);
end $$;
comment on function internal.count_endpoint_call(text, text[]) is
  'Counts one call of endpoint p_endpoint (strict) for the calling user, first thing in each api function an HTTP endpoint with a limit calls; '
  'raises rate_limited (PX429) when over. Not counted: no user; a transaction of the Potentia server (potentia.endpoint_limits = ''server''); '
  'a call api.hit_endpoint_limit already counted for this user in this transaction as p_endpoint or one of p_counted_as (its mark, consumed here). '
  'Rule: sql/rpc/endpoint_limits.sql, docs/limits.md.';
