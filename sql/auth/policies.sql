-- Row-level security for direct reads of app tables (writes only through api functions).
-- Re-runnable: each policy is dropped and created again.
grant usage on schema app to authenticated;
grant select on app.workspaces, app.workspace_members, app.canvases, app.canvas_members, app.blocks,
  app.block_operations, app.presence to authenticated;
grant all on all tables in schema app to service_role;
grant usage, select on sequence app.seq_block_events to service_role;

-- The canvas ids the current caller has a role on (internal.canvas_role: a workspace membership or
-- a canvas membership, canvas not deleted), optionally within its token's scope (internal.token_allows).
-- The canvas policies below test `canvas_id in (select …)`: Postgres computes the set once per query
-- (a hashed SubPlan) and looks each row up in it. Calling canvas_role per row instead costs a
-- function call and index lookups for every row a query scans, before any non-leakproof filter of
-- the query itself: minutes for a test file's counts over a 100,000-row operation log.
-- (Supabase's RLS performance advice: wrap functions in a select, filter by a set, not per row.)
create or replace function internal.readable_canvas_ids(p_in_token_scope boolean) returns setof uuid
language sql stable security definer set search_path = pg_catalog, pg_temp rows 100 as $$
  select c.canvas_id
  from app.canvases c
  where c.deleted_at is null
    and c.canvas_id in (select cm.canvas_id from app.canvas_members cm where cm.user_id = auth.uid()
                        union all
                        select c2.canvas_id from app.workspace_members wm
                        join app.canvases c2 on c2.workspace_id = wm.workspace_id
                        where wm.user_id = auth.uid())
    and (not p_in_token_scope or internal.token_allows(c.canvas_id, false))
$$;
comment on function internal.readable_canvas_ids(boolean) is
  'The canvas ids the current caller (auth.uid()) has a role on: exactly the canvases c with internal.canvas_role(c, auth.uid()) '
  'is not null, and with p_in_token_scope also internal.token_allows(c, false) (the scope claim of request.jwt.claims). '
  'None without a user. For RLS policies, as `canvas_id in (select internal.readable_canvas_ids(…))`: run once per query, '
  'then a hashed lookup per row.';

drop policy if exists workspaces_member_read on app.workspaces;
create policy workspaces_member_read on app.workspaces for select to authenticated
  using (internal.workspace_role(workspace_id, auth.uid()) is not null);

drop policy if exists workspace_members_member_read on app.workspace_members;
create policy workspace_members_member_read on app.workspace_members for select to authenticated
  using (internal.workspace_role(workspace_id, auth.uid()) is not null);

drop policy if exists canvases_member_read on app.canvases;
create policy canvases_member_read on app.canvases for select to authenticated
  using (canvas_id in (select internal.readable_canvas_ids(true)));

drop policy if exists canvas_members_member_read on app.canvas_members;
create policy canvas_members_member_read on app.canvas_members for select to authenticated
  using (canvas_id in (select internal.readable_canvas_ids(false)));

drop policy if exists blocks_member_read on app.blocks;
create policy blocks_member_read on app.blocks for select to authenticated
  using (canvas_id in (select internal.readable_canvas_ids(true)));

-- A canvas's operation log holds only its members' attempts (api.upsert_block_atomic sends
-- everyone else's to the system audit), so its members read their own tenant's rows only.
drop policy if exists block_operations_member_read on app.block_operations;
create policy block_operations_member_read on app.block_operations for select to authenticated
  using (canvas_id in (select internal.readable_canvas_ids(true)));

-- The system audit spans every tenant and holds outsiders' attempts against canvases: no API role
-- reads it, not even a row about itself or a workspace owner the attempts against their canvas
-- (service_role and database admins do; an owner-facing view would be a separate, filtered API).
drop policy if exists system_audit_own_read on app.system_audit;
revoke all on app.system_audit from authenticated, anon;

drop policy if exists presence_member_read on app.presence;
create policy presence_member_read on app.presence for select to authenticated
  using (canvas_id in (select internal.readable_canvas_ids(false)));
-- app.settings, app.rate_limits, app.rate_limit_slots and app.presence_sessions: no policy, so no
-- direct access at all (a presence session names a gateway process: api.update_presence and
-- api.leave_canvas write them for the caller, sql/rpc/presence.sql; members read app.presence).

grant execute on function internal.workspace_role(uuid, uuid), internal.canvas_role(uuid, uuid), internal.readable_canvas_ids(boolean),
  internal.token_allows(uuid, boolean), internal.request_context(), internal.context_of(jsonb, jsonb, uuid), internal.context_of(jsonb, jsonb, uuid, inet),
  internal.try_uuid(text),
  internal.try_inet(text), internal.try_jsonb(text), internal.topic_canvas_id(text) to authenticated;
-- The policies above call internal functions by reference, which needs EXECUTE but not USAGE.
-- No USAGE on `internal`: its helpers (apply_block_op, assign_ranks, write_audit ...) trust their
-- arguments, so callers must never reach them by name (and PUBLIC has no EXECUTE on them,
-- sql/security/public_execute.sql).
revoke usage on schema internal from authenticated;
