-- H5 refresh-token rotation and its reuse interval (internal.rotate_refresh_token), GoTrue's rule:
-- a used token that is the parent of its family's active token gets that token back (the sealed
-- value), at any age and any interval, and nothing is stored or revoked; any other used token gets
-- a new token of the family (another child of it) within the interval, and after the interval is
-- reuse and revokes the family. Hashes here are plain labels:
-- the function stores whatever hash the HTTP layer computed. Time passing is a used_at set back.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(37);

select tests.create_user('rt_user');
select tests.create_user('rt_other');
create temp table results (step text primary key, res jsonb);
-- this file's tokens only (the table may hold other tests' rows)
create temp view mine as select * from app.refresh_tokens where user_id in (tests.user_id('rt_user'), tests.user_id('rt_other'));
grant all on results to service_role;

-- a sign-in: a family of one token, and an unrelated family of the same user
select internal.issue_refresh_token(tests.user_id('rt_user'), 'a0', 3600);
select internal.issue_refresh_token(tests.user_id('rt_user'), 'b0', 3600);
select internal.issue_refresh_token(tests.user_id('rt_other'), 'c0', 3600);

set local role service_role;
insert into results values ('rotate a0', internal.rotate_refresh_token('a0', 'a1', 'seal-a1', 3600, 10));
reset role;

select is((select res - 'email' from results where step = 'rotate a0'), jsonb_build_object('user_id', tests.user_id('rt_user')),
          'a live token rotates: the user, no error, no sealed token');
select ok((select used_at is not null and sealed_token is null from mine where token_hash = 'a0'), 'a0 is used');
select is((select parent_hash || ' ' || sealed_token from mine where token_hash = 'a1'), 'a0 seal-a1',
          'a1 is stored as its child, with its seal');

-- the same token again at once (a double submit, a retry): the same child, nothing new, nothing revoked
set local role service_role;
insert into results values ('retry a0', internal.rotate_refresh_token('a0', 'a2', 'seal-a2', 3600, 10));
reset role;
select is((select res ->> 'sealed_token' from results where step = 'retry a0'), 'seal-a1',
          'a retry within the interval gets the live child''s seal');
select is((select (res ->> 'user_id')::uuid from results where step = 'retry a0'), tests.user_id('rt_user'), 'for the same user');
select ok((select not (res ? 'error') from results where step = 'retry a0'), 'with no error');
select is((select count(*) from mine where token_hash = 'a2'), 0::bigint, 'the retry stores no new token');
select is((select count(*) from mine where revoked_at is not null), 0::bigint, 'and revokes nothing');

-- 9 s later (interval 10 s): still a retry
update app.refresh_tokens set used_at = now() - interval '9 seconds' where token_hash = 'a0';
set local role service_role;
insert into results values ('retry a0 at 9 s', internal.rotate_refresh_token('a0', 'a3', 'seal-a3', 3600, 10));
reset role;
select is((select res ->> 'sealed_token' from results where step = 'retry a0 at 9 s'), 'seal-a1', 'at 9 s of 10 it is still a retry');

-- 11 s later, a1 still unused: a late retry (supabase-js resends a refresh with backoff for up to
-- ~30 s after a lost response), answered a1 again as GoTrue answers the parent of a session's
-- active token; until 2026-12-06 it was reuse and signed the user out
update app.refresh_tokens set used_at = now() - interval '11 seconds' where token_hash = 'a0';
set local role service_role;
insert into results values ('late retry a0', internal.rotate_refresh_token('a0', 'a4', 'seal-a4', 3600, 10));
reset role;
select is((select res ->> 'sealed_token' from results where step = 'late retry a0'), 'seal-a1',
          'at 11 s of 10, with its child a1 never used, it is still a retry: a1''s seal');
select is((select count(*) from mine where revoked_at is not null or token_hash = 'a4'), 0::bigint,
          'and it stores and revokes nothing');

