-- Presence: who is on a canvas. Cursor positions travel over realtime only; the durable
-- `last_active_at` is written at most once per presence_write_interval_seconds per user.

-- What is wrong with a presence state (H1 `presence` and HTTP H3 send it as `cursor`; realtime-js
-- track() metas are checked by the gateway with the same rules, checkPresenceState of
-- src/realtime/presence.ts): null, or {field, message} with the field named from p_root. Its
-- conventional fields, when present and not null: `name` 1 to 100 characters read as they display
-- (internal.is_display_text), `color` one plain CSS color (hex, keyword, rgb()/hsl()/… of
-- numbers: never url(…), var(…) or a second declaration, as every other member's client shows
-- it), `typing` a boolean, `cursor` and `selection` objects; no phx_ref, phx_ref_prev or
-- presence_ref key (Phoenix's and realtime-js's). Other keys are the application's.
create or replace function internal.presence_state_error(p_state jsonb, p_root text) returns jsonb
language plpgsql immutable set search_path = pg_catalog, pg_temp as $$
declare
  v_key text;
  v_name jsonb := p_state -> 'name';
  v_color jsonb := p_state -> 'color';
begin
  if jsonb_typeof(p_state) is distinct from 'object' then
    return jsonb_build_object('field', p_root, 'message', p_root || ': the presence state is a JSON object');
  end if;
  foreach v_key in array array['phx_ref', 'phx_ref_prev', 'presence_ref'] loop
    if p_state ? v_key then
      return jsonb_build_object('field', p_root || '.' || v_key, 'message', p_root || '.' || v_key || ': is set by the server, not in a tracked state');
    end if;
  end loop;
  if v_name is not null and v_name <> 'null' then
    if jsonb_typeof(v_name) <> 'string' then
      return jsonb_build_object('field', p_root || '.name', 'message', p_root || '.name: a string');
    end if;
    if char_length(v_name #>> '{}') not between 1 and 100 or not internal.is_display_text(v_name #>> '{}') then
      return jsonb_build_object('field', p_root || '.name', 'message', p_root || '.name: 1 to 100 characters, without control characters, '
        || 'invisible or direction-changing characters (such as U+200B, U+202E, U+FEFF, U+2028), and not only spaces or joiners');
    end if;
  end if;
  if v_color is not null and v_color <> 'null' and (jsonb_typeof(v_color) <> 'string'
      or (v_color #>> '{}') !~* '^(#[0-9a-f]{3,8}|[a-z]{3,30}|(rgba?|hsla?|hwb|lab|lch|oklab|oklch)\([0-9a-z%.,/ +-]{1,80}\))$') then
    return jsonb_build_object('field', p_root || '.color', 'message', p_root || '.color: one plain CSS color: #rgb to #rrggbbaa, a color keyword, '
      || 'or rgb()/hsl()/hwb()/lab()/lch()/oklab()/oklch() of numbers');
  end if;
  if coalesce(jsonb_typeof(p_state -> 'typing'), 'null') not in ('null', 'boolean') then
    return jsonb_build_object('field', p_root || '.typing', 'message', p_root || '.typing: true or false (a boolean)');
  end if;
  if coalesce(jsonb_typeof(p_state -> 'cursor'), 'null') not in ('null', 'object') then
    return jsonb_build_object('field', p_root || '.cursor', 'message', p_root || '.cursor: a JSON object (such as {"x": 1, "y": 2}) or null');
  end if;
  if coalesce(jsonb_typeof(p_state -> 'selection'), 'null') not in ('null', 'object') then
    return jsonb_build_object('field', p_root || '.selection', 'message', p_root || '.selection: a JSON object or null');
  end if;
  return null;
end $$;

-- Sessions (app.presence_sessions): a user's app.presence row on a canvas lives while one of their
-- sessions there does. A gateway records the session of each realtime-js channel (a tracking
-- period of it) and each H1 socket with its writes (p_session of api.update_presence) and leaves it
-- on untrack or close (p_session of api.leave_canvas); the row goes, with presence_leave, when the
-- user's last session on the canvas leaves. Before, one of two tabs closing on one gateway while
-- the other was just tracked on another cleared the row: the closing gateway decided from its view
-- of the cluster, which did not yet hold a track answered `ok` before its diff was published.
-- Every change of a user's sessions on a canvas locks their app.presence row first (the insert's
-- ON CONFLICT of api.update_presence locks it even when its throttle writes nothing; the leaves
-- lock it FOR UPDATE): two leaves of their last two sessions cannot each see the other's still
-- there and leave the row behind, and a session recorded while the last other one leaves keeps the
-- row (or makes it again). Locks are taken presence row, then sessions, as the cleanup's cascade does.

-- What is wrong with a session id: null, or the message. '<node>/<local>' of 1 to 64 characters
-- each from [A-Za-z0-9._:-] (a gateway sends '<cluster node id>/<n>'); the part before '/' is the
-- node internal.remove_node_presence_sessions removes the sessions of. Inlined where it is called
-- (one expression, no SET clause): its callers pin the search path.
create or replace function internal.presence_session_error(p_session text) returns text
language sql immutable as $$
  select case when p_session ~ '^[A-Za-z0-9._:-]{1,64}/[A-Za-z0-9._:-]{1,64}$' then null
              else 'session: ''<node>/<id>'', each part 1 to 64 characters of A-Z, a-z, 0-9, ".", "_", ":" and "-"' end
$$;

-- One session of a user on a canvas leaves: it is deleted, and when none of the user's sessions on
-- the canvas remains their app.presence row is deleted and presence_leave {user_id} broadcast on
-- canvas:<id>. Returns whether the user left. A session that is not there (left before, removed
-- with its node or with the row) changes nothing and broadcasts nothing: a repeated leave is
-- idempotent. Trusts its arguments (api.leave_canvas, internal.remove_node_presence_sessions).
create or replace function internal.leave_presence_session(p_canvas_id uuid, p_user_id uuid, p_session text) returns boolean
language plpgsql set search_path = pg_catalog, pg_temp as $$
begin
  -- the pair's lock (Sessions above): once a concurrent change commits, the statements below see it
  perform from app.presence where canvas_id = p_canvas_id and user_id = p_user_id for update;
  if not found then return false; end if;
  delete from app.presence_sessions where canvas_id = p_canvas_id and user_id = p_user_id and session_id = p_session;
  if not found then return false; end if;
  if exists (select from app.presence_sessions where canvas_id = p_canvas_id and user_id = p_user_id) then return false; end if;
  delete from app.presence where canvas_id = p_canvas_id and user_id = p_user_id;
  perform realtime.send(jsonb_build_object('user_id', p_user_id), 'presence_leave', 'canvas:' || p_canvas_id, true);
  return true;
end $$;

-- H3: broadcast cursor/typing to the canvas; returns {broadcast: true, last_active_at,
-- last_active_at_updated}: the broadcast always went out; the durable row is refreshed at most
-- every presence_write_interval_seconds, so `last_active_at_updated` is false in between.
-- p_session (the gateway's, Sessions above): recorded with the row, in the same transaction.
drop function if exists api.update_presence(uuid, jsonb, boolean);
create or replace function api.update_presence(p_canvas_id uuid, p_cursor jsonb default null, p_typing boolean default false,
  p_session text default null)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_written boolean;
  v_last_active timestamptz;
  v_problem jsonb;
  v_checked boolean;  -- internal.check_json_policy's answer (unused: it raises)
  v_max integer;
begin
  perform internal.count_endpoint_call('H3');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  v_user := auth.uid();
  if p_cursor is not null and (jsonb_typeof(p_cursor) <> 'object' or octet_length(p_cursor::text) > 1024) then
    perform internal.raise_error('invalid_input', 'cursor must be a JSON object of at most 1024 bytes', '{"field":"cursor"}');
  end if;
  v_checked := internal.check_json_policy(p_cursor, 'cursor');
  -- the state every other member's client shows (its name, its color)
  v_problem := internal.presence_state_error(p_cursor, 'cursor');
  if p_cursor is not null and v_problem is not null then
    perform internal.raise_error('invalid_input', v_problem ->> 'message', jsonb_build_object('field', v_problem ->> 'field'));
  end if;
  if p_session is not null and internal.presence_session_error(p_session) is not null then
    perform internal.raise_error('invalid_input', internal.presence_session_error(p_session), '{"field":"session"}');
  end if;
  -- A caller deleted after require_canvas_reader read their role fails the row's foreign key on
  -- the user (23503, once the deletion commits): that is the caller of a token whose user is gone,
  -- unauthorized as for one deleted a moment sooner (internal.operation_error does the same for
  -- the mutation RPCs). Mapped rather than prevented: a lock on the user row (internal.lock_user)
  -- would write at every call, and the insert's own check runs at most every
  -- presence_write_interval_seconds.
  begin
    -- also the pair's lock (Sessions above): ON CONFLICT locks the row even when WHERE skips the update
    insert into app.presence as p (canvas_id, user_id, typing, last_active_at)
    values (p_canvas_id, v_user, coalesce(p_typing, false), now())
    on conflict (canvas_id, user_id) do update set typing = excluded.typing, last_active_at = excluded.last_active_at
    where p.last_active_at < now() - make_interval(secs => internal.setting_int('presence_write_interval_seconds'));
    v_written := found;
  exception when foreign_key_violation then
    perform internal.require_user_exists(v_user);
    raise;
  end;
  if p_session is not null then
    -- recorded again at every write: one removed meanwhile (its node taken for dead while it was
    -- alive, its row expired) is back with the next write of its channel or socket
    insert into app.presence_sessions (canvas_id, user_id, session_id) values (p_canvas_id, v_user, p_session)
    on conflict do nothing;
    if found then
      v_max := internal.setting_int('presence_sessions_max');
      if (select count(*) from app.presence_sessions where canvas_id = p_canvas_id and user_id = v_user) > v_max then
        perform internal.raise_error('invalid_input', format('session: this user holds %s presence sessions on this canvas, the most '
          || '(app.settings presence_sessions_max): leave one first', v_max), '{"field":"session"}');
      end if;
    end if;
  end if;
  select last_active_at into v_last_active from app.presence where canvas_id = p_canvas_id and user_id = v_user;
  perform realtime.send(jsonb_build_object('user_id', v_user, 'cursor', p_cursor, 'typing', coalesce(p_typing, false)),
                        'presence', 'canvas:' || p_canvas_id, true);
  return jsonb_build_object('broadcast', true, 'last_active_at', v_last_active, 'last_active_at_updated', v_written);
end $$;

-- H6: leave the canvas: presence removed and the departure broadcast (members only, so nobody
-- can broadcast into a canvas they cannot see). With p_session (a gateway's channel or socket):
-- that session leaves (internal.leave_presence_session).
drop function if exists api.leave_canvas(uuid);
create or replace function api.leave_canvas(p_canvas_id uuid, p_session text default null) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_user uuid;
begin
  perform internal.count_endpoint_call('H6');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  v_user := auth.uid();
  if p_session is null then
    delete from app.presence where canvas_id = p_canvas_id and user_id = v_user;  -- its sessions with it (cascade)
    perform realtime.send(jsonb_build_object('user_id', v_user), 'presence_leave', 'canvas:' || p_canvas_id, true);
    return;
  end if;
  if internal.presence_session_error(p_session) is not null then
    perform internal.raise_error('invalid_input', internal.presence_session_error(p_session), '{"field":"session"}');
  end if;
  perform internal.leave_presence_session(p_canvas_id, v_user, p_session);
end $$;

-- A gateway process taken for dead by the cluster (src/realtime/cluster.ts: silent, or its `leave`
-- on a clean stop), or stopping itself: every session of node p_node_id leaves as
-- internal.leave_presence_session leaves one, each user's row deleted with presence_leave only when
-- none of their sessions on that canvas remains. Every surviving gateway calls it: idempotent (a
-- second call finds no session). Pairs are locked in (canvas_id, user_id) order, so two gateways
-- removing nodes at once do not deadlock. Returns how many users left a canvas.
create or replace function internal.remove_node_presence_sessions(p_node_id text) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  r record;
  v_left integer := 0;
begin
  for r in select distinct canvas_id, user_id from app.presence_sessions where node_id = p_node_id order by canvas_id, user_id loop
    perform from app.presence where canvas_id = r.canvas_id and user_id = r.user_id for update;
    if not found then continue; end if;
    delete from app.presence_sessions where canvas_id = r.canvas_id and user_id = r.user_id and node_id = p_node_id;
    if not found then continue; end if;  -- another gateway removed them meanwhile
    if exists (select from app.presence_sessions where canvas_id = r.canvas_id and user_id = r.user_id) then continue; end if;
    delete from app.presence where canvas_id = r.canvas_id and user_id = r.user_id;
    perform realtime.send(jsonb_build_object('user_id', r.user_id), 'presence_leave', 'canvas:' || r.canvas_id, true);
    v_left := v_left + 1;
  end loop;
  return v_left;
end $$;

comment on function internal.remove_node_presence_sessions(text) is
  'The sessions of gateway node p_node_id (app.presence_sessions.node_id) leave: per user and canvas, the app.presence row is deleted '
  'and presence_leave {user_id} broadcast on canvas:<id> only when none of the user''s sessions there remains. Idempotent. Returns '
  'how many users left a canvas. Called by every gateway for a node the cluster took for dead or that said leave, and by a gateway '
  'for itself as it stops (src/realtime/gateway.ts). EXECUTE: potentia_app only (sql/security/app_role.sql).';

-- The gateway nodes that hold sessions now (app.presence_sessions.node_id, each once): what a
-- gateway checks against the nodes its cluster knows, to remove the sessions of a node no live
-- gateway knew (one killed with every other, or alone: src/realtime/presence-sessions.ts).
create or replace function internal.presence_session_nodes() returns setof text
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select distinct node_id from app.presence_sessions
$$;

comment on function internal.presence_session_nodes() is
  'The gateway node ids (app.presence_sessions.node_id, the part of a session id before ''/'') that hold at least one presence session, '
  'each once, in no order. A gateway snapshots them, and once its cluster has heard every node alive since (src/realtime/cluster.ts, '
  'whenCovered) removes the sessions of those it does not know (internal.remove_node_presence_sessions): nodes killed with every '
  'gateway, which no live one saw die (src/realtime/presence-sessions.ts). EXECUTE: potentia_app only (sql/security/app_role.sql).';

revoke execute on function internal.presence_session_nodes() from public;

comment on function api.update_presence(uuid, jsonb, boolean, text) is
  'H3: broadcast {user_id, cursor, typing} as event presence on canvas:<id> (members only; cursor a JSON object of at most 1024 bytes). '
  'Returns {broadcast: true, last_active_at, last_active_at_updated}: the durable app.presence row is refreshed at most every '
  'presence_write_interval_seconds (app.settings), so last_active_at_updated is false in between; the broadcast always goes out. '
  'p_session (the realtime gateway''s; HTTP callers omit it): a live session ''<node>/<id>'' of the caller on the canvas, recorded '
  '(idempotently) with the row in the same transaction; the row then stays until the caller''s last session leaves (api.leave_canvas '
  'with p_session), the caller leaves without one, or it expires (presence_expiry_seconds after its last write: sessions never keep it). '
  'Errors: unauthorized (a user deleted during the call too); not_found (field canvas_id); forbidden (token scope); '
  'invalid_input (field cursor or cursor.<key>; field session: not ''<node>/<id>'' of 1 to 64 of [A-Za-z0-9._:-] each, or a new session '
  'past presence_sessions_max of the caller on the canvas, app.settings, 256 by default).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H3 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

comment on function api.leave_canvas(uuid, text) is
  'H6: the caller leaves a canvas. Without p_session (HTTP, an explicit leave): its app.presence row and all its sessions are deleted '
  'and presence_leave {user_id} broadcast on canvas:<id>. With p_session (the realtime gateway''s channel or socket): that session is '
  'deleted; the row is deleted and presence_leave broadcast only when none of the caller''s sessions on the canvas remains; a session '
  'not there (left already) changes and broadcasts nothing. Members only. '
  'Errors: unauthorized; not_found (field canvas_id); forbidden (token scope); invalid_input (field session, as api.update_presence).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H6 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

revoke execute on function api.update_presence(uuid, jsonb, boolean, text), api.leave_canvas(uuid, text) from public;
grant execute on function api.update_presence(uuid, jsonb, boolean, text), api.leave_canvas(uuid, text) to authenticated, service_role;
