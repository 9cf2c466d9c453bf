-- Rate limit: each user may make app.settings 'mutations_per_minute' block mutations per minute
-- (100 by default). The next one is rejected with rate_limited and retry_after, and audited.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(41);

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
-- The endpoint counters' key leads with the user and the window: a hit's lookup lands on that
-- window's rows however many windows of the user the cleanup still keeps (2 days).
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

-- Each hit takes a slot of its window, 1 .. the limit: a row of app.rate_limit_slots keyed
-- (window_key, slot), window_key = internal.rate_limit_window_key(user_id, bucket, window_start), so
-- the key is the bound (docs/limits.md). A hit never waits: a slot another transaction holds is skipped
-- (tests/integration/rate-limit-slots-attack.test.ts).
select col_is_pk('app', 'rate_limit_slots', array['window_key', 'slot'],
                 'app.rate_limit_slots is keyed (window_key, slot): at most the limit of rows per window');
select is((select array_agg(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a1', 'pgtap', 5, 60)) from generate_series(1, 3)),
          array[1, 2, 3], 'three hits in one transaction take slots 1, 2 and 3');
-- take_limit_slot writes, reads and locks by internal.rate_limit_window_key, as every writer must
-- (the direct inserts below use it: a key of take_limit_slot's own would not see their slots)
select is((select count(*) from pg_locks l join app.rate_limit_slots s
             on ((l.classid::bigint << 32) | l.objid::bigint) = (s.window_key # s.slot)
           where l.locktype = 'advisory' and l.pid = pg_backend_pid() and l.objsubid = 1
             and s.window_key = internal.rate_limit_window_key(s.user_id, s.bucket, s.window_start)
             and s.user_id = '00000000-0000-4000-8000-0000000000a1' and s.bucket = 'pgtap'), 3::bigint,
          'each hit''s row is keyed internal.rate_limit_window_key(user, bucket, window), and it holds the advisory lock window_key # slot');
select is((select array_agg(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a1', 'pgtap', 5, 60)) from generate_series(1, 2)),
          array[4, 5], 'two more, under a limit of 5: slots 4 and 5');
select throws_ok($$select internal.take_limit_slot('00000000-0000-4000-8000-0000000000a1', 'pgtap', 5, 60)$$, 'PX429', null,
                 'the 6th under a limit of 5 is refused (rate_limited)');
select is((select count(*) from app.rate_limit_slots where user_id = '00000000-0000-4000-8000-0000000000a1' and bucket = 'pgtap'), 5::bigint,
          'and counts nothing: 5 slots');
-- a subtransaction rolled back gives its slot back
savepoint one_more;
select internal.take_limit_slot('00000000-0000-4000-8000-0000000000a1', 'pgtap', 6, 60);
rollback to savepoint one_more;
select is(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a1', 'pgtap', 6, 60), 6,
          'a slot whose savepoint rolled back is free again: the next hit takes 6');
-- full above the highest slot: a slot below left free (by a hit that rolled back) is taken, then refusal
insert into app.rate_limit_slots (window_key, user_id, window_start, bucket, slot)
select internal.rate_limit_window_key('00000000-0000-4000-8000-0000000000a2', 'pgtap', internal.rate_window_start(60)),
       '00000000-0000-4000-8000-0000000000a2', internal.rate_window_start(60), 'pgtap', s from unnest(array[1, 2, 4, 5]) s;
select is(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a2', 'pgtap', 5, 60), 3,
          'slots 1, 2, 4, 5 taken under a limit of 5: the hit takes the free slot 3');
select throws_ok($$select internal.take_limit_slot('00000000-0000-4000-8000-0000000000a2', 'pgtap', 5, 60)$$, 'PX429', null,
                 'and the next is refused');
select is(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a2', 'pgtap', 7, 60), 6,
          'a limit raised to 7 allows two more: 6');
select throws_ok($$select internal.take_limit_slot('00000000-0000-4000-8000-0000000000a2', 'pgtap', 3, 60)$$, 'PX429', null,
                 'a limit lowered to 3, under 6 taken: refused at once');
-- other buckets, other windows, other subjects hold slots of their own
insert into app.rate_limit_slots (window_key, user_id, window_start, bucket, slot)
select internal.rate_limit_window_key(u, b, w), u, w, b, s
from (select '00000000-0000-4000-8000-0000000000a3'::uuid as u) u, unnest(array['pgtap2', 'endpoint:H2']) b, generate_series(1, 5) s,
     unnest(array[internal.rate_window_start(60), internal.rate_window_start(60) - interval '1 minute']) w
union all select internal.rate_limit_window_key('00000000-0000-4000-8000-0000000000a3', 'pgtap', internal.rate_window_start(60) - interval '1 minute'),
                 '00000000-0000-4000-8000-0000000000a3'::uuid, internal.rate_window_start(60) - interval '1 minute', 'pgtap', s from generate_series(1, 5) s;
select is(internal.take_limit_slot('00000000-0000-4000-8000-0000000000a3', 'pgtap', 5, 60), 1,
          'full windows of the subject''s other buckets and of its previous minute leave this one''s slots free: 1');

-- a row inserted without window_key (as the take_limit_slot of the release before the key's
-- inserted it) fails: no trigger keys it since the release after the key's migration
-- (tests/integration/rate-limit-slot-key-drop-migration.test.ts)
select hasnt_trigger('app', 'rate_limit_slots', 'rate_limit_slot_key', 'app.rate_limit_slots has no trigger rate_limit_slot_key');
select hasnt_function('internal', 'rate_limit_slot_key', 'internal.rate_limit_slot_key is dropped');
select throws_ok($$insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
                   values ('00000000-0000-4000-8000-0000000000a4', internal.rate_window_start(60), 'pgtap', 1)$$, '23502', null,
                 'a row inserted without window_key fails (not null): it counts nothing');

select throws_ok($$select internal.take_limit_slot('00000000-0000-4000-8000-0000000000a3', 'pgtap', null, 60)$$, 'PX500',
                 'the limit of pgtap is not configured: set it in app.settings (mutations_per_minute for mutations)',
                 'a limit that is not configured (null) is an error that says so, not a window without bound');

-- the window's start: date_bin since 2026-12-06 (two calls where the numeric form was eight, set
-- up in every mutation: docs/performance.md, fiftieth session), the instant the numeric form gave
select is((select array_agg(p order by p) filter (where internal.rate_window_start(p) <> to_timestamp(floor(extract(epoch from now()) / p) * p))
           from unnest(array[1, 7, 60, 61, 3600, 86400, 604800]) p), null,
          'internal.rate_window_start(p) is to_timestamp(floor(extract(epoch from now()) / p) * p), for windows of a second to a week');
select is((select count(*) from generate_series(timestamptz '2026-01-01 00:00:00.000001+00', timestamptz '2026-01-02', interval '17 minutes 0.123457 seconds') t,
             unnest(array[1, 60, 3600]) p
           where date_bin(make_interval(secs => p), t, timestamptz 'epoch') <> to_timestamp(floor(extract(epoch from t) / p) * p)), 0::bigint,
          'and both forms agree at instants of every second and microsecond of a day');

-- a batch counts a hit per op, each on a slot of its own
update app.settings set value = '100' where key = 'mutations_per_minute';
create temp table before_batch as select count(*) as n from app.rate_limit_slots
  where user_id = tests.user_id('rl_calm') and bucket = 'mutations' and window_start = internal.rate_window_start(60);
select tests.authenticate_as('rl_calm');
select api.upsert_blocks_atomic((select canvas_id from ids), jsonb_build_array(
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-1', 'patch', '{"type":"text"}'::jsonb),
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-2', 'patch', '{"type":"text"}'::jsonb),
  jsonb_build_object('action', 'create', 'client_op_id', 'batch-3', 'patch', '{"type":"text"}'::jsonb)));
select tests.clear_authentication();
select is((select count(*) from app.rate_limit_slots where user_id = tests.user_id('rl_calm') and bucket = 'mutations'
             and window_start = internal.rate_window_start(60)) - (select n from before_batch), 3::bigint,
          'a batch of 3 takes 3 slots');

-- the gaps below the highest slot, in slot order, once every slot above it is taken: slots 1, 3
-- and 7 of an hour's window (7 from when the limit was higher), now a limit of 5: 2, then 4, then 5
-- (below the limit, above the gap before 7), then refused
insert into app.rate_limit_slots (window_key, user_id, window_start, bucket, slot)
select internal.rate_limit_window_key('77777777-7777-4777-8777-777777777777', 'mutations', internal.rate_window_start(3600)),
       '77777777-7777-4777-8777-777777777777', internal.rate_window_start(3600), 'mutations', s from unnest(array[1, 3, 7]) s;
select is(internal.take_limit_slot('77777777-7777-4777-8777-777777777777', 'mutations', 5, 3600), 2, 'a full top: the first gap, 2');
select is(internal.take_limit_slot('77777777-7777-4777-8777-777777777777', 'mutations', 5, 3600), 4, 'then the next gap, 4');
select is(internal.take_limit_slot('77777777-7777-4777-8777-777777777777', 'mutations', 5, 3600), 5, 'then 5: free, under the limit, though 7 is above it');
select throws_ok($$select internal.take_limit_slot('77777777-7777-4777-8777-777777777777', 'mutations', 5, 3600)$$, 'PX429', null,
                 'then no free slot up to the limit: rate_limited');
delete from app.rate_limit_slots where user_id = '77777777-7777-4777-8777-777777777777' and slot in (1, 2);
select is(internal.take_limit_slot('77777777-7777-4777-8777-777777777777', 'mutations', 5, 3600), 1, 'slot 1 free again: taken first');

-- the slots are a minute's counts, kept without WAL (docs/limits.md: a crash starts the minute over)
select is((select relpersistence from pg_class where oid = 'app.rate_limit_slots'::regclass), 'u'::"char",
          'app.rate_limit_slots is UNLOGGED: a hit writes no WAL');

select * from finish();
rollback;
