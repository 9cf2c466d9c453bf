-- Text operational transformation (sql/rpc/text_ot.sql): the specification.
-- Semantics are those of ShareDB's text-unicode type (npm ot-text-unicode 4.0.0); the expected
-- values below are what that library returns for the same inputs (its agreement on generated
-- inputs is tests/integration/text-ot-reference.test.ts). An op is a JSON array: n = skip n code
-- points, "str" = insert, {"d": n} = delete n code points ({"d": "str"} on input only).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(138);

-- The error message of a statement (null when it does not raise).
create function pg_temp.message_of(p_sql text) returns text language plpgsql as $$
begin
  execute p_sql;
  return null;
exception when others then
  return sqlerrm;
end $$;
-- TP1 on a document: [doc after op1 then op2 transformed by op1 (right),
--                     doc after op2 then op1 transformed by op2 (left)]; both must be equal.
create function pg_temp.tp1(p_doc text, p_op1 jsonb, p_op2 jsonb) returns text[] language sql as $$
  select array[
    internal.text_op_apply(internal.text_op_apply(p_doc, p_op1, 'op1'), internal.text_op_transform(p_op2, p_op1, 'right'), 'op2'''),
    internal.text_op_apply(internal.text_op_apply(p_doc, p_op2, 'op2'), internal.text_op_transform(p_op1, p_op2, 'left'), 'op1''')]
$$;

-- ---------------------------------------------------------------------------------------------
-- The functions and the setting
-- ---------------------------------------------------------------------------------------------
select has_function('internal', 'text_op_normalize', array['jsonb', 'text', 'text'], 'internal.text_op_normalize(op, field, key) exists');
select has_function('internal', 'text_op_apply', array['text', 'jsonb', 'text', 'text'], 'internal.text_op_apply(text, op, field, key) exists');
select has_function('internal', 'text_op_transform', array['jsonb', 'jsonb', 'text'], 'internal.text_op_transform(op, other, side) exists');
select has_function('internal', 'text_op_transform_all', array['jsonb', 'jsonb[]', 'text', 'text[]'], 'internal.text_op_transform_all(op, others[], side, path) exists');
select is(
  (select array_agg(p.proname::text order by p.proname) from pg_proc p
   where p.pronamespace = 'internal'::regnamespace and p.proname like 'text\_op\_%'
     and (p.proparallel <> 's' or p.proconfig is not null or p.prosecdef
          or coalesce(obj_description(p.oid, 'pg_proc'), '') = '')),
  null, 'every text_op function is PARALLEL SAFE, has a comment and no SET clause or SECURITY DEFINER (each would cost every text edit a GUC nest level: it runs in the RPC''s empty search_path)');
select is(
  (select array_agg(p.proname::text || ':' || p.provolatile::text order by p.proname) from pg_proc p
   where p.pronamespace = 'internal'::regnamespace and p.proname like 'text\_op\_%'),
  array['text_op_apply:i', 'text_op_from_parts:i', 'text_op_normalize:s', 'text_op_transform:i', 'text_op_transform_all:i'],
  'apply and transform are IMMUTABLE; normalize is STABLE because its limit is a setting');
select is(internal.setting_int('max_text_op_components'), 1000, 'app.settings max_text_op_components defaults to 1000');
select isnt((select description from app.settings where key = 'max_text_op_components'), '', 'the setting is described');

-- ---------------------------------------------------------------------------------------------
-- apply: skip, insert, delete; the text past the op's reach is kept
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_apply('hello world', '[]', 'op'), 'hello world', '[] is the no-op');
select is(internal.text_op_apply('hello world', '[5, ","]', 'op'), 'hello, world', 'skip 5, insert ","');
select is(internal.text_op_apply('hello world', '["> "]', 'op'), '> hello world', 'an insert at the start');
select is(internal.text_op_apply('hello world', '[11, "!"]', 'op'), 'hello world!', 'an insert at the very end');
select is(internal.text_op_apply('hello world', '[5, {"d": 6}]', 'op'), 'hello', 'a delete to the end');
select is(internal.text_op_apply('hello world', '[{"d": 6}, "bye "]', 'op'), 'bye world', 'a delete then an insert at the same place');
select is(internal.text_op_apply('', '["x"]', 'op'), 'x', 'an insert into the empty text');
select is(internal.text_op_apply('', '[]', 'op'), '', '[] on the empty text');

