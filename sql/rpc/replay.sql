-- Replay and snapshots. Writers on a canvas are serialized by the canvas lock and take their
-- server_seq under it, so on one canvas seq order is commit order: once a reader sees seq N, no
-- operation with a lower seq can still commit. Reading `server_seq > since_seq` therefore never
-- skips an operation, and canvases.last_seq is a watermark consistent with the blocks.

create or replace function internal.require_canvas_reader(p_canvas_id uuid) returns app.member_role
language plpgsql stable security definer set search_path = '' as $$
declare v_role app.member_role;
begin
  if auth.uid() is null then
    perform internal.raise_error('unauthorized', 'a signed-in user is required');
  end if;
  v_role := internal.canvas_role(p_canvas_id, auth.uid());
  if v_role is null then
    perform internal.raise_error('not_found', 'canvas not found, or you are not a member of it', '{"field":"canvas_id"}');
  end if;
  if not internal.token_allows(p_canvas_id, false) then
    perform internal.raise_error('forbidden', format('this token''s scope does not include canvas:%s', p_canvas_id));
  end if;
  return v_role;
end $$;

-- Applied operations after since_seq, in seq order: {changes[], watermark, has_more}.
create or replace function api.get_canvas_changes(p_canvas_id uuid, p_since_seq bigint default 0, p_limit integer default 500)
returns jsonb language plpgsql stable security definer set search_path = '' as $$
declare
  v_limit integer := least(greatest(coalesce(p_limit, 500), 1), 1000);
  v_changes jsonb;
begin
  perform internal.require_canvas_reader(p_canvas_id);
  select coalesce(jsonb_agg(jsonb_build_object(
           'server_seq', o.server_seq, 'action', o.action, 'block_id', o.block_id, 'version', o.new_version,
           'block', o.block, 'client_op_id', o.client_op_id, 'actor_id', o.actor_id, 'patch', o.patch,
           'deleted_ids', o.result -> 'deleted_ids', 'created_at', o.created_at) order by o.server_seq), '[]')
    into v_changes
  from (select * from app.block_operations
        where canvas_id = p_canvas_id and server_seq > coalesce(p_since_seq, 0)
        order by server_seq limit v_limit + 1) o;
  return jsonb_build_object(
    'changes', case when jsonb_array_length(v_changes) > v_limit then v_changes - v_limit else v_changes end,
    'has_more', jsonb_array_length(v_changes) > v_limit,
    -- everything up to the watermark has been returned: the last change when there is more,
    -- otherwise the canvas's last committed seq
    'watermark', case when jsonb_array_length(v_changes) > v_limit then (v_changes -> (v_limit - 1) ->> 'server_seq')::bigint
                      else (select last_seq from app.canvases where canvas_id = p_canvas_id) end);
end $$;

-- Canvas, all blocks in rank order and the seq watermark they are consistent with; with
-- p_since_seq also the operations after it (H4: initial load plus replay). The function is
-- STABLE, so all of it reads one snapshot.
drop function if exists api.get_canvas_snapshot(uuid);
create or replace function api.get_canvas_snapshot(p_canvas_id uuid, p_since_seq bigint default null) returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare v_role app.member_role;
begin
  v_role := internal.require_canvas_reader(p_canvas_id);
  return (
    select jsonb_build_object(
      'canvas', internal.canvas_json(c) || jsonb_build_object('role', v_role),
      'blocks', coalesce((select jsonb_agg(internal.block_json(b) order by b.y_order) from app.blocks b
                          where b.canvas_id = c.canvas_id), '[]'),
      'watermark', c.last_seq)
      || case when p_since_seq is null then '{}'
              else jsonb_build_object('since', api.get_canvas_changes(p_canvas_id, p_since_seq, 1000)) end
    from app.canvases c where c.canvas_id = p_canvas_id);
end $$;

grant execute on function api.get_canvas_changes(uuid, bigint, integer), api.get_canvas_snapshot(uuid, bigint)
  to authenticated, service_role;
revoke execute on function api.get_canvas_changes(uuid, bigint, integer), api.get_canvas_snapshot(uuid, bigint) from public;
