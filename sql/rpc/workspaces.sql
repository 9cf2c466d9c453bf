-- Workspaces and their members (issue 14, the W-endpoints of functions/workspaces.ts): create,
-- list and rename workspaces; list, add (by email, or a pending invite), re-role and remove
-- members; invites accepted when the invited email signs up. Errors are raised with the stable
-- codes of internal.raise_error and name the field at fault; every change is audited
-- (internal.write_audit); a refused call writes nothing (the error rolls back the transaction).
--
-- Who may do what (caller's workspace role; "stranger" = signed-in non-member, who learns nothing:
-- not_found, never forbidden; no user = unauthorized):
--   action                          owner  admin                        editor/viewer   stranger
--   create a workspace              ok     ok                           ok              ok
--   list my workspaces              ok     ok                           ok              ok (their own)
--   rename                          ok     ok                           forbidden       not_found
--   list members / canvases         ok     ok                           ok              not_found
--   add a member or invite          ok     ok, not as owner             forbidden       not_found
--   change a member's role          ok     ok, not to or from owner     forbidden       not_found
--   remove a member                 ok     ok, not an owner             only themselves not_found
--   list / revoke invites           ok     ok, not an owner's invite    forbidden       not_found
-- Only an owner makes, unmakes or removes an owner. A workspace always keeps an owner: the last
-- one cannot be demoted, removed or leave (invalid_input, reason last_owner). A token whose
-- `scope` names only some canvases acts on those canvases alone: it is forbidden here (reads need
-- an unscoped token or canvas:*:read, changes an unscoped one or canvas:*:write).
--
-- Membership changes are announced to open sockets by the triggers on app.workspace_members and
-- app.canvas_members (sql/realtime/access.sql: `access_changed`), whoever makes them, so these
-- functions send nothing themselves. Concurrent member changes of one workspace are serialized
-- by a lock on its app.workspaces row (internal.lock_workspace), which is what keeps the last
-- owner when two owners step down at once.

create or replace function internal.workspace_json(w app.workspaces, p_role app.member_role) returns jsonb
language sql stable as $$
  select jsonb_build_object('workspace_id', w.workspace_id, 'name', w.name, 'role', p_role,
                            'created_by', w.created_by, 'created_at', w.created_at)
$$;

-- {user_id, email, role, joined_at} of one member, or null.
create or replace function internal.member_json(p_workspace_id uuid, p_user_id uuid) returns jsonb
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select jsonb_build_object('user_id', m.user_id, 'email', u.email, 'role', m.role, 'joined_at', m.created_at)
  from app.workspace_members m join auth.users u on u.id = m.user_id
  where m.workspace_id = p_workspace_id and m.user_id = p_user_id
$$;

create or replace function internal.invite_json(i app.workspace_invites) returns jsonb
language sql stable as $$
  select jsonb_build_object('invite_id', i.invite_id, 'workspace_id', i.workspace_id, 'email', i.email, 'role', i.role,
                            'invited_by', i.invited_by, 'created_at', i.created_at)
$$;

-- A role given as text (what clients send): one of owner, admin, editor, viewer, else
-- invalid_input naming `role`.
create or replace function internal.parse_member_role(p_role text) returns app.member_role
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if p_role is null or p_role not in ('owner', 'admin', 'editor', 'viewer') then
    perform internal.raise_error('invalid_input', 'role must be one of owner, admin, editor, viewer', '{"field":"role"}');
  end if;
  return p_role::app.member_role;
end $$;

-- An email as stored: trimmed, lower-cased (GoTrue's form), 3 to 320 characters, one @ with
-- something on both sides, no control, invisible or direction-changing character
-- (internal.is_display_text); else invalid_input naming `email`.
create or replace function internal.normalize_email(p_email text) returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare v_email text := lower(btrim(p_email));
begin
  if v_email is null or char_length(v_email) not between 3 and 320 or v_email !~ '^[^@\s]+@[^@\s]+$'
     or not internal.is_display_text(v_email) then
    perform internal.raise_error('invalid_input', 'email must be an email address (at most 320 characters)', '{"field":"email"}');
  end if;
  return v_email;
end $$;

-- A workspace name: 1 to 200 characters once trimmed, read as it displays (internal.is_display_text:
-- no control, invisible or direction-changing character); else invalid_input naming `name`.
create or replace function internal.check_workspace_name(p_name text) returns text
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if p_name is null or char_length(btrim(p_name)) not between 1 and 200 or not internal.is_display_text(p_name) then
    perform internal.raise_error('invalid_input',
      'name must be 1 to 200 characters, without control characters, invisible or direction-changing characters (such as U+200B, U+202E, U+FEFF, U+2028), and not only spaces or joiners',
      '{"field":"name"}');
  end if;
  return btrim(p_name);
end $$;

-- The caller's role in the workspace. Raises unauthorized (no user), not_found naming
-- `workspace_id` (no such workspace, or not a member: indistinguishable on purpose), forbidden
-- (a canvas-scoped token; p_write: a change rather than a read).
create or replace function internal.require_workspace_member(p_workspace_id uuid, p_write boolean) returns app.member_role
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_role app.member_role := internal.workspace_role(p_workspace_id, internal.require_user());
begin
  if v_role is null then
    perform internal.raise_error('not_found', 'workspace not found, or you are not a member of it', '{"field":"workspace_id"}');
  end if;
  if not internal.token_allows(null, p_write) then
    perform internal.raise_error('forbidden', 'this token''s scope is limited to some canvases: it cannot act on the workspace');
  end if;
  return v_role;
end $$;

-- Locks the workspace's row until commit, so member changes of one workspace happen one at a time
-- (reads and canvas creation are not blocked: FOR NO KEY UPDATE lets foreign keys in), and
-- returns the caller's role as it is once the lock is held (a concurrent change may have changed
-- it); not_found if the caller is no longer a member.
create or replace function internal.lock_workspace(p_workspace_id uuid) returns app.member_role
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_role app.member_role;
begin
  perform from app.workspaces where workspace_id = p_workspace_id for no key update;
  v_role := internal.workspace_role(p_workspace_id, auth.uid());
  if v_role is null then
    -- a caller deleted while we waited has no role left: unauthorized, as before the wait
    perform internal.require_user_exists(auth.uid());
    perform internal.raise_error('not_found', 'workspace not found, or you are not a member of it', '{"field":"workspace_id"}');
  end if;
  return v_role;
