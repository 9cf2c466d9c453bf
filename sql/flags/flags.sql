-- Canary flags per canvas. Evaluation order for flag F on canvas C of workspace W:
--   C or W in a deny list → off; C or W in an allow list → on; otherwise on when
--   bucket(F, C) < rollout_percent, bucket being a stable hash of (F, C) in [0, 100) in steps of 0.01.
-- The bucket depends only on the flag's name and the canvas id: a canvas stays in as the
-- percentage grows (rollout is monotonic) and leaves only when it shrinks; the name salts it so
-- two flags at 1 % pick different canvases.

create or replace function internal.flag_bucket(p_flag text, p_canvas_id uuid) returns numeric
language sql immutable parallel safe as $$
  -- the first 32 bits of md5(flag:canvas) as an unsigned integer, mod 10,000, in percent
  select (('x' || left(md5(p_flag || ':' || p_canvas_id::text), 8))::bit(32)::bigint & 4294967295) % 10000 / 100.0
$$;
comment on function internal.flag_bucket(text, uuid) is
  'Stable rollout bucket of a canvas for a flag, in [0, 100) percent (steps of 0.01): md5(flag:canvas) first 32 bits mod 10000 / 100.';

create or replace function internal.flag_enabled(f app.feature_flags, p_canvas_id uuid, p_workspace_id uuid) returns boolean
language sql immutable parallel safe as $$
  select case
    when p_canvas_id = any(f.deny_canvases) or p_workspace_id = any(f.deny_workspaces) then false
    when p_canvas_id = any(f.allow_canvases) or p_workspace_id = any(f.allow_workspaces) then true
    else internal.flag_bucket(f.name, p_canvas_id) < f.rollout_percent end
$$;

-- The flags of one canvas of workspace p_workspace_id: {name: boolean} for every defined flag
-- (no access check: its callers made theirs).
create or replace function internal.canvas_flags(p_canvas_id uuid, p_workspace_id uuid) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select coalesce((select jsonb_object_agg(f.name, internal.flag_enabled(f, p_canvas_id, p_workspace_id) order by f.name)
                   from app.feature_flags f), '{}')
$$;
comment on function internal.canvas_flags(uuid, uuid) is
  'The feature flags of canvas p_canvas_id of workspace p_workspace_id ({name: boolean}, every flag); no access check: api.get_canvas_flags and api.get_canvas_snapshot check theirs.';

-- The flags of one canvas, for its members: {name: boolean} for every defined flag.
create or replace function api.get_canvas_flags(p_canvas_id uuid) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_workspace uuid;
begin
  perform internal.count_endpoint_call('S2');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  select workspace_id into v_workspace from app.canvases where canvas_id = p_canvas_id;
  return internal.canvas_flags(p_canvas_id, v_workspace);
end $$;
comment on function api.get_canvas_flags(uuid) is
  'The feature flags of a canvas: {<flag name>: boolean} for every flag in app.feature_flags (deny lists first, then allow lists, '
  'then the stable hash bucket of (flag, canvas) against rollout_percent). Members of the canvas only (not_found otherwise). '
  'Also returned as `flags` by api.get_canvas_snapshot (A1).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint S2 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- Creates or changes a flag (service_role only: flags are the operator's, not a tenant's); audited
-- with the values before and after.
create or replace function api.set_feature_flag(
  p_name text, p_rollout_percent numeric, p_description text default null,
  p_allow_canvases uuid[] default null, p_deny_canvases uuid[] default null,
  p_allow_workspaces uuid[] default null, p_deny_workspaces uuid[] default null
) returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_ctx jsonb := internal.request_context();
  v_before app.feature_flags;
  v_after app.feature_flags;
begin
  if v_ctx ->> 'role' is distinct from 'service_role' then
    if v_ctx ->> 'user_id' is null then
      perform internal.raise_error('unauthorized', 'feature flags are changed by the operator: call with the service_role key');
    end if;
    perform internal.raise_error('forbidden', 'feature flags are changed by the operator: call with the service_role key');
  end if;
  if p_name is null or p_name !~ '^[a-z][a-z0-9_.-]{0,62}$' then
    perform internal.raise_error('invalid_input', 'name must match ^[a-z][a-z0-9_.-]{0,62}$', '{"field":"name"}');
  end if;
  if p_rollout_percent is null or p_rollout_percent not between 0 and 100 then
    perform internal.raise_error('invalid_input', 'rollout_percent must be between 0 and 100', '{"field":"rollout_percent"}');
  end if;
  select * into v_before from app.feature_flags where name = p_name for update;
  insert into app.feature_flags as f (name, description, rollout_percent, allow_canvases, deny_canvases, allow_workspaces, deny_workspaces, updated_by)
  values (p_name, coalesce(p_description, ''), p_rollout_percent, coalesce(p_allow_canvases, '{}'), coalesce(p_deny_canvases, '{}'),
          coalesce(p_allow_workspaces, '{}'), coalesce(p_deny_workspaces, '{}'), v_ctx ->> 'role')
  on conflict (name) do update set
    description = coalesce(p_description, f.description), rollout_percent = p_rollout_percent,
    allow_canvases = coalesce(p_allow_canvases, f.allow_canvases), deny_canvases = coalesce(p_deny_canvases, f.deny_canvases),
    allow_workspaces = coalesce(p_allow_workspaces, f.allow_workspaces), deny_workspaces = coalesce(p_deny_workspaces, f.deny_workspaces),
    updated_at = now(), updated_by = v_ctx ->> 'role'
  returning * into v_after;
  perform internal.write_audit(v_ctx, 'feature_flag.set', 'success', 'feature_flag', p_name,
                               jsonb_build_object('before', to_jsonb(v_before), 'after', to_jsonb(v_after)));
  return to_jsonb(v_after);
end $$;
comment on function api.set_feature_flag(text, numeric, text, uuid[], uuid[], uuid[], uuid[]) is
  'Create or change a canary flag (service_role only; forbidden otherwise): rollout_percent 0..100 of canvases by a stable hash, '
  'allow/deny lists of canvases and workspaces (null keeps the current list). Audited as feature_flag.set with before/after. Returns the flag row.';

revoke execute on function api.get_canvas_flags(uuid), api.set_feature_flag(text, numeric, text, uuid[], uuid[], uuid[], uuid[]) from public;
grant execute on function api.get_canvas_flags(uuid) to authenticated, service_role;
-- authenticated may call it to be told `forbidden` (every api function is callable by users; the rule is inside)
grant execute on function api.set_feature_flag(text, numeric, text, uuid[], uuid[], uuid[], uuid[]) to authenticated, service_role;
