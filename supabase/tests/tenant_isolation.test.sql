-- Tenant isolation of the mutation log (Potentia issue 12).
--
-- A canvas's operation log (app.block_operations, readable by the canvas's members) is the
-- tenant's own: it holds the attempts of callers with a role on that canvas, applied or not.
-- An attempt by anyone else — a signed-in user who is not a member, a caller without a user, a
-- write to a missing or soft-deleted canvas — is recorded only in the system audit
-- (app.system_audit): who, what, when, from where and the error code, every caller-supplied text
-- cut to 200 characters (client_op_id to 128), never the payload. No API role reads the system
-- audit. Rejected attempts of every kind count toward the caller's rate limit.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(44);

-- Tenant A: owner, editor and viewer of canvas A (and canvas A_gone, soft-deleted below).
-- The intruder owns workspace B with canvas B.
create temp table ids (name text primary key, id uuid);
create temp table r (name text primary key, res jsonb);
insert into ids select u, tests.create_user(u) from unnest(array['ti_owner', 'ti_editor', 'ti_viewer', 'ti_intruder']) u;
grant all on ids, r to public;
create function pg_temp.id(p_name text) returns uuid language sql stable as $$ select id from ids where name = p_name $$;
-- rows of canvas A's log and audit rows with this client_op_id, as postgres (no RLS)
create function pg_temp.log_rows(p_canvas text, p_client_op_id text) returns bigint language sql stable as $$
  select count(*) from app.block_operations where canvas_id = pg_temp.id(p_canvas) and client_op_id = p_client_op_id $$;
create function pg_temp.audit_row(p_client_op_id text) returns app.system_audit language sql stable as $$
  select * from app.system_audit where client_op_id = p_client_op_id $$;

select tests.authenticate_as('ti_owner');
insert into ids select 'ws_a', (api.create_workspace('Tenant A') ->> 'workspace_id')::uuid;
insert into ids select 'a', (api.create_canvas(pg_temp.id('ws_a'), 'Canvas A') ->> 'canvas_id')::uuid;
insert into ids select 'a_gone', (api.create_canvas(pg_temp.id('ws_a'), 'Canvas A, deleted') ->> 'canvas_id')::uuid;
insert into r select 'member-editor', api.set_workspace_member(pg_temp.id('ws_a'), tests.user_id('ti_editor'), 'editor');
insert into r select 'member-viewer', api.set_workspace_member(pg_temp.id('ws_a'), tests.user_id('ti_viewer'), 'viewer');
insert into ids select 'block_a', (api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'ti-setup', null,
                                                          '{"type":"text"}') ->> 'block_id')::uuid;
do $$ begin perform api.delete_canvas(pg_temp.id('a_gone')); end $$;
select tests.authenticate_as('ti_intruder');
insert into ids select 'ws_b', (api.create_workspace('Tenant B') ->> 'workspace_id')::uuid;
insert into ids select 'b', (api.create_canvas(pg_temp.id('ws_b'), 'Canvas B') ->> 'canvas_id')::uuid;
insert into r select 'own', api.upsert_block_atomic(pg_temp.id('b'), null, 'create', 'ti-own', null, '{"type":"text"}');
select tests.clear_authentication();
create temp table log_before as select count(*) as n from app.block_operations where canvas_id = pg_temp.id('a');
grant all on log_before to public;

-- ---------------------------------------------------------------------------------------------
-- An outsider's 200 KB create on canvas A: refused as not_found, audited once, never logged in A
-- ---------------------------------------------------------------------------------------------
set local request.headers = '{"x-forwarded-for":"203.0.113.66","user-agent":"intruder/1.0","x-request-id":"req-inject"}';
select tests.authenticate_as('ti_intruder');
insert into r select 'inject', api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'inject-1', null,
  jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))));
select tests.clear_authentication();

select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'inject'), 'failed not_found',
          'the outsider is told not_found');
select is(pg_temp.log_rows('a', 'inject-1'), 0::bigint, 'no row of the attempt in canvas A''s operation log');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('a')), (select n from log_before),
          'canvas A''s log did not grow at all');
