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

-- H3: broadcast cursor/typing to the canvas; returns {broadcast: true, last_active_at,
-- last_active_at_updated}: the broadcast always went out; the durable row is refreshed at most
-- every presence_write_interval_seconds, so `last_active_at_updated` is false in between.
create or replace function api.update_presence(p_canvas_id uuid, p_cursor jsonb default null, p_typing boolean default false)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_written boolean;
  v_last_active timestamptz;
  v_problem jsonb;
  v_checked boolean;  -- internal.check_json_policy's answer (unused: it raises)
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
  -- A caller deleted after require_canvas_reader read their role fails the row's foreign key on
  -- the user (23503, once the deletion commits): that is the caller of a token whose user is gone,
  -- unauthorized as for one deleted a moment sooner (internal.operation_error does the same for
  -- the mutation RPCs). Mapped rather than prevented: a lock on the user row (internal.lock_user)
  -- would write at every call, and the insert's own check runs at most every
  -- presence_write_interval_seconds.
  begin
    insert into app.presence as p (canvas_id, user_id, typing, last_active_at)
    values (p_canvas_id, v_user, coalesce(p_typing, false), now())
    on conflict (canvas_id, user_id) do update set typing = excluded.typing, last_active_at = excluded.last_active_at
    where p.last_active_at < now() - make_interval(secs => internal.setting_int('presence_write_interval_seconds'));
    v_written := found;
  exception when foreign_key_violation then
    perform internal.require_user_exists(v_user);
    raise;
  end;
  select last_active_at into v_last_active from app.presence where canvas_id = p_canvas_id and user_id = v_user;
  perform realtime.send(jsonb_build_object('user_id', v_user, 'cursor', p_cursor, 'typing', coalesce(p_typing, false)),
                        'presence', 'canvas:' || p_canvas_id, true);
  return jsonb_build_object('broadcast', true, 'last_active_at', v_last_active, 'last_active_at_updated', v_written);
end $$;

-- H6: leave the canvas: presence removed and the departure broadcast (members only, so nobody
-- can broadcast into a canvas they cannot see).
create or replace function api.leave_canvas(p_canvas_id uuid) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare v_user uuid;
begin
  perform internal.count_endpoint_call('H6');  -- the endpoint's limit (sql/rpc/endpoint_limits.sql)
  perform internal.require_canvas_reader(p_canvas_id);
  v_user := auth.uid();
  delete from app.presence where canvas_id = p_canvas_id and user_id = v_user;
  perform realtime.send(jsonb_build_object('user_id', v_user), 'presence_leave', 'canvas:' || p_canvas_id, true);
end $$;

comment on function api.update_presence(uuid, jsonb, boolean) is
  'H3: broadcast {user_id, cursor, typing} as event presence on canvas:<id> (members only; cursor a JSON object of at most 1024 bytes). '
  'Returns {broadcast: true, last_active_at, last_active_at_updated}: the durable app.presence row is refreshed at most every '
  'presence_write_interval_seconds (app.settings), so last_active_at_updated is false in between; the broadcast always goes out. '
  'Errors: unauthorized (a user deleted during the call too); not_found (field canvas_id); forbidden (token scope); '
  'invalid_input (field cursor or cursor.<key>).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H3 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

comment on function api.leave_canvas(uuid) is
  'H6: the caller leaves a canvas: its app.presence row is deleted and presence_leave {user_id} broadcast on canvas:<id> (members only). '
  'Errors: unauthorized; not_found (field canvas_id); forbidden (token scope).'
  ' Also rate_limited (PX429, retry_after, limit): the limit of endpoint H6 (app.endpoint_limits, per user), counted first, unless api.hit_endpoint_limit counted it in this transaction or the Potentia server calls (sql/rpc/endpoint_limits.sql).';

revoke execute on function api.update_presence(uuid, jsonb, boolean), api.leave_canvas(uuid) from public;
grant execute on function api.update_presence(uuid, jsonb, boolean), api.leave_canvas(uuid) to authenticated, service_role;
