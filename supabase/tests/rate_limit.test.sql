-- Rate limit: each user may make app.settings 'mutations_per_minute' block mutations per minute
-- (100 by default). The next one is rejected with rate_limited and retry_after, and audited.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(26);

select tests.create_user(u) from unnest(array['rl_busy', 'rl_calm', 'rl_bad']) u;
create temp table ids (workspace_id uuid, canvas_id uuid);
create temp table attempts (who text, n int, res jsonb);
grant all on ids, attempts to authenticated;
select tests.authenticate_as('rl_busy');
insert into ids (workspace_id) select (api.create_workspace('Rate limits') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Busy') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('rl_calm'), 'editor');
select api.set_workspace_member((select workspace_id from ids), tests.user_id('rl_bad'), 'editor');
select tests.clear_authentication();

select is(internal.setting_int('mutations_per_minute'), 100, 'the default limit is 100 mutations per minute');
-- The counters' key leads with the user and the window: a hit's lookups (the shards of the current
-- window, bucket = any(...)) land on that window's few rows however many windows of the user the
-- cleanup still keeps (2 days); keyed (user_id, bucket, window_start) they walked all of them.
select col_is_pk('app', 'rate_limits', array['user_id', 'window_start', 'bucket'],
                 'app.rate_limits is keyed (user_id, window_start, bucket)');

-- 100 mutations in one minute pass, the 101st is refused
select tests.authenticate_as('rl_busy');
insert into attempts
select 'busy', i, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'rl-' || i, null, '{"type":"text"}')
from generate_series(1, 101) i;
select tests.clear_authentication();
select is((select count(*) from attempts where who = 'busy' and n <= 100 and res ->> 'status' = 'success'), 100::bigint,
          '100 mutations within a minute all succeed');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from attempts where who = 'busy' and n = 101),
          'failed rate_limited', 'the 101st returns failed / rate_limited');