end $$;

-- The caller's role, which must be owner or admin (forbidden otherwise: p_what says what they
-- tried), with the workspace locked (internal.lock_workspace) and the caller's user row too
-- (internal.lock_user).
create or replace function internal.require_workspace_manager(p_workspace_id uuid, p_what text) returns app.member_role
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.lock_user();  -- what managers write names them (invited_by)
  return internal.check_workspace_manager(p_workspace_id, p_what);
end $$;

-- internal.require_workspace_manager without the caller's user row lock, for the calls that lock
-- another user's row (the member they add or set) and write nothing naming the caller: a call
-- holding two users' rows can deadlock with one statement deleting both (see
-- api.set_workspace_member). The workspace is locked all the same.
create or replace function internal.check_workspace_manager(p_workspace_id uuid, p_what text) returns app.member_role
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_role app.member_role;
begin
  perform internal.require_workspace_member(p_workspace_id, true);
  v_role := internal.lock_workspace(p_workspace_id);
  if v_role not in ('owner', 'admin') then
    perform internal.raise_error('forbidden', format('your role (%s) cannot %s: only owners and admins can', v_role, p_what));
  end if;
  return v_role;
end $$;

-- Refuses (invalid_input, reason last_owner, naming p_field) when p_user_id is the workspace's
-- only owner: the change would leave it without one. Call with the workspace locked.
create or replace function internal.keep_last_owner(p_workspace_id uuid, p_user_id uuid, p_field text) returns void
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  if internal.workspace_role(p_workspace_id, p_user_id) = 'owner'
     and (select count(*) from app.workspace_members where workspace_id = p_workspace_id and role = 'owner') = 1 then
    perform internal.raise_error('invalid_input', 'this is the workspace''s last owner: make another member owner first',
                                 jsonb_build_object('field', p_field, 'reason', 'last_owner'));
  end if;
end $$;

-- ---------------------------------------------------------------------------------------------
-- Workspaces
-- ---------------------------------------------------------------------------------------------

