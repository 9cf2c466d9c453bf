-- Canvases and reads behind the A-endpoints (workspaces: sql/rpc/workspaces.sql). Errors are
-- raised with the stable codes of internal.raise_error; every change is audited.

-- The caller, a user who exists: a token outlives its user (tokens are checked by signature and
-- expiry alone), and a deleted user's token reached the inserts that name the caller (a new
-- workspace's created_by) and failed on their foreign key, answered 400 invalid_input with the
-- constraint's message instead of 401.
create or replace function internal.require_user() returns uuid
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
declare v_user uuid := auth.uid();
begin
  if v_user is null then
    perform internal.raise_error('unauthorized', 'a signed-in user is required');
  end if;
  perform internal.require_user_exists(v_user);
  return v_user;
end $$;

-- require_user for a call that writes rows naming the caller (created_by, uploaded_by,
-- invited_by, a membership): the caller's row is also locked FOR KEY SHARE to the end of the
-- transaction, the lock those rows' foreign keys take anyway, taken first. Without it a deletion
-- of the user committed between the check and the insert failed the insert's foreign key (23503),
-- answered 400 invalid_input with the constraint's message; now the deletion waits for the call,
-- and a call that meets a deletion in flight waits for it and then finds no row: unauthorized.
-- Not in require_user itself: reads must not lock (a read-only transaction refuses the lock, and
-- the lock writes a WAL record). The mutation RPCs take the same lock in their first statement
-- (internal.apply_block_op), without raising: a caller found gone there is answered on the way
-- (no role, or the foreign key's failure: internal.operation_error).
create or replace function internal.lock_user() returns uuid
language plpgsql volatile set search_path = pg_catalog, pg_temp as $$
declare v_user uuid := internal.require_user();
begin
  perform from auth.users u where u.id = v_user for key share;
  if not found then  -- deleted since require_user looked (it waited for the deletion here)
    perform internal.raise_error('unauthorized', 'the user this token was issued to no longer exists');
  end if;
  return v_user;
end $$;

-- The user rows one lane transaction's requests lock (src/db/canvas-lanes.ts: several requests on
-- one canvas, in one transaction), locked FOR KEY SHARE before any of them runs, in id order: its
-- callers' (p_users) and the creator's of its canvas (p_canvas_id). Each mutation locks its own
-- caller's first (internal.apply_block_op), but a second caller's lock, taken after the first
-- caller's mutation had locked the canvas row, deadlocked with a deletion of the second caller
-- (holding their row, waiting for the canvas they created). And a canvas row this transaction has
-- already changed has its foreign keys checked again at its next change (Postgres checks a row its
-- own transaction wrote whatever the columns): the second mutation's canvas UPDATE locked the
-- creator's row (canvases.created_by), after the canvas row, and deadlocked with a deletion of the
-- creator, whoever the callers were. Ids that are not UUIDs, or of no user or canvas, lock nothing.
-- Waits at most lock_timeout for a deletion in flight; failing, the lane sends each request again
-- on its own. Called by the lane as the connecting role, before any caller's settings: for the
-- processes' role, not the API roles (sql/security/app_role.sql).
drop function if exists internal.lock_callers(text[]);  -- until 2026-12-07: the callers alone
create or replace function internal.lock_callers(p_users text[], p_canvas_id text default null) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp set lock_timeout = '3s' as $$
begin
  -- the ids in one array, built once (an array || a scalar subquery was evaluated again for every
  -- row a scan of auth.users met: 1.8x the call's time with 16 callers)
  perform from auth.users u
  where u.id = any(array(select internal.try_uuid(x) from unnest(p_users) x
                         union all
                         select c.created_by from app.canvases c where c.canvas_id = internal.try_uuid(p_canvas_id)))
  order by u.id for key share;
end $$;
comment on function internal.lock_callers(text[], text) is
  'Locks the user rows of p_users (user ids as text; others ignored) and of the creator of canvas p_canvas_id FOR KEY SHARE to the '
  'end of the transaction, in id order: sent by a canvas lane before the requests of a transaction carrying several '
  '(src/db/canvas-lanes.ts), so that a deletion of one of those users never waits for a canvas row the transaction holds while the '
  'transaction waits for the deletion.';

-- Raises unauthorized when p_user no longer exists (require_user's second rule, on its own). The
-- mutation RPC and internal.require_canvas_reader ask it only on their way to not_found: a deleted
-- user has no role left (memberships go with the user), so every refusal they would answer a
-- deleted user's token passes there, and a call that has a role pays nothing for it.
create or replace function internal.require_user_exists(p_user uuid) returns void
language plpgsql stable set search_path = pg_catalog, pg_temp as $$
begin
  if not exists (select from auth.users u where u.id = p_user) then
    perform internal.raise_error('unauthorized', 'the user this token was issued to no longer exists');
  end if;
end $$;

create or replace function internal.canvas_json(c app.canvases) returns jsonb
language sql stable as $$
  select jsonb_build_object('canvas_id', c.canvas_id, 'workspace_id', c.workspace_id, 'title', c.title,
                            'settings', c.settings, 'version', c.version, 'created_by', c.created_by,
                            'created_at', c.created_at, 'updated_at', c.updated_at)
$$;

create or replace function internal.check_title_settings(p_title text, p_settings jsonb) returns void
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  -- read as it displays (internal.is_display_text): no control, invisible or direction-changing character
  if p_title is not null and (char_length(btrim(p_title)) not between 1 and 500 or not internal.is_display_text(p_title)) then
    perform internal.raise_error('invalid_input',
      'title must be 1 to 500 characters, without control characters, invisible or direction-changing characters (such as U+200B, U+202E, U+FEFF, U+2028), and not only spaces or joiners',
      '{"field":"title"}');
  end if;
  if p_settings is not null and jsonb_typeof(p_settings) <> 'object' then
    perform internal.raise_error('invalid_input', 'settings must be a JSON object', '{"field":"settings"}');
  end if;
  if p_settings is not null and octet_length(p_settings::text) > 16384 then
    perform internal.raise_error('payload_too_large', 'settings must be at most 16384 bytes', '{"field":"settings"}');
  end if;
end $$;

-- The id a client chose for a new row (api.create_workspace's p_workspace_id, api.create_canvas's
-- p_canvas_id): a random UUID of RFC 9562, version 4 (crypto.randomUUID(), gen_random_uuid()) or
-- version 7 (a timestamp and 74 random bits), variant 10; else invalid_input naming p_field. The
-- id is the row's for good and the first caller to send it holds it, so an id another caller can
-- compute could be taken before its owner sends it: the nil UUID 00000000-…, the max UUID
-- ffffffff-…, ids of another variant, and the versions a caller can compute or guess (1 and 6:
-- time and node; 3 and 5: a hash of a name, such as the v1 upgrade's workspace ids, which
-- scripts/upgrade-v1.ts writes itself; 2 and 8: no randomness required). The HTTP body's check is
-- the same rule (functions/canvas.ts, functions/workspaces.ts: ClientId).
create or replace function internal.check_client_id(p_id uuid, p_field text) returns void
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
begin
  if p_id is not null and (substr(p_id::text, 15, 1) not in ('4', '7') or substr(p_id::text, 20, 1) not in ('8', '9', 'a', 'b')) then
    perform internal.raise_error('invalid_input', format('%s must be a random UUID (RFC 9562 version 4, as crypto.randomUUID() '
      'makes, or version 7), variant 10: an id another caller can compute (the nil or max UUID, a name-based or time-and-node UUID) '
      'could be taken before you send it', p_field), jsonb_build_object('field', p_field));
  end if;
end $$;

-- Workspaces and their members (api.create_workspace, api.set_workspace_member, ...): sql/rpc/workspaces.sql.

-- A page of canvases for p_user, newest change first (updated_at desc, canvas_id), after p_cursor
-- (internal.list_cursor of the last one sent: sql/core/list_keys.sql): at most p_limit and
-- about internal.changes_page_bytes() of them (a canvas is up to 16 KB of settings; the first is
-- always on it). p_workspace_id: that workspace's (W8); null: every canvas p_user may read that
-- the token allows (A4). {canvases[], next_cursor}. A canvas changed while pages are read moves to
-- the front: a list is not a snapshot. The caller checked access to the workspace.
-- The canvases a user reads are those of the workspaces they are a member of and those they are a
-- member of alone: each workspace's are read from canvases_workspace_updated_idx in the page's
-- order (at most limit + 1 a workspace), the others by the user's memberships (canvas_members_user_idx),
-- so a page reads a few rows per workspace of the user, not every canvas of the database (until
-- 2026-12-07 it read them all and computed a role for each: 30,000 canvases, 300 to 420 ms a page).
-- A token scoped to some canvases (rare) is checked on the rows read.
create or replace function internal.canvases_page(p_user uuid, p_workspace_id uuid, p_cursor text, p_limit integer)
returns jsonb language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_limit integer := internal.list_limit(p_limit);
  v_scoped boolean := p_workspace_id is null and internal.try_jsonb(current_setting('request.jwt.claims', true)) -> 'scope' is not null;
  v_time timestamptz;
  v_id uuid;
  v_row record;
  v_item jsonb;
  v_items jsonb[] := '{}';
  v_bytes bigint := 0;
  v_more boolean := false;
begin
  select * into v_time, v_id from internal.list_start(p_cursor, true);
  for v_row in
    select k.c, internal.canvas_role((k.c).canvas_id, p_user) as role
    from ((select c
           from app.workspace_members m
           cross join lateral (
             select c from app.canvases c
             where c.workspace_id = m.workspace_id and c.deleted_at is null and c.updated_at <= v_time
               and (c.updated_at < v_time or c.canvas_id > v_id)
               and (not v_scoped or internal.token_allows(c.canvas_id, false))
             order by c.updated_at desc, c.canvas_id limit v_limit + 1) w
           where m.user_id = p_user and (p_workspace_id is null or m.workspace_id = p_workspace_id))
          union all
          (select c
           from app.canvas_members cm join app.canvases c on c.canvas_id = cm.canvas_id
           where p_workspace_id is null and cm.user_id = p_user and c.deleted_at is null
             and not exists (select from app.workspace_members m where m.workspace_id = c.workspace_id and m.user_id = p_user)
             and (c.updated_at < v_time or (c.updated_at = v_time and c.canvas_id > v_id))
             and (not v_scoped or internal.token_allows(c.canvas_id, false)))) k
    order by (k.c).updated_at desc, (k.c).canvas_id limit v_limit + 1
  loop
    if cardinality(v_items) >= v_limit or (cardinality(v_items) > 0 and v_bytes >= internal.changes_page_bytes()) then
      v_more := true;
      exit;
    end if;
    v_item := internal.canvas_json(v_row.c) || jsonb_build_object('role', v_row.role);
    v_items := array_append(v_items, v_item);
    v_bytes := v_bytes + octet_length(v_item::text);
    v_time := (v_row.c).updated_at;
    v_id := (v_row.c).canvas_id;
  end loop;
  return jsonb_build_object('canvases', to_jsonb(v_items), 'next_cursor', case when v_more then internal.list_cursor(v_time, v_id) end);
end $$;

-- A4: the caller's live canvases, newest first, a page at a time.
drop function if exists api.list_my_canvases();
create or replace function api.list_my_canvases(p_cursor text default null, p_limit integer default 100) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.count_endpoint_call('A4');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  return internal.canvases_page(internal.require_user(), null, p_cursor, p_limit);
end $$;

-- A5: editors and above create canvases in their workspace, optionally with the id the client
-- chose (p_canvas_id), so that a resend cannot make a second canvas (as api.create_workspace's
-- p_workspace_id: sql/rpc/workspaces.sql says why and how).
drop function if exists api.create_canvas(uuid, text, jsonb);  -- before p_canvas_id (a call without it would be ambiguous)

-- The answer to a resend of api.create_canvas with the id of a canvas that exists: {canvas_id}, as
-- the first call answered, when p_user created it in p_workspace_id with p_title and p_settings
-- (as stored: trimmed, defaults applied) and it is not deleted; else conflict naming canvas_id
-- (another user's canvas, compared on nothing else; or the caller's, deleted since), workspace_id,
-- title or settings. Writes nothing.
create or replace function internal.replay_create_canvas(c app.canvases, p_user uuid, p_workspace_id uuid, p_title text, p_settings jsonb)
returns jsonb language plpgsql stable set search_path = pg_catalog, pg_temp as $$
begin
  if c.created_by is distinct from p_user then
    perform internal.raise_error('conflict', 'canvas_id is already taken: send a new one (a random UUID) to create a canvas',
                                 '{"field":"canvas_id"}');
  end if;
  if c.deleted_at is not null then
    perform internal.raise_error('conflict', 'you created the canvas with this canvas_id and it has been deleted since: send a new '
      'canvas_id to create another', '{"field":"canvas_id"}');
  end if;
  if c.workspace_id is distinct from p_workspace_id then
    perform internal.raise_error('conflict', 'you created the canvas with this canvas_id in another workspace: a resend must send the same '
      'workspace_id (to create another canvas, send a new canvas_id)', '{"field":"workspace_id"}');
  end if;
  if c.title is distinct from p_title then
    perform internal.raise_error('conflict', 'the canvas with this canvas_id has another title: a resend must send the same title (to '
      'create another canvas, send a new canvas_id)', '{"field":"title"}');
  end if;
  if c.settings is distinct from p_settings then
    perform internal.raise_error('conflict', 'the canvas with this canvas_id has other settings: a resend must send the same settings (to '
      'create another canvas, send a new canvas_id)', '{"field":"settings"}');
  end if;
  return jsonb_build_object('canvas_id', c.canvas_id);
end $$;

create or replace function api.create_canvas(p_workspace_id uuid, p_title text default 'Untitled', p_settings jsonb default '{}',
                                             p_canvas_id uuid default null)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_role app.member_role;
  v_title text := btrim(coalesce(p_title, 'Untitled'));
  v_settings jsonb := coalesce(p_settings, '{}');
  v_id uuid;
  v_canvas app.canvases;
  v_checked boolean;  -- internal.check_json_policy's answer (unused: it raises)
begin
  perform internal.count_endpoint_call('A5');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.lock_user();
  v_role := internal.workspace_role(p_workspace_id, v_user);
  if v_role is null then
    perform internal.raise_error('not_found', 'workspace not found, or you are not a member of it', '{"field":"workspace_id"}');
  end if;
  if not internal.can_write_role(v_role) then
    perform internal.raise_error('forbidden', format('your role (%s) cannot create canvases', v_role));
  end if;
  if not internal.token_allows(null, true) then
    perform internal.raise_error('forbidden', 'this token''s scope is limited to some canvases: it cannot create one');
  end if;
  perform internal.check_title_settings(coalesce(p_title, 'Untitled'), v_settings);
  v_checked := internal.check_json_policy(p_settings, 'settings');
  perform internal.check_client_id(p_canvas_id, 'canvas_id');
  if p_canvas_id is null then
    insert into app.canvases (workspace_id, title, settings, created_by)
    values (p_workspace_id, v_title, v_settings, v_user)
    returning canvas_id into v_id;
  else
    loop
      insert into app.canvases (canvas_id, workspace_id, title, settings, created_by)
      values (p_canvas_id, p_workspace_id, v_title, v_settings, v_user)
      on conflict (canvas_id) do nothing returning canvas_id into v_id;
      exit when v_id is not null;
      -- the row exists (committed: a concurrent insert of the id was waited for), and this
      -- statement's snapshot, taken after that wait, sees it
      select * into v_canvas from app.canvases where canvas_id = p_canvas_id;
      if v_canvas.canvas_id is not null then
        return internal.replay_create_canvas(v_canvas, v_user, p_workspace_id, v_title, v_settings);
      end if;
      -- purged in between: the id is free again
    end loop;
  end if;
  perform internal.write_audit(internal.request_context(), 'canvas.create', 'success', 'canvas', v_id::text, '{}', null, null, null, 1);
  return jsonb_build_object('canvas_id', v_id);
end $$;

-- A6: owners and admins change the title and/or settings (null = keep).
create or replace function api.update_canvas(p_canvas_id uuid, p_title text default null, p_settings jsonb default null)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_role app.member_role;
  v_canvas app.canvases;
  v_checked boolean;  -- internal.check_json_policy's answer (unused: it raises)
begin
  perform internal.count_endpoint_call('A6');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.require_user();
  v_role := internal.canvas_role(p_canvas_id, v_user);
  if v_role is null then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if v_role not in ('owner', 'admin') or not internal.token_allows(p_canvas_id, true) then
    perform internal.raise_error('forbidden', 'only owners and admins change a canvas''s title and settings');
  end if;
  if p_title is null and p_settings is null then
    perform internal.raise_error('invalid_input', 'give a title or settings to change', '{"field":"title"}');
  end if;
  perform internal.check_title_settings(p_title, p_settings);
  v_checked := internal.check_json_policy(p_settings, 'settings');
  -- a live canvas only: deleted while this waited for its row (the role above was read before),
  -- the recheck after the wait finds none, and nothing lands on the deleted canvas
  update app.canvases set title = coalesce(btrim(p_title), title), settings = coalesce(p_settings, settings),
                          version = version + 1, updated_at = now()
  where canvas_id = p_canvas_id and deleted_at is null returning * into v_canvas;
  if not found then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  perform internal.write_audit(internal.request_context(), 'canvas.update', 'success', 'canvas', p_canvas_id::text,
                               jsonb_build_object('title', p_title is not null, 'settings', p_settings is not null), null, null, null, 1);
  perform realtime.send(jsonb_build_object('canvas', internal.canvas_json(v_canvas)), 'canvas_updated', 'canvas:' || p_canvas_id, true);
  return internal.canvas_json(v_canvas);
end $$;

-- A7: owners soft-delete a canvas (purged later by the cleanup job).
create or replace function api.delete_canvas(p_canvas_id uuid) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_role app.member_role;
begin
  perform internal.count_endpoint_call('A7');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_user := internal.require_user();
  v_role := internal.canvas_role(p_canvas_id, v_user);
  if v_role is null then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if v_role <> 'owner' or not internal.token_allows(p_canvas_id, true) then
    perform internal.raise_error('forbidden', 'only an owner deletes a canvas');
  end if;
  update app.canvases set deleted_at = now(), updated_at = now() where canvas_id = p_canvas_id;
  perform internal.write_audit(internal.request_context(), 'canvas.delete', 'success', 'canvas', p_canvas_id::text, '{}', null, null, null, 1);
  perform realtime.send(jsonb_build_object('canvas_id', p_canvas_id), 'canvas_deleted', 'canvas:' || p_canvas_id, true);
end $$;

-- A2: blocks in rank order, keyset-paginated: {items, next_cursor}; the cursor is the last
-- item's y_order (null when there is no more). A page holds at most limit blocks and about
-- internal.changes_page_bytes() of their content (the first always on it), as a snapshot page
-- does: 500 blocks of 64 KB were a 32 MB answer, built whole here and again in the server.
create or replace function api.list_blocks(p_canvas_id uuid, p_cursor text default null, p_limit integer default 100)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 100), 1), 500);
  v_page jsonb;
  v_items jsonb;
  v_more boolean;
