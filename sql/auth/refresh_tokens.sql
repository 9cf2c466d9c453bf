-- Refresh-token rotation (H5). Tokens are random strings minted by the caller; only their
-- sha256 is stored. Each use rotates: the presented token is marked used and a new one of the
-- same family (the sign-in, GoTrue's session) is stored. A used token presented again is decided
-- by GoTrue's rule (internal.rotate_refresh_token): the parent of the family's active token gets
-- that token back (a double submit, a retry after a lost response, at any age); any other gets a
-- new token of the family within the reuse interval of its rotation, and later revokes the family.
-- Only service_role (the HTTP layer) may call these.

-- the signature before the reuse interval (dropped so that exactly one rotate function exists)
drop function if exists internal.rotate_refresh_token(text, text, integer);

-- Starts a session for p_user_id: a new family holding p_token_hash; returns the family's id (the
-- session id), or null when there is no such user. The user's row is locked FOR KEY SHARE first,
-- the lock the insert's foreign key check takes anyway: a deletion of the user in flight is waited
-- for and then found committed (null), where the insert failed its foreign key (23503, answered as
-- Postgres's constraint message).
do $$ begin  -- it returned void: its return type changes once, the drop only then
  if (select prorettype = 'void'::regtype from pg_proc where oid = to_regprocedure('internal.issue_refresh_token(uuid, text, integer)')) then
    drop function internal.issue_refresh_token(uuid, text, integer);
  end if;
end $$;
create or replace function internal.issue_refresh_token(p_user_id uuid, p_token_hash text, p_ttl_seconds integer default 2592000)
returns uuid language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_family uuid := gen_random_uuid();
begin
  perform from auth.users where id = p_user_id for key share;
  if not found then
    return null;
  end if;
  insert into app.refresh_tokens (token_hash, family_id, user_id, expires_at)
  values (p_token_hash, v_family, p_user_id, now() + make_interval(secs => p_ttl_seconds));
  return v_family;
end $$;

-- A resend within the reuse interval of a token whose successor was rotated too gets a successor
-- of its own (GoTrue's rule, below): a token may then have more than one child, which the unique
-- index on parent_hash (one child each) refused. Nothing looks tokens up by parent_hash any more
-- (the active token is found by family), so no index replaces it.
drop index if exists app.refresh_tokens_parent_idx;

-- Returns {user_id, email} when p_old_hash was live, after storing p_new_hash (with p_new_sealed,
-- the new token sealed under a key derived from the presented one) as its child in its family.
-- A used (rotated) token presented again is decided by GoTrue's rule (supabase/auth
-- internal/tokens/service.go, RefreshTokenGrant, for a revoked refresh token), in its order:
--   1. it is the parent of the family's active token (the newest one neither used nor revoked nor
--      expired): that token is handed back, {user_id, email, sealed_token}, at any age and any
--      interval (a double submit, a retry after a lost response); the caller opens the seal with
--      the presented token, and p_new_hash is not stored;
--   2. otherwise, within p_reuse_interval_seconds of its use (used_at + interval >= now(); an
--      interval of 0 allows none): it rotates again, p_new_hash stored as another child of it
--      ({user_id, email, swap: true}): a stale retry of concurrent tabs; if an earlier swap already
--      gave it a token that is still live, that token is handed back instead, as in case 1
--      ({user_id, email, sealed_token}, nothing stored), so a used token has at most one live
--      swapped token and resending stale tokens in turn mints nothing more. `swap` tells the HTTP
--      layer that no live token was rotated, so H5 (1 per 30 s) does not count it, as it does not
--      count case 1: refused 429, its client's resend after Retry-After (up to 30 s) came after
--      the interval and was reuse, and the user was signed out by our own limit;
--   3. otherwise it is reuse: the family is revoked (GoTrue's RevokeTokenFamily), and that
--      revocation commits although the caller gets {error: 'reused'}; audited auth.refresh_reuse.
-- Locks: the token's user row first, FOR NO KEY UPDATE (the one lock of a sign-in's tokens, as
-- GoTrue locks the session row), then the presented row. Every writer of a user's tokens takes the
-- user row first: a rotation, internal.auth_sign_out, internal.auth_update_user, a deletion of the
-- user (FOR UPDATE, then its cascade to the tokens). Two reuses of old tokens of one family
-- locked each its own token and then revoked the family, each waiting for the other's row: a
-- deadlock (40P01, answered 503); and a deletion that came between a token's lock and the
-- child's insert deadlocked the same way. Now they run one after the other. Other rows' foreign
-- keys to the user (KEY SHARE) do not wait for it. A user gone (a deletion in flight is waited for)
-- is {error: 'invalid'}, as their tokens are gone with them.
create or replace function internal.rotate_refresh_token(p_old_hash text, p_new_hash text, p_new_sealed text,
                                                         p_ttl_seconds integer default 2592000,
                                                         p_reuse_interval_seconds integer default 10)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_token app.refresh_tokens;
  v_active app.refresh_tokens;
