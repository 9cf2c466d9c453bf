-- Local email + password accounts: what GoTrue (Supabase Auth) does for /auth/v1/signup,
-- /auth/v1/token?grant_type=password|refresh_token, /auth/v1/logout and /auth/v1/user, as SQL
-- the local server (src/http/gotrue.ts) calls as service_role. On Supabase, GoTrue itself serves
-- those routes and none of this runs.
--
-- Passwords: bcrypt through pgcrypto, crypt(password, gen_salt('bf', 10)) ($2a$, cost 10 as
-- GoTrue's bcrypt.DefaultCost), in auth.users.encrypted_password like GoTrue; never returned.
-- Sessions: a session is a refresh-token family of app.refresh_tokens (sql/auth/refresh_tokens.sql:
-- internal.issue_refresh_token starts one, internal.rotate_refresh_token rotates it); its id, the
-- family_id, is the access token's session_id. It is live while some token of the family is
-- neither revoked nor expired; signing out revokes the family.
-- Results are jsonb. A refusal is {error: <GoTrue error code>, message} and is not raised, so what
-- the call recorded (the attempt counted against the limits) commits; only the limits raise
-- (rate_limited, PX429, with retry_after), which rolls back the refused attempt itself.
-- Limits (app.settings, fixed 5-minute windows of internal.hit_window_limit): per client IP for
-- sign-ups and sign-ins (auth_attempts_per_ip), per email address for sign-ins
-- (auth_sign_in_attempts_per_email), counted before the password is looked at, so a locked-out
-- address answers 429 whatever the password. The development profile (p_relaxed) allows 100 times
-- each per 60 s in buckets of its own, as it does the endpoint limits. Refreshes
-- (grant_type=refresh_token) have a per-IP limit of their own, auth_refreshes_per_ip
-- (internal.hit_refresh_limit, GoTrue's RATE_LIMIT_TOKEN_REFRESH).

-- GoTrue's timestamp format (UTC, microseconds, Z).
create or replace function internal.gotrue_time(p_at timestamptz) returns text
language sql stable as $$
  select to_char(p_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- The user object GoTrue returns (models.User), without its secrets: id, aud, role, email,
-- email_confirmed_at, phone, confirmed_at, last_sign_in_at, app_metadata, user_metadata,
-- identities, created_at, updated_at, is_anonymous; timestamps that are null are left out, as
-- GoTrue's omitempty does. A user with a password has one `email` identity (GoTrue keeps it in
-- auth.identities; here it is derived, identity_id = the user id). null when there is no such user.
create or replace function internal.auth_user_json(p_user_id uuid) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select (select jsonb_object_agg(key, value) from jsonb_each(o) where value <> 'null'::jsonb)
  from (
    select jsonb_build_object(
      'id', u.id,
      'aud', coalesce(u.aud, 'authenticated'),
      'role', coalesce(u.role, 'authenticated'),
      'email', coalesce(u.email, ''),
      'email_confirmed_at', internal.gotrue_time(u.email_confirmed_at),
      'phone', '',
      'confirmed_at', internal.gotrue_time(u.email_confirmed_at),
      'last_sign_in_at', internal.gotrue_time(u.last_sign_in_at),
      'app_metadata', coalesce(u.raw_app_meta_data, '{}'),
      'user_metadata', coalesce(u.raw_user_meta_data, '{}'),
      'identities', case when u.encrypted_password is null or u.email is null then '[]'::jsonb else jsonb_build_array(
        jsonb_build_object(
          'identity_id', u.id, 'id', u.id, 'user_id', u.id, 'provider', 'email', 'email', u.email,
          'identity_data', jsonb_build_object('sub', u.id, 'email', u.email,
                                              'email_verified', u.email_confirmed_at is not null, 'phone_verified', false),
          'created_at', internal.gotrue_time(u.created_at),
          'updated_at', internal.gotrue_time(coalesce(u.updated_at, u.created_at))) ||
        case when u.last_sign_in_at is null then '{}'::jsonb
             else jsonb_build_object('last_sign_in_at', internal.gotrue_time(u.last_sign_in_at)) end) end,
      'created_at', internal.gotrue_time(u.created_at),
      'updated_at', internal.gotrue_time(coalesce(u.updated_at, u.created_at)),
      'is_anonymous', false) as o
    from auth.users u where u.id = p_user_id
  ) x
$$;

-- null, or the refusal of a new password GoTrue would refuse: null (validation_failed), longer
-- than bcrypt's 72 bytes (validation_failed), shorter than auth_password_min_length characters
-- (weak_password, reasons ['length']; GoTrue counts bytes, characters are what a user counts).
-- Messages are GoTrue's.
create or replace function internal.password_problem(p_password text) returns jsonb
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_min integer := coalesce(internal.setting_int('auth_password_min_length'), 6);
begin
  if p_password is null then
    return jsonb_build_object('error', 'validation_failed', 'message', 'Signup requires a valid password');
  end if;
  if octet_length(p_password) > 72 then
    return jsonb_build_object('error', 'validation_failed', 'message', 'Password cannot be longer than 72 characters');
  end if;
  if char_length(p_password) < v_min then
    return jsonb_build_object('error', 'weak_password', 'message', format('Password should be at least %s characters.', v_min),
                              'reasons', jsonb_build_array('length'));
  end if;
  return null;
end $$;

-- Counts one attempt from p_client_ip (and, for sign-ins, for p_email) against the limits of the
-- header; raises rate_limited past either. An empty or unparsable IP is not limited by IP.
-- p_relaxed (the development profile, as api.hit_endpoint_limit): 100x the attempts in a window of
-- 60 s, in buckets of its own, since every local client shares one IP.
drop function if exists internal.hit_auth_limits(text, text);  -- before p_relaxed
-- Whom a per-client-address limit counts (as src/client-address.ts does for the realtime
-- gateway): an IPv4 address as itself, also IPv4-mapped (::ffff:a.b.c.d, as Node reports IPv4
-- peers of a dual-stack listener); an IPv6 address by its /64, since a host picks any address of
-- the /64 it is handed, so counted per address one host was 2^64 clients with the whole limit
-- each; anything that is not an address (an unusual X-Forwarded-For) as its text, still counted,
-- where it used to skip the limit. Null only for no address at all.
create or replace function internal.client_address_key(p_client_ip text) returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  v_text text := nullif(btrim(p_client_ip), '');
  v_ip inet;
begin
  begin
    v_ip := v_text::inet;
  exception when others then
    return v_text;
  end;
  if family(v_ip) = 6 and host(v_ip) ~* '^::ffff:[0-9]+(\.[0-9]+){3}$' then
    v_ip := substr(host(v_ip), 8)::inet;
  end if;
  return case when family(v_ip) = 6 then network(set_masklen(v_ip, 64))::text else host(v_ip) end;
end $$;

create or replace function internal.hit_auth_limits(p_client_ip text, p_email text, p_relaxed boolean default false) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_client text := internal.client_address_key(p_client_ip);
  v_factor integer := case when p_relaxed then 100 else 1 end;
  v_window integer := case when p_relaxed then 60 else 300 end;
  v_prefix text := case when p_relaxed then 'auth-dev:' else 'auth:' end;
begin
  -- app.rate_limits is keyed by a uuid subject: the client and the address are hashed into one
  if v_client is not null then
    perform internal.hit_window_limit(md5('auth-ip:' || v_client)::uuid, v_prefix || 'ip',
                                      coalesce(internal.setting_int('auth_attempts_per_ip'), 30) * v_factor, v_window);
  end if;
  if p_email is not null then
    perform internal.hit_window_limit(md5('auth-email:' || lower(p_email))::uuid, v_prefix || 'sign_in:email',
                                      coalesce(internal.setting_int('auth_sign_in_attempts_per_email'), 10) * v_factor, v_window);
  end if;
end $$;

-- GoTrue's per-IP limit of token refreshes (RATE_LIMIT_TOKEN_REFRESH, 150 per 5 minutes:
-- supabase/auth internal/conf/configuration.go, the limiter internal/api/apilimiter/apilimiter.go
-- builds and internal/api/token.go applies to POST /token; read at bc32168e13fd) for the local
-- /auth/v1 refresh grant: auth_refreshes_per_ip per client (internal.client_address_key, so an
-- IPv6 client per /64) in a fixed 5-minute window, in a bucket of its own (auth:refresh:ip), so
-- refreshes never spend the sign-in budget nor the other way round. GoTrue refills a token bucket
-- (150 per 300 s, bursts of 30); this counts in fixed windows as the sign-in limits do.
-- p_refuse: past the limit, raise rate_limited (which rolls back the caller's transaction: the
-- refresh it counted did not happen). Without it the request is counted and never refused: the
-- caller says so for the answers whose refusal a later retry could not undo (src/http/gotrue.ts):
-- a swap within the reuse interval, refused, was resent after it and revoked the sign-in as reuse.
-- p_relaxed (the development profile): 100x per 60 s in buckets of its own, as hit_auth_limits.
create or replace function internal.hit_refresh_limit(p_client_ip text, p_refuse boolean, p_relaxed boolean default false) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_client text := internal.client_address_key(p_client_ip);
  v_window integer := case when p_relaxed then 60 else 300 end;
  v_bucket text := case when p_relaxed then 'auth-dev:' else 'auth:' end || 'refresh:ip';
  v_subject uuid;
begin
  if v_client is null then
    return;
  end if;
  v_subject := md5('auth-ip:' || v_client)::uuid;
  if p_refuse then
    perform internal.hit_window_limit(v_subject, v_bucket,
                                      coalesce(internal.setting_int('auth_refreshes_per_ip'), 150) * case when p_relaxed then 100 else 1 end,
                                      v_window);
  else
    insert into app.rate_limits as r (user_id, bucket, window_start, hits)
    values (v_subject, v_bucket, internal.rate_window_start(v_window), 1)
    on conflict (user_id, bucket, window_start) do update set hits = r.hits + 1;
  end if;
end $$;

comment on function internal.hit_refresh_limit(text, boolean, boolean) is
$$POST /auth/v1/token?grant_type=refresh_token, per client IP: counts one refresh from p_client_ip
(internal.client_address_key: an IPv6 client by its /64) against auth_refreshes_per_ip (150, as
GoTrue's RATE_LIMIT_TOKEN_REFRESH: supabase/auth internal/conf/configuration.go,
internal/api/token.go) per fixed 5-minute window, bucket auth:refresh:ip; p_refuse: raises
rate_limited past it (its transaction rolls back). p_relaxed (the development profile): 100x per
60 s, bucket auth-dev:refresh:ip. No address: not counted. service_role only.$$;

-- Starts a session for p_user_id: a new refresh-token family holding p_refresh_hash; returns its
-- id, or null when the user is gone (deleted since they were read: internal.issue_refresh_token).
create or replace function internal.start_auth_session(p_user_id uuid, p_refresh_hash text, p_refresh_ttl_seconds integer)
returns uuid language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_session_id uuid := internal.issue_refresh_token(p_user_id, p_refresh_hash, p_refresh_ttl_seconds);
begin
  if v_session_id is not null then
    update auth.users set last_sign_in_at = now() where id = p_user_id;
  end if;
  return v_session_id;
end $$;

drop function if exists internal.password_sign_up(text, text, jsonb, boolean, text, text, integer);  -- before p_relaxed
-- user_metadata is copied into every access token (src/auth/session-token.ts), which travels in
-- an Authorization header: Node refuses request headers over 16 KiB (431) and nginx a header line
-- over 8 KiB by default, so a large one locked its user out of every request, PUT /user included.
-- GoTrue sets no cap; this one keeps a token well inside both.
create or replace function internal.user_metadata_max_bytes() returns integer
language sql immutable as $$ select 4096 $$;

create or replace function internal.user_metadata_too_large() returns jsonb
language sql immutable as $$
  select jsonb_build_object('error', 'validation_failed',
    'message', format('user_metadata is too large: at most %s bytes as JSON (it travels in every access token); keep larger data in a table of your own',
                      internal.user_metadata_max_bytes()))
$$;

create or replace function internal.password_sign_up(p_email text, p_password text, p_data jsonb, p_autoconfirm boolean,
                                                     p_client_ip text, p_refresh_hash text, p_refresh_ttl_seconds integer,
                                                     p_relaxed boolean default false)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_email text := lower(btrim(p_email));
  v_problem jsonb;
  v_user_id uuid;
  v_session_id uuid;
begin
  perform internal.hit_auth_limits(p_client_ip, null, p_relaxed);
  if v_email is null or v_email = '' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'An email address is required');
  end if;
  if length(v_email) > 255 then
    return jsonb_build_object('error', 'validation_failed', 'message', 'An email address is too long');
  end if;
  -- checkmail's format (what GoTrue validates with)
  if v_email !~ '^[a-z0-9.!#$%&''*+/=?^_`{|}~-]+@[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'Unable to validate email address: invalid format');
  end if;
  if p_password is null or p_password = '' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'Signup requires a valid password');
  end if;
  v_problem := internal.password_problem(p_password);
  if v_problem is not null then return v_problem; end if;
  if p_data is not null and jsonb_typeof(p_data) <> 'object' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'data must be a JSON object');
  end if;
  if octet_length(p_data::text) > internal.user_metadata_max_bytes() then
    return internal.user_metadata_too_large();
  end if;
  if exists (select from auth.users where lower(email) = v_email) then
    return jsonb_build_object('error', 'user_already_exists', 'message', 'User already registered');
  end if;
  begin
    insert into auth.users (email, encrypted_password, raw_user_meta_data, raw_app_meta_data, email_confirmed_at,
                            aud, role, created_at, updated_at)
    values (v_email, extensions.crypt(p_password, extensions.gen_salt('bf', 10)), coalesce(p_data, '{}'),
            '{"provider": "email", "providers": ["email"]}', case when p_autoconfirm then now() end,
            'authenticated', 'authenticated', now(), now())
    returning id into v_user_id;
  exception when unique_violation then -- a concurrent sign-up of the same address
    return jsonb_build_object('error', 'user_already_exists', 'message', 'User already registered');
  end;
  if not p_autoconfirm or p_refresh_hash is null then
    return jsonb_build_object('user', internal.auth_user_json(v_user_id));
  end if;
  -- the session first, in its own statement: the user object then shows its last_sign_in_at (the
  -- user is this transaction's own: no deletion can reach it, so the session always starts)
  v_session_id := internal.start_auth_session(v_user_id, p_refresh_hash, p_refresh_ttl_seconds);
  return jsonb_build_object('session_id', v_session_id, 'user', internal.auth_user_json(v_user_id));
end $$;

comment on function internal.password_sign_up(text, text, jsonb, boolean, text, text, integer, boolean) is
$$GoTrue's POST /signup for an email address: creates the user with the bcrypt hash of p_password
and p_data (an object, null = {}) as user_metadata, app_metadata {provider: email, providers:
[email]}. p_autoconfirm (AUTH_EMAIL_CONFIRM off, the local default): the address counts as
confirmed and, given p_refresh_hash (sha256 of a new refresh token), a session starts:
{session_id, user}. Otherwise {user} (no session; no email is sent: confirm with
`update auth.users set email_confirmed_at = now()`). Refusals {error, message}:
validation_failed (no, too long (255) or malformed address; no password or over 72 bytes; data
not an object), weak_password (+ reasons, under auth_password_min_length), user_already_exists
(any existing user with that address, case-insensitively: GoTrue with autoconfirm). Raises
rate_limited past auth_attempts_per_ip from p_client_ip (p_relaxed, the development profile:
100x per 60 s). service_role only.$$;

drop function if exists internal.password_sign_in(text, text, text, text, integer);  -- before p_relaxed
create or replace function internal.password_sign_in(p_email text, p_password text, p_client_ip text,
                                                     p_refresh_hash text, p_refresh_ttl_seconds integer, p_relaxed boolean default false)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_email text := lower(btrim(p_email));
  v_user auth.users;
  v_valid boolean;
  v_session_id uuid;
begin
  if v_email is null or v_email = '' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'missing email or phone');
  end if;
  perform internal.hit_auth_limits(p_client_ip, v_email, p_relaxed);
  select * into v_user from auth.users where lower(email) = v_email;
  if v_user.encrypted_password is null or v_user.encrypted_password = '' or coalesce(p_password, '') = '' then
    -- hash anyway, so that an unknown address takes as long as a wrong password
    perform extensions.crypt(coalesce(p_password, ''), '$2a$10$lPsQvPtaaN8.uAgEFyVObeRy.reeXcFC79ssxgpMma6VWLnm8C6wS');
    v_valid := false;
  else
    v_valid := extensions.crypt(p_password, v_user.encrypted_password) = v_user.encrypted_password;
  end if;
  if not v_valid then
    return jsonb_build_object('error', 'invalid_credentials', 'message', 'Invalid login credentials');
  end if;
  if v_user.email_confirmed_at is null then
    return jsonb_build_object('error', 'email_not_confirmed', 'message', 'Email not confirmed');
  end if;
  if p_refresh_hash is null then
    return jsonb_build_object('user', internal.auth_user_json(v_user.id));
  end if;
  v_session_id := internal.start_auth_session(v_user.id, p_refresh_hash, p_refresh_ttl_seconds);
  if v_session_id is null then  -- deleted since the password was checked: as for an unknown address
    return jsonb_build_object('error', 'invalid_credentials', 'message', 'Invalid login credentials');
  end if;
  return jsonb_build_object('session_id', v_session_id, 'user', internal.auth_user_json(v_user.id));
