-- Permissions' building blocks, as every mutation and RLS policy uses them: which roles write
-- (internal.can_write_role), what a token's scope claim allows (internal.scope_allows), and the
-- claims' user id read tolerantly (internal.try_uuid), and the request context made from the
-- claims, headers and user id (internal.context_of, internal.request_context). can_write_role,
-- scope_allows, context_of and canvas_roles are SQL functions the planner inlines into the
-- caller's expression or query (sql/auth/permissions.sql, sql/auth/context.sql): the last cases
-- check that they still are, since a change that stops it costs every mutation a function call.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(50);

-- can_write_role: owner, admin and editor write; a viewer and no role do not
select is(internal.can_write_role('owner'), true, 'an owner writes');
select is(internal.can_write_role('admin'), true, 'an admin writes');
select is(internal.can_write_role('editor'), true, 'an editor writes');
select is(internal.can_write_role('viewer'), false, 'a viewer does not write');
select is(internal.can_write_role(null), false, 'no role does not write');

-- scope_allows(scope, canvas, write)
create temp table ids as select '11111111-1111-4111-8111-111111111111'::uuid as c, '22222222-2222-4222-8222-222222222222'::uuid as other;
select is(internal.scope_allows(null, (select c from ids), true), true, 'no scope claim: the user''s full rights');
select is(internal.scope_allows('null', (select c from ids), true), true, 'a JSON null scope: the user''s full rights');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:write', (select c from ids))), (select c from ids), true), true,
          'array, canvas:<id>:write: writes that canvas');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:write', (select c from ids))), (select c from ids), false), true,
          'array, canvas:<id>:write: reads it too');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:write', (select c from ids))), (select other from ids), false), false,
          'array, canvas:<id>:write: nothing on another canvas');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:read', (select c from ids))), (select c from ids), true), false,
          'array, canvas:<id>:read: does not write');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:read', (select c from ids))), (select c from ids), false), true,
          'array, canvas:<id>:read: reads');
select is(internal.scope_allows('["canvas:*:write"]', (select other from ids), true), true, 'array, canvas:*:write: writes any canvas');
select is(internal.scope_allows('["canvas:*:read"]', (select other from ids), true), false, 'array, canvas:*:read: writes none');
select is(internal.scope_allows('["canvas:*:read"]', (select other from ids), false), true, 'array, canvas:*:read: reads any');
select is(internal.scope_allows(jsonb_build_array(5, true, null, '{"canvas:*:write": 1}'::jsonb, '["canvas:*:write"]'::jsonb), (select c from ids), true), false,
          'array: only string elements are entries (not a number, a boolean, null, an object''s key or a nested array)');
select is(internal.scope_allows(jsonb_build_array(5, format('canvas:%s:write', (select c from ids))), (select c from ids), true), true,
          'array: a string entry counts beside elements that are not strings');
select is(internal.scope_allows(jsonb_build_array(format('canvas:%s:writes', (select c from ids)), format('xcanvas:%s:write', (select c from ids))), (select c from ids), true), false,
          'array: an entry matches whole, not as a prefix or suffix');
select is(internal.scope_allows('[]', (select c from ids), false), false, 'an empty array allows nothing');
select is(internal.scope_allows(to_jsonb(format(E'canvas:%s:read \t\n canvas:%s:write', (select c from ids), (select other from ids))), (select other from ids), true), true,
          'string: words separated by any whitespace; the second word writes its canvas');
select is(internal.scope_allows(to_jsonb(format(E'canvas:%s:read \t\n canvas:%s:write', (select c from ids), (select other from ids))), (select c from ids), true), false,
          'string: the first word (read) does not write');
select is(internal.scope_allows(to_jsonb(format('canvas:%s:read', (select c from ids))), (select c from ids), false), true, 'string: a read word reads');
select is(internal.scope_allows('"canvas:*:write"', null, true), true, 'no canvas (a workspace-level write): canvas:*:write allows it');
select is(internal.scope_allows(to_jsonb(format('canvas:%s:write', (select c from ids))), null, true), false,
          'no canvas (a workspace-level write): a token scoped to one canvas may not');
select is(internal.scope_allows('{"canvas:*:write": true}', (select c from ids), true), false, 'an object scope allows nothing');
-- a uuid has no case: an entry naming the canvas in upper case names it (the sub and HTTP paths are read so too)
select is(internal.scope_allows('["canvas:ABCDEF12-3456-1789-CDEF-ABCDEF123456:read"]', 'abcdef12-3456-1789-cdef-abcdef123456', false), true,
  'array: canvas:<ID IN UPPER CASE>:read reads');
select is(internal.scope_allows('"x canvas:AbCdEf12-3456-1789-cDeF-ABCDEF123456:WRITE"', 'abcdef12-3456-1789-cdef-abcdef123456', true), true,
  'string: a write word in mixed case writes');
select is(internal.scope_allows('["canvas:ABCDEF12-3456-1789-CDEF-ABCDEF123456:read"]', (select other from ids), false), false,
  'array: another canvas in upper case reads not this one');