-- ---------------------------------------------------------------------------------------------
-- Code points: an emoji (a surrogate pair in JavaScript) is 1, a combining mark is 1 of its own
-- ---------------------------------------------------------------------------------------------
select is(length('😀'), 1, 'Postgres counts 😀 as 1 code point, like the library (not 2 as JavaScript .length)');
select is(internal.text_op_apply('a😀b', '[2, "X"]', 'op'), 'a😀Xb', 'skip 2 passes "a" and the emoji');
select is(internal.text_op_apply('a😀b', '[1, {"d": 1}]', 'op'), 'ab', 'delete 1 removes the whole emoji');
select is(internal.text_op_apply('😀😅🤖', '[{"d": 2}]', 'op'), '🤖', 'two emoji are 2 code points');
select is(internal.text_op_apply(E'e\u0301x', '[1, "!"]', 'op'), E'e!\u0301x',
          'e + combining acute is 2 code points: skip 1 lands between them (the library does the same)');
select is(internal.text_op_apply(E'e\u0301x', '[2, "!"]', 'op'), E'e\u0301!x', 'skip 2 passes e and its accent');
select is(internal.text_op_apply(E'👍\U0001F3FDok', '[{"d": 2}]', 'op'), 'ok', 'an emoji with a skin-tone modifier is 2 code points');
select is(internal.text_op_normalize('[{"d": "😀é"}]', 'op'), '[{"d": 2}]', 'a string delete of an emoji and é counts 2 code points');
select is(internal.text_op_transform('[3, "x"]', '[1, "😀"]', 'left'), '[4, "x"]', 'an emoji inserted before shifts later positions by 1');
select is(internal.text_op_transform('[1, {"d": 1}, "🤖"]', '[2, "Z"]', 'left'), '[1, {"d": 1}, "🤖"]',
          'left: op''s emoji insert goes first at the tie after a deleted emoji');
select is(internal.text_op_transform('[1, {"d": 1}, "🤖"]', '[2, "Z"]', 'right'), '[1, {"d": 1}, 1, "🤖"]',
          'right: op''s emoji insert goes after the other''s "Z"');
select is(pg_temp.tp1('a😀b', '[1, {"d": 1}, "🤖"]', '[2, "Z"]'), array['a🤖Zb', 'a🤖Zb'], 'and both orders give a🤖Zb');
select is(internal.text_op_transform(E'[2, "!"]', '[1, {"d": 1}]', 'left'), '[1, "!"]',
          'deleting a combining mark shifts an insert after it by 1');
select is(pg_temp.tp1(E'e\u0301x', '[2, "!"]', '[1, {"d": 1}]'), array['e!x', 'e!x'], 'and both orders give e!x');

-- ---------------------------------------------------------------------------------------------
-- transform: two inserts at one position (the tie): side decides
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_transform('["a"]', '["b"]', 'left'), '["a"]', 'left: op''s insert goes first, so it stays at 0');
select is(internal.text_op_transform('["a"]', '["b"]', 'right'), '[1, "a"]', 'right: op''s insert goes after the other''s');
select is(pg_temp.tp1('abcd', '["a"]', '["b"]'), array['ababcd', 'ababcd'], 'both orders give ababcd (op1''s "a" first)');
select is(internal.text_op_transform('[2, "x"]', '[2, "yy"]', 'left'), '[2, "x"]', 'a tie in the middle, left: unchanged');
select is(internal.text_op_transform('[2, "x"]', '[2, "yy"]', 'right'), '[4, "x"]', 'a tie in the middle, right: after the 2 inserted code points');
select is(pg_temp.tp1('abcd', '[2, "x"]', '[2, "yy"]'), array['abxyycd', 'abxyycd'], 'both orders give abxyycd');
select is(internal.text_op_transform('[1, "x"]', '[2, "yy"]', 'right'), '[1, "x"]', 'an insert before the other''s is unchanged on either side');
select is(internal.text_op_transform('[3, "x"]', '[2, "yy"]', 'left'), '[5, "x"]', 'an insert after the other''s moves by its length on either side');