end $$;

comment on function internal.password_sign_in(text, text, text, text, integer, boolean) is
$$GoTrue's POST /token?grant_type=password: counts the attempt (auth_attempts_per_ip for
p_client_ip, auth_sign_in_attempts_per_email for the address; rate_limited is raised past
either, before the password is checked; p_relaxed, the development profile: 100x per 60 s), then compares p_password with the user's bcrypt hash.
Success: {session_id, user}, a new session holding p_refresh_hash (sha256 of a new refresh token,
valid p_refresh_ttl_seconds) and last_sign_in_at set; with p_refresh_hash null, {user} only (a
password check, no session: scripts/token.ts). Refusals {error, message}: validation_failed (no
address), invalid_credentials "Invalid login credentials" (unknown address, no password set, wrong
password, and a user deleted while signing in: one answer for all, in about the same time),
email_not_confirmed. service_role only.$$;

create or replace function internal.auth_session_user(p_user_id uuid, p_session_id uuid) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select case
    when u is null then jsonb_build_object('error', 'user_not_found', 'message', 'User from sub claim in JWT does not exist')
    when p_session_id is not null and not exists (
      select from app.refresh_tokens t where t.family_id = p_session_id and t.user_id = p_user_id
                                         and t.revoked_at is null and t.expires_at > now())
      then jsonb_build_object('error', 'session_not_found', 'message', 'Session from session_id claim in JWT does not exist')
    else jsonb_build_object('user', u)
  end
  from (select internal.auth_user_json(p_user_id) as u) x
