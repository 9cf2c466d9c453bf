-- Audit: every mutation decision — applied or rejected — leaves one system_audit row saying who,
-- what, when and from where (request.headers and request.jwt.claims, as PostgREST sets them),
-- with the response time and the rows it affected.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(35);

select tests.create_user(u) from unnest(array['audit_owner', 'audit_viewer', 'audit_stranger']) u;
create temp table ids (workspace_id uuid, canvas_id uuid);
create temp table r (name text primary key, res jsonb);
grant all on ids, r to authenticated;
select tests.authenticate_as('audit_owner');
insert into ids (workspace_id) select (api.create_workspace('Audit') ->> 'workspace_id')::uuid;
update ids set canvas_id = (api.create_canvas(workspace_id, 'Audited') ->> 'canvas_id')::uuid;
select api.set_workspace_member((select workspace_id from ids), tests.user_id('audit_viewer'), 'viewer');

-- a request arriving through a proxy chain, with a session in the token
set local request.headers = '{"x-forwarded-for":"203.0.113.9, 10.0.0.7","user-agent":"pgtap/1.0","x-request-id":"req-42"}';
select tests.authenticate_as('audit_owner', '{"session_id":"sess-7"}');
insert into r select 'create', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'create',
                                                       'audit-create', null, '{"type":"text"}');
insert into r select 'child', api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a2', 'create',
                                                      'audit-child', null, '{"type":"text","parent_id":"00000000-0000-4000-8000-0000000000a1"}');
select tests.clear_authentication();

create temp table row_create as select * from app.system_audit where client_op_id = 'audit-create';
select is((select count(*) from row_create), 1::bigint, 'an applied mutation leaves exactly one audit row');
select is((select user_id from row_create), tests.user_id('audit_owner'), 'who: the user from the token');
select is((select action || ' ' || status || ' ' || entity_type || ' ' || entity_id from row_create),
          'block.create success block 00000000-0000-4000-8000-0000000000a1', 'what: action, status and entity');
select is((select server_seq from row_create), (select (res ->> 'server_seq')::bigint from r where name = 'create'),
          'which: the server_seq the mutation was given');
select is((select ip from row_create), '203.0.113.9'::inet, 'ip: the first x-forwarded-for entry (the client, not the proxy)');
select is((select user_agent from row_create), 'pgtap/1.0', 'user_agent: from the user-agent header');
select is((select session_id from row_create), 'sess-7', 'session_id: from the session_id claim');
select is((select request_id from row_create), 'req-42', 'request_id: from the x-request-id header');
select cmp_ok((select response_time_ms from row_create), '>', 0::numeric, 'response_time_ms: measured, above zero');
select is((select affected_rows from row_create), 1, 'affected_rows: one block created');
select is((select details ->> 'canvas_id' from row_create), (select canvas_id::text from ids), 'details name the canvas');

-- a delete that takes a child with it affected two rows
select tests.authenticate_as('audit_owner', '{"session_id":"sess-7"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a1', 'delete', 'audit-delete', 1, '{}');
select tests.clear_authentication();
select is((select affected_rows from app.system_audit where client_op_id = 'audit-delete'), 2, 'affected_rows: a delete counts its subtree');

-- an applied operation's audit row bounds what the caller sends as internal.write_audit does
-- (record_applied_op writes that row itself): user agent and session cut to 200 characters, the
-- request id to the 128 the request context keeps
select set_config('request.headers', jsonb_build_object('user-agent', repeat('u', 300), 'x-request-id', repeat('r', 300))::text, true);
select tests.authenticate_as('audit_owner', jsonb_build_object('session_id', repeat('s', 300)));
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a4', 'create', 'audit-long', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select array[char_length(user_agent), char_length(session_id), char_length(request_id)] from app.system_audit
           where client_op_id = 'audit-long'), array[200, 200, 128], 'an applied operation: user agent and session cut to 200 characters, request id to 128');

-- rejected attempts are audited too, with the same context
set local request.headers = '{"x-forwarded-for":"198.51.100.20","user-agent":"viewer-agent"}';
select tests.authenticate_as('audit_viewer', '{"session_id":"sess-v"}');
select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-viewer', null, '{"type":"text"}');
select tests.authenticate_as('audit_stranger');
select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-stranger', null, '{"type":"text"}');
select tests.authenticate_as('audit_owner');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000a3', 'create', 'audit-invalid', null,
                               '{"type":"Not A Type"}');
