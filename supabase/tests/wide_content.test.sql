-- A content of thousands of members (the 64 KB cap, max_content_bytes, lets one hold ~5,000)
-- costs a mutation time in proportion to its size, not to its size squared (sql/rpc/mutate.sql).
-- Before, three paths did work per member that rebuilt or rescanned the whole value: the JSON
-- Merge Patch of members that are objects or null (a jsonb_set per member: 50 s for 5,000), text
-- operations on many keys (a jsonb_set of the content per key: 9 s), and a stale edit's merge
-- check and conflict answer (a test per field and logged patch, the block's JSON built again per
-- field: past 5 s). Each ran one backend's CPU for the server's whole statement timeout while the
-- canvas row stayed locked, so one editor's request stalled every writer of the canvas and was
-- answered 504. Each case below runs under that timeout (5 s, src/db/request.ts); done in
-- linear time each takes well under a second.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(9);

select tests.create_user('wide_ann');
create temp table ids (workspace_id uuid, canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
create temp table k as select
  '00000000-0000-4000-8000-0000000000f1'::uuid as objects,  -- members that are objects
  '00000000-0000-4000-8000-0000000000f2'::uuid as texts,    -- text operations on many keys
  '00000000-0000-4000-8000-0000000000f3'::uuid as stale;    -- a stale edit of every member
grant select on k to authenticated;

create function pg_temp.op(p_name text, p_block uuid, p_action text, p_base integer, p_patch jsonb) returns void
language sql as $$
  insert into r select p_name, api.upsert_block_atomic((select canvas_id from ids), p_block, p_action, 'wide-' || p_name, p_base, p_patch)
$$;
-- {"<prefix>1": value, …, "<prefix>n": value}
create function pg_temp.members(p_n integer, p_value jsonb, p_prefix text default 'k') returns jsonb
language sql as $$ select jsonb_object_agg(p_prefix || i, p_value) from generate_series(1, p_n) i $$;
create function pg_temp.res(p_name text) returns jsonb language sql as $$ select res from r where name = p_name $$;
create function pg_temp.content(p_block uuid) returns jsonb language sql as $$ select content from app.blocks where block_id = p_block $$;

select tests.authenticate_as('wide_ann');
insert into ids (workspace_id) select (api.create_workspace('Wide') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Wide') ->> 'canvas_id')::uuid;

set local statement_timeout = '5s';

-- ---------------------------------------------------------------- merge patch, member by member
select lives_ok($$select pg_temp.op('objects', (select objects from k), 'create', null,
                  jsonb_build_object('type', 'text', 'content', pg_temp.members(5000, '{}')))$$,
                'a content of 5,000 members that are objects is merged within the statement timeout');
select is(pg_temp.res('objects') ->> 'status', 'success', 'and applied');
select is((select count(*)::int from jsonb_object_keys(pg_temp.content((select objects from k)))), 5000, 'with every member');

-- ---------------------------------------------------------------- text operations on many keys
-- from a base 20 versions back (each version set 2,000 other members): per key, the ops logged
-- since were read out of every logged patch, and the content rebuilt
select pg_temp.op('texts', (select texts from k), 'create', null, '{"type":"text","content":{}}');
select pg_temp.op('texts_v' || v, (select texts from k), 'update', v, jsonb_build_object('content', pg_temp.members(2000, to_jsonb(v), 'a')))
from generate_series(1, 20) v;
select lives_ok($$select pg_temp.op('texts_1', (select texts from k), 'update', 1, jsonb_build_object('text', pg_temp.members(2500, '["x"]', 't')))$$,
                'text operations on 2,500 keys from 20 versions back apply within the statement timeout');
select ok(pg_temp.content((select texts from k)) = pg_temp.members(2000, '20', 'a') || pg_temp.members(2500, '"x"', 't'), 'each key holds its text');
-- from the same base again: each op transformed against the one committed on its key (ours first)
select pg_temp.op('texts_2', (select texts from k), 'update', 1, jsonb_build_object('text', pg_temp.members(2500, '["y"]', 't')));
select ok(pg_temp.content((select texts from k)) = pg_temp.members(2000, '20', 'a') || pg_temp.members(2500, '"yx"', 't'),
          'and a second edit of the same 2,500 keys from that base is transformed key by key');

-- ---------------------------------------------------------------- a stale edit of every member
select pg_temp.op('stale', (select stale from k), 'create', null, jsonb_build_object('type', 'text', 'content', pg_temp.members(5000, '0')));
select pg_temp.op('stale_2', (select stale from k), 'update', 1, jsonb_build_object('content', pg_temp.members(5000, '1')));
select pg_temp.op('stale_3', (select stale from k), 'update', 2, jsonb_build_object('content', pg_temp.members(5000, '2')));
select lives_ok($$select pg_temp.op('stale_mine', (select stale from k), 'update', 1, jsonb_build_object('content', pg_temp.members(5000, '3')))$$,
                'a stale edit of 5,000 members changed since is checked and answered within the statement timeout');
select is(pg_temp.res('stale_mine') -> 'error' -> 'fields' -> 'content.k4321', '{"base": 0, "theirs": 2, "mine": 3}',
          'a conflict carrying base, theirs and mine per member');
select is((select count(*)::int from jsonb_object_keys(pg_temp.res('stale_mine') -> 'error' -> 'fields')), 5000, 'for every member');

select * from finish();
rollback;