$$;

comment on function internal.auth_session_user(uuid, uuid) is
$$What GoTrue checks of every access token it is handed (GET/PUT /user, /logout): {user} when the
user p_user_id (the token's sub) exists and, when the token names a session (p_session_id, its
session_id claim), that session is live: a token of that refresh-token family, of that user, not
revoked nor expired. Otherwise {error: user_not_found | session_not_found, message} (GoTrue's 403s;
supabase-js treats session_not_found as signed out). A token without session_id (minted by
scripts/token.ts) is checked for its user only. service_role only.$$;

create or replace function internal.auth_refresh_session(p_token_hash text) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object('session_id', t.family_id, 'user', internal.auth_user_json(t.user_id),
                            'signed_in_at', (select extract(epoch from min(f.created_at))::bigint
                                             from app.refresh_tokens f where f.family_id = t.family_id))
  from app.refresh_tokens t where t.token_hash = p_token_hash
$$;

comment on function internal.auth_refresh_session(text) is
$$The session a refresh token belongs to, for the access token minted after
internal.rotate_refresh_token accepted it: {session_id (its family), user, signed_in_at (epoch
seconds of the family's first token: the sign-in, for the amr claim)}; null for an unknown hash.
service_role only.$$;

-- The revocation is repeated until a pass revokes nothing. One UPDATE was not enough: its snapshot
-- is taken when it starts, so a refresh of one of these tokens that held the token's row (a
-- rotation locks the presented token, then inserts its successor) was waited for, the token
-- revoked, and the successor the refresh had just committed never seen: the logout answered 204
-- and the refreshing tab's new refresh token kept the session alive. Each pass is a statement of
-- its own (a new snapshot), which sees every successor of a token the pass before revoked (its
-- refresh committed before the row was let go); a refresh that comes after a revocation finds its
-- token revoked.
-- Since 2026-12-06 the user's row is locked first (as internal.rotate_refresh_token does), so a
-- refresh of the user's tokens runs wholly before or after the revocation; the passes are kept.
create or replace function internal.auth_sign_out(p_user_id uuid, p_session_id uuid, p_scope text) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_total integer := 0;
  v_pass integer;
begin
  -- the user's row first, as a rotation locks it (internal.rotate_refresh_token): a sign-out, a
  -- refresh and a reuse's revocation of one user's tokens run one after the other. Each locked
  -- token rows in its own order (this UPDATE's scan, a rotation's presented row then its family),
  -- and two of them could wait for each other's rows: a deadlock (40P01)
  perform from auth.users where id = p_user_id for no key update;
  loop
    update app.refresh_tokens set revoked_at = now(), sealed_token = null
    where user_id = p_user_id and revoked_at is null
      and case when p_session_id is null or p_scope = 'global' then true
               when p_scope = 'local' then family_id = p_session_id
               when p_scope = 'others' then family_id <> p_session_id
               else false end;
    get diagnostics v_pass = row_count;
    exit when v_pass = 0;
    v_total := v_total + v_pass;
  end loop;
  return v_total;
end $$;

comment on function internal.auth_sign_out(uuid, uuid, text) is
$$GoTrue's POST /logout?scope=: revokes the refresh tokens (and clears their seals) of the user's
session p_session_id ('local'), of every other session of the user ('others'), or of all of them
('global', and any scope when the token names no session, as GoTrue does). Returns how many tokens
it revoked, also the successors a refresh running at the same time made of them. Access tokens already issued stay valid until they expire, but GoTrue's session check
(internal.auth_session_user) refuses them from then on. Any other scope revokes nothing.
service_role only.$$;

create or replace function internal.auth_update_user(p_user_id uuid, p_session_id uuid, p_data jsonb, p_password text)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_checked jsonb;
  v_problem jsonb;
  v_hash text;
  v_old_data jsonb;
  v_new_data jsonb;
begin
  -- a write locks the user row before the token is checked: a deletion committed while the lock
  -- waited leaves no row, and the check below (a statement of its own, a new snapshot) answers
  -- user_not_found, not a success that wrote nothing. No key update: others' foreign keys to the
  -- user (key share) do not wait for it.
  if p_data is not null or p_password is not null then
    perform from auth.users where id = p_user_id for no key update;
  end if;
  v_checked := internal.auth_session_user(p_user_id, p_session_id);
  if v_checked ? 'error' then return v_checked; end if;
  if p_data is not null and jsonb_typeof(p_data) <> 'object' then
    return jsonb_build_object('error', 'validation_failed', 'message', 'data must be a JSON object');
  end if;
  if p_password is not null then
    v_problem := internal.password_problem(p_password);
    if v_problem is not null then return v_problem; end if;
    select encrypted_password into v_hash from auth.users where id = p_user_id;
    if v_hash is not null and v_hash <> '' and extensions.crypt(p_password, v_hash) = v_hash then
      return jsonb_build_object('error', 'same_password', 'message', 'New password should be different from the old password.');
    end if;
    update auth.users set encrypted_password = extensions.crypt(p_password, extensions.gen_salt('bf', 10)), updated_at = now()
    where id = p_user_id;
    -- a new password ends every other session (GoTrue's UpdatePassword)
    perform internal.auth_sign_out(p_user_id, p_session_id, 'others');
  end if;
  if p_data is not null then
    -- GoTrue's UpdateUserMetaData: each key replaces its value; a null value removes the key
    select u.raw_user_meta_data,
           (coalesce(u.raw_user_meta_data, '{}')
            - coalesce((select array_agg(key) from jsonb_each(p_data) where value = 'null'::jsonb), '{}'::text[]))
           || coalesce((select jsonb_object_agg(key, value) from jsonb_each(p_data) where value <> 'null'::jsonb), '{}')
      into v_old_data, v_new_data
    from auth.users u where u.id = p_user_id;
    -- over the cap only if it grows: metadata stored before the cap can still be made smaller
    if octet_length(v_new_data::text) > internal.user_metadata_max_bytes()
       and octet_length(v_new_data::text) > octet_length(coalesce(v_old_data, '{}')::text) then
      return internal.user_metadata_too_large();
    end if;
    update auth.users set raw_user_meta_data = v_new_data, updated_at = now() where id = p_user_id;
  end if;
  return jsonb_build_object('user', internal.auth_user_json(p_user_id));
end $$;

comment on function internal.auth_update_user(uuid, uuid, jsonb, text) is
$$GoTrue's PUT /user for the signed-in user: p_data (an object) is merged into user_metadata key by
key, a null value removing its key; p_password (null: unchanged) replaces the password and revokes
the user's other sessions (not p_session_id). First the user row is locked (for a write: a
deletion waits for the update, or the update for the deletion and then answers user_not_found),
then the token is checked like internal.auth_session_user. Returns {user}, or {error, message}: user_not_found,
session_not_found, validation_failed, weak_password (+ reasons), same_password. service_role only.$$;

revoke execute on function
  internal.gotrue_time(timestamptz), internal.auth_user_json(uuid), internal.password_problem(text),
  internal.client_address_key(text), internal.hit_auth_limits(text, text, boolean), internal.hit_refresh_limit(text, boolean, boolean),
  internal.start_auth_session(uuid, text, integer),
  internal.password_sign_up(text, text, jsonb, boolean, text, text, integer, boolean),
  internal.password_sign_in(text, text, text, text, integer, boolean), internal.auth_session_user(uuid, uuid),
  internal.auth_refresh_session(text), internal.auth_sign_out(uuid, uuid, text),
  internal.auth_update_user(uuid, uuid, jsonb, text)
from public, anon, authenticated;
grant execute on function
  internal.hit_refresh_limit(text, boolean, boolean),
  internal.password_sign_up(text, text, jsonb, boolean, text, text, integer, boolean),
  internal.password_sign_in(text, text, text, text, integer, boolean), internal.auth_session_user(uuid, uuid),
  internal.auth_refresh_session(text), internal.auth_sign_out(uuid, uuid, text),
  internal.auth_update_user(uuid, uuid, jsonb, text)
to service_role;