-- A create may carry the id it wants (p_workspace_id; api.create_canvas's p_canvas_id likewise),
-- chosen by the client before its first attempt, so that sending the request again cannot make a
-- second workspace: an answer lost with its connection (503 after COMMIT was sent, a timeout, a
-- dropped network) leaves the client not knowing whether the workspace exists, and a resend with
-- a fresh id made another one. With the id, a resend finds the row: the same caller and the same
-- name is the same creation, answered as the first call was and nothing written again (no second
-- membership, audit row or access_changed); anything else is a conflict naming what differs,
-- with nothing written. Two calls with one id at once make one row: the second insert waits for
-- the first's transaction (ON CONFLICT DO NOTHING on the primary key) and then finds its row, or
-- inserts if it rolled back. Another user's row is refused on workspace_id alone, before anything
-- of it is compared, so the refusal tells nothing about it.
drop function if exists api.create_workspace(text);  -- before p_workspace_id (a one-argument call would be ambiguous)

-- The answer to a resend of api.create_workspace with the id of a row that exists: the Workspace
-- when p_user created it with p_name (role: the caller's role now, owner unless it changed since),
-- else conflict naming workspace_id (another user's row; or the caller's, but they are no longer a
-- member of it) or name. Writes nothing.
create or replace function internal.replay_create_workspace(w app.workspaces, p_user uuid, p_name text) returns jsonb
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare v_role app.member_role;
begin
  if w.created_by is distinct from p_user then
    perform internal.raise_error('conflict', 'workspace_id is already taken: send a new one (a random UUID) to create a workspace',
                                 '{"field":"workspace_id"}');
  end if;
  if w.name is distinct from p_name then
    perform internal.raise_error('conflict', 'you created the workspace with this workspace_id under another name: a resend must send '
      'the same name (to create another workspace, send a new workspace_id)', '{"field":"name"}');
  end if;
  v_role := internal.workspace_role(w.workspace_id, p_user);
  if v_role is null then
    perform internal.raise_error('conflict', 'you created the workspace with this workspace_id but are no longer a member of it',
                                 '{"field":"workspace_id"}');
  end if;
  return internal.workspace_json(w, v_role);
end $$;

create or replace function api.create_workspace(p_name text, p_workspace_id uuid default null) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_name text;
  v_workspace app.workspaces;
begin
  perform internal.count_endpoint_call('W2');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.lock_user();
  v_name := internal.check_workspace_name(p_name);
  if not internal.token_allows(null, true) then
    perform internal.raise_error('forbidden', 'this token''s scope is limited to some canvases: it cannot create a workspace');
  end if;
  perform internal.check_client_id(p_workspace_id, 'workspace_id');
  if p_workspace_id is null then
    insert into app.workspaces (name, created_by) values (v_name, v_user) returning * into v_workspace;
  else
    loop
      insert into app.workspaces (workspace_id, name, created_by) values (p_workspace_id, v_name, v_user)
      on conflict (workspace_id) do nothing returning * into v_workspace;
      exit when v_workspace.workspace_id is not null;
      -- the row exists (committed: a concurrent insert of the id was waited for), and this
      -- statement's snapshot, taken after that wait, sees it
      select * into v_workspace from app.workspaces where workspace_id = p_workspace_id;
      if v_workspace.workspace_id is not null then
        return internal.replay_create_workspace(v_workspace, v_user, v_name);
      end if;
      -- deleted in between: the id is free again
    end loop;
  end if;
  insert into app.workspace_members (workspace_id, user_id, role) values (v_workspace.workspace_id, v_user, 'owner');
  perform internal.write_audit(internal.request_context(), 'workspace.create', 'success', 'workspace',
                               v_workspace.workspace_id::text, '{}', null, null, null, 1);
  return internal.workspace_json(v_workspace, 'owner');
end $$;
comment on function api.create_workspace(text, uuid) is
  'W2: creates a workspace whose owner is the caller. name: 1-200 characters (trimmed). workspace_id (optional): the id to '
  'create it with, chosen by the client (a random UUID) so that a resend cannot create a second workspace: when a workspace '
  'with that id exists that the caller created with the same name, the call answers it again (role: the caller''s role now) '
  'and writes nothing (no second audit row). Returns the Workspace {workspace_id, name, role: owner, created_by, created_at}. '
  'Errors: unauthorized; invalid_input (name); forbidden (a canvas-scoped token); conflict (field workspace_id: the id is '
  'another user''s workspace, or one the caller is no longer a member of; field name: the caller created it with another '
  'name), writing nothing. Any signed-in user. Audited workspace.create.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W2 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- W1, W4, W9: a page at a time, as the paged lists are (sql/core/list_keys.sql): by when the row
-- was made, then its id.
drop function if exists api.list_my_workspaces();
create or replace function api.list_my_workspaces(p_cursor text default null, p_limit integer default 100) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_limit integer;
  v_time timestamptz;
  v_id uuid;
  v_row record;
  v_items jsonb[] := '{}';
  v_more boolean := false;
begin
  perform internal.count_endpoint_call('W1');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.require_user();
  v_limit := internal.list_limit(p_limit);
  if not internal.token_allows(null, false) then
    perform internal.raise_error('forbidden', 'this token''s scope is limited to some canvases: it cannot list workspaces');
  end if;
  select * into v_time, v_id from internal.list_start(p_cursor);
  for v_row in
    select w, m.role, m.created_at
    from app.workspace_members m join app.workspaces w using (workspace_id)
    where m.user_id = v_user and (m.created_at, m.workspace_id) > (v_time, v_id)
    order by m.created_at, m.workspace_id limit v_limit + 1
  loop
    if cardinality(v_items) >= v_limit then
      v_more := true;
      exit;
    end if;
    v_items := array_append(v_items, internal.workspace_json(v_row.w, v_row.role));
    v_time := v_row.created_at;
    v_id := (v_row.w).workspace_id;
  end loop;
  return jsonb_build_object('workspaces', to_jsonb(v_items), 'next_cursor', case when v_more then internal.list_cursor(v_time, v_id) end);
end $$;
comment on function api.list_my_workspaces(text, integer) is
  'W1: the workspaces the caller is a member of, by when they joined (oldest first), a page at a time: {workspaces: [Workspace '
  '{workspace_id, name, role (the caller''s), created_by, created_at}], next_cursor}, at most limit (1..500, default 100); pass '
  'next_cursor as cursor for the next page (null: the last). Errors: unauthorized; forbidden (a token scoped to some canvases); '
  'invalid_input (field cursor). Any signed-in user.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W1 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

create or replace function api.rename_workspace(p_workspace_id uuid, p_name text) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_role app.member_role;
  v_name text;
  v_workspace app.workspaces;
begin
  perform internal.count_endpoint_call('W3');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_role := internal.require_workspace_member(p_workspace_id, true);
  if v_role not in ('owner', 'admin') then
    perform internal.raise_error('forbidden', format('your role (%s) cannot rename the workspace: only owners and admins can', v_role));
  end if;
  v_name := internal.check_workspace_name(p_name);
  update app.workspaces set name = v_name where workspace_id = p_workspace_id returning * into v_workspace;
  perform internal.write_audit(internal.request_context(), 'workspace.rename', 'success', 'workspace', p_workspace_id::text,
                               '{}', null, null, null, 1);
  return internal.workspace_json(v_workspace, v_role);
end $$;
comment on function api.rename_workspace(uuid, text) is
  'W3: renames a workspace. name: 1-200 characters (trimmed). Returns the Workspace. Errors: unauthorized; not_found '
  '(workspace_id: none, or not a member); forbidden (editor, viewer, canvas-scoped token); invalid_input (name). '
  'Owners and admins. Audited workspace.rename.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W3 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

drop function if exists api.list_workspace_canvases(uuid);
create or replace function api.list_workspace_canvases(p_workspace_id uuid, p_cursor text default null, p_limit integer default 100) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.count_endpoint_call('W8');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_workspace_member(p_workspace_id, false);
  return internal.canvases_page(auth.uid(), p_workspace_id, p_cursor, p_limit);
end $$;
comment on function api.list_workspace_canvases(uuid, text, integer) is
  'W8: the live canvases of a workspace, newest change first, paged as api.list_my_canvases pages them ({canvases, next_cursor}; '
  'limit 1..500, default 100, and about 4 MB), each with the caller''s role on it. Errors: unauthorized; not_found (workspace_id); '
  'forbidden (canvas-scoped token); invalid_input (field cursor). Any member.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W8 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- ---------------------------------------------------------------------------------------------
-- Members
-- ---------------------------------------------------------------------------------------------

drop function if exists api.list_workspace_members(uuid);
create or replace function api.list_workspace_members(p_workspace_id uuid, p_cursor text default null, p_limit integer default 100)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_limit integer;
  v_time timestamptz;
  v_id uuid;
  v_row record;
  v_items jsonb[] := '{}';
  v_more boolean := false;
begin
  perform internal.count_endpoint_call('W4');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_limit := internal.list_limit(p_limit);
  perform internal.require_workspace_member(p_workspace_id, false);
  select * into v_time, v_id from internal.list_start(p_cursor);
  for v_row in
    select m.user_id, u.email, m.role, m.created_at
    from app.workspace_members m join auth.users u on u.id = m.user_id
    where m.workspace_id = p_workspace_id and (m.created_at, m.user_id) > (v_time, v_id)
    order by m.created_at, m.user_id limit v_limit + 1
  loop
    if cardinality(v_items) >= v_limit then
      v_more := true;
      exit;
    end if;
    v_items := array_append(v_items, jsonb_build_object('user_id', v_row.user_id, 'email', v_row.email, 'role', v_row.role,
                                                        'joined_at', v_row.created_at));
    v_time := v_row.created_at;
    v_id := v_row.user_id;
  end loop;
  return jsonb_build_object('members', to_jsonb(v_items), 'next_cursor', case when v_more then internal.list_cursor(v_time, v_id) end);
end $$;
comment on function api.list_workspace_members(uuid, text, integer) is
  'W4: the members of a workspace, by when they joined (oldest first), a page at a time: {members: [Member {user_id, email, role, '
  'joined_at}], next_cursor}, at most limit (1..500, default 100); pass next_cursor as cursor for the next page (null: the last). '
  'Errors: unauthorized; not_found (workspace_id: none, or not a member); forbidden (canvas-scoped token); invalid_input (field '
  'cursor). Any member.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W4 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- Serializes an invite of an address (api.add_workspace_member) with the sign-up or the
-- confirmation of that address (internal.accept_workspace_invites): a transaction-level advisory
-- lock on the address as stored (lower-cased, trimmed). Without it each could miss the other: the
-- invite looked the address up before the sign-up committed, the sign-up's trigger looked for
-- invites before the invite committed, and the invite stayed pending for a user who already
-- existed (the trigger runs only when a confirmed address is inserted, confirmed or changed), who
-- never became a member. With it the second waits for the first and then sees it: the invite finds
-- the confirmed user (and adds them), or the trigger finds the invite.
create or replace function internal.lock_invite_email(p_email text) returns void
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
begin
  if p_email is not null then
    perform pg_advisory_xact_lock(hashtextextended('potentia.workspace_invite:' || lower(btrim(p_email)), 0));
  end if;
end $$;
revoke execute on function internal.lock_invite_email(text) from public;

create or replace function api.add_workspace_member(p_workspace_id uuid, p_email text, p_role text) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_caller app.member_role;
  v_role app.member_role;
  v_email text := lower(btrim(p_email));  -- normalize_email's form; it refuses a malformed one below
  v_target uuid;
  v_invite app.workspace_invites;
begin
  perform internal.count_endpoint_call('W5');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_user();  -- unauthorized before any row is locked
  -- a sign-up of the address waits for this call, or this call for it (internal.lock_invite_email)
  perform internal.lock_invite_email(p_email);
  -- The member's user row is locked (as lock_user locks the caller: the membership below names
  -- them) before the workspace's row (check_workspace_manager), in the order a deletion of the
  -- member locks them: the user's row, then (workspaces.created_by, ON DELETE SET NULL) the rows
  -- of the workspaces they created. The other way round, the deletion of a member who created
  -- this workspace deadlocked with the call (40P01, failing one of them).
  -- Only a CONFIRMED account is added: an unconfirmed one is treated as no account (GoTrue proves
  -- an address only at its confirmation). Until 2026-12-07 any user with the address was added at
  -- once: whoever signed up first with someone else's address, never confirming it, got into every
  -- workspace that added that address. Now the address gets a pending invite, answered exactly as
  -- for an address nobody signed up with (the caller learns nothing of the unconfirmed account),
  -- and the confirmation takes it (internal.accept_workspace_invites; a confirmation racing this
  -- call waits for the lock above, or this call for it, and then sees it).
  -- GoTrue stores emails lower-cased (its unique index finds them); another spelling is looked for
  -- only then (an index on lower(email), where there is one, as in sql/compat/auth.sql)
  select id into v_target from auth.users where email = v_email and email_confirmed_at is not null for key share;
  if v_target is null then
    select id into v_target from auth.users where lower(email) = v_email and email_confirmed_at is not null
    order by created_at limit 1 for key share;
  end if;
  -- The caller's row is locked only when no member was found: then the invite below names the
  -- caller (invited_by); the membership does not. Never both rows (see set_workspace_member).
  if v_target is null then
    perform internal.lock_user();
  end if;
  v_caller := internal.check_workspace_manager(p_workspace_id, 'add members');
  v_role := internal.parse_member_role(p_role);
  v_email := internal.normalize_email(p_email);
  if v_role = 'owner' and v_caller <> 'owner' then
    perform internal.raise_error('forbidden', 'only an owner can make another owner', '{"field":"role"}');
  end if;

  if v_target is not null then
    if internal.workspace_role(p_workspace_id, v_target) is not null then
      perform internal.raise_error('conflict', 'this user is already a member: change their role instead',
                                   jsonb_build_object('field', 'email', 'reason', 'already_member', 'user_id', v_target));
    end if;
    insert into app.workspace_members (workspace_id, user_id, role) values (p_workspace_id, v_target, v_role);
    perform internal.write_audit(internal.request_context(), 'workspace.member.add', 'success', 'workspace', p_workspace_id::text,
                                 jsonb_build_object('user_id', v_target, 'role', v_role), null, null, null, 1);
    return jsonb_build_object('kind', 'member', 'member', internal.member_json(p_workspace_id, v_target));
  end if;

  -- no such user yet, or not confirmed: a pending invite (inviting the same email again changes its role)
  select * into v_invite from app.workspace_invites where workspace_id = p_workspace_id and email = v_email for update;
  if v_invite.role = 'owner' and v_caller <> 'owner' then
    perform internal.raise_error('forbidden', 'this email is invited as an owner: only an owner can change that', '{"field":"email"}');
  end if;
  insert into app.workspace_invites as i (workspace_id, email, role, invited_by)
  values (p_workspace_id, v_email, v_role, auth.uid())
  on conflict (workspace_id, email) do update set role = excluded.role, invited_by = excluded.invited_by
  returning * into v_invite;
  perform internal.write_audit(internal.request_context(), 'workspace.member.invite', 'success', 'workspace', p_workspace_id::text,
                               jsonb_build_object('invite_id', v_invite.invite_id, 'email', left(v_email, 200), 'role', v_role),
                               null, null, null, 1);
  return jsonb_build_object('kind', 'invite', 'invite', internal.invite_json(v_invite));
end $$;
comment on function api.add_workspace_member(uuid, text, text) is
  'W5: adds the confirmed user with this email (case-insensitive) to the workspace: {kind: member, member: Member}. An email '
  'with no user yet, or only an unconfirmed one (an address is proven only at its confirmation), gets a pending invite '
  'instead, answered alike, accepted once a user with that email is confirmed (internal.accept_workspace_invites): '
  '{kind: invite, invite: Invite {invite_id, workspace_id, email, role, invited_by, created_at}}; inviting it again '
  'changes the role. role: owner | admin | editor | viewer. Errors: unauthorized; not_found (workspace_id); forbidden '
  '(editor, viewer, canvas-scoped token; an admin making an owner or changing an owner''s invite); invalid_input '
  '(email, role); conflict (email: already a member, reason already_member, with user_id). Owners and admins. Audited '
  'workspace.member.add or workspace.member.invite.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W5 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

create or replace function api.update_workspace_member(p_workspace_id uuid, p_user_id uuid, p_role text) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_caller app.member_role;
  v_role app.member_role;
  v_current app.member_role;
begin
  perform internal.count_endpoint_call('W6');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_caller := internal.require_workspace_manager(p_workspace_id, 'change roles');
  v_role := internal.parse_member_role(p_role);
  v_current := internal.workspace_role(p_workspace_id, p_user_id);
  if v_current is null then
    perform internal.raise_error('not_found', 'no such member in this workspace', '{"field":"user_id"}');
  end if;
  if v_caller <> 'owner' and (v_role = 'owner' or v_current = 'owner') then
    perform internal.raise_error('forbidden', 'only an owner can make or unmake an owner', '{"field":"role"}');
  end if;
  if v_role = v_current then
    return internal.member_json(p_workspace_id, p_user_id); -- nothing changes, nothing to audit
  end if;
  if v_current = 'owner' then
    perform internal.keep_last_owner(p_workspace_id, p_user_id, 'role');
  end if;
  update app.workspace_members set role = v_role where workspace_id = p_workspace_id and user_id = p_user_id;
  perform internal.write_audit(internal.request_context(), 'workspace.member.role', 'success', 'workspace', p_workspace_id::text,
                               jsonb_build_object('user_id', p_user_id, 'from', v_current, 'to', v_role), null, null, null, 1);
  return internal.member_json(p_workspace_id, p_user_id);
end $$;
comment on function api.update_workspace_member(uuid, uuid, text) is
  'W6: changes a member''s role; returns the Member {user_id, email, role, joined_at} (unchanged and not audited when the '
  'role is the same). role: owner | admin | editor | viewer. Errors: unauthorized; not_found (workspace_id; user_id: not a '
  'member); forbidden (editor, viewer, canvas-scoped token; an admin making or unmaking an owner); invalid_input (role; '
  'role with reason last_owner: the only owner cannot step down). Owners and admins. Open sockets of the member re-check '
  'their access (access_changed). Audited workspace.member.role.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W6 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

create or replace function api.remove_workspace_member(p_workspace_id uuid, p_user_id uuid) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_caller app.member_role;
  v_target app.member_role;
  v_canvas_roles integer;
begin
  perform internal.count_endpoint_call('W7');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_workspace_member(p_workspace_id, true);
  v_user := auth.uid();
  v_caller := internal.lock_workspace(p_workspace_id);
  v_target := internal.workspace_role(p_workspace_id, p_user_id);
  if v_target is null then
    perform internal.raise_error('not_found', 'no such member in this workspace', '{"field":"user_id"}');
  end if;
  if p_user_id is distinct from v_user then
    if v_caller not in ('owner', 'admin') then
      perform internal.raise_error('forbidden', format('your role (%s) cannot remove members: only owners and admins can (anyone may leave)', v_caller));
    end if;
    if v_target = 'owner' and v_caller <> 'owner' then
      perform internal.raise_error('forbidden', 'only an owner can remove an owner', '{"field":"user_id"}');
    end if;
  end if;
  perform internal.keep_last_owner(p_workspace_id, p_user_id, 'user_id');
  -- leaving a workspace takes every role in it, per-canvas ones included
  delete from app.canvas_members cm using app.canvases c
  where cm.canvas_id = c.canvas_id and c.workspace_id = p_workspace_id and cm.user_id = p_user_id;
  get diagnostics v_canvas_roles = row_count;
  delete from app.workspace_members where workspace_id = p_workspace_id and user_id = p_user_id;
  perform internal.write_audit(internal.request_context(), 'workspace.member.remove', 'success', 'workspace', p_workspace_id::text,
                               jsonb_build_object('user_id', p_user_id, 'role', v_target, 'left', p_user_id = v_user,
                                                  'canvas_roles', v_canvas_roles),
                               null, null, null, 1 + v_canvas_roles);
  return jsonb_build_object('workspace_id', p_workspace_id, 'user_id', p_user_id, 'removed', true);
end $$;
comment on function api.remove_workspace_member(uuid, uuid) is
  'W7: removes a member from the workspace, with their per-canvas roles on its canvases; a member passing their own '
  'user_id leaves. Returns {workspace_id, user_id, removed: true}. Errors: unauthorized; not_found (workspace_id; '
  'user_id: not a member); forbidden (editor or viewer removing someone else, canvas-scoped token, an admin removing an '
  'owner); invalid_input (user_id with reason last_owner: the only owner cannot be removed or leave). Owners and admins; '
  'anyone for themselves. Open sockets of the member are re-checked and closed (access_changed). Audited '
  'workspace.member.remove.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W7 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- Kept for SQL callers and fixtures (PostgREST-style): sets a user's role by id, adding them if
-- needed, under the same rules as the functions above.
create or replace function api.set_workspace_member(p_workspace_id uuid, p_user_id uuid, p_role app.member_role)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_caller app.member_role;
  v_current app.member_role;
  v_member_exists boolean;
begin
  perform internal.require_user();  -- unauthorized before any row is locked
  -- locked as add_workspace_member locks the member, and before the workspace for the same reason
  -- (a deletion locks the user, then the workspaces they created): the membership below names the
  -- user, and a user deleted after an unlocked look failed its foreign key (23503)
  perform from auth.users where id = p_user_id for key share;
  v_member_exists := found;
  -- The caller's row is not locked: nothing written here names the caller (the audit row has no
  -- foreign key). A call holding both users' rows deadlocked with one statement deleting both,
  -- `delete from auth.users where id in (caller, member)`, which locks the two rows in its scan's
  -- order (ctid order in a sequential scan, id order in an index scan) before any ON DELETE action:
  -- where it met the member first, each held the row the other waited for (40P01). No order of
  -- ours matches every scan; holding one user's row at a time leaves no cycle. A caller deleted
  -- meanwhile is still refused: check_workspace_manager reads them after the member's lock.
  v_caller := internal.check_workspace_manager(p_workspace_id, 'manage members');
  v_current := internal.workspace_role(p_workspace_id, p_user_id);
  if (p_role = 'owner' or v_current = 'owner') and v_caller <> 'owner' then
    perform internal.raise_error('forbidden', format('your role (%s) cannot grant this role', v_caller), '{"field":"role"}');
  end if;
  if p_role is null or not v_member_exists then
    perform internal.raise_error('invalid_input', 'user_id must be an existing user and role one of owner, admin, editor, viewer',
                                 '{"field":"user_id"}');
  end if;
  if v_current = 'owner' and p_role <> 'owner' then
    perform internal.keep_last_owner(p_workspace_id, p_user_id, 'role');
  end if;
  insert into app.workspace_members (workspace_id, user_id, role) values (p_workspace_id, p_user_id, p_role)
  on conflict (workspace_id, user_id) do update set role = excluded.role;
  perform internal.write_audit(internal.request_context(), 'workspace.member.set', 'success', 'workspace', p_workspace_id::text,
                               jsonb_build_object('user_id', p_user_id, 'role', p_role), null, null, null, 1);
  return jsonb_build_object('workspace_id', p_workspace_id, 'user_id', p_user_id, 'role', p_role);