-- ---------------------------------------------------------------------------------------------
-- transform: an insert inside a range the other op deleted survives at the cut
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_transform('[3, "X"]', '[1, {"d": 4}]', 'left'), '[1, "X"]', 'the insert moves to where the range was');
select is(internal.text_op_transform('[3, "X"]', '[1, {"d": 4}]', 'right'), '[1, "X"]', 'the same on the right side');
select is(internal.text_op_transform('[1, {"d": 4}]', '[3, "X"]', 'left'), '[1, {"d": 2}, 1, {"d": 2}]',
          'the delete is split around the inserted text, which it does not delete');
select is(pg_temp.tp1('abcdef', '[3, "X"]', '[1, {"d": 4}]'), array['aXf', 'aXf'], 'both orders give aXf');
select is(internal.text_op_transform('[1, "X", 2, {"d": 2}]', '[2, "YY", {"d": 3}]', 'left'), '[1, "X"]',
          'op''s delete inside the other''s delete vanishes; its insert before it stays');
select is(internal.text_op_transform('[2, "YY", {"d": 3}]', '[1, "X", 2, {"d": 2}]', 'left'), '[3, "YY", {"d": 1}]',
          'the other way round: the insert shifts by 1 and only the code point not yet deleted is deleted');
select is(pg_temp.tp1('abcdef', '[1, "X", 2, {"d": 2}]', '[2, "YY", {"d": 3}]'), array['aXbYYf', 'aXbYYf'], 'both orders give aXbYYf');

-- ---------------------------------------------------------------------------------------------
-- transform: two deletes that overlap delete the union once
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_transform('[2, {"d": 4}]', '[4, {"d": 3}]', 'left'), '[2, {"d": 2}]', 'partial overlap: only cd is still to delete');
select is(internal.text_op_transform('[4, {"d": 3}]', '[2, {"d": 4}]', 'left'), '[2, {"d": 1}]', 'partial overlap, the other way: only g is left');
select is(pg_temp.tp1('abcdefgh', '[2, {"d": 4}]', '[4, {"d": 3}]'), array['abh', 'abh'], 'both orders give abh');
select is(internal.text_op_transform('[2, {"d": 3}]', '[1, {"d": 5}]', 'left'), '[]', 'a delete inside the other''s delete becomes the no-op');
select is(internal.text_op_transform('[1, {"d": 5}]', '[2, {"d": 3}]', 'right'), '[1, {"d": 2}]',
          'the enclosing delete keeps only the code points the other left');
select is(pg_temp.tp1('abcdefgh', '[2, {"d": 3}]', '[1, {"d": 5}]'), array['agh', 'agh'], 'both orders give agh');
select is(internal.text_op_transform('[2, {"d": 3}]', '[2, {"d": 3}]', 'left'), '[]', 'the same delete twice: the second is the no-op');
select is(internal.text_op_transform('[{"d": 2}]', '[3, {"d": 2}]', 'left'), '[{"d": 2}]', 'disjoint deletes before the other are unchanged');
select is(internal.text_op_transform('[3, {"d": 2}]', '[{"d": 2}]', 'left'), '[1, {"d": 2}]', 'disjoint deletes after the other move back');