begin
  perform internal.count_endpoint_call('A2');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  if p_cursor is not null and p_cursor !~ '^[0-9A-Za-z]{1,10}$' then
    perform internal.raise_error('invalid_input', 'cursor is not one this endpoint returned', '{"field":"cursor"}');
  end if;
  v_page := internal.blocks_page(p_canvas_id, p_cursor, null, v_limit);
  v_items := v_page -> 'blocks';
  v_more := (v_page ->> 'has_more')::boolean;
  return jsonb_build_object(
    'items', v_items,
    'next_cursor', case when v_more then v_items -> -1 ->> 'y_order' end);
end $$;

-- A3: one block.
create or replace function api.get_block(p_canvas_id uuid, p_block_id uuid) returns jsonb
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_block jsonb;
begin
  perform internal.count_endpoint_call('A3');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  select internal.block_json(b) into v_block from app.blocks b where b.block_id = p_block_id and b.canvas_id = p_canvas_id;
  if v_block is null then
    perform internal.raise_error('not_found', 'block not found on this canvas', '{"field":"block_id"}');
  end if;
  return v_block;
end $$;

-- A8: {can_write, role, users[], next_cursor}: who has access to the canvas and with which role,
-- a page at a time (sql/core/list_keys.sql). A user's key is when they joined the workspace, or for
-- a member of the canvas alone when they were added to it: two index reads in that order, merged.
-- A canvas row of a workspace member (a canvas role raising a workspace role) is not the list's:
-- that user is listed at their workspace membership. Such rows are skipped as they are read, and a
-- page reads at most 2 * limit + 1 rows of the two, however many there are: it may hold fewer than
-- limit users (none, when all it read were skipped) and still have a next_cursor, the key of the
-- last row it read. (Filtering them in the query made every page read all of them after the
-- cursor: at 30,000, a generic plan compared each with every workspace member, 25 s a page.)
drop function if exists api.get_canvas_permissions(uuid);
create or replace function api.get_canvas_permissions(p_canvas_id uuid, p_cursor text default null, p_limit integer default 100)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_role app.member_role;
  v_workspace_id uuid;
  v_limit integer;
  v_read_max integer;
  v_read integer := 0;
  v_shadowed boolean;
  v_time timestamptz;
  v_id uuid;
  v_row record;
  v_users jsonb[] := '{}';
  v_more boolean := false;