select tests.clear_authentication();
select is((select jsonb_build_object('status', status, 'code', details #>> '{error,code}', 'user', user_id, 'affected', affected_rows)
           from app.system_audit where client_op_id = 'audit-viewer'),
          jsonb_build_object('status', 'failed', 'code', 'forbidden', 'user', tests.user_id('audit_viewer'), 'affected', 0),
          'a forbidden attempt is audited: failed, forbidden, by whom, nothing affected');
select is((select host(ip) || ' ' || user_agent || ' ' || session_id from app.system_audit where client_op_id = 'audit-viewer'),
          '198.51.100.20 viewer-agent sess-v', 'with its ip, user agent and session');
select is((select status || ' ' || (details #>> '{error,code}') from app.system_audit where client_op_id = 'audit-stranger'),
          'failed not_found', 'a non-member''s attempt is audited');
select is((select status || ' ' || (details #>> '{error,code}') || ' ' || (details #>> '{error,field}')
           from app.system_audit where client_op_id = 'audit-invalid'),
          'failed invalid_input patch.type', 'an invalid request is audited with the field at fault');
select cmp_ok((select response_time_ms from app.system_audit where client_op_id = 'audit-invalid'), '>=', 0::numeric,
              'rejections record a response time too');

-- a conflict is audited as a conflict
select tests.authenticate_as('audit_owner');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000b1', 'create', 'audit-b1', null, '{"type":"text"}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000b1', 'update', 'audit-b1-v2', 1, '{"content":{"a":1}}');
select api.upsert_block_atomic((select canvas_id from ids), '00000000-0000-4000-8000-0000000000b1', 'update', 'audit-b1-stale', 1, '{"content":{"a":2}}');
select tests.clear_authentication();
select is((select status from app.system_audit where client_op_id = 'audit-b1-stale'), 'conflict', 'a conflict is audited as conflict');

-- behind a proxy that sends x-real-ip instead of x-forwarded-for
set local request.headers = '{"x-real-ip":"192.0.2.5"}';
select tests.authenticate_as('audit_owner');
select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-real-ip', null, '{"type":"text"}');
select tests.clear_authentication();
select is((select host(ip) || ' ' || coalesce(user_agent, '-') from app.system_audit where client_op_id = 'audit-real-ip'), '192.0.2.5 -',
          'ip falls back to x-real-ip; a missing user agent stays empty');

-- the mutation RPC casts the client's address plainly in its first attempt (inside its own
-- subtransaction, no internal.try_inet): an address that is not one fails that cast, and the
-- operation runs once more with the tolerant reading, which skips it (docs/performance.md,
-- forty-fifth session); the answer and the audit row are those of a request without it
set local request.headers = '{"x-forwarded-for":"unknown, 10.0.0.7","x-real-ip":"192.0.2.6","user-agent":"ua-unknown-xff"}';
select tests.authenticate_as('audit_owner');
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-bad-xff', null, '{"type":"text"}') ->> 'status'),
          'success', 'an x-forwarded-for that is not an address: the operation applies');
select tests.clear_authentication();
select is((select host(ip) || ' ' || user_agent || ' ' || status from app.system_audit where client_op_id = 'audit-bad-xff'),
          '192.0.2.6 ua-unknown-xff success', 'and its audit row has the x-real-ip address, as request_context reads it');
set local request.headers = '{"x-forwarded-for":"","x-real-ip":"not an address"}';
select tests.authenticate_as('audit_owner');
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-empty-xff', null, '{"type":"text"}') ->> 'status'),
          'success', 'an empty x-forwarded-for and an x-real-ip that is not an address: the operation applies');
select tests.clear_authentication();
select is((select coalesce(host(ip), '-') || ' ' || status from app.system_audit where client_op_id = 'audit-empty-xff'),
          coalesce(host(inet_client_addr()), '-') || ' success', 'and its audit row has the connection''s address');

-- a setting that is not JSON reads as absent, as internal.request_context reads it: the mutation
-- RPC casts the settings inside its own subtransaction and, when the cast fails, runs the
-- operation once more with the tolerant reading
set local request.headers = '{"x-real-ip": "192.0.2.9", not json';
select tests.authenticate_as('audit_owner');
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-bad-headers', null, '{"type":"text"}') ->> 'status'),
          'success', 'headers that are not JSON: the operation applies, as with no headers');
select tests.clear_authentication();
select is((select coalesce(host(ip), '-') || ' ' || status from app.system_audit where client_op_id = 'audit-bad-headers'),
          coalesce(host(inet_client_addr()), '-') || ' success', 'and its audit row has the connection''s address, none from them');
set local request.headers = '{}';
set local role authenticated;
set local request.jwt.claims = '{"sub": "not json';
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-bad-claims', null, '{"type":"text"}') #>> '{error,code}'),
          'unauthorized', 'claims that are not JSON: refused as a call with no user');
reset role;
select is((select count(*)::int from app.block_operations where client_op_id = 'audit-bad-claims'), 0,
          'and nothing of it reaches an operation log');

-- JSON that jsonb cannot hold (a \u0000 escape: a NUL character in a header or a claim) fails
-- with another code (22P05) than text that is not JSON, and reads as absent the same way
set local request.headers = '{"x-real-ip": "192.0.2.10", "user-agent": "nul\u0000"}';
select tests.authenticate_as('audit_owner');
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-nul-headers', null, '{"type":"text"}') ->> 'status'),
          'success', 'headers with a \u0000 escape: the operation applies, as with no headers');
select tests.clear_authentication();
select is(internal.request_context() ->> 'user_agent', null, 'and request_context reads them as absent too, without an error');
set local request.headers = '{}';
set local role authenticated;
set local request.jwt.claims = '{"sub": "x\u0000"}';
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-nul-claims', null, '{"type":"text"}') #>> '{error,code}'),
          'unauthorized', 'claims with a \u0000 escape: refused as a call with no user');
reset role;

-- the claims' sub is cast to a UUID inside that subtransaction too: a sub that is not one fails
-- the cast and reads as no user, as request_context reads it; any form uuid_in reads is the user
set local role authenticated;
set local request.jwt.claims = '{"sub": "not-a-uuid", "role": "authenticated"}';
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-bad-sub', null, '{"type":"text"}') #>> '{error,code}'),
          'unauthorized', 'a sub that is not a UUID: refused as a call with no user');
reset role;
select is((select count(*)::int from app.block_operations where client_op_id = 'audit-bad-sub'), 0,
          'and nothing of it reaches an operation log');
select tests.authenticate_as('audit_owner', jsonb_build_object('sub', upper(tests.user_id('audit_owner')::text)));
select is((select api.upsert_block_atomic((select canvas_id from ids), null, 'create', 'audit-upper-sub', null, '{"type":"text"}') ->> 'status'),
          'success', 'a sub in capitals is the same user');
select tests.clear_authentication();
select is((select actor_id from app.block_operations where client_op_id = 'audit-upper-sub'), tests.user_id('audit_owner'),
          'and the operation is logged as theirs');

select * from finish();
rollback;