end $$;
comment on function api.set_workspace_member(uuid, uuid, app.member_role) is
  'Sets the role of user p_user_id in the workspace, adding them when not a member: {workspace_id, user_id, role}. '
  'Errors: unauthorized; not_found (workspace_id); forbidden (editor, viewer, canvas-scoped token; an admin making or '
  'unmaking an owner); invalid_input (user_id: no such user or no role; role with reason last_owner). Owners and admins. '
  'Audited workspace.member.set. The HTTP API uses add/update/remove_workspace_member instead.';

-- ---------------------------------------------------------------------------------------------
-- Invites
-- ---------------------------------------------------------------------------------------------

drop function if exists api.list_workspace_invites(uuid);
create or replace function api.list_workspace_invites(p_workspace_id uuid, p_cursor text default null, p_limit integer default 100)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_role app.member_role;
  v_limit integer;
  v_time timestamptz;
  v_id uuid;
  v_invite app.workspace_invites;
  v_items jsonb[] := '{}';
  v_more boolean := false;
begin
  perform internal.count_endpoint_call('W9');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_role := internal.require_workspace_member(p_workspace_id, false);
  v_limit := internal.list_limit(p_limit);
  if v_role not in ('owner', 'admin') then
    perform internal.raise_error('forbidden', format('your role (%s) cannot see invites: only owners and admins can', v_role));
  end if;
  select * into v_time, v_id from internal.list_start(p_cursor);
  for v_invite in
    select * from app.workspace_invites i
    where i.workspace_id = p_workspace_id and (i.created_at, i.invite_id) > (v_time, v_id)
    order by i.created_at, i.invite_id limit v_limit + 1
  loop
    if cardinality(v_items) >= v_limit then
      v_more := true;
      exit;
    end if;
    v_items := array_append(v_items, internal.invite_json(v_invite));
    v_time := v_invite.created_at;
    v_id := v_invite.invite_id;
  end loop;
  return jsonb_build_object('invites', to_jsonb(v_items), 'next_cursor', case when v_more then internal.list_cursor(v_time, v_id) end);