begin
  perform internal.count_endpoint_call('A8');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  v_role := internal.require_canvas_reader(p_canvas_id);
  v_workspace_id := (select workspace_id from app.canvases where canvas_id = p_canvas_id);
  v_limit := internal.list_limit(p_limit);
  v_read_max := 2 * v_limit + 1;
  select * into v_time, v_id from internal.list_start(p_cursor);
  for v_row in
    select k.user_id, k.joined_at, k.canvas_row
    from ((select wm.user_id, wm.created_at as joined_at, false as canvas_row from app.workspace_members wm
           where wm.workspace_id = v_workspace_id and (wm.created_at, wm.user_id) > (v_time, v_id)
           order by wm.created_at, wm.user_id limit v_limit + 1)
          union all
          (select cm.user_id, cm.created_at, true from app.canvas_members cm
           where cm.canvas_id = p_canvas_id and (cm.created_at, cm.user_id) > (v_time, v_id)
           order by cm.created_at, cm.user_id limit v_read_max)) k
    -- a member's canvas row added when they joined the workspace has their workspace row's key: the
    -- workspace row first (canvas_row), so that skipping the canvas row, which moves the cursor to
    -- its key, never passes over a workspace row not yet read (in either order, a page could end on
    -- the skipped canvas row and the next start after that user's workspace row: never listed)
    order by k.joined_at, k.user_id, k.canvas_row limit v_read_max
  loop
    v_read := v_read + 1;
    -- a canvas row of a workspace member: one look-up by the primary key, in a statement of its own
    -- (an EXISTS in the query above was planned as a hash of every member of the workspace)
    v_shadowed := v_row.canvas_row
                  and exists (select from app.workspace_members wm where wm.workspace_id = v_workspace_id and wm.user_id = v_row.user_id);
    if cardinality(v_users) >= v_limit then
      -- a full page: more if a row of the list follows (the cursor stays at the page's last user)
      if not v_shadowed then
        v_more := true;
        exit;
      end if;
    else
      if not v_shadowed then
        v_users := array_append(v_users, (select jsonb_build_object('user_id', au.id, 'email', au.email,
                                                                    'role', internal.canvas_role(p_canvas_id, au.id))
                                          from auth.users au where au.id = v_row.user_id));
      end if;
      v_time := v_row.joined_at;
      v_id := v_row.user_id;
    end if;
  end loop;
  -- every row it may read was read: what follows is for the next page
  v_more := v_more or v_read >= v_read_max;
  return jsonb_build_object(
    'can_write', internal.can_write_role(v_role) and internal.token_allows(p_canvas_id, true),
    'role', v_role,
    'users', to_jsonb(v_users),
    'next_cursor', case when v_more then internal.list_cursor(v_time, v_id) end);
end $$;

comment on function api.list_my_canvases(text, integer) is
  'A4: the caller''s canvases that are not deleted, most recently updated first, a page at a time: {canvases: [{canvas_id, workspace_id, '
  'title, settings, version, created_by, created_at, updated_at, role}], next_cursor}, at most limit (1..500, default 100) and about 4 MB '
  '(internal.changes_page_bytes; the first always on it); pass next_cursor as cursor for the next page (null: the last). role the caller''s '
  '(owner, admin, editor, viewer): their canvas role where they have one, else their workspace role; a workspace owner stays owner; a token scoped to some canvases lists only those. '
  'Errors: unauthorized (no signed-in user); invalid_input (field cursor).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A4 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.create_canvas(uuid, text, jsonb, uuid) is
  'A5: creates a canvas in workspace_id (an editor or above of it; a token scoped to some canvases cannot): {canvas_id}. title 1 to 500 '
  'display characters, trimmed (default Untitled); settings a JSON object of at most 16384 bytes (default {}). canvas_id (optional): the '
  'id to create it with, chosen by the client (a random UUID) so that a resend cannot create a second canvas: when a live canvas with that '
  'id exists that the caller created in the same workspace with the same title and settings, the call answers {canvas_id} again and '
  'writes nothing (no second audit row). Audited (canvas.create). Errors: unauthorized; not_found (field workspace_id: no such workspace, '
  'or not a member); forbidden (role or token scope); invalid_input (field title or settings); payload_too_large (field settings); '
  'conflict (field canvas_id: the id is another user''s canvas, or the caller''s deleted one; field workspace_id, title or settings: the '
  'caller created it with another), writing nothing.'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A5 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.update_canvas(uuid, text, jsonb) is
  'A6: sets the title and/or settings of a canvas (owners and admins; null keeps a value, at least one is required), version + 1; returns '
  'the canvas {canvas_id, workspace_id, title, settings, version, created_by, created_at, updated_at} and broadcasts it as canvas_updated on '
  'canvas:<id>. title and settings as api.create_canvas takes them. Audited (canvas.update). Errors: unauthorized; not_found (field '
  'canvas_id: no such live canvas, or not a member); forbidden; invalid_input (field title or settings); payload_too_large (field settings).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A6 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.delete_canvas(uuid) is
  'A7: soft-deletes a canvas (its owner only): deleted_at set, canvas_deleted {canvas_id} broadcast on canvas:<id>; the cleanup job purges it '
  'later. Audited (canvas.delete). Errors: unauthorized; not_found (field canvas_id); forbidden (not the owner, or the token''s scope).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A7 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.list_blocks(uuid, text, integer) is
  'A2: the blocks of a canvas in LexoRank (y_order) order, keyset-paginated: {items[], next_cursor}. Each item {block_id, canvas_id, '
  'parent_id, type, content, y_order, version, created_at, created_by, updated_at, updated_by}; limit 1 to 500 (default 100, clamped) and '
  'about 4 MB of content (internal.changes_page_bytes; the first always on it); '
  'next_cursor is the last item''s y_order, to pass as cursor for the next page, or null after the last page. Errors: unauthorized; '
  'not_found (field canvas_id); forbidden (token scope); invalid_input (field cursor: not one this function returned).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A2 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.get_block(uuid, uuid) is
  'A3: one block of a canvas, in the shape of api.list_blocks''s items. Errors: unauthorized; not_found (field canvas_id, or field block_id: '
  'no such block on this canvas); forbidden (token scope).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A3 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';
comment on function api.get_canvas_permissions(uuid, text, integer) is
  'A8: who has access to a canvas, a page at a time: {can_write, role, users[{user_id, email, role}], next_cursor} where role is the '
  'caller''s (owner, admin, editor, viewer), can_write whether the caller''s role and token let it write, and users the workspace''s '
  'and the canvas''s members with each one''s role on the canvas, by when they joined (the workspace; a member of the canvas alone: the '
  'canvas), at most limit (1..500, default 100), fewer (even none) when the rows a page reads (at most 2 * limit + 1) include canvas '
  'rows of workspace members, which are listed at their workspace membership; pass next_cursor as cursor for the next page (null: the '
  'last). Access is checked on every page. Errors: unauthorized; not_found (field canvas_id); forbidden (token scope); invalid_input (field cursor).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint A8 (per page; app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

-- PUBLIC gets EXECUTE on new functions: the per-schema default privileges of the foundation
-- migration cannot take it away (Postgres only adds to the global defaults), so revoke it here.
revoke execute on function api.list_my_canvases(text, integer), api.create_canvas(uuid, text, jsonb, uuid), api.update_canvas(uuid, text, jsonb),
  api.delete_canvas(uuid), api.list_blocks(uuid, text, integer), api.get_block(uuid, uuid),
  api.get_canvas_permissions(uuid, text, integer) from public;
grant execute on function api.list_my_canvases(text, integer), api.create_canvas(uuid, text, jsonb, uuid), api.update_canvas(uuid, text, jsonb),
  api.delete_canvas(uuid), api.list_blocks(uuid, text, integer), api.get_block(uuid, uuid),
  api.get_canvas_permissions(uuid, text, integer) to authenticated, service_role;