-- a1 used, then a0 at 11 s: reuse, the whole family is revoked; the other family and the other user are untouched
set local role service_role;
insert into results values ('rotate a1', internal.rotate_refresh_token('a1', 'a6', 'seal-a6', 3600, 10));
insert into results values ('reuse a0', internal.rotate_refresh_token('a0', 'a4', 'seal-a4', 3600, 10));
reset role;
select ok((select not (res ? 'error') from results where step = 'rotate a1'), 'a1 rotates to a6');
select is((select res from results where step = 'reuse a0'), '{"error": "reused"}'::jsonb, 'at 11 s of 10, its child used, it is reuse');
select is((select array_agg(token_hash order by token_hash) from mine where revoked_at is not null),
          array['a0', 'a1', 'a6'], 'the family (a0, a1 and its live child a6) is revoked, nothing else');
select is((select count(*) from mine where sealed_token is not null and token_hash in ('a0', 'a1', 'a6')), 0::bigint,
          'seals of the revoked family are cleared');
select is((select count(*) from app.system_audit where action = 'auth.refresh_reuse' and user_id = tests.user_id('rt_user')), 1::bigint,
          'the reuse is audited');
set local role service_role;
insert into results values ('a1 after revocation', internal.rotate_refresh_token('a1', 'a5', 'seal-a5', 3600, 10));
reset role;
select is((select res from results where step = 'a1 after revocation'), '{"error": "invalid"}'::jsonb,
          'the revoked child no longer rotates');

