-- Refresh-token rotation (H5). Tokens are random strings minted by the caller; only their
-- sha256 is stored. Each use rotates: the presented token is marked used and a new one of the
-- same family is stored. Presenting a used token again while the child it was rotated to is still
-- unused (a double submit, a retry after a lost response, at any age as in GoTrue) hands back
-- that child, and nothing is revoked; presenting it again after the reuse interval once its child
-- was used is reuse: the whole family is revoked.
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

-- Returns {user_id, email} when p_old_hash was live, after storing p_new_hash (with p_new_sealed,
-- the new token sealed under a key derived from the presented one) as its child in its family.
-- When p_old_hash was already rotated and its child is still the family's live token (never
-- used), returns {user_id, email, sealed_token} of that child instead, however long ago (GoTrue
-- answers the parent of a session's active token so: supabase/auth internal/api/token_refresh.go):
-- the caller opens it with the presented token and hands back the same refresh token, so a double
-- submit or a retry ends with one live token, and p_new_hash is not stored. A used token whose
-- child was already rotated too is {error: 'superseded'} within p_reuse_interval_seconds (a stale
-- retry: nothing is revoked). With p_reuse_interval_seconds 0 neither applies (stricter than
-- GoTrue, which hands the live child back at 0 too). Any other presentation of a used token is
-- reuse: the family is revoked,
-- and that revocation commits although the caller gets {error: 'reused'}. The presented row is
-- locked (FOR UPDATE) first, so concurrent presentations of one token are decided one after the
-- other: the first rotates, the next ones see its child. Before it, the token's user row is locked
-- FOR KEY SHARE (the lock the child's foreign key check takes anyway), in the order a deletion of
-- the user locks them: the user's row, then (its cascade) the user's tokens. The other way round,
-- a deletion that came between the token's lock and the child's insert held the user row and
-- waited for the token while the rotation waited for the user row: a deadlock, and Postgres failed
-- the deletion or the refresh (40P01). A user gone (a deletion in flight is waited for) is
-- {error: 'invalid'}, as their tokens are gone with them.
create or replace function internal.rotate_refresh_token(p_old_hash text, p_new_hash text, p_new_sealed text,
                                                         p_ttl_seconds integer default 2592000,
                                                         p_reuse_interval_seconds integer default 10)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_token app.refresh_tokens;
  v_child app.refresh_tokens;
begin
  -- a token's user never changes: read unlocked, to lock the user first
  perform from auth.users u where u.id = (select t.user_id from app.refresh_tokens t where t.token_hash = p_old_hash)
  for key share of u;
  if not found then
    return jsonb_build_object('error', 'invalid');
  end if;
  select * into v_token from app.refresh_tokens where token_hash = p_old_hash for update;
  if not found or v_token.revoked_at is not null or v_token.expires_at <= now() then
    return jsonb_build_object('error', 'invalid');
  end if;
  if v_token.used_at is not null then
    if p_reuse_interval_seconds > 0 then
      -- its successor still live and never used: the client did not keep the answer (a lost
      -- response; supabase-js resends a refresh with backoff for up to ~30 s). That successor
      -- again, at any age, as GoTrue answers the parent of a session's active refresh token
      -- (supabase/auth internal/api/token_refresh.go); until 2026-12-06 only within the interval,
      -- and a resend at 10.5 s revoked the sign-in
      select * into v_child from app.refresh_tokens
      where parent_hash = p_old_hash and used_at is null and revoked_at is null and expires_at > now();
      if found then
        return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id),
                                  'sealed_token', v_child.sealed_token);
      end if;
      if now() <= v_token.used_at + make_interval(secs => p_reuse_interval_seconds) then
        return jsonb_build_object('error', 'superseded');
      end if;
    end if;
    -- until a pass revokes nothing: a refresh of the family's live token that held its row was
    -- waited for, and the successor it committed is seen only by a statement started after it
    -- (internal.auth_sign_out says why)
    loop
      update app.refresh_tokens set revoked_at = now(), sealed_token = null
      where family_id = v_token.family_id and revoked_at is null;
      exit when not found;
    end loop;
    perform internal.write_audit(jsonb_build_object('user_id', v_token.user_id), 'auth.refresh_reuse', 'failed',
                                 'refresh_family', v_token.family_id::text);
    return jsonb_build_object('error', 'reused');
  end if;
  -- the presented token's own seal is no longer needed once it has a successor
  update app.refresh_tokens set used_at = now(), sealed_token = null where token_hash = p_old_hash;
  insert into app.refresh_tokens (token_hash, family_id, user_id, parent_hash, sealed_token, expires_at)
  values (p_new_hash, v_token.family_id, v_token.user_id, p_old_hash, p_new_sealed, now() + make_interval(secs => p_ttl_seconds));
  return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id));
end $$;

revoke execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, text, integer, integer) from public;
grant execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, text, integer, integer) to service_role;