select ok((select (res #>> '{error,retry_after}')::int between 1 and 60 from attempts where who = 'busy' and n = 101),
          'with retry_after: the seconds until the window resets');
select is((select (res #>> '{error,limit}')::int from attempts where who = 'busy' and n = 101), 100, 'and the limit it hit');
select is((select count(*) from app.blocks where canvas_id = (select canvas_id from ids)), 100::bigint, 'the refused mutation wrote nothing');

-- rejections are audited and logged
select is((select status || ' ' || (details #>> '{error,code}') from app.system_audit where client_op_id = 'rl-101'),
          'failed rate_limited', 'the refusal is audited');
select is((select user_id from app.system_audit where client_op_id = 'rl-101'), tests.user_id('rl_busy'), 'against the user who was refused');
select is((select status || ' ' || error_code from app.block_operations where client_op_id = 'rl-101'), 'failed rate_limited',
          'and logged as a failed operation');

-- the limit is per user
select tests.authenticate_as('rl_calm');
insert into attempts select 'calm', 1, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'calm-1', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res ->> 'status' from attempts where who = 'calm'), 'success', 'another user on the same canvas is not limited');

-- the limit is configuration: raising it lets the busy user go on, up to the new limit
update app.settings set value = '103' where key = 'mutations_per_minute';
select tests.authenticate_as('rl_busy');
insert into attempts
select 'raised', i, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'rl-raised-' || i, null, '{"type":"text"}')
from generate_series(1, 4) i;
select tests.clear_authentication();
select is((select array_agg(res ->> 'status' order by n) from attempts where who = 'raised'),
          array['success', 'success', 'success', 'failed'], 'with mutations_per_minute = 103, three more pass and the next is refused');
select is((select (res #>> '{error,limit}')::int from attempts where who = 'raised' and n = 4), 103, 'the refusal names the new limit');

-- lowering it takes effect at once
update app.settings set value = '1' where key = 'mutations_per_minute';
select tests.authenticate_as('rl_calm');
insert into attempts select 'lowered', 1, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'calm-2', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res #>> '{error,code}' from attempts where who = 'lowered'), 'rate_limited',
          'with mutations_per_minute = 1, a user who already mutated this minute is refused');

-- a retry of an already-applied op is answered from the log, even when limited
select tests.authenticate_as('rl_calm');
insert into attempts select 'retry', 1, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'calm-1', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res from attempts where who = 'retry'), (select res from attempts where who = 'calm') || '{"duplicate": true}',
          'a retried client_op_id still gets its original result (marked duplicate)');

-- rejected attempts count too: invalid ones cannot be sent without limit
update app.settings set value = '5' where key = 'mutations_per_minute';
select tests.authenticate_as('rl_bad');
insert into attempts
select 'bad', i, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'bad-' || i, null, '{"type":"Not A Type"}')
from generate_series(1, 5) i;
insert into attempts select 'bad', 6, api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'bad-6', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select array_agg(res #>> '{error,code}' order by n) from attempts where who = 'bad'),
          array['invalid_input', 'invalid_input', 'invalid_input', 'invalid_input', 'invalid_input', 'rate_limited'],
          'after 5 invalid attempts under a limit of 5, a valid mutation is refused');

-- Each uncommitted hit holds a shard row of its own (16 per user and window), and a hit counts
-- every other one in flight as if it had committed, so the bound is the limit, exactly, however
-- the hits are spread over transactions: several hits in one transaction (a canvas lane's group,
-- a batch) take one shard each, in order, and only a transaction holding all 16 counts on in one
-- of them (docs/limits.md). Hits in flight in other transactions: tests/integration/rate-limit-shards-attack.test.ts.
select internal.hit_sharded_limit('00000000-0000-4000-8000-0000000000a1', 'pgtap', 100, 60) from generate_series(1, 3);
select is((select array_agg(bucket || '=' || hits order by bucket) from app.rate_limits
           where user_id = '00000000-0000-4000-8000-0000000000a1' and holder = pg_current_xact_id()),
          array['pgtap=1', 'pgtap#1=1', 'pgtap#2=1'], 'three hits in one transaction: three shards, one hit each, held by it');
select internal.hit_sharded_limit('00000000-0000-4000-8000-0000000000a1', 'pgtap', 100, 60) from generate_series(1, 15);
select is((select array_agg(bucket || '=' || hits order by bucket) filter (where bucket not like 'pgtap#%')
           from app.rate_limits where user_id = '00000000-0000-4000-8000-0000000000a1'), array['pgtap=1', 'pgtap+=2'],
          'eighteen hits: a hit on each of the sixteen shards, the last two in the overflow row');
select is((select count(*) from app.rate_limits where user_id = '00000000-0000-4000-8000-0000000000a1' and bucket like 'pgtap#%'), 15::bigint,
          'the other fifteen shards');
select is(internal.window_limit_hits('00000000-0000-4000-8000-0000000000a1', 'pgtap', 60), 18::bigint,
          'and, holding all sixteen, it counts on exactly: 18 (its own updates are not counted again as unseen ones)');
-- the total reads the subject's rows of the window as one range of the key and picks the shards
-- out by name: its other buckets in that window (an endpoint's, one whose name only begins alike)
-- are not counted
insert into app.rate_limits (user_id, bucket, window_start, hits)
select '00000000-0000-4000-8000-0000000000a1', b, internal.rate_window_start(60), 1000
from unnest(array['endpoint:H2', 'pgtap2', 'pgtap#16', 'pgtap#1x', 'pgta']) b;
select is(internal.window_limit_hits('00000000-0000-4000-8000-0000000000a1', 'pgtap', 60), 18::bigint,
          'the subject''s other buckets of the window (endpoint:H2, pgtap2, pgtap#16, pgtap#1x, pgta: 1,000 hits each) are not counted');
select ok(not internal.xmax_unseen_update('3'::xid, '0'::xid) and
          not internal.xmax_unseen_update('3'::xid, (pg_current_xact_id()::text::bigint % 4294967296)::text::xid),
          'no update is unseen on a row nobody updates, nor on one its own transaction updates');
select ok(not internal.xmax_unseen_update('4'::xid, '4'::xid),
          'nor on a version whose xmax is its creator''s (a lock it kept on the version it made)');
select ok(internal.xmax_unseen_update('3'::xid, ((pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 5) % 4294967296)::text::xid),
          'an xmax assigned after the snapshot is an update it does not see (pg_xact_status is not asked about it)');

select internal.hit_sharded_limit('00000000-0000-4000-8000-0000000000a2', 'pgtap', 5, 60) from generate_series(1, 5);
select throws_ok($$select internal.hit_sharded_limit('00000000-0000-4000-8000-0000000000a2', 'pgtap', 5, 60)$$, 'PX429', null,
                 'hits on several shards of one transaction still add up: the 6th under a limit of 5 is refused');
-- a batch says how many hits it will count before its first, so its first shard leaves room above
update app.settings set value = '100' where key = 'mutations_per_minute';
select tests.authenticate_as('rl_calm');
select api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-1', 'patch', '{"type":"text"}'::jsonb),
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-2', 'patch', '{"type":"text"}'::jsonb),
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-3', 'patch', '{"type":"text"}'::jsonb)));
select tests.clear_authentication();
select matches(current_setting('potentia.several_hits', true), tests.user_id('rl_calm')::text || ':2',
               'a batch of 3 announces 2 hits more than one (setting potentia.several_hits)');

select * from finish();
rollback;