-- a stale retry: b0 -> b1 -> b2 within the interval, then b0 again: its child b1 is used, so it is
-- not the parent of the active token b2; within the interval it gets a new token of the family, b3,
-- another child of b0 (GoTrue's swap of a revoked token within the reuse interval). Until
-- 2026-12-06 it was refused ('superseded', 401) where GoTrue answers 200
set local role service_role;
insert into results values ('rotate b0', internal.rotate_refresh_token('b0', 'b1', 'seal-b1', 3600, 10));
insert into results values ('rotate b1', internal.rotate_refresh_token('b1', 'b2', 'seal-b2', 3600, 10));
insert into results values ('stale b0', internal.rotate_refresh_token('b0', 'b3', 'seal-b3', 3600, 10));
reset role;
select is((select res - 'email' from results where step = 'stale b0'), jsonb_build_object('user_id', tests.user_id('rt_user'), 'swap', true),
          'a retry within the interval whose child was rotated too rotates again: the user, no error, no sealed token, '
          'swap (no live token rotated: H5 does not count it)');
select is((select count(*) from mine where token_hash in ('b0', 'b1', 'b2', 'b3') and revoked_at is not null), 0::bigint,
          'nothing of that family is revoked');
select ok((select used_at is null and revoked_at is null from mine where token_hash = 'b2'), 'b2 stays live');
select is((select sealed_token from mine where token_hash = 'b1'), null, 'a rotated token''s own seal is cleared');
select is((select parent_hash || ' ' || sealed_token || ' ' || (family_id = (select family_id from mine where token_hash = 'b0'))::text
           from mine where token_hash = 'b3'), 'b0 seal-b3 true', 'b3 is stored as another child of b0, in its family');

-- b0 resent again within the interval: its swapped token b3 is still live, so it gets b3 back
-- (its seal), nothing stored. Until 2026-12-07 each resend was another swap: two stale tokens
-- resent in turn minted a live token per request, which H5 does not count
set local role service_role;
insert into results values ('stale b0 again', internal.rotate_refresh_token('b0', 'b5', 'seal-b5', 3600, 10));
reset role;
select is((select res ->> 'sealed_token' from results where step = 'stale b0 again'), 'seal-b3',
          'a resend within the interval of a token whose swapped token is still live gets that token again');
select is((select count(*) from mine where token_hash = 'b5'), 0::bigint, '... and stores nothing');

-- interval 0 (no reuse window): the parent of the active token still gets it back, as in GoTrue
-- (until 2026-12-06 any resend was reuse here); any other resend is reuse at once
set local role service_role;
insert into results values ('rotate c0', internal.rotate_refresh_token('c0', 'c1', 'seal-c1', 3600, 0));
insert into results values ('retry c0', internal.rotate_refresh_token('c0', 'c2', 'seal-c2', 3600, 0));
insert into results values ('rotate c1', internal.rotate_refresh_token('c1', 'c3', 'seal-c3', 3600, 0));
insert into results values ('reuse c0', internal.rotate_refresh_token('c0', 'c4', 'seal-c4', 3600, 0));
reset role;
select is((select res ->> 'sealed_token' from results where step = 'retry c0'), 'seal-c1',
          'with interval 0 a resend while its child is the active token gets that child');
select is((select res from results where step = 'reuse c0'), '{"error": "reused"}'::jsonb,
          'with interval 0 a resend once its child was used is reuse at once');
select is((select count(*) from mine where token_hash in ('c0', 'c1', 'c2', 'c3', 'c4') and revoked_at is null), 0::bigint,
          'and revokes that family');

-- a user that no longer exists: no session is started and no token rotates, with an answer, not a
-- foreign-key error (23503) that the HTTP layer would pass on as Postgres's constraint message
select tests.create_user('rt_gone');
select internal.issue_refresh_token(tests.user_id('rt_gone'), 'g0', 3600);
create temp table gone as select tests.user_id('rt_gone') as user_id;
grant select on gone to service_role;
delete from auth.users where id = (select user_id from gone);
set local role service_role;
select lives_ok($$ insert into results values ('issue for gone', to_jsonb(internal.issue_refresh_token((select user_id from gone), 'g1', 3600))) $$,
                'issuing a token to a user that no longer exists raises no foreign-key error');
reset role;
select ok((select res is null from results where step = 'issue for gone'), '... it returns null');
select is((select count(*) from app.refresh_tokens where token_hash = 'g1'), 0::bigint, '... and stores nothing');
select is(internal.rotate_refresh_token('g0', 'g2', 'seal-g2', 3600, 10), '{"error": "invalid"}'::jsonb,
          'a deleted user''s token no longer rotates: invalid (their tokens went with them)');
-- the state a deletion committed while a rotation waited leaves that rotation in: the token was
-- read, its user is gone (the cascade to the tokens is not run here, to leave it in place)
select tests.create_user('rt_deleted_mid_rotation');
select internal.issue_refresh_token(tests.user_id('rt_deleted_mid_rotation'), 'm0', 3600);
set local session_replication_role = replica;
delete from auth.users where email = 'rt_deleted_mid_rotation@test.local';
set local session_replication_role = origin;
set local role service_role;
select lives_ok($$ insert into results values ('rotate for gone', internal.rotate_refresh_token('m0', 'm1', 'seal-m1', 3600, 10)) $$,
                'rotating a token whose user is gone raises no foreign-key error');
reset role;
select is((select res from results where step = 'rotate for gone'), '{"error": "invalid"}'::jsonb,
          '... it is invalid');
select is((select count(*) from app.refresh_tokens where token_hash = 'm1'), 0::bigint, '... and stores no child');

-- a token may have more than one child (a family branches on a resend within the interval)
select is((select count(*) from mine where parent_hash = 'b0'), 2::bigint, 'b0 has two children, b1 and b3');

-- only the HTTP layer (service_role) may rotate
select tests.authenticate_as('rt_user');
select throws_ok($$ select internal.rotate_refresh_token('b2', 'x', 'y', 3600, 10) $$, '42501', null,
                 'authenticated may not call rotate_refresh_token');
select tests.clear_authentication();
set local role anon;
select throws_ok($$ select internal.rotate_refresh_token('b2', 'x', 'y', 3600, 10) $$, '42501', null,
                 'anon may not call rotate_refresh_token');
reset role;

select * from finish();
rollback;
