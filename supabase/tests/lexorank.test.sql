-- LexoRank ordering keys (sql/lexorank/lexorank.sql): the specification.
-- A key is a base-62 fraction over 0-9A-Za-z (ASCII order, compared with COLLATE "C"),
-- 1..10 characters when stored, never ending in '0'.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(114);

-- ---------------------------------------------------------------------------------------------
-- The functions
-- ---------------------------------------------------------------------------------------------
select has_function('internal', 'lexorank_is_valid', array['text'], 'internal.lexorank_is_valid(key) exists');
select has_function('internal', 'lexorank_between', array['text', 'text'], 'internal.lexorank_between(lo, hi) exists');
select has_function('internal', 'lexorank_spread', array['integer', 'text', 'text'], 'internal.lexorank_spread(n, lo, hi) exists');
select has_function('internal', 'lexorank_first', array[]::text[], 'internal.lexorank_first() exists');
select has_function('internal', 'lexorank_after', array['text'], 'internal.lexorank_after(key) exists');
select has_function('internal', 'lexorank_before', array['text'], 'internal.lexorank_before(key) exists');
select has_function('internal', 'lexorank_next', array['text', 'integer', 'boolean'], 'internal.lexorank_next(key, len, up) exists');
select has_function('internal', 'lexorank_near', array['text', 'text'], 'internal.lexorank_near(lo, hi) exists');
select is(
  (select array_agg(p.oid::regprocedure::text order by p.oid::regprocedure::text) from pg_proc p
   where p.pronamespace = 'internal'::regnamespace
     and p.proname in ('lexorank_is_valid', 'lexorank_between', 'lexorank_spread', 'lexorank_first',
                       'lexorank_after', 'lexorank_before', 'lexorank_next', 'lexorank_near')
     and (p.provolatile <> 'i' or p.proparallel <> 's')),
  null, 'every lexorank function is IMMUTABLE and PARALLEL SAFE');
select is(
  (select array_agg(p.oid::regprocedure::text) from pg_proc p
   where p.pronamespace = 'internal'::regnamespace
     and p.proname in ('lexorank_is_valid', 'lexorank_between', 'lexorank_spread', 'lexorank_first',
                       'lexorank_after', 'lexorank_before', 'lexorank_next', 'lexorank_near')
     and coalesce(obj_description(p.oid, 'pg_proc'), '') = ''),
  null, 'every lexorank function has a comment');
select isnt_strict('internal', 'lexorank_between', array['text', 'text'], 'lexorank_between is not STRICT: NULL means an open end');
select isnt_strict('internal', 'lexorank_near', array['text', 'text'], 'lexorank_near is not STRICT: NULL means an open end');
select isnt_strict('internal', 'lexorank_is_valid', array['text'], 'lexorank_is_valid is not STRICT: NULL is simply not a key');