select is(internal.scope_allows('"canvas:abcdef1234561789cdefabcdef123456:read"', 'abcdef12-3456-1789-cdef-abcdef123456', false), false,
  'string: an id spelt without dashes names no canvas');
select is(internal.scope_allows('42', (select c from ids), false), false, 'a number scope allows nothing');

-- try_uuid: the canonical form, other forms uuid_in reads, and anything else as null (never an error)
select is(internal.try_uuid('11111111-1111-4111-8111-11111111111a'), '11111111-1111-4111-8111-11111111111a'::uuid, 'canonical, lower case');
select is(internal.try_uuid('11111111-1111-4111-8111-11111111111A'), '11111111-1111-4111-8111-11111111111a'::uuid, 'canonical, upper case');
select is(internal.try_uuid('{11111111-1111-4111-8111-111111111111}'), '11111111-1111-4111-8111-111111111111'::uuid, 'in braces (uuid_in reads it)');
select is(internal.try_uuid('11111111111141118111111111111111'), '11111111-1111-4111-8111-111111111111'::uuid, 'without hyphens (uuid_in reads it)');
select is(internal.try_uuid('11111111-1111-4111-8111-11111111111g'), null, '36 characters with one not a hex digit: null');
select is(internal.try_uuid('1111111-11111-4111-8111-111111111111'), null, 'hyphens out of place, 36 characters: as uuid_in reads it (null)');
select is(internal.try_uuid('not-a-uuid'), null, 'not a uuid: null');
select is(internal.try_uuid(''), null, 'empty: null');
select is(internal.try_uuid(null), null, 'null: null');

-- context_of(claims, headers, user id)
select is(internal.context_of('{"sub": "ignored here", "role": "authenticated", "session_id": "s1", "scope": ["canvas:*:read"]}',
                              '{"x-forwarded-for": "203.0.113.7, 10.0.0.1", "x-real-ip": "198.51.100.1", "user-agent": "ua", "x-request-id": "r1"}',
                              '11111111-1111-4111-8111-11111111111a'),
          jsonb_build_object('user_id', '11111111-1111-4111-8111-11111111111a', 'role', 'authenticated', 'ip', '203.0.113.7',
                             'user_agent', 'ua', 'session_id', 's1', 'request_id', 'r1', 'scope', '["canvas:*:read"]'::jsonb),
          'context: the user as given, the first x-forwarded-for address, the scope as given');
select is(internal.context_of('{}', '{"x-forwarded-for": "nonsense", "x-real-ip": "198.51.100.1"}', null) ->> 'ip', '198.51.100.1',
          'context: an x-forwarded-for that is not an address falls back to x-real-ip');
select is(internal.context_of(null, null, null) ->> 'role', current_user::text, 'context: no claims, the role is the database user');
select is(internal.context_of('{}', jsonb_build_object('user-agent', repeat('u', 600)), null) ->> 'user_agent', repeat('u', 512),
          'context: the user agent cut to 512 characters');

-- request_context(): the user from the claims' sub, read tolerantly
set local request.jwt.claims = '{"sub": "11111111-1111-4111-8111-11111111111A"}';
select is(internal.request_context() ->> 'user_id', '11111111-1111-4111-8111-11111111111a', 'request context: the user from sub');
set local request.jwt.claims = '{"sub": "not-a-uuid"}';
select is(internal.request_context() -> 'user_id', 'null', 'request context: a sub that is not a uuid is no user');
set local request.jwt.claims = '["sub"]';
select is(internal.request_context() -> 'user_id', 'null', 'request context: claims that are not an object have no user');
reset request.jwt.claims;

-- inlined: in a plan both are part of the expression, no call of them is left
-- a generic plan: the arguments stay parameters (a custom plan would fold the calls to constants either way)
set local plan_cache_mode = force_generic_plan;
prepare probe(app.member_role, jsonb, uuid) as select internal.can_write_role($1), internal.scope_allows($2 -> 'scope', $3, true);
prepare context_probe(jsonb, jsonb, uuid) as select internal.context_of($1, $2, $3);
select unalike(tests.plan_of($$execute probe('editor', '{}', null)$$, true), '%can_write_role%', 'can_write_role is inlined (no call of it in the plan)');
select unalike(tests.plan_of($$execute probe('editor', '{}', null)$$, true), '%scope_allows%', 'scope_allows is inlined (no call of it in the plan)');
select unalike(tests.plan_of($$execute context_probe('{}', '{}', null)$$, true), '%context_of%', 'context_of is inlined (no call of it in the plan)');
-- canvas_roles (canvas_role's rule as rows) is inlined into the query that reads it: the mutation
-- RPC reads the role and its settings in one statement with it
prepare roles_probe(uuid, uuid) as select r.role from internal.canvas_roles($1, $2) r;
select unalike(tests.plan_of($$execute roles_probe(null, null)$$, true), '%canvas_roles%', 'canvas_roles is inlined (a join in the plan, no function scan)');

select * from finish();
rollback;