-- ---------------------------------------------------------------------------------------------
-- transform: empty ops, output form, side
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_transform('[]', '[]', 'left'), '[]', '[] by [] is []');
select is(internal.text_op_transform('[]', '[1, "x"]', 'right'), '[]', '[] by anything is []');
select is(internal.text_op_transform('[3, "x"]', '[]', 'left'), '[3, "x"]', 'anything by [] is itself');
select is(internal.text_op_transform('[3, "x", 2, {"d": 1}]', '[]', 'right'), '[3, "x", 2, {"d": 1}]', 'a longer op by [] is itself');
select is(internal.text_op_transform('[{"d": 1}]', '[1, {"d": 5}]', 'left'), '[{"d": 1}]',
          'op''s components past the other''s end are kept (the other op skips to the end)');
select is(internal.text_op_transform('[5, "x"]', '[{"d": 3}, "ab"]', 'right'), '[4, "x"]',
          'skips are merged in the output ([2 + 2, "x"] not [2, 2, "x"])');
select is(internal.text_op_transform('[2, "x"]', '[4, "y"]', 'left'), '[2, "x"]', 'no trailing skip in the output');
select is((tests.error_of($$select internal.text_op_transform('[]', '[]', 'middle')$$)),
          '{"state": "PX400", "code": "invalid_input", "field": "side"}', 'a side other than left/right is invalid_input on field side');

-- ---------------------------------------------------------------------------------------------
-- normalize: numeric deletes, adjacent components merged, no trailing skip
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_normalize('[]', 'op'), '[]', '[] is normalized');
select is(internal.text_op_normalize('[3, "ab", {"d": 5}]', 'op'), '[3, "ab", {"d": 5}]', 'a normalized op is returned as it is');
select is(internal.text_op_normalize('[{"d": "hello"}]', 'op'), '[{"d": 5}]', 'a string delete becomes its code point count');
select is(internal.text_op_normalize('[2, 1, "a", "b", {"d": "xé"}, {"d": 3}, 4]', 'op'), '[3, "ab", {"d": 5}]',
          'skips add, inserts concatenate, deletes (string or number) add, the trailing skip is dropped');
select is(internal.text_op_normalize('[5]', 'op'), '[]', 'a lone skip is the no-op');
select is(internal.text_op_normalize('[1, 2, "x", 3, 4]', 'op'), '[3, "x"]', 'two trailing skips merge and are dropped');
select is(internal.text_op_normalize('[{"d": 1}, "a", {"d": 1}]', 'op'), '[{"d": 1}, "a", {"d": 1}]',
          'components of different kinds are not reordered');
select is(internal.text_op_normalize('[2.0, "x"]', 'op'), '[2, "x"]', 'a whole number written 2.0 is the skip 2');
select is(internal.text_op_normalize(E'["\\n\\t\\"\\\\ line"]', 'op'), E'["\\n\\t\\"\\\\ line"]', 'inserts may hold any text');
select is(internal.text_op_normalize('[2147483647, "x"]', 'op'), '[2147483647, "x"]', 'the largest skip');