-- ---------------------------------------------------------------------------------------------
-- lexorank_is_valid: 1..10 characters of 0-9A-Za-z, not ending in '0'
-- ---------------------------------------------------------------------------------------------
select ok(internal.lexorank_is_valid('V'), 'a single middle digit is a key');
select ok(internal.lexorank_is_valid('1') and internal.lexorank_is_valid('z'), 'the smallest (1) and largest (z) one-character keys are keys');
select ok(internal.lexorank_is_valid('0aZ9'), 'digits, upper and lower case letters are all allowed, and ''0'' may appear inside');
select ok(internal.lexorank_is_valid('zzzzzzzzzz'), 'a key may be 10 characters long');
select ok(not internal.lexorank_is_valid('zzzzzzzzzzz'), 'a key may not be 11 characters long');
select ok(not internal.lexorank_is_valid(''), 'the empty string is not a key');
select ok(not internal.lexorank_is_valid('a0'), 'a key may not end in ''0''');
select ok(not internal.lexorank_is_valid('0'), '''0'' alone is not a key');
select ok(not internal.lexorank_is_valid('ab-c'), 'punctuation is not allowed');
select ok(not internal.lexorank_is_valid('ab c'), 'spaces are not allowed');
select ok(not internal.lexorank_is_valid('aé'), 'non-ASCII letters are not allowed');
select is(internal.lexorank_is_valid(null), false, 'NULL is not a key (false, not NULL)');

-- ---------------------------------------------------------------------------------------------
-- lexorank_between: the shortest key strictly between, at the midpoint of the first position
-- with room
-- ---------------------------------------------------------------------------------------------
select is(internal.lexorank_between(null, null), 'V', 'between(NULL, NULL) is the middle key V');
select is(internal.lexorank_first(), 'V', 'lexorank_first() = between(NULL, NULL)');
select is(internal.lexorank_between(null, 'V'), 'G', 'before V with nothing below: the middle of 1..U, G');
select is(internal.lexorank_between('V', null), 'k', 'after V with nothing above: the middle of W..z, k');
select is(internal.lexorank_before('V'), internal.lexorank_between(null, 'V'), 'lexorank_before(key) = between(NULL, key)');
select is(internal.lexorank_after('V'), internal.lexorank_between('V', null), 'lexorank_after(key) = between(key, NULL)');
select is(internal.lexorank_between('a', 'c'), 'b', 'one character suffices when there is room: between(a, c) = b');
select is(internal.lexorank_between('a', 'b'), 'aV', 'adjacent keys: go one character deeper, middle digit: between(a, b) = aV');
select is(internal.lexorank_between('V', 'W'), 'VV', 'between(V, W) = VV');
select is(internal.lexorank_between('VV', 'W'), 'Vk', 'between(VV, W) = Vk (the middle of W..z under V)');
select is(internal.lexorank_between('a', 'b1'), 'b', 'a proper prefix of hi sorts below hi, so between(a, b1) = b');
select is(internal.lexorank_between('az', 'b'), 'azV', 'lo''s trailing z''s are skipped: between(az, b) = azV');
select is(internal.lexorank_between('a', 'a01'), 'a00V', 'lo reads as padded with 0s: between(a, a01) = a00V');
select is(internal.lexorank_between(null, '1'), '0V', 'below the smallest one-character key: between(NULL, 1) = 0V');
select is(internal.lexorank_between(null, '0001'), '0000V', 'below 0001: 0000V');
select is(internal.lexorank_between('Z', 'a'), 'ZV', 'ASCII order: upper case sorts before lower case (between(Z, a) = ZV)');
select is(internal.lexorank_between('zzzzzzzzzz', null), 'zzzzzzzzzzV',
          'the result may exceed 10 characters: callers check the length');
select is(internal.lexorank_between('zzzzzzzzzzz', null), 'zzzzzzzzzzzV',
          'inputs longer than 10 characters are accepted, so overflow can be detected');

-- A sample of keys, including awkward ones (long, 'z' runs, inner '0's, case boundaries).
create temp table sample_keys on commit drop as
select k from unnest(array[
  '01', '0001', '001', '01z', '1', '1z', '2', '9', 'A', 'Az', 'B', 'U', 'Uzzzzzzzzz', 'V', 'V0001', 'V01',
  'V1', 'VV', 'Vz', 'Vzz', 'W', 'W01', 'W1', 'Z', 'Zz', 'a', 'a01', 'a1', 'aV', 'az', 'azz', 'b', 'b1', 'y',
  'yz', 'z', 'zV', 'zy', 'zz', 'zzzzzzzzzz']) k;
create temp table sample_pairs on commit drop as
select lo, hi, internal.lexorank_between(lo, hi) as mid
from (select a.k as lo, b.k as hi from sample_keys a join sample_keys b on a.k < b.k collate "C"
      union all select null, k from sample_keys
      union all select k, null from sample_keys
      union all select null, null) p;
select ok((select count(*) > 800 from sample_pairs), 'the sample has hundreds of (lo, hi) pairs');
select is(
  (select count(*) from sample_pairs
   where not ((lo is null or lo < mid collate "C") and (hi is null or mid < hi collate "C"))),
  0::bigint, 'between(lo, hi) is strictly between lo and hi (COLLATE "C") for every sample pair');
select is((select count(*) from sample_pairs where right(mid, 1) = '0'), 0::bigint,
          'between never returns a key ending in ''0''');
