-- Roles and token scopes. owner/admin: everything incl. members and delete; editor: edit canvases
-- and blocks; viewer: read only. A per-canvas role replaces the workspace role on that canvas
-- (except that a workspace owner stays owner).

create or replace function internal.workspace_role(p_workspace_id uuid, p_user_id uuid) returns app.member_role
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select role from app.workspace_members where workspace_id = p_workspace_id and user_id = p_user_id
$$;

-- The caller's effective role on a live (not soft-deleted) canvas, or null for no access.
-- PL/pgSQL (here and below) so the plan is cached per session: RLS policies and every mutation
-- call these, and a SQL function is planned again at each call from PL/pgSQL.
create or replace function internal.canvas_role(p_canvas_id uuid, p_user_id uuid) returns app.member_role
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  return (select r.role from internal.canvas_roles(p_canvas_id, p_user_id) r);
end $$;

-- The rule of internal.canvas_role as rows (one, or none for no access), for a query that reads
-- the role beside other things: an SQL function returning a set, STABLE, not STRICT, not
-- SECURITY DEFINER and with no SET clause, so the planner inlines it into that query (no call).
-- The mutation RPC reads the role and its settings in one statement with it, where a call of
-- canvas_role cost a statement, a PL/pgSQL call and a SET clause per mutation
-- (docs/performance.md). It runs as its caller: only a caller that may read app.canvases and the
-- member tables (canvas_role, the SECURITY DEFINER RPCs) gets an answer.
create or replace function internal.canvas_roles(p_canvas_id uuid, p_user_id uuid) returns table (role app.member_role)
language sql stable as $$
  select case when wm.role = 'owner' then wm.role else coalesce(cm.role, wm.role) end
  from app.canvases c
  left join app.workspace_members wm on wm.workspace_id = c.workspace_id and wm.user_id = p_user_id
  left join app.canvas_members cm on cm.canvas_id = c.canvas_id and cm.user_id = p_user_id
  where c.canvas_id = p_canvas_id and c.deleted_at is null and (wm.role is not null or cm.role is not null)
$$;

-- can_write_role and scope_allows are SQL functions that the planner inlines: each is one
-- expression, not SECURITY DEFINER, with no SET clause and no subquery, so a call of either
-- becomes part of the caller's expression (planned once with it) instead of a function call.
-- Every mutation runs both (measured in instructions per mutation, docs/performance.md). Their
-- arguments should be cheap (a variable, a column, `->`): an argument the body uses twice is
-- then evaluated twice, and an expensive one keeps the call from being inlined.
create or replace function internal.can_write_role(p_role app.member_role) returns boolean
language sql immutable as $$
  select coalesce(p_role in ('owner', 'admin', 'editor'), false)
$$;

-- An optional `scope` claim (space-separated string or array) narrows a token to listed
-- canvases: `canvas:{id}:write` (implies read), `canvas:{id}:read`, `*` for any canvas id.
-- Without a scope claim the token carries the user's full rights. p_canvas_id null asks about a
-- workspace-level write (create a canvas, set a member): only an unscoped or `canvas:*:write` token.
-- scope_allows decides for a given scope claim (the mutation RPC passes its request context's);
-- token_allows reads the claim of the current request. An array's entries are its string
-- elements (`?|`); a string's are its whitespace-separated words. Entries are read with ASCII
-- letters in lower case (translate: no locale), so `canvas:<ID IN UPPER CASE>:read` names the canvas
-- as format('%s', uuid) spells it: a uuid has no case, and the sub and the HTTP paths are read in
-- either case too (the gateway's hasWriteScope, src/realtime/access.ts, reads them the same way).
-- In an array, an upper-case letter written as a \u escape stays as it is.
create or replace function internal.scope_allows(p_scope jsonb, p_canvas_id uuid, p_write boolean) returns boolean
language sql stable as $$
  select case
    when p_scope is null or jsonb_typeof(p_scope) = 'null' then true
    when jsonb_typeof(p_scope) = 'array' then
      translate(p_scope::text, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')::jsonb
        ?| array[format('canvas:%s:write', p_canvas_id), 'canvas:*:write']
      or (not p_write and translate(p_scope::text, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')::jsonb
        ?| array[format('canvas:%s:read', p_canvas_id), 'canvas:*:read'])
    when jsonb_typeof(p_scope) = 'string' then
      regexp_split_to_array(translate(p_scope #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), '\s+')
        && array[format('canvas:%s:write', p_canvas_id), 'canvas:*:write']
      or (not p_write and regexp_split_to_array(translate(p_scope #>> '{}', 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), '\s+')
        && array[format('canvas:%s:read', p_canvas_id), 'canvas:*:read'])
    else false
  end
$$;

-- Security definer (like the role lookups) because RLS policies call it as `authenticated`, which
-- has no USAGE on schema internal; a definer body resolves internal.* as the owner.
create or replace function internal.token_allows(p_canvas_id uuid, p_write boolean) returns boolean
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_scope jsonb := internal.try_jsonb(current_setting('request.jwt.claims', true)) -> 'scope';  -- a variable: scope_allows inlines
begin
  return internal.scope_allows(v_scope, p_canvas_id, p_write);
end $$;

-- The canvas id in a realtime topic `canvas:{uuid}`, or null. Only the canonical spelling (lower
-- case, 8-4-4-4-12, as uuid_out writes it) names a canvas: a topic is matched by its exact string
-- everywhere else (the gateway's rooms, its bus, the access_changed messages on `canvas:{id}`),
-- so another spelling that uuid_in also reads (upper case, dashes moved) would be admitted here
-- and then never re-checked when the member's access changes.
create or replace function internal.topic_canvas_id(p_topic text) returns uuid
language sql immutable security definer set search_path = pg_catalog, pg_temp as $$
  select substring(p_topic from '^canvas:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$')::uuid
$$;
comment on function internal.topic_canvas_id(text) is
  'The canvas id of realtime topic p_topic when it is canvas:<id> with the id in canonical form (lower-case hex, 8-4-4-4-12); null for any other topic or spelling.';
