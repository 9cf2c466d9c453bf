-- Concurrent edits of one block merge instead of conflicting (sql/rpc/mutate.sql, merge rule):
-- `content` is a JSON Merge Patch (RFC 7396); from a stale base_version, keys changed on one side
-- only merge; the same key set on both sides is a conflict carrying base, theirs and mine; text
-- operations on one key are transformed against those committed since base_version (ShareDB's
-- text-unicode rules, sql/rpc/text_ot.sql); a log that lost the changes since base_version asks
-- for a rebase.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(50);

select tests.create_user(u) from unnest(array['merge_ann', 'merge_bob']) u;
create temp table ids (workspace_id uuid, canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
create temp table k as select
  '00000000-0000-4000-8000-0000000000e1'::uuid as doc,   -- per-key merge
  '00000000-0000-4000-8000-0000000000e2'::uuid as txt,   -- text operations
  '00000000-0000-4000-8000-0000000000e3'::uuid as old,   -- a log that lost its history
  '00000000-0000-4000-8000-0000000000e4'::uuid as same,  -- writes that changed nothing
  '00000000-0000-4000-8000-0000000000e5'::uuid as keys;  -- unusual text keys
grant select on k to authenticated;

-- a helper for the calls below: one operation as the current user, its result kept under `name`
create function pg_temp.op(p_name text, p_block uuid, p_action text, p_base integer, p_patch jsonb) returns void
language sql as $$
  insert into r select p_name, api.upsert_block_atomic((select canvas_id from ids), p_block, p_action, 'merge-' || p_name, p_base, p_patch)
$$;
create function pg_temp.content(p_block uuid) returns jsonb language sql as $$ select content from app.blocks where block_id = p_block $$;

select tests.authenticate_as('merge_ann');
insert into ids (workspace_id) select (api.create_workspace('Merge') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Merge') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('merge_bob'), 'editor');

-- ---------------------------------------------------------------- content: JSON Merge Patch
select pg_temp.op('create_doc', (select doc from k), 'create', null, '{"type":"text","content":{"t":"x","n":1,"gone":null}}');
select is(pg_temp.content((select doc from k)), '{"t":"x","n":1}', 'create: content is the merge patch applied to {} (nulls dropped)');

select pg_temp.op('ann_a', (select doc from k), 'update', 1, '{"content":{"a":"from a"}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('bob_b', (select doc from k), 'update', 1, '{"content":{"b":"from b"}}');
select is((select res ->> 'status' from r where name = 'ann_a') || '/' || (select res ->> 'status' from r where name = 'bob_b'), 'success/success',
          'two clients setting different content keys from the same base both succeed');
select is(pg_temp.content((select doc from k)), '{"t":"x","n":1,"a":"from a","b":"from b"}',
          'and neither loses the other''s key nor the keys nobody named');
select is((select (res ->> 'version')::int from r where name = 'bob_b'), 3, 'the merged operation takes the next version');

select pg_temp.op('bob_a', (select doc from k), 'update', 1, '{"content":{"a":"from bob"}}');
select is((select res ->> 'status' from r where name = 'bob_a'), 'conflict', 'the same non-text key set on both sides from one base: conflict');
select is((select res -> 'error' -> 'fields' -> 'content.a' from r where name = 'bob_a'),
          '{"base": null, "theirs": "from a", "mine": "from bob"}',
          'the conflict carries base (at base_version, from the log), theirs (current) and mine for the key');
select is((select res -> 'error' -> 'changed' from r where name = 'bob_a'), '["content.a", "content.b"]',
          'and names every field changed since base_version');
select is((select res -> 'block' -> 'content' from r where name = 'bob_a'), pg_temp.content((select doc from k)),
          'and the current block');
select is((select version from app.blocks where block_id = (select doc from k)), 3, 'a conflict writes nothing');

select pg_temp.op('remove_n', (select doc from k), 'update', 3, '{"content":{"n":null,"meta":{"x":1,"y":{"z":1}}}}');
select pg_temp.op('nested', (select doc from k), 'update', 4, '{"content":{"meta":{"y":{"z":null,"w":2},"q":[1,null]}}}');
select is(pg_temp.content((select doc from k)) - 't' - 'a' - 'b', '{"meta":{"x":1,"y":{"w":2},"q":[1,null]}}',
          'null removes a key; objects merge recursively; arrays replace as a whole (RFC 7396)');

-- other fields keep their groups: type from two sides conflicts with base/theirs/mine
select pg_temp.op('type_1', (select doc from k), 'update', 5, '{"type":"heading"}');
select pg_temp.op('type_2', (select doc from k), 'update', 5, '{"type":"quote"}');
select is((select res -> 'error' -> 'fields' -> 'type' from r where name = 'type_2'), '{"base": "text", "theirs": "heading", "mine": "quote"}',
          'type set on both sides: conflict with base/theirs/mine');
select pg_temp.op('content_vs_type', (select doc from k), 'update', 5, '{"content":{"c":3}}');
select is((select res ->> 'status' from r where name = 'content_vs_type'), 'success', 'a content key merges with a concurrent type change');
select pg_temp.op('stale_delete', (select doc from k), 'delete', 5, '{}');
select is((select res ->> 'status' from r where name = 'stale_delete'), 'conflict', 'a stale delete still always conflicts');

-- ---------------------------------------------------------------- text operations
select tests.authenticate_as('merge_ann');
select pg_temp.op('create_txt', (select txt from k), 'create', null, '{"type":"text","content":{"t":"hello","n":5}}');
select pg_temp.op('t_world', (select txt from k), 'update', 1, '{"text":{"t":[5," world"]}}');
select is(pg_temp.content((select txt from k)) ->> 't', 'hello world', 'a text operation from the current version applies as is');
select is((select res -> 'text' from r where name = 't_world'), '{"t":[5," world"]}', 'the result carries the operation as applied');
select tests.authenticate_as('merge_bob');
select pg_temp.op('t_say', (select txt from k), 'update', 1, '{"text":{"t":["Say: "]}}');
select is(pg_temp.content((select txt from k)) ->> 't', 'Say: hello world', 'a stale insert before the other edit keeps its place');
select pg_temp.op('t_bang', (select txt from k), 'update', 1, '{"text":{"t":[5,"!"]}}');
select is(pg_temp.content((select txt from k)) ->> 't', 'Say: hello! world',
          'inserts at one position: the later committed goes first (left), shifted by the earlier inserts before it');
select is((select res -> 'text' from r where name = 't_bang'), '{"t":[10,"!"]}', 'the result carries the transformed operation');
select is((select patch -> 'text' from app.block_operations where client_op_id = 'merge-t_bang' and status = 'success'), '{"t":[10,"!"]}',
          'the log holds the transformed operation (what later operations are transformed against)');
select tests.clear_authentication();
select is((select payload -> 'text' from realtime.messages where event = 'block_op' and payload ->> 'client_op_id' = 'merge-t_bang'), '{"t":[10,"!"]}',
          'the broadcast carries it too, so a replica applies it to the text it has');
select tests.authenticate_as('merge_bob');
select pg_temp.op('t_del', (select txt from k), 'update', 1, '{"text":{"t":[1,{"d":3}]}}');
select is(pg_temp.content((select txt from k)) ->> 't', 'Say: ho! world', 'a stale delete removes only the characters it meant (hello → ho)');
select pg_temp.op('t_emoji', (select txt from k), 'update', 5, '{"text":{"t":["😀👍🏽"]}}');
select pg_temp.op('t_after_emoji', (select txt from k), 'update', 5, '{"text":{"t":[{"d":3},"Tell"]}}');
select is(pg_temp.content((select txt from k)) ->> 't', '😀👍🏽Tell: ho! world',
          'a stale delete + insert after a concurrent insert at the start: "Say" becomes "Tell", after the emoji');
select is((select res -> 'text' from r where name = 't_after_emoji'), '{"t":[3,{"d":3},"Tell"]}',
          'positions count code points: the inserted 😀👍🏽 (an emoji, then one with a skin-tone modifier) shift by 3');
-- a text operation and a non-text value on one key
select pg_temp.op('t_set', (select txt from k), 'update', 7, '{"content":{"t":"replaced"}}');
select pg_temp.op('t_after_set', (select txt from k), 'update', 7, '{"text":{"t":["x"]}}');
select is((select res -> 'error' -> 'fields' -> 'content.t' ->> 'theirs' from r where name = 't_after_set'), 'replaced',
          'a text operation on a key set as a whole since base_version: conflict, theirs is the current text');
select is((select res -> 'error' -> 'fields' -> 'content.t' -> 'mine' from r where name = 't_after_set'), '{"text":["x"]}',
          'mine is the operation');

-- ---------------------------------------------------------------- refused text operations
select pg_temp.op('t_on_number', (select txt from k), 'update', 8, '{"text":{"n":["x"]}}');
select is((select res -> 'error' ->> 'code') || ' ' || (res -> 'error' ->> 'field'), 'invalid_input patch.text.n', 'a text operation on a non-text key: invalid_input')
from r where name = 't_on_number';
select pg_temp.op('t_on_create', gen_random_uuid(), 'create', null, '{"type":"text","text":{"t":["x"]}}');
select is((select res -> 'error' ->> 'field' from r where name = 't_on_create'), 'patch.text', 'no text operations on create (the text goes in content)');
select pg_temp.op('t_and_content', (select txt from k), 'update', 8, '{"content":{"t":"a"},"text":{"t":["x"]}}');
select is((select res -> 'error' ->> 'field' from r where name = 't_and_content'), 'patch.text.t', 'one key is either set or edited in one operation');
select pg_temp.op('t_past_end', (select txt from k), 'update', 8, '{"text":{"t":[100,"x"]}}');
select is((select res -> 'error' ->> 'code') || ' ' || (res -> 'error' ->> 'field'), 'invalid_input patch.text.t', 'an operation past the end of the text: invalid_input')
from r where name = 't_past_end';
select is((select version from app.blocks where block_id = (select txt from k)), 8, 'refused operations write nothing');
select pg_temp.op('t_new_key', (select txt from k), 'update', 8, '{"text":{"fresh":["new"]}}');
select is(pg_temp.content((select txt from k)) ->> 'fresh', 'new', 'a text operation on an absent key edits the empty text');

-- ---------------------------------------------------------------- over a log of text operations only
-- (no clash is looked for then unless the operation sets a content key: the shared-text fast path)
select pg_temp.op('tt_1', (select txt from k), 'update', 9, '{"text":{"fresh":[3,"A"]}}');
select pg_temp.op('tt_type', (select txt from k), 'update', 9, '{"type":"note","text":{"fresh":["B"]}}');
select is((select b.type || ' ' || (b.content ->> 'fresh') from app.blocks b where b.block_id = (select txt from k)), 'note BnewA',
          'over a log of text operations only, a stale text operation that also sets type applies: type set, text transformed');
select pg_temp.op('tt_content', (select txt from k), 'update', 9, '{"content":{"other":1},"text":{"fresh":[1,"C"]}}');
select is((select (b.content ->> 'fresh') || ' ' || (b.content ->> 'other') from app.blocks b where b.block_id = (select txt from k)), 'BnCewA 1',
          'one that also sets another content key merges: the key set, the text transformed over both');
select pg_temp.op('tt_type_clash', (select txt from k), 'update', 9, '{"type":"todo"}');
select is((select (res ->> 'status') || ' ' || (res -> 'error' ->> 'changed') from r where name = 'tt_type_clash'), 'conflict ["content.fresh", "content.other", "type"]',
          'a type set over a log that set type too: conflict (a log with more than text operations is looked through)');

-- ---------------------------------------------------------------- text keys JSON and JSON path read specially
-- (the keys are read as a JSON array from a JSON path and each key's op is written back as JSON
-- text: an empty key, quotes, backslashes, path syntax, spaces and astral code points are keys like
-- any other, and an op spelled unusually (1.0, 2e0, a split skip, a delete as text) is normalized)
select pg_temp.op('keys_create', (select keys from k), 'create', null,
                  '{"type":"text","content":{"":"ab","a\"b":"ab","a\\b":"ab","$":"ab","a.b":"ab","*":"ab","é😀 x":"ab","$.keyvalue()":"ab"}}');
select pg_temp.op('keys_x', (select keys from k), 'update', 1,
                  '{"text":{"":[1,"X"],"a\"b":[1,"X"],"a\\b":[1,"X"],"$":[1,"X"],"a.b":[1,"X"],"*":[1,"X"],"é😀 x":[1,"X"],"$.keyvalue()":[1,"X"]}}');
select is((select res -> 'text' from r where name = 'keys_x'),
          '{"":[1,"X"],"a\"b":[1,"X"],"a\\b":[1,"X"],"$":[1,"X"],"a.b":[1,"X"],"*":[1,"X"],"é😀 x":[1,"X"],"$.keyvalue()":[1,"X"]}',
          'a keystroke on each of eight unusual keys applies on that key, as sent');
select pg_temp.op('keys_behind', (select keys from k), 'update', 1,
                  '{"text":{"":[2,"Y"],"a\"b":[1.0,"Y"],"a\\b":[2e0,"Y"],"$":[1,1,"Y"],"a.b":[{"d":1.00}],"*":[{"d":"ab"}],"é😀 x":[1,{"d":1}],"$.keyvalue()":["Y"]}}');
select is((select res -> 'text' from r where name = 'keys_behind'),
          '{"":[3,"Y"],"a\"b":[1,"Y"],"a\\b":[3,"Y"],"$":[3,"Y"],"a.b":[{"d":1}],"*":[{"d":1},1,{"d":1}],"é😀 x":[2,{"d":1}],"$.keyvalue()":["Y"]}',
          'one version behind, each key''s op (unusual spellings normalized) is transformed over that key''s logged op alone (ot-text-unicode''s ops)');
select is(pg_temp.content((select keys from k)),
          '{"":"aXbY","a\"b":"aYXb","a\\b":"aXbY","$":"aXbY","a.b":"Xb","*":"X","é😀 x":"aX","$.keyvalue()":"YaXb"}',
          'and the texts are ot-text-unicode''s');
select pg_temp.op('keys_bad', (select keys from k), 'update', 3, '{"text":{"a.b":["ok"],"a\"b":[-1,"x"]}}');
select is((select (res -> 'error' ->> 'code') || ' ' || (res -> 'error' ->> 'field') from r where name = 'keys_bad')
          || ' ' || (pg_temp.content((select keys from k)) ->> 'a.b'), 'invalid_input patch.text["a\"b"] Xb',
          'a malformed op is refused on its own key''s field (a key that is not plain in brackets, as its JSON string), nothing written');

-- ---------------------------------------------------------------- a log that lost its history
select pg_temp.op('create_old', (select old from k), 'create', null, '{"type":"text","content":{"t":"old"}}');
select pg_temp.op('old_2', (select old from k), 'update', 1, '{"content":{"a":1}}');
select pg_temp.op('old_3', (select old from k), 'update', 2, '{"content":{"b":1}}');
select tests.clear_authentication();
delete from app.block_operations where client_op_id = 'merge-old_2';  -- as retention would
select tests.authenticate_as('merge_bob');
select pg_temp.op('old_stale', (select old from k), 'update', 1, '{"text":{"t":[3,"!"]}}');
select is((select res ->> 'status' || ' ' || (res -> 'error' ->> 'code') from r where name = 'old_stale'), 'conflict rebase_required',
          'an operation older than the log''s retention: rebase_required');
select is((select res -> 'block' -> 'content' from r where name = 'old_stale'), '{"t":"old","a":1,"b":1}', 'with the current block (and text)');

-- ---------------------------------------------------------------- an edit can be a HOT update
-- (no index of app.blocks reads content, so a content edit writes no index entry: see the
-- file_ref migration; a shared text edited hundreds of times a second stays one heap chain).
-- What PostgreSQL asks of a HOT update is that the update changes no column an index reads (a
-- key, or in an expression or predicate): asserted for every index of app.blocks, so an index
-- added on a column an edit writes fails here. The other condition, room for the new version on
-- the row's page, is the page's: a count of HOT updates (pg_stat_xact_user_tables.n_tup_hot_upd)
-- failed here on a database whose app.blocks pages earlier files had filled (their rolled-back
-- rows stay until a vacuum), as search.test.sql's did.
select tests.clear_authentication();
-- the row as another user's edit a minute ago left it: the edit then writes a new value into each
-- column it sets (in this one transaction now() never moves, and bob edited the block last), so an
-- index on updated_at or updated_by fails here as one on content does
update app.blocks set updated_at = updated_at - interval '1 minute', updated_by = tests.user_id('merge_ann')
where block_id = (select txt from k);
create temp table hot_before as
  select b as before, (select n_tup_upd from pg_stat_xact_user_tables where relid = 'app.blocks'::regclass) as n_tup_upd
  from app.blocks b where b.block_id = (select txt from k);
-- every column an index of app.blocks reads: its keys (indkey), and the columns its expressions
-- and predicate name (pg_depend: an index depends on each column it reads)
create temp table hot_indexed as
  select distinct a.attname::text as col
  from pg_index i join pg_attribute a on a.attrelid = i.indrelid and a.attnum > 0
  where i.indrelid = 'app.blocks'::regclass
    and (a.attnum = any (i.indkey)
         or exists (select from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = i.indexrelid
                    and d.refclassid = 'pg_class'::regclass and d.refobjid = i.indrelid and d.refobjsubid = a.attnum));
select tests.authenticate_as('merge_bob');
select pg_temp.op('hot_edit', (select txt from k), 'update', (select version from app.blocks where block_id = (select txt from k)),
                  '{"text":{"t":["hot "]}}');
select tests.clear_authentication();
create temp table hot_changed as
  select c.key as col from hot_before h, app.blocks n, jsonb_each(to_jsonb(h.before)) c
  where n.block_id = (h.before).block_id and c.value is distinct from to_jsonb(n) -> c.key;
select ok((select array_agg(col) from hot_indexed) @> array['block_id', 'canvas_id', 'file_ref', 'parent_id', 'vector'],
          'the columns the indexes of app.blocks read are found (keys, predicates, the HNSW index''s vector)');
select is((select (s.n_tup_upd - h.n_tup_upd) || ' update, writing '
                  || (select string_agg(col, ', ' order by col) from hot_changed where col in ('content', 'updated_at', 'updated_by', 'version'))
           from pg_stat_xact_user_tables s, hot_before h where s.relid = 'app.blocks'::regclass),
          '1 update, writing content, updated_at, updated_by, version', 'a text edit through the RPC is one update of the block, writing its content');
select is((select coalesce(array_agg(col order by col), '{}') from hot_changed where col in (select col from hot_indexed)), '{}'::text[],
          'and it changes no column an index of app.blocks reads: it is a HOT update wherever the page has room');

-- ---------------------------------------------------------------- a write that changed nothing clashes with nothing
-- (the log names the fields an operation wrote; a field whose value is back at base_version's,
-- or already what this patch sets, cannot be lost by applying the patch)
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_create', (select same from k), 'create', null, '{"type":"text","content":{"title":"Q3"}}');
select pg_temp.op('same_noop', (select same from k), 'update', 1, '{"content":{"title":"Q3"}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_after_noop', (select same from k), 'update', 1, '{"content":{"title":"Q4"}}');
select is((select res ->> 'status' from r where name = 'same_after_noop') || ' ' || (pg_temp.content((select same from k)) ->> 'title'), 'success Q4',
          'a key another client set to the value it already had does not clash: the edit from before it applies');
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_away', (select same from k), 'update', 3, '{"content":{"title":"Q5"}}');
select pg_temp.op('same_back', (select same from k), 'update', 4, '{"content":{"title":"Q4"}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_after_back', (select same from k), 'update', 3, '{"content":{"title":"Q9"}}');
select is((select res ->> 'status' from r where name = 'same_after_back') || ' ' || (pg_temp.content((select same from k)) ->> 'title'), 'success Q9',
          'nor does a key changed and changed back since base_version');
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_ann', (select same from k), 'update', 6, '{"content":{"title":"agreed"}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_bob', (select same from k), 'update', 6, '{"content":{"title":"agreed"}}');
select is((select res ->> 'status' from r where name = 'same_bob'), 'success', 'nor both sides setting a key to the same value');
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_rm_ann', (select same from k), 'update', 8, '{"content":{"extra":1}}');
select pg_temp.op('same_rm_ann2', (select same from k), 'update', 9, '{"content":{"extra":null}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_rm_bob', (select same from k), 'update', 9, '{"content":{"extra":null}}');
select is((select res ->> 'status' from r where name = 'same_rm_bob'), 'success', 'nor both sides removing a key');
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_a', (select same from k), 'update', 11, '{"content":{"title":"A"}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_b', (select same from k), 'update', 11, '{"content":{"title":"B"}}');
select is((select res -> 'error' -> 'fields' -> 'content.title' from r where name = 'same_b'), '{"base": "agreed", "theirs": "A", "mine": "B"}',
          'two different values still conflict');
select tests.authenticate_as('merge_ann');
select pg_temp.op('same_obj', (select same from k), 'update', 12, '{"content":{"style":{"bold":true,"size":12}}}');
select pg_temp.op('same_obj_ann', (select same from k), 'update', 13, '{"content":{"style":{"bold":false,"size":12}}}');
select tests.authenticate_as('merge_bob');
select pg_temp.op('same_obj_bob', (select same from k), 'update', 13, '{"content":{"style":{"bold":false}}}');
select is((select res ->> 'status' from r where name = 'same_obj_bob') || ' ' || (pg_temp.content((select same from k)) ->> 'style'),
          'success {"bold": false, "size": 12}',
          'nor an object that merges (RFC 7396) into the value the key has now: the patch changes nothing they wrote');
select pg_temp.op('same_obj_bob2', (select same from k), 'update', 13, '{"content":{"style":{"size":14}}}');
select is((select res -> 'error' -> 'fields' -> 'content.style' from r where name = 'same_obj_bob2'),
          '{"base": {"bold": true, "size": 12}, "theirs": {"bold": false, "size": 12}, "mine": {"size": 14}}',
          'an object that merges into another value still conflicts (the field is the content key, not its members)');

select * from finish();
rollback;