select is((select count(*) from sample_pairs where translate(mid, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', '') <> ''),
          0::bigint, 'between only uses the 62 key characters');
-- every key of 1 or 2 characters; none of them may fit where a longer result was returned
create temp table short_keys on commit drop as
select k from (select substr(d, i, 1) k from (select '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'::text d) x,
               generate_series(1, 62) i
               union all
               select substr(d, i, 1) || substr(d, j, 1) from (select '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'::text d) x,
               generate_series(1, 62) i, generate_series(1, 62) j) s
where right(k, 1) <> '0';
select is(
  (select count(*) from sample_pairs p
   where length(p.mid) between 2 and 3
     and exists (select from short_keys s
                 where length(s.k) < length(p.mid)
                   and (p.lo is null or p.lo < s.k collate "C") and (p.hi is null or s.k < p.hi collate "C"))),
  0::bigint, 'between returns the shortest key: no shorter key fits where a 2- or 3-character key was returned');

-- ---------------------------------------------------------------------------------------------
-- lexorank_between: bad input raises invalid_parameter_value (22023)
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select internal.lexorank_between('b', 'a')$$, '22023', null, 'between raises 22023 when lo > hi');
select throws_ok($$select internal.lexorank_between('a', 'a')$$, '22023', null, 'between raises 22023 when lo = hi');
select throws_ok($$select internal.lexorank_between('a', 'B')$$, '22023', null,
                 'between compares with COLLATE "C": a > B, so between(a, B) raises 22023');
select throws_ok($$select internal.lexorank_between('a!', null)$$, '22023', null, 'between raises 22023 on a character outside 0-9A-Za-z in lo');
select throws_ok($$select internal.lexorank_between(null, 'ä')$$, '22023', null, 'between raises 22023 on a character outside 0-9A-Za-z in hi');
select throws_ok($$select internal.lexorank_between(null, 'a0')$$, '22023', null, 'between raises 22023 on a key ending in ''0''');
select throws_ok($$select internal.lexorank_between('', 'a')$$, '22023', null, 'between raises 22023 on the empty string');
select throws_like($$select internal.lexorank_between('b', 'a')$$, '%must sort before%', 'the lo >= hi error says what is wrong');

-- ---------------------------------------------------------------------------------------------
-- 1000 inserts at the same spot: keys stay ordered and grow about one character per 6 inserts
-- ---------------------------------------------------------------------------------------------
-- mode: after_fixed    always right after the fixed key V (below the previous insert)
--       before_fixed   always right before the fixed key V (above the previous insert)
--       prepend        always first (below the previous insert, nothing below)
--       append         always last (above the previous insert, nothing above)
--       moving         always between the last two inserted keys (both neighbours move)
create function pg_temp.same_spot(mode text, steps integer)
returns table (step integer, lo text, hi text, key text)
language plpgsql as $$
declare
  v_lo text;
  v_hi text;
begin
  case mode
    when 'after_fixed' then v_lo := 'V';
    when 'before_fixed' then v_hi := 'V';
    when 'moving' then v_lo := 'a'; v_hi := 'b';
    else null;
  end case;
  for i in 1 .. steps loop
    step := i; lo := v_lo; hi := v_hi;
    key := internal.lexorank_between(v_lo, v_hi);
    return next;
    if mode in ('after_fixed', 'prepend') or (mode = 'moving' and i % 2 = 1) then
      v_hi := key;
    else
      v_lo := key;
    end if;
  end loop;
end $$;
create temp table runs on commit drop as
select m.mode, s.* from unnest(array['after_fixed', 'before_fixed', 'prepend', 'append', 'moving']) m(mode)
cross join lateral pg_temp.same_spot(m.mode, 1000) s;
create temp table fit on commit drop as
select mode, min(step) - 1 as inserts_within_10, max(length(key)) as longest_after_1000
from runs where length(key) > 10 group by mode;
select diag(format('%s: %s inserts fit in 10 characters; after 1000 the key is %s characters',
                   mode, inserts_within_10, longest_after_1000))
from fit order by mode;

select is((select count(*) from runs), 5000::bigint, '5 x 1000 same-spot inserts were made');
select is(
  (select count(*) from runs
   where not ((lo is null or lo < key collate "C") and (hi is null or key < hi collate "C"))),
  0::bigint, 'every same-spot insert lands strictly between its two neighbours');
select is(
  (select count(*) from (select mode, key, lag(key) over (partition by mode order by step) prev from runs
                         where mode in ('after_fixed', 'prepend')) r
   where prev is not null and not (key < prev collate "C")),
  0::bigint, 'inserting repeatedly after a fixed key (or first) gives strictly decreasing keys');
select is(
  (select count(*) from (select mode, key, lag(key) over (partition by mode order by step) prev from runs
                         where mode in ('before_fixed', 'append')) r
   where prev is not null and not (key > prev collate "C")),
  0::bigint, 'inserting repeatedly before a fixed key (or last) gives strictly increasing keys');
select is((select count(distinct (mode, key)) from runs), 5000::bigint, 'no same-spot insert repeats a key');
select is((select count(*) from runs where right(key, 1) = '0'), 0::bigint, 'no same-spot insert ends in ''0''');
select cmp_ok((select inserts_within_10 from fit where mode = 'after_fixed'), '>=', 50,
              'at least 50 inserts right after the same key fit in 10 characters');
select cmp_ok((select inserts_within_10 from fit where mode = 'before_fixed'), '>=', 50,
              'at least 50 inserts right before the same key fit in 10 characters');
select cmp_ok((select inserts_within_10 from fit where mode = 'prepend'), '>=', 50,
              'at least 50 inserts at the very start fit in 10 characters');
select cmp_ok((select inserts_within_10 from fit where mode = 'append'), '>=', 50,
              'at least 50 inserts at the very end fit in 10 characters');
select cmp_ok((select inserts_within_10 from fit where mode = 'moving'), '>=', 50,
              'at least 50 inserts between two moving neighbours fit in 10 characters');
select cmp_ok((select max(longest_after_1000) from fit), '<=', 182,
              'keys grow by at most one character per 5.5 same-spot inserts, in every direction');

-- ---------------------------------------------------------------------------------------------
-- lexorank_next: the next key of a given length; lexorank_near: one unit from the fresh neighbour
-- ---------------------------------------------------------------------------------------------
select is(internal.lexorank_next('V', 2, true), 'V1', 'next(V, 2, up) = V1: V reads as V0');
select is(internal.lexorank_next('Vz', 2, true), 'W1', 'next(Vz, 2, up) = W1: W0 (the shorter key W) is skipped');
select is(internal.lexorank_next('W1', 2, false), 'Vz', 'next(W1, 2, down) = Vz');
select is(internal.lexorank_next('V', 4, false), 'Uzzz', 'next(V, 4, down) = Uzzz');
select is(internal.lexorank_next('a', 3, true), 'a01', 'next(a, 3, up) = a01');
select ok(internal.lexorank_next('zz', 2, true) is null and internal.lexorank_next('01', 2, false) is null,
          'next is NULL past the largest (zz) or below the smallest (01) key of that length');

select is(internal.lexorank_near('a', 'c'), 'b', 'near with neighbours of equal length is the midpoint: near(a, c) = b');
select ok(internal.lexorank_near(null, 'V') = internal.lexorank_between(null, 'V')
          and internal.lexorank_near('V', null) = internal.lexorank_between('V', null),
          'near with an open end is lexorank_between');
select is(internal.lexorank_near('V', 'V0zz'), 'V0zy', 'near(V, V0zz) = V0zy: one unit below the longer neighbour, at its length');
select is(internal.lexorank_near('Vz1', 'W'), 'Vz2', 'near(Vz1, W) = Vz2: one unit above the longer neighbour, at its length');
select is(internal.lexorank_near('V', 'V1'), 'V0zz',
          'near(V, V1) = V0zz: no 2-character key fits, the shortest is 3, so one unit below V1 at 4 characters');
select is(internal.lexorank_near('V', 'V000000001'), 'V000000000V',
          'near returns the 11-character key when no 10-character key fits (the caller respaces)');
select throws_ok($$select internal.lexorank_near('b', 'a')$$, '22023', null, 'near raises 22023 when lo > hi');

-- 1000 inserts right after V (each below the previous one) and right before W (each above it)
create function pg_temp.near_run(mode text, steps integer)
returns table (step integer, lo text, hi text, key text)
language plpgsql as $$
declare
  v_lo text := 'V';
  v_hi text := 'W';
begin
  for i in 1 .. steps loop
    step := i; lo := v_lo; hi := v_hi;
    key := internal.lexorank_near(v_lo, v_hi);
    return next;
    if mode = 'after' then v_hi := key; else v_lo := key; end if;
  end loop;
end $$;
create temp table near_runs on commit drop as
select m.mode, r.* from unnest(array['after', 'before']) m(mode) cross join lateral pg_temp.near_run(m.mode, 1000) r;
select is((select count(*) from near_runs where not (lo < key collate "C" and key < hi collate "C")), 0::bigint,
          'near: every one of 2 x 1000 same-spot inserts lands strictly between its neighbours');
select is(
  (select count(*) from (select mode, key, lag(key) over (partition by mode order by step) prev from near_runs) r
   where prev is not null and not (case mode when 'after' then key < prev collate "C" else key > prev collate "C" end)),
  0::bigint, 'near: inserts after V give decreasing keys, inserts before W increasing ones');
select is((select count(*) from near_runs where not internal.lexorank_is_valid(key)), 0::bigint, 'near: every key is valid');
select is((select max(length(key)) from near_runs), 4,
          'near: after 1000 inserts at one spot, in either direction, keys have at most 4 characters');

-- ---------------------------------------------------------------------------------------------
-- lexorank_spread: n evenly spaced keys of the shortest length that fits
-- ---------------------------------------------------------------------------------------------
create function pg_temp.slot(key text) returns numeric language sql immutable as $$
  -- the key's value in units of 62^-length(key)
  select sum((strpos('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', substr(key, i, 1)) - 1)
             * 62::numeric ^ (length(key) - i))
  from generate_series(1, length(key)) i
$$;
create temp table spread1000 on commit drop as
select k, i from unnest(internal.lexorank_spread(1000)) with ordinality u(k, i);
select is((select count(*) from spread1000), 1000::bigint, 'spread(1000) returns 1000 keys');
select is((select count(*) from spread1000 where length(k) <> 2), 0::bigint,
          'spread(1000) uses 2-character keys: the shortest length with room for 1000');
select is((select count(*) from spread1000 where not internal.lexorank_is_valid(k)), 0::bigint,
          'every key of spread(1000) is valid (so none ends in ''0'')');
select is(
  (select count(*) from (select k, lag(k) over (order by i) prev from spread1000) s
   where prev is not null and not (k > prev collate "C")),
  0::bigint, 'spread(1000) is strictly increasing');
select ok(
  (select max(d) - min(d) <= 2
   from (select pg_temp.slot(k) - lag(pg_temp.slot(k)) over (order by i) d from spread1000) s),
  'spread(1000) is evenly spaced: consecutive gaps differ by at most 2 positions');
select ok((select pg_temp.slot(min(k collate "C")) >= 3 and pg_temp.slot(max(k collate "C")) <= 62 * 62 - 3 from spread1000),
          'spread(1000) leaves a gap like the others before the first and after the last key');
select is(internal.lexorank_spread(1), array['V'], 'spread(1) = {V}, the same as between(NULL, NULL)');
select is(internal.lexorank_spread(5, 'a', 'b'), array['aA', 'aK', 'aV', 'af', 'ap'],
          'spread(5, a, b) = {aA, aK, aV, af, ap}');
select ok((select bool_and(k > 'a' collate "C" and k < 'b' collate "C") from unnest(internal.lexorank_spread(5, 'a', 'b')) k),
          'spread(5, a, b) keys are strictly between a and b');
select is((select max(length(k)) from unnest(internal.lexorank_spread(3782)) k), 2,
          'spread(3782) still fits in 2 characters (62^2 - 1 slots minus the 61 ending in ''0'')');
select is((select min(length(k)) from unnest(internal.lexorank_spread(3783)) k), 3,
          'spread(3783) needs 3 characters');
select is((select count(*) from unnest(internal.lexorank_spread(3782)) k where right(k, 1) = '0'), 0::bigint,
          'spread keys never end in ''0'', even when every other slot is used');
select is(internal.lexorank_spread(61, 'azzzzzzzz', 'b'),
          (select array_agg('azzzzzzzz' || substr('0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', i, 1) order by i)
           from generate_series(2, 62) i),
          'spread(61, azzzzzzzz, b) fills every 10-character slot azzzzzzzz1 .. azzzzzzzzz');
select ok(
  (select bool_and(k > 'a' collate "C" and k < 'a01' collate "C" and internal.lexorank_is_valid(k))
   from unnest(internal.lexorank_spread(10, 'a', 'a01')) k),
  'spread(10, a, a01): valid keys strictly between bounds that share a prefix');
select is(internal.lexorank_spread(0), '{}'::text[], 'spread(0) is an empty array');
select is(internal.lexorank_spread(0, 'a', 'b'), '{}'::text[], 'spread(0, a, b) is an empty array');
select is(internal.lexorank_spread(2, null, 'V'), array['A', 'K'], 'spread(2, NULL, V) = {A, K}: open below, thirds of 1..U');
select is(internal.lexorank_spread(2, 'V', null), array['f', 'p'], 'spread(2, V, NULL) = {f, p}: open above, thirds of W..z');

-- every sample pair whose lo is shorter than 10 characters (so there is room above it)
create temp table sample_spreads on commit drop as
select lo, hi, internal.lexorank_spread(7, lo, hi) as keys
from sample_pairs where lo is null or length(lo) < 10;
select is(
  (select count(*) from sample_spreads s
   where array_length(s.keys, 1) <> 7
      or exists (select from unnest(s.keys) with ordinality u(k, i)
                 where not internal.lexorank_is_valid(k)
                    or not ((s.lo is null or k > s.lo collate "C") and (s.hi is null or k < s.hi collate "C"))
                    or (i > 1 and not (k > s.keys[i - 1] collate "C")))),
  0::bigint, 'spread(7, lo, hi) gives 7 valid, increasing keys strictly between lo and hi for every sample pair that has room');

select throws_ok($$select internal.lexorank_spread(62, 'azzzzzzzz', 'b')$$, '22023', null,
                 'spread raises 22023 when n keys cannot fit within 10 characters (62 between azzzzzzzz and b)');
select throws_ok($$select internal.lexorank_spread(1, 'a', 'a000000001')$$, '22023', null,
                 'spread raises 22023 when not even one 10-character key fits');
select throws_ok($$select internal.lexorank_spread(1, 'zzzzzzzzzz')$$, '22023', null,
                 'spread raises 22023 after the largest 10-character key');
select is(array_length(internal.lexorank_spread(3782, 'zzzzzzzz'), 1), 3782,
          'after zzzzzzzz, 10 characters hold exactly 3782 keys (zzzzzzzz01 .. zzzzzzzzzz without those ending in ''0'')');
select throws_ok($$select internal.lexorank_spread(3783, 'zzzzzzzz')$$, '22023', null,
                 'spread raises 22023 for one key more than 10 characters can hold after zzzzzzzz');
select throws_ok($$select internal.lexorank_spread(-1)$$, '22023', null, 'spread raises 22023 for a negative n');
select throws_ok($$select internal.lexorank_spread(2, 'b', 'a')$$, '22023', null, 'spread raises 22023 when lo > hi');
select throws_ok($$select internal.lexorank_spread(2, 'a', 'a')$$, '22023', null, 'spread raises 22023 when lo = hi');
select throws_ok($$select internal.lexorank_spread(2, 'a_', null)$$, '22023', null, 'spread raises 22023 on a bad key');
select throws_like($$select internal.lexorank_spread(62, 'azzzzzzzz', 'b')$$, '%do not fit%',
                   'the overflow error says the keys do not fit');

select * from finish();
rollback;
