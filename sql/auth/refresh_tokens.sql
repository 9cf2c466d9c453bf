-- Refresh-token rotation (H5). Tokens are random strings minted by the caller; only their
-- sha256 is stored. Each use rotates: the presented token is marked used and a new one of the
-- same family is stored. Presenting a used token again is reuse: the whole family is revoked.
-- Only service_role (the HTTP layer) may call these.

create or replace function internal.issue_refresh_token(p_user_id uuid, p_token_hash text, p_ttl_seconds integer default 2592000)
returns void language sql security definer set search_path = '' as $$
  insert into app.refresh_tokens (token_hash, family_id, user_id, expires_at)
  values (p_token_hash, gen_random_uuid(), p_user_id, now() + make_interval(secs => p_ttl_seconds))
$$;

-- Returns {user_id} when p_old_hash was live (and stores p_new_hash in its family); raises
-- unauthorized otherwise. Reuse of a rotated token revokes the family and commits that
-- revocation even though the caller gets an error.
create or replace function internal.rotate_refresh_token(p_old_hash text, p_new_hash text, p_ttl_seconds integer default 2592000)
returns jsonb language plpgsql security definer set search_path = '' as $$
declare
  v_token app.refresh_tokens;
begin
  select * into v_token from app.refresh_tokens where token_hash = p_old_hash for update;
  if not found or v_token.revoked_at is not null or v_token.expires_at <= now() then
    return jsonb_build_object('error', 'invalid');
  end if;
  if v_token.used_at is not null then
    update app.refresh_tokens set revoked_at = now() where family_id = v_token.family_id and revoked_at is null;
    perform internal.write_audit(jsonb_build_object('user_id', v_token.user_id), 'auth.refresh_reuse', 'failed',
                                 'refresh_family', v_token.family_id::text);
    return jsonb_build_object('error', 'reused');
  end if;
  update app.refresh_tokens set used_at = now() where token_hash = p_old_hash;
  insert into app.refresh_tokens (token_hash, family_id, user_id, parent_hash, expires_at)
  values (p_new_hash, v_token.family_id, v_token.user_id, p_old_hash, now() + make_interval(secs => p_ttl_seconds));
  return jsonb_build_object('user_id', v_token.user_id, 'email', (select email from auth.users where id = v_token.user_id));
end $$;

revoke execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, integer) from public;
grant execute on function internal.issue_refresh_token(uuid, text, integer), internal.rotate_refresh_token(text, text, integer) to service_role;