end $$;
comment on function api.list_workspace_invites(uuid, text, integer) is
  'W9: the pending invites of a workspace, oldest first, a page at a time: {invites: [Invite {invite_id, workspace_id, email, role, '
  'invited_by, created_at}], next_cursor}, at most limit (1..500, default 100); pass next_cursor as cursor for the next page (null: '
  'the last). Errors: unauthorized; not_found (workspace_id); forbidden (editor, viewer, canvas-scoped token); invalid_input (field '
  'cursor). Owners and admins.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W9 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

create or replace function api.revoke_workspace_invite(p_workspace_id uuid, p_invite_id uuid) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_caller app.member_role;
  v_invite app.workspace_invites;
begin
  perform internal.count_endpoint_call('W10');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_caller := internal.require_workspace_manager(p_workspace_id, 'revoke invites');
  select * into v_invite from app.workspace_invites where invite_id = p_invite_id and workspace_id = p_workspace_id for update;
  if v_invite.invite_id is null then
    perform internal.raise_error('not_found', 'no such pending invite in this workspace', '{"field":"invite_id"}');
  end if;
  if v_invite.role = 'owner' and v_caller <> 'owner' then
    perform internal.raise_error('forbidden', 'only an owner can revoke an owner''s invite', '{"field":"invite_id"}');
  end if;
  delete from app.workspace_invites where invite_id = p_invite_id;
  perform internal.write_audit(internal.request_context(), 'workspace.invite.revoke', 'success', 'workspace', p_workspace_id::text,
                               jsonb_build_object('invite_id', p_invite_id, 'email', left(v_invite.email, 200), 'role', v_invite.role),
                               null, null, null, 1);
  return jsonb_build_object('workspace_id', p_workspace_id, 'invite_id', p_invite_id, 'revoked', true);