select is((select count(*) from app.system_audit where client_op_id = 'inject-1'), 1::bigint, 'exactly one audit row records it');
select is((select jsonb_build_object('user_id', user_id, 'action', action, 'status', status, 'entity_type', entity_type,
                                     'canvas_id', details ->> 'canvas_id', 'caller_role', details ->> 'caller_role',
                                     'code', details #>> '{error,code}', 'affected_rows', affected_rows)
           from pg_temp.audit_row('inject-1')),
          jsonb_build_object('user_id', tests.user_id('ti_intruder'), 'action', 'block.create', 'status', 'failed',
                             'entity_type', 'block', 'canvas_id', pg_temp.id('a'), 'caller_role', 'none',
                             'code', 'not_found', 'affected_rows', 0),
          'who (the intruder), what (block.create on canvas A), the error code, no role, nothing affected');
select is((select host(ip) || ' ' || user_agent || ' ' || request_id from pg_temp.audit_row('inject-1')),
          '203.0.113.66 intruder/1.0 req-inject', 'from where: ip, user agent and request id of the request');
select ok((select created_at is not null and response_time_ms >= 0 from pg_temp.audit_row('inject-1')), 'when, and how long it took');
select is((select strpos(a::text, 'xxxxxxxxxx') from pg_temp.audit_row('inject-1') a), 0, 'the audit row holds none of the payload');
select cmp_ok((select octet_length(a::text) from pg_temp.audit_row('inject-1') a), '<', 1024, 'the audit row stays under 1 KB');

-- canvas A's viewer reads nothing of it (RLS), and cannot read the system audit at all
select tests.authenticate_as('ti_viewer');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('a') and actor_id = tests.user_id('ti_intruder')),
          0::bigint, 'A''s viewer sees no operation of the intruder');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('a')), (select n from log_before),
          'A''s viewer sees exactly A''s own log');
select throws_ok('select count(*) from app.system_audit', '42501', null, 'A''s viewer cannot read the system audit');
select tests.authenticate_as('ti_owner');
select throws_ok('select count(*) from app.system_audit', '42501', null,
                 'nor can A''s workspace owner (attempts against their canvas are the operators'' business)');
select tests.authenticate_as('ti_intruder');
select throws_ok('select count(*) from app.system_audit', '42501', null, 'nor the intruder their own attempts');
select is((select count(*) from app.block_operations where client_op_id = 'inject-1'), 0::bigint,
          'and the intruder finds no trace of it in any log they can read');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Every text of an outsider's audit row is bounded
-- ---------------------------------------------------------------------------------------------
do $$ begin
  perform set_config('request.headers', jsonb_build_object('user-agent', repeat('u', 5000), 'x-forwarded-for', '203.0.113.67')::text, true);
end $$;
select tests.authenticate_as('ti_intruder', jsonb_build_object('session_id', repeat('s', 5000)));
insert into r select 'long', api.upsert_block_atomic(pg_temp.id('a'), null, repeat('a', 5000), repeat('c', 300), null,
                                                     jsonb_build_object('type', repeat('t', 204800)));
select tests.clear_authentication();
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') from r where name = 'long'), 'failed invalid_input',
          'an outsider''s malformed attempt (5000-character action) is refused');
select is((select count(*) from app.block_operations where canvas_id = pg_temp.id('a')), (select n from log_before),
          'and is not logged in canvas A');
select is((select jsonb_build_object('action', char_length(action), 'client_op_id', char_length(client_op_id),
                                     'user_agent', char_length(user_agent), 'session_id', char_length(session_id))
           from app.system_audit where client_op_id = repeat('c', 128)),
          '{"action": 200, "client_op_id": 128, "user_agent": 200, "session_id": 200}'::jsonb,
          'its audit row cuts action, user agent and session to 200 characters and client_op_id to 128');

-- ---------------------------------------------------------------------------------------------
-- The same for a batch, a retry of an applied client_op_id, no user, and a deleted canvas
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('ti_intruder');
insert into r select 'batch', api.upsert_blocks_atomic(pg_temp.id('a'), jsonb_build_array(
  jsonb_build_object('action', 'create', 'client_op_id', 'inject-batch',
                     'patch', jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))))));
-- ti-own was applied on canvas B: sent again against A, it names another operation, and is
-- refused as such, naming neither canvas: the refusal is logged nowhere in A (not a member),
-- and where it is logged, the message must not carry one tenant's ids into another's log
insert into r select 'dup', api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'ti-own', null,
  jsonb_build_object('type', 'text', 'content', jsonb_build_object('t', repeat('x', 204800))));
select tests.clear_authentication();
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res ->> 'failed_index') from r where name = 'batch'),
          'failed not_found 0', 'an outsider''s batch on A is refused as not_found at op 0');
