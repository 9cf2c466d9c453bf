-- Local email + password accounts (sql/auth/password.sql): bcrypt hashes, one answer for every
-- wrong credential, GoTrue's refusals, sessions as refresh-token families, sign-in attempts limited
-- per address and per client IP, and nothing of it callable or readable by anon or authenticated.
-- Refresh-token hashes here are plain labels (the HTTP layer stores sha256 hex).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(53);

create temp table results (step text primary key, res jsonb);
grant all on results to service_role;

-- sign-up (autoconfirm, as locally by default) -------------------------------------------------
set local role service_role;
insert into results values
  ('sign up', internal.password_sign_up('PWAuth-Alice@Test.Local', 'correct horse', '{"name": "Alice"}', true, '192.0.2.1', 'pw-a0', 3600)),
  ('sign up again', internal.password_sign_up('pwauth-alice@test.local', 'other password', null, true, '192.0.2.1', 'pw-a9', 3600)),
  ('weak', internal.password_sign_up('pwauth-weak@test.local', '12345', null, true, '192.0.2.1', 'pw-w0', 3600)),
  ('too long', internal.password_sign_up('pwauth-long@test.local', repeat('é', 37), null, true, '192.0.2.1', 'pw-l0', 3600)),
  ('bad address', internal.password_sign_up('not an address', 'correct horse', null, true, '192.0.2.1', 'pw-b0', 3600)),
  ('bad data', internal.password_sign_up('pwauth-data@test.local', 'correct horse', '[1]', true, '192.0.2.1', 'pw-d0', 3600)),
  ('unconfirmed', internal.password_sign_up('pwauth-bob@test.local', 'correct horse', null, false, '192.0.2.1', 'pw-b1', 3600));
reset role;