-- ---------------------------------------------------------------------------------------------
-- transform_all: an op rebased over a log (others in commit order) = transform folded over it
-- (agreement with the library's fold on generated logs: tests/integration/text-ot-reference.test.ts)
-- ---------------------------------------------------------------------------------------------
select is(internal.text_op_transform_all('[3, "x"]', '{}', 'left'), '[3, "x"]', 'over an empty log the op is unchanged');
select is(internal.text_op_transform_all('[3, "x"]', array[null, '[]', null]::jsonb[], 'left'), '[3, "x"]',
          'null entries (a logged patch without an op on this key) and no-ops change nothing');
select is(internal.text_op_transform_all('[3, "x"]', array['[1, "ab"]', '["c"]', '[10, "z"]']::jsonb[], 'left'), '[6, "x"]',
          'inserts before the position move an insert on; one after it does not');
select is(internal.text_op_transform_all('[3, "x"]', array['[3, "ab"]']::jsonb[], 'left'), '[3, "x"]',
          'at a tie, left: the op''s insert stays first');
select is(internal.text_op_transform_all('[3, "x"]', array['[3, "ab"]']::jsonb[], 'right'), '[5, "x"]',
          'at a tie, right: the op''s insert goes after the other''s');
select is(internal.text_op_transform_all('[5, "x"]', array['[1, {"d": 2}]', '[{"d": 9}]']::jsonb[], 'left'), '["x"]',
          'deletes before the position move an insert back, to the start of a delete spanning it');
select is(internal.text_op_transform_all('[2, {"d": 4}]', array['[3, {"d": 2}]']::jsonb[], 'left'), '[2, {"d": 2}]',
          'what both delete is deleted once');
select is(internal.text_op_transform_all('[2, {"d": 2}]', array['[1, {"d": 5}]', '[0, "never reached"]']::jsonb[], 'left'), '[]',
          'a delete wholly deleted by another is the no-op, and stays one');
select is(internal.text_op_transform_all('[2, {"d": 2}]', array['[2, "ab"]', '[6, "c"]']::jsonb[], 'left'), '[4, {"d": 2}]',
          'an insert at a delete''s start moves it on; one at its end does not touch it');
select is(internal.text_op_transform_all('[2, {"d": 4}]', array['[4, "ab"]']::jsonb[], 'left'), '[2, {"d": 2}, 2, {"d": 2}]',
          'an insert inside a delete splits it (the general transform)');
select is(internal.text_op_transform_all('[2, {"d": 4}]', array['[4, "ab"]', '[1, "z"]']::jsonb[], 'left'), '[3, {"d": 2}, 2, {"d": 2}]',
          'after the split, the rest of the log transforms the multi-component op');
select is(internal.text_op_transform_all('[1, "a", 2, {"d": 1}]', array['["zz"]', '[3, {"d": 2}]']::jsonb[], 'left'),
          internal.text_op_transform(internal.text_op_transform('[1, "a", 2, {"d": 1}]', '["zz"]', 'left'), '[3, {"d": 2}]', 'left'),
          'a multi-component op is the chained transform of each');
select is(internal.text_op_transform_all('[4, "x"]', array['[1, "ab", 3, {"d": 1}]', '[2, {"d": 1}]']::jsonb[], 'left'),
          internal.text_op_transform(internal.text_op_transform('[4, "x"]', '[1, "ab", 3, {"d": 1}]', 'left'), '[2, {"d": 1}]', 'left'),
          'a multi-component other goes through the general transform, and the insert is moved as integers again after it');
select is(internal.text_op_transform_all('[3, "x"]', array['{"text": {"t": [1, "ab"]}}', '{"text": {"u": ["q"]}}', '{"content": {"t": "reset"}}',
                                                             '{"text": {"t": ["c"], "u": [9, "q"]}}']::jsonb[], 'left', array['text', 't']),
          '[6, "x"]', 'with a path, each logged patch is read at it first: patches without an op there (another key, content only) are skipped');
-- an op that becomes nothing part-way stays nothing over the ops after it (ot-text-unicode 4.0.0's
-- transform folded over the same list gives each expected value)
select is(internal.text_op_transform_all('[2, {"d": 2}]', array['[1, {"d": 4}]', '[3, "xy"]', '[{"d": 1}]']::jsonb[], 'left'), '[]'::jsonb,
          'transform_all: a delete swallowed by another, then more ops: [] (as the library)');
select is(internal.text_op_transform_all('[3, {"d": 2}]', array['[4, "pq"]', '[1, {"d": 6}]', '["k"]']::jsonb[], 'right'), '[]'::jsonb,
          'transform_all: a delete split by an insert, then deleted whole, then an insert: [] (as the library)');
select is(internal.text_op_transform_all('[2, "ab"]', array['[1, {"d": 3}]', '[2, "q", 1, "r"]', '[1, "z"]']::jsonb[], 'left'), '[1, "ab"]'::jsonb,
          'transform_all: an insert over a delete, a two-insert op and an insert: as the library');
select is(internal.text_op_transform_all('[1, "x", 1, {"d": 1}]', array['[{"d": 3}]', '[2, "w"]']::jsonb[], 'left'), '["x"]'::jsonb,
          'transform_all: a two-component op over a delete, then an insert after it: as the library');
select is(tests.error_of($$select internal.text_op_transform_all('[1, "x"]', '{}', 'up')$$), '{"state": "PX400", "code": "invalid_input", "field": "side"}',
          'a side other than left/right is invalid_input on field side');

-- ---------------------------------------------------------------------------------------------
-- normalize: every malformed op is invalid_input on the caller's field
-- ---------------------------------------------------------------------------------------------
select is(tests.error_of($$select internal.text_op_normalize('{"d": 1}', 'content.ops')$$),
          '{"state": "PX400", "code": "invalid_input", "field": "content.ops"}', 'an object is not an op (error on the caller''s field)');
select is(tests.error_of($$select internal.text_op_normalize('"abc"', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a string is not an op');
select is(tests.error_of($$select internal.text_op_normalize(null, 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a missing op is invalid_input');
select is(tests.error_of($$select internal.text_op_normalize('[0]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a skip of 0');
select is(tests.error_of($$select internal.text_op_normalize('[-3, "x"]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a negative skip');
select is(tests.error_of($$select internal.text_op_normalize('[1.5, "x"]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a fractional skip');
select is(tests.error_of($$select internal.text_op_normalize('[2147483648, "x"]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'a skip past 2147483647');
select is(tests.error_of($$select internal.text_op_normalize('[1e30, "x"]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a huge skip (1e30)');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": 1e30}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a huge delete (1e30)');
select is(tests.error_of($$select internal.text_op_normalize('[""]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'an empty insert');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": 0}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a delete of 0');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": ""}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a delete of ""');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": -1}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a negative delete');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": 1.5}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a fractional delete');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": true}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a delete of a boolean');
select is(tests.error_of($$select internal.text_op_normalize('[{"d": 1, "x": 2}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'a delete with another key');
select is(tests.error_of($$select internal.text_op_normalize('[{"i": "x"}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'an object without d (other OT types'' insert form)');
select is(tests.error_of($$select internal.text_op_normalize('[{}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'an empty object');
select is(tests.error_of($$select internal.text_op_normalize('[1, null]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a null component');
select is(tests.error_of($$select internal.text_op_normalize('[true]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a boolean component');
select is(tests.error_of($$select internal.text_op_normalize('[[1]]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a nested array');
-- with a key (as the server calls them): the field is p_field followed by the key's step, built for the error only
select is(tests.error_of($$select internal.text_op_normalize('[0]', 'patch.text', 'body')$$), '{"state": "PX400", "code": "invalid_input", "field": "patch.text.body"}',
          'with a key, normalize''s error names the field followed by the key');
select is(tests.error_of($$select internal.text_op_normalize('"abc"', 'patch.text', 'a b')$$), '{"state": "PX400", "code": "invalid_input", "field": "patch.text[\"a b\"]"}',
          'a key that is no plain step is named in brackets, as internal.field_step names it');
select matches(pg_temp.message_of($$select internal.text_op_normalize('[0]', 'patch.text', 'body')$$), '^patch\.text\.body component 0 ',
               'the message names the field with its key');
select is(internal.text_op_normalize('[2, "x"]', 'patch.text', 'a b'), '[2, "x"]'::jsonb, 'a keystroke with a key: returned as it is');
select is(tests.error_of($$select internal.text_op_apply('abc', '[4, "x"]', 'patch.text', 'a"b')$$), '{"state": "PX400", "code": "invalid_input", "field": "patch.text[\"a\\\"b\"]"}',
          'with a key, apply''s error names the field followed by the key''s step');
select is(internal.text_op_apply('abc', '[3, "x"]', 'patch.text', 'body'), 'abcx', 'apply with a key applies as without');
select matches(pg_temp.message_of($$select internal.text_op_normalize('[3, "x", {"d": 0}]', 'op')$$),
               '^op component 2 \(counting from 0\) is \{"d": 0\}; each component must be a skip',
               'the message names the component, shows it and says what a component must be');
select is(jsonb_array_length(internal.text_op_normalize((select jsonb_agg(case when g % 2 = 1 then to_jsonb(1) else to_jsonb('a'::text) end)
                                                         from generate_series(1, 1000) g), 'op')), 1000,
          '1000 components are accepted');
select is(tests.error_of($$select internal.text_op_normalize((select jsonb_agg(case when g % 2 = 1 then to_jsonb(1) else to_jsonb('a'::text) end)
                                                               from generate_series(1, 1001) g), 'op')$$),
          '{"state": "PX400", "code": "invalid_input", "field": "op"}', '1001 components are too many');
-- the keystroke's regular expression over the op's text: only a normalized keystroke is returned
-- as sent, whatever its strings hold; anything near one takes the walk, which normalizes or refuses it
select is(internal.text_op_normalize('[3, "a\", 3"]', 'op'), '[3, "a\", 3"]', 'an insert holding a quote, comma and number is one insert');
select is(internal.text_op_normalize('["x\\", "y"]', 'op'), '["x\\y"]', 'two inserts, the first ending in a backslash, are merged (not one insert)');
select is(internal.text_op_normalize('[{"d": "\\\""}]', 'op'), '[{"d": 2}]', 'a delete as text with escapes counts its code points');
select is(internal.text_op_normalize('[2.0, {"d": 1.00}]', 'op'), '[2, {"d": 1}]', 'numbers spelled 2.0 and 1.00 are the whole numbers');
select is(internal.text_op_normalize('[2e0, "x"]', 'op'), '[2, "x"]', 'and 2e0');
select is(internal.text_op_normalize('[1000000000, "x"]', 'op'), '[1000000000, "x"]', 'a skip of ten digits up to 2147483647 is accepted');
select is(internal.text_op_normalize('[1, 2, "x"]', 'op'), '[3, "x"]', 'adjacent skips are added');
select is(internal.text_op_normalize('["a", 1]', 'op'), '["a"]', 'a trailing skip is dropped');
select is(tests.error_of($$select internal.text_op_normalize('[1, {"d": 1, "x": 1}]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'a keystroke whose delete has another key is refused');
select is(tests.error_of($$select internal.text_op_normalize('[-1, "x"]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'a keystroke with a negative skip is refused');
select is(tests.error_of($$select internal.text_op_normalize('[1, ["x"]]', 'op')$$), '{"state": "PX400", "code": "invalid_input", "field": "op"}',
          'a keystroke with a nested array is refused');
update app.settings set value = '3' where key = 'max_text_op_components';
select matches(pg_temp.message_of($$select internal.text_op_normalize('[1, "a", 1, "b"]', 'op')$$),
               '^op has 4 components; a text op may have at most 3', 'the limit is read from app.settings, and the message says it');
update app.settings set value = '1000' where key = 'max_text_op_components';

-- ---------------------------------------------------------------------------------------------
-- apply: an op that reaches past the end of the text is invalid_input on the caller's field
-- ---------------------------------------------------------------------------------------------
select is(tests.error_of($$select internal.text_op_apply('abc', '[4, "x"]', 'content.ops')$$),
          '{"state": "PX400", "code": "invalid_input", "field": "content.ops"}', 'a skip past the end');
select is(tests.error_of($$select internal.text_op_apply('abc', '[2, {"d": 2}]', 'op')$$),
          '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'a delete past the end');
select is(tests.error_of($$select internal.text_op_apply('😀', '[1, {"d": 1}]', 'op')$$),
          '{"state": "PX400", "code": "invalid_input", "field": "op"}', 'an emoji is 1 code point, so skip 1 + delete 1 is past its end');
select is(pg_temp.message_of($$select internal.text_op_apply('abc', '[2, "x", {"d": 2}]', 'op')$$),
          'op skips and deletes 4 code points but the text is only 3 code points long: the op was made for another version of the text; transform it against the current text',
          'the message names the op''s reach and the text''s length');
select is(internal.text_op_apply('abc', '[1, {"d": 2}, "xyz"]', 'op'), 'axyz', 'reaching exactly the end is fine');

select * from finish();
rollback;
