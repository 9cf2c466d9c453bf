-- Operational transformation of plain text, with exactly the semantics of ShareDB's
-- `text-unicode` type (npm ot-text-unicode 4.0.0, lib/type.ts of github.com/ottypes/text-unicode),
-- so a ShareDB-style client and this server agree on every transformed op.
--
-- An op is a JSON array of components walked over the document from its start:
--   n            (integer 1..2147483647)  skip (retain) n code points
--   "str"        (non-empty string)       insert str here
--   {"d": n}     (n > 0)                  delete n code points
--   {"d": "str"} (non-empty string)       delete as many code points as str has (the invertible
--                                          form; normalize turns it into {"d": n})
-- Text after the op's reach is kept. Units are Unicode code points everywhere: Postgres
-- length()/left()/right() in a UTF-8 database count code points, which is what the library counts
-- (unicount's strPosToUni): an emoji or any surrogate pair is 1, a combining mark is 1 on its own.
--
-- A normalized op (what text_op_normalize returns, what apply and transform expect) has numeric
-- deletes, no two adjacent components of the same kind (skips add, inserts concatenate, deletes
-- add) and no trailing skip; [] is the no-op.
--
-- Errors: internal.raise_error('invalid_input', message, {"field": <the caller's field>}) for a
-- malformed or too long op (normalize) and for an op that reaches past the end of the text (apply).
-- transform trusts its inputs to be normalized (the server normalizes every op on arrival); its
-- only error is a side other than 'left'/'right' (field "side").
--
-- Internally an op under construction is three parallel arrays (kinds 's'kip / 'i'nsert /
-- 'd'elete, lengths in code points, insert texts), turned into jsonb once at the end, so building
-- it costs no jsonb rebuilding. These run inside every concurrent text edit: inputs are walked
-- in place rather than through helper calls or queries (each costs far more than a loop step).
-- No SET clause (each call of a function with one costs a GUC nest level, and a text edit made
-- seven such calls, docs/performance.md): they run inside the mutation RPCs, SECURITY DEFINER with
-- search_path pinned to pg_catalog, pg_temp, and name only schema-qualified objects and built-ins.
-- Called from anywhere else (tests, psql) they resolve names through that caller's search path;
-- none is SECURITY DEFINER, so that gives the caller nothing it did not have.

-- The op made of these components, appended one by one the way the library's makeAppend does
-- (empty components dropped, adjacent ones of the same kind merged), then trimmed (a trailing
-- skip dropped).
create or replace function internal.text_op_from_parts(p_kinds "char"[], p_lens bigint[], p_texts text[])
returns jsonb language plpgsql immutable parallel safe as $$
declare
  v_out jsonb[] := '{}';
  m integer := 0;
  k "char";      -- the last component, still open for merging
  n bigint;
  s text;
begin
  for j in 1 .. coalesce(array_length(p_kinds, 1), 0) loop
    continue when p_lens[j] <= 0;
    if p_kinds[j] = k then
      if k = 'i' then s := s || p_texts[j]; end if;
      n := n + p_lens[j];
    else
      if k is not null then
        m := m + 1;
        v_out[m] := case k when 's' then to_jsonb(n) when 'i' then to_jsonb(s) else jsonb_build_object('d', n) end;
      end if;
      k := p_kinds[j]; n := p_lens[j]; s := p_texts[j];
    end if;
  end loop;
  if k is not null and k <> 's' then
    m := m + 1;
    v_out[m] := case k when 'i' then to_jsonb(s) else jsonb_build_object('d', n) end;
  end if;
  return to_jsonb(v_out);
end $$;
comment on function internal.text_op_from_parts("char"[], bigint[], text[]) is
  'A normalized text op from parallel arrays: empty components dropped, same kinds merged, trailing skip trimmed.';

-- Validates an op from a client and returns it normalized. STABLE rather than IMMUTABLE only
-- because the component limit is a setting (app.settings max_text_op_components). Errors name
-- field p_field, followed by p_key's step when p_key is given (internal.field_step: the server
-- passes 'patch.text' and the content key), built only for the error: built by the caller for
-- every op, its CASE and two regular expressions cost each text edit (docs/performance.md,
-- forty-ninth session).
drop function if exists internal.text_op_normalize(jsonb, text);
create or replace function internal.text_op_normalize(p_op jsonb, p_field text, p_key text default null)
returns jsonb language plpgsql stable parallel safe as $$
declare
  -- the setting read here, not through internal.setting_int (SECURITY DEFINER with a SET clause:
  -- a call and a GUC nest level per text edit); this runs inside the mutation RPCs, as their owner
  v_max integer := coalesce((select (value #>> '{}')::integer from app.settings where key = 'max_text_op_components'), 1000);
  v_count integer;
  c jsonb;
  d jsonb;
  v_num numeric;
  v_ok boolean;
  v_kinds "char"[];
  v_lens bigint[];
  v_texts text[];
begin
  -- A keystroke, already in normal form: [n, "str"], [n, {"d": m}], ["str"] or [{"d": m}] (n and
  -- m whole numbers 1..999999999, str not empty) is returned as it is, told by one regular
  -- expression over the op as jsonb prints it (canonically: ", " between elements, ": " after a
  -- key, numbers as numeric prints them, so 2.0 prints as 2.0 and takes the walk) instead of
  -- the walk below, or of some thirty operators: PL/pgSQL sets up every operator of every
  -- expression it reaches once per transaction, so each costs every text edit
  -- (docs/performance.md, thirty-fifth session). Anything else takes the walk, which accepts or
  -- refuses it (a skip of ten digits up to 2147483647 too).
  if p_op::text ~ '^\[([1-9][0-9]{0,8}, )?("([^"\\]|\\.)+"|\{"d": [1-9][0-9]{0,8}\})\]$' and jsonb_array_length(p_op) <= v_max then
    return p_op;
  end if;
  v_kinds := '{}'; v_lens := '{}'; v_texts := '{}';
  if p_key is not null then
    p_field := p_field || internal.field_step(p_key);
  end if;
  if p_op is null or jsonb_typeof(p_op) <> 'array' then
    perform internal.raise_error('invalid_input',
      format('%s must be a text op: a JSON array of components (skip n, insert "text", delete {"d": n}), not %s',
             p_field, coalesce(jsonb_typeof(p_op), 'missing')),
      jsonb_build_object('field', p_field));
  end if;
  v_count := jsonb_array_length(p_op);
  if v_count > v_max then
    perform internal.raise_error('invalid_input',
      format('%s has %s components; a text op may have at most %s: send the edit as several smaller ops',
             p_field, v_count, v_max),
      jsonb_build_object('field', p_field));
  end if;
  for j in 1 .. v_count loop
    c := p_op -> (j - 1);
    -- nested CASEs, not AND: a numeric cast must only ever see a number
    case jsonb_typeof(c)
      when 'number' then
        v_num := c::numeric;
        v_ok := v_num between 1 and 2147483647 and v_num = trunc(v_num);
        v_kinds[j] := 's'; v_lens[j] := case when v_ok then v_num end;   -- no bigint cast of 1e30
      when 'string' then
        v_ok := c <> '""';
        v_kinds[j] := 'i'; v_texts[j] := c #>> '{}'; v_lens[j] := length(v_texts[j]);
      when 'object' then
        d := c -> 'd';
        v_ok := d is not null and c - 'd' = '{}';
        if v_ok then
          case jsonb_typeof(d)
            when 'number' then
              v_num := d::numeric;
              v_ok := v_num between 1 and 2147483647 and v_num = trunc(v_num);
              v_lens[j] := case when v_ok then v_num end;
            when 'string' then
              v_ok := d <> '""';
              v_lens[j] := length(d #>> '{}');
            else v_ok := false;
          end case;
        end if;
        v_kinds[j] := 'd';
      else v_ok := false;
    end case;
    if not v_ok then
      perform internal.raise_error('invalid_input',
        format('%s component %s (counting from 0) is %s; each component must be a skip (a whole number 1..2147483647), '
               'an insert (a non-empty string) or a delete ({"d": n} with a whole number n 1..2147483647, or {"d": "the deleted text"})',
               p_field, j - 1, left(c::text, 100)),
        jsonb_build_object('field', p_field));
    end if;
  end loop;
  return internal.text_op_from_parts(v_kinds, v_lens, v_texts);
end $$;
comment on function internal.text_op_normalize(jsonb, text, text) is
  'Validates a text-unicode op (raises invalid_input on field p_field, followed by p_key''s step when given) and returns it normalized: numeric deletes, merged components, no trailing skip.';

-- The text after a normalized op; text beyond the op's reach is kept as it is. The error's field
-- is p_field, followed by p_key's step when p_key is given (built only for the error, as in
-- text_op_normalize).
drop function if exists internal.text_op_apply(text, jsonb, text);
create or replace function internal.text_op_apply(p_text text, p_op jsonb, p_field text, p_key text default null)
returns text language plpgsql immutable parallel safe as $$
declare
  v_count integer := jsonb_array_length(p_op);
  v_length bigint := length(p_text);
  v_reach bigint := 0;
  v_rest text := p_text;      -- the part of p_text the op has not reached yet
  v_pieces text[] := '{}';
  c jsonb;
  n bigint;
begin
  -- the reach first, so nothing is built for an op that does not fit
  for j in 0 .. v_count - 1 loop
    c := p_op -> j;
    if jsonb_typeof(c) = 'number' then v_reach := v_reach + c::bigint;
    elsif jsonb_typeof(c) = 'object' then v_reach := v_reach + (c -> 'd')::bigint;
    end if;
  end loop;
  if p_text is null or v_reach > v_length then
    if p_key is not null then
      p_field := p_field || internal.field_step(p_key);
    end if;
    perform internal.raise_error('invalid_input',
      format('%s skips and deletes %s code points but the text is only %s code points long: the op was made for another version of the text; transform it against the current text',
             p_field, v_reach, coalesce(v_length, 0)),
      jsonb_build_object('field', p_field));
  end if;
  -- cut from the front of what is left (left/right with a count scan only that many code
  -- points), not at an offset into p_text: finding a code point offset in UTF-8 means scanning
  -- up to it (substr even measures the whole string), which makes a long op on a long text slow
  for j in 0 .. v_count - 1 loop
    c := p_op -> j;
    case jsonb_typeof(c)
      when 'number' then
        n := c::bigint;
        v_pieces[j + 1] := left(v_rest, n::integer);
        v_rest := right(v_rest, -n::integer);
      when 'string' then v_pieces[j + 1] := c #>> '{}';
      else v_pieces[j + 1] := ''; v_rest := right(v_rest, -(c -> 'd')::integer);
    end case;
  end loop;
  v_pieces[v_count + 1] := v_rest;
  return array_to_string(v_pieces, '');
end $$;
comment on function internal.text_op_apply(text, jsonb, text, text) is
  'Applies a normalized text-unicode op to text (code points); raises invalid_input on field p_field (followed by p_key''s step when given) when the op reaches past the end.';

-- ot-text-unicode's transform(op, otherOp, side): op rewritten to apply after p_other. p_side
-- 'left' puts op's insert first when both insert at the same position, 'right' puts it after.
-- A port of the library's loop: op1 (p_op) is consumed with take(n) (inserts taken whole, skips
-- and deletes split at n; past its end it skips forever) and peek(); op2 (p_other) is walked
-- component by component; the output is appended with makeAppend's merging and trimmed. The
-- server rebases through text_op_transform_all, which moves single inserts and deletes without
-- this walk and calls it for everything else.
create or replace function internal.text_op_transform(p_op jsonb, p_other jsonb, p_side text)
returns jsonb language plpgsql immutable parallel safe as $$
declare
  na integer := jsonb_array_length(p_op);
  ak "char"[] := '{}'; an bigint[] := '{}'; at text[] := '{}';   -- op1 as arrays, for take/peek
  i integer := 1;        -- take: op1's next component
  v_off bigint := 0;     -- take: code points of op1[i] already taken (skips and deletes only)
  c jsonb;
  v_len bigint;
  v_part bigint;
  ok "char"[] := '{}'; "on" bigint[] := '{}'; ot text[] := '{}'; m integer := 0;   -- output, unmerged
begin
  if p_side is null or p_side not in ('left', 'right') then
    perform internal.raise_error('invalid_input', format('side must be ''left'' or ''right'', not %s', coalesce(p_side, 'missing')),
                                 '{"field": "side"}');
  end if;
  for j in 1 .. na loop
    c := p_op -> (j - 1);
    case jsonb_typeof(c)
      when 'number' then ak[j] := 's'; an[j] := c::bigint;
      when 'string' then ak[j] := 'i'; at[j] := c #>> '{}'; an[j] := length(at[j]);
      else ak[j] := 'd'; an[j] := (c -> 'd')::bigint;
    end case;
  end loop;

  for j in 0 .. jsonb_array_length(p_other) - 1 loop
    c := p_other -> j;
    case jsonb_typeof(c)
      when 'number' then
        -- op2 retains: op1's components pass through (inserts whole) until that length is used up
        v_len := c::bigint;
        while v_len > 0 loop
          m := m + 1;
          if i > na then                          -- op1 is over: it skips forever
            ok[m] := 's'; "on"[m] := v_len; v_len := 0;
          elsif ak[i] = 'i' then
            ok[m] := 'i'; "on"[m] := an[i]; ot[m] := at[i]; i := i + 1;
          else
            v_part := least(an[i] - v_off, v_len);
            ok[m] := ak[i]; "on"[m] := v_part;
            if an[i] - v_off <= v_len then i := i + 1; v_off := 0; else v_off := v_off + v_len; end if;
            v_len := v_len - v_part;
          end if;
        end loop;
      when 'string' then
        -- op2 inserts: on the left, op1's own insert at this position goes first; then skip it
        if p_side = 'left' and i <= na and ak[i] = 'i' then
          m := m + 1; ok[m] := 'i'; "on"[m] := an[i]; ot[m] := at[i]; i := i + 1;
        end if;
        m := m + 1; ok[m] := 's'; "on"[m] := length(c #>> '{}');
      else
        -- op2 deletes: op1's skips and deletes over that range vanish, its inserts stay
        v_len := (c -> 'd')::bigint;
        while v_len > 0 loop
          if i > na then
            v_len := 0;
          elsif ak[i] = 'i' then
            m := m + 1; ok[m] := 'i'; "on"[m] := an[i]; ot[m] := at[i]; i := i + 1;
          else
            v_part := least(an[i] - v_off, v_len);
            if an[i] - v_off <= v_len then i := i + 1; v_off := 0; else v_off := v_off + v_len; end if;
            v_len := v_len - v_part;
          end if;
        end loop;
    end case;
  end loop;

  -- the rest of op1
  while i <= na loop
    m := m + 1; ok[m] := ak[i]; "on"[m] := an[i] - v_off; ot[m] := at[i];
    v_off := 0; i := i + 1;
  end loop;
  return internal.text_op_from_parts(ok, "on", ot);
end $$;
comment on function internal.text_op_transform(jsonb, jsonb, text) is
  'ot-text-unicode transform(op, other, side) for normalized ops: op rewritten to apply after other; side left = op''s insert first at a tie.';

-- ot-text-unicode transform folded over a list: p_op rewritten to apply after each of p_others
-- in turn (others[1] first; null elements are skipped), the same op as
-- text_op_transform(…text_op_transform(p_op, others[1], side)…, others[n], side). With p_path,
-- each element is read at that path first (#>; a missing one is null, skipped): the server
-- passes the logged patches and ['text', key] rather than building the list of their ops with a
-- subquery. This is the server's rebase of a text op over the log (every op on its key since the
-- client's version, in commit order), which runs under the canvas lock when a text is shared; one
-- call walks the whole list. Concurrent typing without the walk: while op is one insert, one delete or nothing
-- (v_kind 'i' / 'd' / 'n', at v_at) and the other op is one insert or one delete at v_oat, op
-- moves as the library's walk would move it: an insert before op (or at op's insert with op on
-- the right, or at a delete's start) moves op on by its length; a delete before op moves op back by
-- what it removed there (to its start when it spans op's position), and what both delete is
-- deleted once; anything after op leaves it as it is. Anything else (a multi-component op on
-- either side, an insert inside op's delete, which splits it) goes through text_op_transform.
drop function if exists internal.text_op_transform_all(jsonb, jsonb[], text);
create or replace function internal.text_op_transform_all(p_op jsonb, p_others jsonb[], p_side text, p_path text[] default '{}')
returns jsonb language plpgsql immutable parallel safe as $$
declare
  v_op jsonb := p_op;     -- op as jsonb; while v_kind is set, v_kind/v_at/v_ins/v_del hold it instead
  v_kind "char";
  v_at bigint;
  v_ins text;
  v_del bigint;
  o jsonb;
  v_n integer;
  v_oc jsonb;             -- other's one component, when it has one (after an optional skip v_oat)
  v_oat bigint;
  v_olen bigint;
begin
  if p_side is null or p_side not in ('left', 'right') then
    perform internal.raise_error('invalid_input', format('side must be ''left'' or ''right'', not %s', coalesce(p_side, 'missing')),
                                 '{"field": "side"}');
  end if;
  foreach o in array coalesce(p_others, '{}') loop
    o := o #> p_path;   -- ('{}': o itself)
    continue when o is null or o = '[]';
    if v_kind is null then
      -- read op's shape: [], [n?, "str"] or [n?, {"d": n}]
      v_n := jsonb_array_length(v_op);
      v_oc := case when v_n = 1 then v_op -> 0 when v_n = 2 and jsonb_typeof(v_op -> 0) = 'number' then v_op -> 1 end;
      v_kind := case when v_n = 0 then 'n' when jsonb_typeof(v_oc) = 'string' then 'i' when jsonb_typeof(v_oc) = 'object' then 'd' end;
      v_at := case when v_n = 2 and v_kind is not null then (v_op -> 0)::bigint else 0 end;
      v_ins := case when v_kind = 'i' then v_oc #>> '{}' end;
      v_del := case when v_kind = 'd' then (v_oc -> 'd')::bigint end;
      exit when v_kind = 'n';   -- nothing transforms into nothing (tested where op's shape is read, not per logged op)
    end if;
    -- other's shape, without its length in a variable of its own (each assignment is an
    -- evaluation per logged op): one component, or two with a skip first (o -> 1 is then set)
    v_oc := case jsonb_array_length(o) when 1 then o -> 0 when 2 then case when jsonb_typeof(o -> 0) = 'number' then o -> 1 end end;
    v_oat := case when v_oc is not null and o -> 1 is not null then (o -> 0)::bigint else 0 end;
    v_olen := case jsonb_typeof(v_oc) when 'string' then length(v_oc #>> '{}') when 'object' then (v_oc -> 'd')::bigint end;
    if v_kind is null or v_olen is null or (v_kind = 'd' and jsonb_typeof(v_oc) = 'string' and v_oat > v_at and v_oat < v_at + v_del) then
      if v_kind is not null then
        v_op := internal.text_op_from_parts(array['s', v_kind], array[v_at, coalesce(length(v_ins), v_del)], array[null, v_ins]);
        v_kind := null;
      end if;
      v_op := internal.text_op_transform(v_op, o, p_side);
    elsif jsonb_typeof(v_oc) = 'string' then
      if v_oat < v_at or (v_oat = v_at and (v_kind = 'd' or p_side = 'right')) then v_at := v_at + v_olen; end if;
    else
      if v_kind = 'd' then
        v_del := v_del - greatest(0, least(v_at + v_del, v_oat + v_olen) - greatest(v_at, v_oat));
        if v_del = 0 then v_kind := 'n'; exit; end if;   -- (op is [] now, whatever follows)
      end if;
      if v_oat < v_at then v_at := greatest(v_oat, v_at - v_olen); end if;
    end if;
  end loop;
  -- op is one insert, one delete or nothing: built here, as text_op_from_parts would build it
  -- ([] for nothing, the skip only when above 0), without its call and its expressions
  return case when v_kind is null then v_op
              when coalesce(length(v_ins), v_del, 0) <= 0 then '[]'
              else case when v_at > 0 then jsonb_build_array(v_at) else '[]' end
                   || jsonb_build_array(case v_kind when 'i' then to_jsonb(v_ins) else jsonb_build_object('d', v_del) end) end;
end $$;
comment on function internal.text_op_transform_all(jsonb, jsonb[], text, text[]) is
  'ot-text-unicode transform folded over a list: op rewritten to apply after others[1], then others[2], … (each read at path first, #>; nulls skipped); the same op as chained text_op_transform calls.';
