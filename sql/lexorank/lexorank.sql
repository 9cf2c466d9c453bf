-- LexoRank ordering keys (block order within a canvas).
--
-- A key is a base-62 fraction written with the digits
--   0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz
-- (ASCII order, so keys sort correctly with COLLATE "C"): 'V' reads as 0.V in base 62.
-- A stored key is 1..10 characters and never ends in '0' (so every value has exactly one
-- spelling and string order equals numeric order; '0' at the end would also leave no room
-- before the key's own prefix). The empty string stands for 0 and a NULL upper bound for 1.
--
-- Every comparison here uses COLLATE "C" explicitly; never rely on the database collation.
-- Re-runnable: CREATE OR REPLACE only; schema `internal` must exist.

-- A stored key: 1..10 characters of the alphabet, not ending in '0'. NULL is not a key.
create or replace function internal.lexorank_is_valid(key text)
returns boolean
language sql immutable parallel safe
as $$
  select coalesce(
    length(key) between 1 and 10
      and translate(key, '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz', '') = ''
      and right(key, 1) <> '0',
    false)
$$;
comment on function internal.lexorank_is_valid(text) is
  'True iff key is a storable LexoRank key: 1..10 base-62 characters, not ending in ''0''; false for NULL.';

-- Bounds given to between/spread: each a key of any length (or NULL = open end), lo < hi.
-- Raises 22023 naming the calling function.
create or replace function internal.lexorank_check_bounds(caller text, lo text, hi text)
returns void
language plpgsql immutable parallel safe
as $$
declare
  digits constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  bound text;
  side text;
begin
  foreach side in array array['lo', 'hi'] loop
    bound := case side when 'lo' then lo else hi end;
    if bound is not null and (bound = '' or translate(bound, digits, '') <> '' or right(bound, 1) = '0') then
      raise exception using errcode = '22023',
        message = format('%s: %s %L is not a LexoRank key', caller, side, bound),
        hint = 'Keys use the characters 0-9A-Za-z and never end in ''0''.';
    end if;
  end loop;
  if (lo collate "C") >= (hi collate "C") then
    raise exception using errcode = '22023',
      message = format('%s: lo %L must sort before hi %L', caller, lo, hi);
  end if;
end $$;
comment on function internal.lexorank_check_bounds(text, text, text) is
  'Raises 22023 unless lo and hi are keys (any length) or NULL and lo sorts before hi.';

-- The shortest key strictly between lo and hi (NULL lo = before everything, NULL hi = after
-- everything). Works digit by digit after the common prefix of lo (read with trailing '0's)
-- and hi; at the first position where a key can end, it takes the middle digit of the free
-- range there:
--   * lo digit a, hi digit b (b = 62 past an open end). The digits that end a key here are
--     a+1 .. b-1, plus b itself when hi continues after it (prefix||b is then a proper prefix of
--     hi, hence below it). If that range is non-empty the result is prefix || middle digit.
--   * otherwise (b = a+1 and hi stops at b) the key continues under lo: prefix || a, and from
--     there hi is open, so the next position takes the middle of (lo digit+1) .. 'z', skipping
--     over lo's 'z's.
-- This is exactly the numeric midpoint of the length-k keys between lo and hi for the
-- smallest k that has any, so same-spot inserts halve the gap each time (~6 per character).
-- When the range has an even number of digits the middle is rounded toward the LONGER
-- neighbour (NULL counts as length 0; equal lengths round down). The longer neighbour is
-- usually the freshly inserted one, so this leaves the bigger half on the side where repeated
-- inserts at the same spot keep landing: 6 inserts per character in both directions, where a
-- fixed rounding direction gets only 5 per character in one of them (49 instead of 58 fit in
-- 10 characters after a fixed one-character key). Placement uses lexorank_near instead, which
-- fits thousands of same-spot inserts per two characters.
-- Inputs may be longer than 10 characters and so may the result: callers check the length.
create or replace function internal.lexorank_between(lo text, hi text)
returns text
language plpgsql immutable parallel safe
as $$
declare
  digits constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  lo_len integer;
  hi_len integer;
  p integer := 0;        -- length of the common prefix
  a integer;             -- lo's digit after the prefix (0 past its end)
  b integer;             -- hi's digit after the prefix
  x integer;             -- lowest digit that ends a key here
  y integer;             -- highest digit that ends a key here
  up integer;            -- 1 = round the middle up (toward hi), 0 = down
  prefix text := '';
begin
  perform internal.lexorank_check_bounds('lexorank_between', lo, hi);

  up := case when coalesce(length(hi), 0) > coalesce(length(lo), 0) then 1 else 0 end;
  lo := coalesce(lo, '');
  lo_len := length(lo);
  if hi is not null then
    hi_len := length(hi);
    -- Common prefix, reading lo as padded with '0's. hi > lo, so hi differs before it ends.
    while p < hi_len
          and substr(hi, p + 1, 1) = (case when p < lo_len then substr(lo, p + 1, 1) else '0' end) loop
      p := p + 1;
    end loop;
    a := case when p < lo_len then strpos(digits, substr(lo, p + 1, 1)) - 1 else 0 end;
    b := strpos(digits, substr(hi, p + 1, 1)) - 1;
    x := a + 1;
    y := case when hi_len > p + 1 then b else b - 1 end;
    if x <= y then
      return substr(hi, 1, p) || substr(digits, (x + y + up) / 2 + 1, 1);
    end if;
    -- No room at this position: stay just above lo, with nothing above us any more.
    prefix := substr(hi, 1, p) || substr(digits, a + 1, 1);
    lo := substr(lo, p + 2);
    lo_len := length(lo);
  end if;

  -- Open above: skip lo's 'z's, then take the middle of (lo digit + 1) .. 'z'.
  p := 0;
  while p < lo_len and substr(lo, p + 1, 1) = 'z' loop
    p := p + 1;
  end loop;
  a := case when p < lo_len then strpos(digits, substr(lo, p + 1, 1)) - 1 else 0 end;
  return prefix || substr(lo, 1, p) || substr(digits, (a + 1 + 61 + up) / 2 + 1, 1);
end
$$;
comment on function internal.lexorank_between(text, text) is
  'Shortest LexoRank key strictly between lo and hi (NULL = open end), at the midpoint of the first position with room; raises 22023 on bad keys or lo >= hi; result may exceed 10 chars.';

-- The first key of an empty list ('V').
create or replace function internal.lexorank_first()
returns text
language sql immutable parallel safe
as $$ select internal.lexorank_between(null, null) $$;
comment on function internal.lexorank_first() is
  'The key for the first item of an empty list: lexorank_between(NULL, NULL), i.e. ''V''.';

-- The key just after `key` with nothing above it (append at the end).
create or replace function internal.lexorank_after(key text)
returns text
language sql immutable strict parallel safe
as $$ select internal.lexorank_between(key, null) $$;
comment on function internal.lexorank_after(text) is
  'Shortest key after key with nothing above it: lexorank_between(key, NULL).';

-- The key just before `key` with nothing below it (prepend at the start).
create or replace function internal.lexorank_before(key text)
returns text
language sql immutable strict parallel safe
as $$ select internal.lexorank_between(null, key) $$;
comment on function internal.lexorank_before(text) is
  'Shortest key before key with nothing below it: lexorank_between(NULL, key).';

-- The next len-character key above (up) or below key, key read as padded with '0's to len
-- characters (len >= length(key)): one unit of the len-th digit away, or two when one would end
-- in '0' (that value is a shorter key, and stepping on from a shorter key would jump 62 units).
-- NULL when there is none: past the largest or below the smallest len-character key.
create or replace function internal.lexorank_next(key text, len integer, up boolean)
returns text
language plpgsql immutable strict parallel safe
as $$
declare
  digits constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  step integer := case when up then 1 else -1 end;
  m numeric := 0;
  s text := '';
begin
  for j in 1 .. len loop
    m := m * 62 + (case when j <= length(key) then strpos(digits, substr(key, j, 1)) - 1 else 0 end);
  end loop;
  m := m + step;
  if mod(m, 62) = 0 then
    m := m + step;
  end if;
  if m <= 0 or m >= 62::numeric ^ len then
    return null;
  end if;
  for j in 1 .. len loop
    s := substr(digits, mod(m, 62)::integer + 1, 1) || s;
    m := div(m, 62);
  end loop;
  return s;
end
$$;
comment on function internal.lexorank_next(text, integer, boolean) is
  'The next len-character key above (up) or below key (read as padded with ''0''s to len chars): one unit of the last digit away, skipping values ending in ''0''; NULL if none.';

-- A key strictly between lo and hi for an insert at a spot that may see many more inserts.
-- The longer neighbour is taken to be the fresh one (the last insert there): inserting again and
-- again right after a block puts each new key just below the previous one, typing line after line
-- just above it. So the key goes ONE UNIT from the longer neighbour, toward the other, at that
-- neighbour's own length, leaving the rest of the gap for the inserts still to come: a run then
-- walks down (or up) a gap one unit at a time instead of halving it. When the gap has no room
-- at that length, the key is one unit from the longer neighbour at one digit past the shortest
-- key between: about 62 x 62 more inserts for every two characters, where halving gets ~12.
-- Equal lengths (no clue which side is fresh) or an open end: lexorank_between, the midpoint.
-- NULL lo/hi = open end; raises 22023 like lexorank_between. The result may exceed 10 characters
-- (only when no key of 10 fits): callers check the length.
create or replace function internal.lexorank_near(lo text, hi text)
returns text
language plpgsql immutable parallel safe
as $$
declare
  max_len constant integer := 10;
  up boolean;
  fresh text;
  len integer;
  k text;
begin
  perform internal.lexorank_check_bounds('lexorank_near', lo, hi);
  if lo is null or hi is null or length(lo) = length(hi) then
    return internal.lexorank_between(lo, hi);
  end if;
  up := length(lo) > length(hi);
  fresh := case when up then lo else hi end;
  k := internal.lexorank_next(fresh, length(fresh), up);
  if k is not null and k > lo collate "C" and k < hi collate "C" then
    return k;
  end if;
  -- no key of fresh's length fits, so none shorter does either: the shortest one is longer
  k := internal.lexorank_between(lo, hi);
  len := length(k) + 1;
  if len > max_len then
    return k;
  end if;
  return internal.lexorank_next(fresh, len, up);
end
$$;
comment on function internal.lexorank_near(text, text) is
  'Key strictly between lo and hi (NULL = open end) one unit from the longer (freshly inserted) neighbour, so repeated inserts at one spot keep keys short; lexorank_between when lengths are equal or an end is open; raises 22023 on bad keys or lo >= hi; result may exceed 10 chars.';

-- n keys, strictly increasing and strictly between lo and hi (NULL = open end), evenly spaced,
-- all of the shortest length L that fits n of them, none ending in '0'.
-- After the literal common prefix of lo and hi, the length-k keys between them are the integers
-- m with lo_k < m < hi_k (lo_k = lo's first k digits, hi_k = hi's first k digits, +1 if hi goes
-- on; 62^k when hi is open), minus the multiples of 62 (they would end in '0'). The usable slots
-- are numbered t = m - floor(m/62); the i-th key takes slot t0 + floor(i * (count+1) / (n+1)).
-- Raises 22023 if n is NULL or negative, the bounds are bad, or n keys do not fit in 10 characters.
create or replace function internal.lexorank_spread(n integer, lo text default null, hi text default null)
returns text[]
language plpgsql immutable parallel safe
as $$
declare
  digits constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  max_len constant integer := 10;
  p integer := 0;          -- length of the common prefix
  prefix text;             -- the common prefix itself
  lo_rest text;            -- lo after the prefix
  hi_rest text;            -- hi after the prefix (NULL when hi is open)
  k integer;               -- number of digits after the prefix
  lo_k numeric := 0;
  hi_t numeric := 0;       -- hi's first k digits (or 62^k when open)
  hi_k numeric;
  t0 numeric;              -- slot number of lo_k
  slots numeric;           -- usable slots strictly between
  t numeric;
  m numeric;
  s text;
  keys text[] := '{}';
begin
  if n is null or n < 0 then
    raise exception using errcode = '22023',
      message = format('lexorank_spread: n must be a non-negative integer, got %s', coalesce(n::text, 'NULL'));
  end if;
  perform internal.lexorank_check_bounds('lexorank_spread', lo, hi);
  if n = 0 then
    return keys;
  end if;

  if lo is not null and hi is not null then
    while p < least(length(lo), length(hi)) and substr(lo, p + 1, 1) = substr(hi, p + 1, 1) loop
      p := p + 1;
    end loop;
  end if;
  prefix := coalesce(substr(lo, 1, p), '');
  lo_rest := coalesce(substr(lo, p + 1), '');
  hi_rest := substr(hi, p + 1);   -- non-empty when hi is given: hi > lo, so hi is no prefix of lo
  if hi is null then
    hi_t := 1;
  end if;

  for k in 1 .. max_len - p loop
    lo_k := lo_k * 62 + (case when k <= length(lo_rest) then strpos(digits, substr(lo_rest, k, 1)) - 1 else 0 end);
    if hi is null then
      hi_t := hi_t * 62;
      hi_k := hi_t;
    else
      hi_t := hi_t * 62 + (case when k <= length(hi_rest) then strpos(digits, substr(hi_rest, k, 1)) - 1 else 0 end);
      hi_k := hi_t + (case when length(hi_rest) > k then 1 else 0 end);
    end if;
    t0 := lo_k - div(lo_k, 62);
    slots := (hi_k - 1) - div(hi_k - 1, 62) - t0;
    if slots >= n then
      for i in 1 .. n loop
        t := t0 + div(i * (slots + 1), n + 1);
        m := t + div(t - 1, 61);            -- the t-th integer not divisible by 62
        s := '';
        for j in 1 .. k loop
          s := substr(digits, mod(m, 62)::integer + 1, 1) || s;
          m := div(m, 62);
        end loop;
        keys := keys || (prefix || s);
      end loop;
      return keys;
    end if;
  end loop;

  raise exception using errcode = '22023',
    message = format('lexorank_spread: %s keys do not fit between %s and %s within %s characters',
                     n, coalesce(quote_literal(lo), 'the start'), coalesce(quote_literal(hi), 'the end'), max_len);
end
$$;
comment on function internal.lexorank_spread(integer, text, text) is
  'n evenly spaced, strictly increasing keys strictly between lo and hi (NULL = open end), of the shortest length that fits; raises 22023 if they cannot fit in 10 chars.';

-- n keys for a whole list that will keep growing at either end (a canvas rebalanced): spread
-- evenly over the middle quarter of the key space (from 3/8 to 5/8, bounds taken at the shortest
-- length with at least 8n keys), at the shortest length that fits there (lexorank_spread). Each
-- end keeps 3/8 of the key space: at the keys' length (where the middle quarter holds n, the
-- quarter holds >= n keys) at least 1.5n keys for the appends (prepends) stepping one unit at a
-- time past it (internal.lexorank_step) before the next rebalance, so its n moves are spread over
-- at least 1.5n appends (3n when the keys take the bounds' length). Spread over the whole
-- space instead (lexorank_spread(n)), the last key sits one spacing below the top, and a
-- canvas that grows at its end needed a rebalance every few dozen appends. Raises 22023 like
-- lexorank_spread.
create or replace function internal.lexorank_spread_with_room(n integer)
returns text[]
language plpgsql immutable parallel safe
as $$
declare
  digits constant text := '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  len integer := 1;
  a numeric;
  b numeric;
  lo text := '';
  hi text := '';
begin
  if n is null or n < 0 then
    raise exception using errcode = '22023',
      message = format('lexorank_spread_with_room: n must be a non-negative integer, got %s', coalesce(n::text, 'NULL'));
  end if;
  if n = 0 then
    return '{}';
  end if;
  -- keys of len characters: 62^len values, 61 in 62 of them not ending in '0'
  while (62::numeric ^ len) * 61 / 62 < 8 * n::numeric and len < 10 loop
    len := len + 1;
  end loop;
  a := floor((62::numeric ^ len) * 3 / 8);
  b := ceil((62::numeric ^ len) * 5 / 8);
  for j in 1 .. len loop
    lo := substr(digits, mod(a, 62)::integer + 1, 1) || lo;
    a := div(a, 62);
    hi := substr(digits, mod(b, 62)::integer + 1, 1) || hi;
    b := div(b, 62);
  end loop;
  -- a bound need not be a stored key, but trailing '0's name the same value
  return internal.lexorank_spread(n, nullif(rtrim(lo, '0'), ''), rtrim(hi, '0'));
end
$$;
comment on function internal.lexorank_spread_with_room(integer) is
  'n evenly spaced, strictly increasing keys in the middle quarter of the key space (3/8 to 5/8), of the shortest length that fits there, '
  'leaving >= 1.5n keys of that length free at each end for appends and prepends; raises 22023 if n is negative or NULL.';