select is((select res #>> '{user,email}' from results where step = 'sign up'), 'pwauth-alice@test.local', 'the address is stored lower-case');
select ok((select encrypted_password ~ '^\$2[ab]\$10\$[./A-Za-z0-9]{53}$' from auth.users where email = 'pwauth-alice@test.local'),
          'the password is stored as a bcrypt hash ($2a$, cost 10)');
select ok((select extensions.crypt('correct horse', encrypted_password) = encrypted_password from auth.users where email = 'pwauth-alice@test.local'),
          'the hash is of the password');
select ok((select not (res::text ~ '(encrypted_password|\$2[ab]\$|correct horse)') from results where step = 'sign up'),
          'the answer holds neither the hash nor the password');
select is((select res #> '{user,user_metadata}' from results where step = 'sign up'), '{"name": "Alice"}'::jsonb, 'data becomes user_metadata');
select is((select res #> '{user,app_metadata}' from results where step = 'sign up'), '{"provider": "email", "providers": ["email"]}'::jsonb,
          'app_metadata names the email provider');
select ok((select res #>> '{user,email_confirmed_at}' is not null and res #>> '{user,last_sign_in_at}' is not null from results where step = 'sign up'),
          'autoconfirm: confirmed and signed in');
select is((select (res ->> 'session_id')::uuid from results where step = 'sign up'),
          (select family_id from app.refresh_tokens where token_hash = 'pw-a0'), 'the session is the family of the refresh token it started');
select is((select res from results where step = 'sign up again'),
          '{"error": "user_already_exists", "message": "User already registered"}'::jsonb, 'a second sign-up of the address is refused');
select is((select res from results where step = 'weak'),
          '{"error": "weak_password", "message": "Password should be at least 6 characters.", "reasons": ["length"]}'::jsonb,
          'a short password is weak_password');
select is((select res ->> 'error' from results where step = 'too long'), 'validation_failed', 'over 72 bytes (bcrypt''s limit) is refused');
select is((select res ->> 'error' from results where step = 'bad address'), 'validation_failed', 'a malformed address is refused');
select is((select res ->> 'error' from results where step = 'bad data'), 'validation_failed', 'data must be an object');
select is((select count(*) from auth.users where email in ('pwauth-weak@test.local', 'pwauth-long@test.local', 'not an address', 'pwauth-data@test.local')),
          0::bigint, 'refused sign-ups create no user');
select ok((select res ? 'user' and not res ? 'session_id' and res #>> '{user,email_confirmed_at}' is null from results where step = 'unconfirmed'),
          'without autoconfirm: the user, unconfirmed, and no session');

-- sign-in -------------------------------------------------------------------------------------
select tests.create_user('pwauth-sqluser'); -- made by SQL: no password
set local role service_role;
insert into results values
  ('sign in', internal.password_sign_in('PWAUTH-alice@test.local', 'correct horse', '192.0.2.2', 'pw-a1', 3600)),
  ('wrong password', internal.password_sign_in('pwauth-alice@test.local', 'Correct horse', '192.0.2.2', 'pw-x1', 3600)),
  ('unknown address', internal.password_sign_in('pwauth-nobody@test.local', 'correct horse', '192.0.2.2', 'pw-x2', 3600)),
  ('no password set', internal.password_sign_in('pwauth-sqluser@test.local', 'correct horse', '192.0.2.2', 'pw-x3', 3600)),
  ('unconfirmed right', internal.password_sign_in('pwauth-bob@test.local', 'correct horse', '192.0.2.2', 'pw-b2', 3600)),
  ('unconfirmed wrong', internal.password_sign_in('pwauth-bob@test.local', 'wrong horse', '192.0.2.2', 'pw-b3', 3600)),
  ('check only', internal.password_sign_in('pwauth-alice@test.local', 'correct horse', '192.0.2.2', null, 3600));
reset role;
select ok((select res ? 'session_id' and res #>> '{user,email}' = 'pwauth-alice@test.local' from results where step = 'sign in'),
          'the right password signs in (the address in any case)');
select isnt((select family_id from app.refresh_tokens where token_hash = 'pw-a1'), (select family_id from app.refresh_tokens where token_hash = 'pw-a0'),
            'each sign-in is a session of its own');
select is((select array_agg(distinct res::text) from results where step in ('wrong password', 'unknown address', 'no password set')),
          array['{"error": "invalid_credentials", "message": "Invalid login credentials"}'],
          'a wrong password, an unknown address and a user without a password get one and the same answer');
select is((select count(*) from app.refresh_tokens where token_hash in ('pw-x1', 'pw-x2', 'pw-x3', 'pw-b2', 'pw-b3')), 0::bigint,
          'refused sign-ins start no session');
select is((select res ->> 'error' from results where step = 'unconfirmed right'), 'email_not_confirmed', 'an unconfirmed address may not sign in');
select is((select res ->> 'error' from results where step = 'unconfirmed wrong'), 'invalid_credentials', '... which only the right password learns');
select ok((select res ? 'user' and not res ? 'session_id' from results where step = 'check only'), 'without a refresh hash: a password check only');

-- sessions: the user check, refresh lookup, sign-out scopes, password change ----------------------
set local role service_role;
insert into results values
  ('session user', internal.auth_session_user(tests.user_id('pwauth-alice'), (select family_id from app.refresh_tokens where token_hash = 'pw-a0'))),
  ('refresh session', internal.auth_refresh_session('pw-a1')),
  ('update data', internal.auth_update_user(tests.user_id('pwauth-alice'), null, '{"theme": "dark", "name": null}', null)),
  ('same password', internal.auth_update_user(tests.user_id('pwauth-alice'), null, null, 'correct horse'));
reset role;
select is((select res #>> '{user,id}' from results where step = 'session user'), tests.user_id('pwauth-alice')::text, 'a live session: the user');
select is((select (res ->> 'session_id')::uuid from results where step = 'refresh session'),
          (select family_id from app.refresh_tokens where token_hash = 'pw-a1'), 'a refresh token''s session is its family');
select is((select res #> '{user,user_metadata}' from results where step = 'update data'), '{"theme": "dark"}'::jsonb,
          'metadata updates merge by key, a null removes the key');
select is((select res ->> 'error' from results where step = 'same password'), 'same_password', 'a new password must differ');

set local role service_role;
insert into results values
  ('sign out local', to_jsonb(internal.auth_sign_out(tests.user_id('pwauth-alice'), (select family_id from app.refresh_tokens where token_hash = 'pw-a0'), 'local')));
insert into results values
  ('after local sign-out', internal.auth_session_user(tests.user_id('pwauth-alice'), (select family_id from app.refresh_tokens where token_hash = 'pw-a0')));
reset role;
select is((select res from results where step = 'sign out local'), '1'::jsonb, 'signing out one session revokes its live token');
select is((select res ->> 'error' from results where step = 'after local sign-out'), 'session_not_found', 'a signed-out session is gone');
select ok((select revoked_at is null from app.refresh_tokens where token_hash = 'pw-a1'), 'scope local leaves the other session');

set local role service_role;
insert into results values
  ('new password', internal.auth_update_user(tests.user_id('pwauth-alice'), null, null, 'battery staple'));
reset role;
select ok((select revoked_at is not null from app.refresh_tokens where token_hash = 'pw-a1'),
          'a new password (changed outside any session) ends every session');
select ok((select extensions.crypt('battery staple', encrypted_password) = encrypted_password from auth.users where email = 'pwauth-alice@test.local'),
          'and is the one checked from then on');

-- a signed-in user deleted since (their access token is valid until it expires): nothing to update
select tests.create_user('pwauth-gone');
create temp table gone as select tests.user_id('pwauth-gone') as user_id;
grant select on gone to service_role;
delete from auth.users where id = (select user_id from gone);
set local role service_role;
insert into results values
  ('update gone', internal.auth_update_user((select user_id from gone), null, '{"theme": "dark"}', 'battery staple 2')),
  ('read gone', internal.auth_update_user((select user_id from gone), null, null, null));
reset role;
select is((select array_agg(distinct res ->> 'error') from results where step in ('update gone', 'read gone')), array['user_not_found'],
          'updating (data, password) or reading a user that no longer exists answers user_not_found');
select is((select count(*) from auth.users where id = (select user_id from gone)), 0::bigint, '... and writes no user');

-- limits ---------------------------------------------------------------------------------------
update app.settings set value = '3' where key = 'auth_sign_in_attempts_per_email';
update app.settings set value = '5' where key = 'auth_attempts_per_ip';
set local role service_role;
insert into results select 'carol ' || i, internal.password_sign_in('pwauth-carol@test.local', 'guess ' || i, '192.0.2.' || (10 + i), null, 3600)
from generate_series(1, 3) i;
select throws_ok($$ select internal.password_sign_in('pwauth-carol@test.local', 'guess 4', '192.0.2.20', null, 3600) $$,
                 'PX429', null, 'the 4th sign-in attempt for one address in 5 minutes is rate_limited, from any IP');
insert into results select 'dave ' || i, internal.password_sign_in('pwauth-dave' || i || '@test.local', 'guess', '192.0.2.30', null, 3600)
from generate_series(1, 5) i;
select throws_ok($$ select internal.password_sign_up('pwauth-erin@test.local', 'correct horse', null, true, '192.0.2.30', 'pw-e0', 3600) $$,
                 'PX429', null, 'past auth_attempts_per_ip, a sign-up from that IP is rate_limited too');
select lives_ok($$ select internal.password_sign_in('pwauth-dave1@test.local', 'guess', '192.0.2.31', null, 3600) $$,
                'another IP is not limited');
reset role;
select is((select hits from app.rate_limits where user_id = md5('auth-email:pwauth-carol@test.local')::uuid and bucket = 'auth:sign_in:email'),
          3, 'attempts are counted per address in app.rate_limits (the refused one rolled back)');

-- the development profile (p_relaxed, POTENTIA_PROFILE=development): 100x per 60 s, buckets of its own
update app.settings set value = '1' where key = 'auth_attempts_per_ip';
set local role service_role;
select lives_ok($$ select internal.password_sign_in('pwauth-carol@test.local', 'guess 5', '192.0.2.21', null, 3600, true) $$,
                'relaxed, an address whose standard attempts are spent may try again');
insert into results select 'relaxed ' || i, internal.password_sign_up('', 'x', null, true, '192.0.2.50', null, 3600, true)
from generate_series(1, 100) i;
select throws_ok($$ select internal.password_sign_up('', 'x', null, true, '192.0.2.50', null, 3600, true) $$,
                 'PX429', null, 'relaxed, the 101st attempt from one IP in 60 s is rate_limited (100x auth_attempts_per_ip)');
select lives_ok($$ select internal.password_sign_up('', 'x', null, true, '192.0.2.50', null, 3600) $$,
                'the standard limit of that IP is untouched by the relaxed attempts');
reset role;
select is((select hits from app.rate_limits where user_id = md5('auth-ip:192.0.2.50')::uuid and bucket = 'auth-dev:ip'),
          100, 'relaxed attempts count in their own bucket (auth-dev:ip)');
select ok((select bool_and(extract(epoch from window_start)::bigint % 60 = 0) from app.rate_limits where bucket like 'auth-dev:%'),
          'in 60 s windows');

-- refreshes per client IP (internal.hit_refresh_limit, GoTrue's RATE_LIMIT_TOKEN_REFRESH) -------
update app.settings set value = '3' where key = 'auth_refreshes_per_ip';
set local role service_role;
select internal.hit_refresh_limit('2001:db8:7:1::' || i, true) from generate_series(1, 3) i;
select throws_ok($$ select internal.hit_refresh_limit('2001:db8:7:1:ffff:ffff:ffff:ffff', true) $$,
                 'PX429', null, 'the 4th refresh from one IPv6 /64 in 5 minutes is rate_limited (auth_refreshes_per_ip)');
select lives_ok($$ select internal.hit_refresh_limit('2001:db8:7:1::9', false) $$,
                'a refresh the caller may not refuse is counted without raising');
select lives_ok($$ select internal.hit_refresh_limit('2001:db8:7:2::1', true) $$, 'the next /64 is another client');
select lives_ok($$ select internal.hit_refresh_limit('2001:db8:7:1::1', true, true) $$,
                'relaxed (the development profile), a client whose standard refreshes are spent may refresh');
select lives_ok($$ select internal.hit_refresh_limit('', true) $$, 'no address: not counted');
reset role;
select is((select hits from app.rate_limits where user_id = md5('auth-ip:2001:db8:7:1::/64')::uuid and bucket = 'auth:refresh:ip'),
          4, 'refreshes are counted per /64 in a bucket of their own (the refused one rolled back, the unrefusable one counted)');
select is((select count(*) from app.rate_limits where user_id = md5('auth-ip:2001:db8:7:1::/64')::uuid and bucket = 'auth-dev:refresh:ip'),
          1::bigint, 'relaxed refreshes count in their own bucket (auth-dev:refresh:ip)');

-- nothing for anon or authenticated -------------------------------------------------------------
select ok(not has_table_privilege('anon', 'auth.users', 'select') and not has_table_privilege('authenticated', 'auth.users', 'select'),
          'anon and authenticated cannot read auth.users');
select ok(not has_column_privilege('authenticated', 'auth.users', 'encrypted_password', 'select'), 'nor its password hashes');
select is((select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'internal'
             and p.proname in ('password_sign_up', 'password_sign_in', 'auth_session_user', 'auth_refresh_session', 'auth_sign_out',
                               'auth_update_user', 'auth_user_json', 'password_problem', 'hit_auth_limits', 'hit_refresh_limit', 'start_auth_session', 'gotrue_time')
             and (has_function_privilege('anon', p.oid, 'execute') or has_function_privilege('authenticated', p.oid, 'execute'))),
          0::bigint, 'no password function is executable by anon or authenticated');
select tests.authenticate_as('pwauth-alice');
select throws_ok($$ select internal.password_sign_in('pwauth-alice@test.local', 'battery staple', '192.0.2.40', null, 3600) $$,
                 '42501', null, 'authenticated may not check passwords');
select tests.clear_authentication();

select * from finish();
rollback;