end $$;
comment on function api.revoke_workspace_invite(uuid, uuid) is
  'W10: deletes a pending invite: {workspace_id, invite_id, revoked: true}. Errors: unauthorized; not_found (workspace_id; '
  'invite_id: not pending in this workspace); forbidden (editor, viewer, canvas-scoped token; an admin revoking an owner''s '
  'invite). Owners and admins. Audited workspace.invite.revoke.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint W10 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- A user whose email has pending invites becomes a member of each of those workspaces with the
-- invited role, and the invites are deleted; each acceptance is audited (workspace.invite.accept,
-- as the user). Only an address that is confirmed (email_confirmed_at set) takes its invites, as
-- GoTrue proves an address only at its confirmation: when a user is inserted confirmed (Supabase
-- Auth and the local sign-up with confirmation off, a confirmed plain insert), when an unconfirmed
-- user's email_confirmed_at is set (the confirmation; AUTH_EMAIL_CONFIRM=true locally: `update
-- auth.users set email_confirmed_at = now()`), and when a confirmed user's email changes (GoTrue
-- writes the new address only once it is confirmed). Until 2026-12-06 any insert took them: with
-- confirmation on, whoever signed up with an invited address was a member before the address was
-- proven theirs. The membership insert is announced to open sockets by the access_changed trigger
-- like any other.
create or replace function internal.accept_workspace_invites() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_email text := lower(btrim(new.email));
  v_ctx jsonb;
  v_added integer;
  r app.workspace_invites;
begin
  if v_email is null or new.email_confirmed_at is null then
    return null;
  end if;
  -- an invite of the address being made waits for this sign-up (or confirmation), or this for it
  perform internal.lock_invite_email(v_email);
  v_ctx := internal.request_context() || jsonb_build_object('user_id', new.id);
  for r in delete from app.workspace_invites where email = v_email returning * loop
    insert into app.workspace_members (workspace_id, user_id, role) values (r.workspace_id, new.id, r.role)
    on conflict (workspace_id, user_id) do nothing;  -- already a member (added by id meanwhile): keep that role
    get diagnostics v_added = row_count;
    perform internal.write_audit(v_ctx, 'workspace.invite.accept', 'success', 'workspace', r.workspace_id::text,
                                 jsonb_build_object('invite_id', r.invite_id, 'user_id', new.id, 'role', r.role,
                                                    'invited_by', r.invited_by),
                                 null, null, null, v_added);
  end loop;
  return null;
end $$;

drop trigger if exists accept_workspace_invites on auth.users;
-- WHEN: a confirmed address, inserted, confirmed or changed (an UPDATE that sets email_confirmed_at
-- again, or the same email, finds no invite: add_workspace_member adds a confirmed user at once)
create trigger accept_workspace_invites after insert or update of email, email_confirmed_at on auth.users
  for each row when (new.email is not null and new.email_confirmed_at is not null) execute function internal.accept_workspace_invites();

-- PUBLIC gets EXECUTE on new functions: revoke it (see canvas.sql); callers are authenticated users.
revoke execute on function api.create_workspace(text, uuid), api.list_my_workspaces(text, integer), api.rename_workspace(uuid, text),
  api.list_workspace_canvases(uuid, text, integer), api.list_workspace_members(uuid, text, integer), api.add_workspace_member(uuid, text, text),
  api.update_workspace_member(uuid, uuid, text), api.remove_workspace_member(uuid, uuid),
  api.set_workspace_member(uuid, uuid, app.member_role), api.list_workspace_invites(uuid, text, integer),
  api.revoke_workspace_invite(uuid, uuid) from public;
grant execute on function api.create_workspace(text, uuid), api.list_my_workspaces(text, integer), api.rename_workspace(uuid, text),
  api.list_workspace_canvases(uuid, text, integer), api.list_workspace_members(uuid, text, integer), api.add_workspace_member(uuid, text, text),
  api.update_workspace_member(uuid, uuid, text), api.remove_workspace_member(uuid, uuid),
  api.set_workspace_member(uuid, uuid, app.member_role), api.list_workspace_invites(uuid, text, integer),
  api.revoke_workspace_invite(uuid, uuid) to authenticated, service_role;