begin
  -- a token's user never changes: read unlocked, to lock the user first
  perform from auth.users u where u.id = (select t.user_id from app.refresh_tokens t where t.token_hash = p_old_hash)
  for no key update of u;
  if not found then
    return jsonb_build_object('error', 'invalid');
  end if;
  select * into v_token from app.refresh_tokens where token_hash = p_old_hash for update;
  if not found or v_token.revoked_at is not null or v_token.expires_at <= now() then
    return jsonb_build_object('error', 'invalid');
  end if;
  if v_token.used_at is not null then
    -- 1. the parent of the family's active token: that token again
    select * into v_active from app.refresh_tokens
    where family_id = v_token.family_id and used_at is null and revoked_at is null and expires_at > now()
    order by created_at desc limit 1;
    if v_active.parent_hash = p_old_hash then
      return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id),
                                'sealed_token', v_active.sealed_token);
    end if;
    -- 3. past the reuse interval: reuse, the family is revoked
    if p_reuse_interval_seconds <= 0 or now() > v_token.used_at + make_interval(secs => p_reuse_interval_seconds) then
      update app.refresh_tokens set revoked_at = now(), sealed_token = null
      where family_id = v_token.family_id and revoked_at is null;
      perform internal.write_audit(jsonb_build_object('user_id', v_token.user_id), 'auth.refresh_reuse', 'failed',
                                   'refresh_family', v_token.family_id::text);
      return jsonb_build_object('error', 'reused');
    end if;
    -- 2. within the interval: a live token an earlier swap gave it, again; else another child of
    --    it, below. Without the first, two rotated tokens of the sign-in resent in turn were a swap
    --    each time (the family's newest token was always the other's swap): a new live token per
    --    request for the whole interval, which no limit counts (H5 does not count a swap)
    select * into v_active from app.refresh_tokens
    where family_id = v_token.family_id and parent_hash = p_old_hash
      and used_at is null and revoked_at is null and expires_at > now() and sealed_token is not null
    order by created_at desc limit 1;
    if found then
      return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id),
                                'sealed_token', v_active.sealed_token);
    end if;
  else
    -- the presented token's own seal is no longer needed once it has a successor
    update app.refresh_tokens set used_at = now(), sealed_token = null where token_hash = p_old_hash;
  end if;
  insert into app.refresh_tokens (token_hash, family_id, user_id, parent_hash, sealed_token, expires_at)
  values (p_new_hash, v_token.family_id, v_token.user_id, p_old_hash, p_new_sealed, now() + make_interval(secs => p_ttl_seconds));
  return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id))
         || case when v_token.used_at is not null then '{"swap": true}'::jsonb else '{}'::jsonb end;
end $$;

comment on function internal.rotate_refresh_token(text, text, text, integer, integer) is
$$H5 and POST /auth/v1/token?grant_type=refresh_token: rotates the refresh token of hash p_old_hash.
Live: marked used, p_new_hash (p_new_sealed: the new token sealed under the presented one) stored as
its child, {user_id, email}. Used already: GoTrue's rule for a revoked refresh token, in its order
(supabase/auth internal/tokens/service.go, RefreshTokenGrant; read at bc32168e13fd, 2026-08-20):
(1) the parent of the family's active token (the newest neither used, revoked nor expired) gets
that token back, {user_id, email, sealed_token}, at any age and any interval, nothing stored;
(2) otherwise, within p_reuse_interval_seconds of its rotation (GoTrue's reuseUntil = updated_at +
REFRESH_TOKEN_REUSE_INTERVAL; 0 allows none), p_new_hash is stored as another child of it (GoTrue's
GrantRefreshTokenSwap of the revoked token), {user_id, email, swap: true}, unless an earlier swap gave
it a token still live: that one again, {user_id, email, sealed_token} (two stale tokens resent in turn
minted a token per request, uncounted); no live token was
rotated, so H5 does not count it (its 429 pushed the client's resend past the interval: reuse); (3) otherwise the family is revoked
(GoTrue's RevokeTokenFamily; the revocation commits), {error: reused}, audited auth.refresh_reuse.
Unknown, revoked or expired token, or its user gone: {error: invalid}. Locks the token's user row
first (FOR NO KEY UPDATE: the one lock of a user's tokens, as GoTrue's session row; sign-out and
deletion take it first too), so concurrent refreshes, reuses and logouts of a user run one after
the other and never deadlock. service_role only.$$;

revoke execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, text, integer, integer) from public;
grant execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, text, integer, integer) to service_role;
