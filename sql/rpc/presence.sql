-- Presence: who is on a canvas. Cursor positions travel over realtime only; the durable
-- `last_active_at` is written at most once per presence_write_interval_seconds per user.

-- H3: broadcast cursor/typing to the canvas; returns {broadcast: true, last_active_at,
-- last_active_at_updated}: the broadcast always went out; the durable row is refreshed at most
-- every presence_write_interval_seconds, so `last_active_at_updated` is false in between.
create or replace function api.update_presence(p_canvas_id uuid, p_cursor jsonb default null, p_typing boolean default false)
returns jsonb language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  v_user uuid;
  v_written boolean;
  v_last_active timestamptz;
begin
  perform internal.require_canvas_reader(p_canvas_id);
  v_user := auth.uid();
  if p_cursor is not null and (jsonb_typeof(p_cursor) <> 'object' or octet_length(p_cursor::text) > 1024) then
    perform internal.raise_error('invalid_input', 'cursor must be a JSON object of at most 1024 bytes', '{"field":"cursor"}');
  end if;
  insert into app.presence as p (canvas_id, user_id, typing, last_active_at)
  values (p_canvas_id, v_user, coalesce(p_typing, false), now())
  on conflict (canvas_id, user_id) do update set typing = excluded.typing, last_active_at = excluded.last_active_at
  where p.last_active_at < now() - make_interval(secs => internal.setting_int('presence_write_interval_seconds'));
  v_written := found;
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
  perform internal.require_canvas_reader(p_canvas_id);
  v_user := auth.uid();
  delete from app.presence where canvas_id = p_canvas_id and user_id = v_user;
  perform realtime.send(jsonb_build_object('user_id', v_user), 'presence_leave', 'canvas:' || p_canvas_id, true);
end $$;

comment on function api.update_presence(uuid, jsonb, boolean) is
  'H3: broadcast {user_id, cursor, typing} as event presence on canvas:<id> (members only; cursor a JSON object of at most 1024 bytes). '
  'Returns {broadcast: true, last_active_at, last_active_at_updated}: the durable app.presence row is refreshed at most every '
  'presence_write_interval_seconds (app.settings), so last_active_at_updated is false in between; the broadcast always goes out.';

comment on function api.leave_canvas(uuid) is
  'H6: the caller leaves a canvas: its app.presence row is deleted and presence_leave {user_id} broadcast on canvas:<id> (members only). '
  'Errors: unauthorized; not_found (field canvas_id); forbidden (token scope).';

revoke execute on function api.update_presence(uuid, jsonb, boolean), api.leave_canvas(uuid) from public;
grant execute on function api.update_presence(uuid, jsonb, boolean), api.leave_canvas(uuid) to authenticated, service_role;