select is(pg_temp.log_rows('a', 'inject-batch'), 0::bigint, '... not logged in A');
select is((select status || ' ' || (details #>> '{error,code}') || ' ' || strpos(a::text, 'xxxxxxxxxx')
           from app.system_audit a where client_op_id = 'inject-batch'),
          'failed not_found 0', '... audited once, without the payload');
select is((select jsonb_build_object('status', res ->> 'status', 'code', res #>> '{error,code}', 'field', res #>> '{error,field}',
                                     'names B', strpos(res::text, pg_temp.id('b')::text) > 0
                                                or strpos(res::text, (select res ->> 'block_id' from r where name = 'own')) > 0,
                                     'names A', strpos(res::text, pg_temp.id('a')::text) > 0) from r where name = 'dup'),
          '{"status":"failed","code":"invalid_input","field":"client_op_id","names B":false,"names A":false}',
          'an outsider''s op on A under the client_op_id of their own op on B is refused on client_op_id, naming neither canvas');
select is(pg_temp.log_rows('a', 'ti-own'), 0::bigint, '... and leaves no duplicate row in A''s log');

set local role authenticated;
set local request.jwt.claims to '';
insert into r select 'anonymous', api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'inject-anon', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res #>> '{error,code}' from r where name = 'anonymous'), 'unauthorized', 'a call without a user is unauthorized');
select is(pg_temp.log_rows('a', 'inject-anon'), 0::bigint, '... not logged in A');
select is((select count(*) from app.system_audit where client_op_id = 'inject-anon' and user_id is null), 1::bigint, '... audited');

select tests.authenticate_as('ti_owner');
insert into r select 'gone', api.upsert_block_atomic(pg_temp.id('a_gone'), null, 'create', 'inject-gone', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res #>> '{error,code}' from r where name = 'gone'), 'not_found', 'a write to a soft-deleted canvas is not_found');
select is(pg_temp.log_rows('a_gone', 'inject-gone'), 0::bigint, '... and not logged in that canvas''s log, even for its former owner');

-- ---------------------------------------------------------------------------------------------
-- Members' rejected attempts stay in their canvas's log, with their patch
-- ---------------------------------------------------------------------------------------------
select tests.authenticate_as('ti_viewer');
insert into r select 'viewer-try', api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'ti-viewer-try', null, '{"type":"text","content":{"t":"mine"}}');
select tests.authenticate_as('ti_editor');
insert into r select 'editor-v2', api.upsert_block_atomic(pg_temp.id('a'), pg_temp.id('block_a'), 'update', 'ti-editor-v2', 1, '{"content":{"v":2}}');
insert into r select 'editor-stale', api.upsert_block_atomic(pg_temp.id('a'), pg_temp.id('block_a'), 'update', 'ti-editor-stale', 1, '{"content":{"v":3}}');
insert into r select 'editor-batch', api.upsert_blocks_atomic(pg_temp.id('a'), '[{"action":"create","client_op_id":"ti-editor-batch","patch":{"type":"Not a type"}}]');
select tests.authenticate_as('ti_viewer');
select is((select status || ' ' || error_code || ' ' || (patch #>> '{content,t}') from app.block_operations where client_op_id = 'ti-viewer-try'),
          'failed forbidden mine', 'a viewer''s forbidden attempt is logged in A with its patch, and A''s viewer reads it');
select is((select status from app.block_operations where client_op_id = 'ti-editor-stale'), 'conflict',
          'an editor''s conflict is logged in A');
select is((select status || ' ' || error_code from app.block_operations where client_op_id = 'ti-editor-batch'), 'failed invalid_input',
          'an editor''s failed batch is logged in A');
select tests.clear_authentication();

-- ---------------------------------------------------------------------------------------------
-- Rejected attempts, outsiders' included, count toward the caller's rate limit
-- ---------------------------------------------------------------------------------------------
-- the limit is set to allow exactly one more attempt this minute (now() is fixed in a transaction)
update app.settings set value = (select to_jsonb(count(*) + 1) from app.rate_limit_slots
                                 where user_id = tests.user_id('ti_intruder') and bucket = 'mutations'
                                   and window_start = internal.rate_window_start(60))
where key = 'mutations_per_minute';
select tests.authenticate_as('ti_intruder');
insert into r select 'seventh', api.upsert_block_atomic(pg_temp.id('a'), null, 'create', 'inject-7', null, '{"type":"text"}');
insert into r select 'eighth', api.upsert_block_atomic(pg_temp.id('b'), null, 'create', 'ti-own-8', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select res #>> '{error,code}' from r where name = 'seventh'), 'not_found', 'the last allowed attempt, on A, is refused as not_found');
select is((select res #>> '{error,code}' from r where name = 'eighth'), 'rate_limited',
          'the next one, on the intruder''s own canvas, is over the limit: the refused attempt on A counted');

-- ---------------------------------------------------------------------------------------------
-- base_version is an int4: beyond its range the input is refused as invalid_input, not internal
-- ---------------------------------------------------------------------------------------------
update app.settings set value = '100' where key = 'mutations_per_minute';
select tests.authenticate_as('ti_editor');
select throws_ok(format($$select api.upsert_block_atomic(%L, %L, 'update', 'ti-big', '3000000000', '{"content":{}}')$$,
                        pg_temp.id('a'), pg_temp.id('block_a')),
                 '22003', null, 'a direct call with base_version 3000000000 fails on the int4 cast (SQLSTATE 22003) ...');
select tests.clear_authentication();
select is(internal.error_object('22003', 'value "3000000000" is out of range for type integer', null, null) ->> 'code', 'invalid_input',
          '... which the error mapping (SQL and HTTP alike) calls invalid_input');
select is(internal.error_object('40P01', 'deadlock detected', null, null) - 'message', '{"code": "unavailable", "retry_after": 1}',
          'a deadlock victim (40P01) rolled back inside an api function is unavailable, retry_after 1 (503 and Retry-After over HTTP, as when raised outside one): nothing was done, a resend can succeed');
select is(internal.error_object('40001', 'could not serialize access', null, null) - 'message', '{"code": "unavailable", "retry_after": 1}',
          'a serialization failure (40001) likewise');
select is(internal.error_object('55P03', 'canceling statement due to lock timeout', null, null),
          '{"code": "timeout", "message": "the database did not finish in time: retry shortly"}',
          'a lock or statement timeout caught inside an api function is timeout in the HTTP layer''s words, not Postgres''s');
select is(internal.error_object('57014', 'canceling statement due to statement timeout', null, null),
          '{"code": "timeout", "message": "the database did not finish in time: retry shortly"}',
          '... a statement timeout alike');
select is(internal.error_object('25006', 'cannot execute INSERT in a read-only transaction', null, null) - 'message', '{"code": "unavailable", "retry_after": 1}',
          'a write refused by a read-only database (25006: a failover, a standby, a provider''s read-only mode) is unavailable, retry_after 1, as over HTTP');
select tests.authenticate_as('ti_editor');
insert into r select 'big_batch', api.upsert_blocks_atomic(pg_temp.id('a'),
  jsonb_build_array(jsonb_build_object('action', 'update', 'block_id', pg_temp.id('block_a'), 'client_op_id', 'ti-big-batch',
                                       'base_version', 3000000000, 'patch', jsonb_build_object('content', '{}'::jsonb))));
insert into r select 'frac_batch', api.upsert_blocks_atomic(pg_temp.id('a'),
  jsonb_build_array(jsonb_build_object('action', 'update', 'block_id', pg_temp.id('block_a'), 'client_op_id', 'ti-frac-batch',
                                       'base_version', 1.5, 'patch', jsonb_build_object('content', '{}'::jsonb))));
select tests.clear_authentication();
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'big_batch'),
          'failed invalid_input base_version', 'a batch op with base_version 3000000000: invalid_input naming base_version');
select is((select res ->> 'status' || ' ' || (res #>> '{error,code}') || ' ' || (res #>> '{error,field}') from r where name = 'frac_batch'),
          'failed invalid_input base_version', 'a batch op with base_version 1.5: invalid_input naming base_version');

-- ---------------------------------------------------------------------------------------------
-- Rows leaked before this rule are removed by migration 20261121000610: outsiders' (not_found on
-- canvas_id) and userless attempts go; members' rejected attempts and applied operations stay
-- ---------------------------------------------------------------------------------------------
insert into app.block_operations (client_op_id, actor_id, canvas_id, action, status, patch, result, error_code)
values ('legacy-outsider', tests.user_id('ti_intruder'), pg_temp.id('a'), 'create', 'failed', jsonb_build_object('t', repeat('x', 1000)),
        '{"status":"failed","error":{"code":"not_found","field":"canvas_id"}}', 'not_found'),
       ('legacy-anon', null, pg_temp.id('a'), 'create', 'failed', '{}', '{"status":"failed","error":{"code":"unauthorized"}}', 'unauthorized'),
       ('legacy-member', tests.user_id('ti_editor'), pg_temp.id('a'), 'update', 'failed', '{}',
        '{"status":"failed","error":{"code":"not_found","field":"block_id"}}', 'not_found');
create temp table log_kept as select op_id from app.block_operations
  where canvas_id = pg_temp.id('a') and client_op_id not in ('legacy-outsider', 'legacy-anon');
\ir ../migrations/20261121000610_outsider_oplog_rows.sql
select is((select count(*) from app.block_operations where client_op_id in ('legacy-outsider', 'legacy-anon')), 0::bigint,
          'the migration removes the logged attempts of an outsider and of a caller without a user');
select set_eq($$select op_id from app.block_operations where canvas_id = pg_temp.id('a')$$, $$select op_id from log_kept$$,
              '... and keeps every other row of the log (members'' failures, applied operations)');

select * from finish();
rollback;
