-- Live re-authorization: when someone's access to a canvas may have changed, the database itself
-- says so on the canvas's private topic, in the same transaction as the change. Every realtime
-- gateway process receives the row after commit through its bus (whoever made the change: an api
-- function, another process, plain SQL) and re-authorizes the open sockets of the users it names
-- (src/realtime/access.ts): a socket that lost access is closed, one whose write right changed is
-- told so. The gateway never forwards `access_changed` to clients.
--
-- Message: realtime.send({canvas_id, user_id, reason}, 'access_changed', 'canvas:<id>', private)
--   user_id  the user whose role may have changed, or null: everyone on the canvas re-checks
--   reason   workspace_member | canvas_member | canvas_deleted | canvas_moved
-- Membership triggers are statement-level with transition tables: a bulk change sends one
-- message per (canvas, user).

-- A user who can no longer read the canvas also leaves it here: their H3 presence row goes and the
-- members hear `presence_leave` (sql/rpc/presence.sql), in the same transaction. Their own socket,
-- closed by the gateway, can no longer call api.leave_canvas (it requires read access), so their
-- cursor stayed on everyone's screen until the presence cleanup expired it.
create or replace function internal.send_access_changed(p_canvas_id uuid, p_user_id uuid, p_reason text) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform realtime.send(jsonb_build_object('canvas_id', p_canvas_id, 'user_id', p_user_id, 'reason', p_reason),
                        'access_changed', 'canvas:' || p_canvas_id, true);
  if p_user_id is not null and internal.canvas_role(p_canvas_id, p_user_id) is null then
    delete from app.presence where canvas_id = p_canvas_id and user_id = p_user_id;
    if found then
      perform realtime.send(jsonb_build_object('user_id', p_user_id), 'presence_leave', 'canvas:' || p_canvas_id, true);
    end if;
  end if;
end $$;

-- A workspace role is the default role on every canvas of the workspace: a removal or a role
-- change re-checks the user on all its live canvases. A new workspace membership only matters
-- where the user already had access through a canvas role (an owner's role overrides it).
create or replace function internal.workspace_members_access_changed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if tg_op = 'INSERT' then
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'workspace_member')
    from (select distinct cm.canvas_id, cm.user_id
          from new_rows n
          join app.canvases c on c.workspace_id = n.workspace_id and c.deleted_at is null
          join app.canvas_members cm on cm.canvas_id = c.canvas_id and cm.user_id = n.user_id) x;
  elsif tg_op = 'DELETE' then
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'workspace_member')
    from (select distinct c.canvas_id, o.user_id
          from old_rows o join app.canvases c on c.workspace_id = o.workspace_id and c.deleted_at is null) x;
  else
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'workspace_member')
    from (select c.canvas_id, a.user_id
          from (select o.workspace_id, o.user_id from old_rows o
                where not exists (select from new_rows n where n.workspace_id = o.workspace_id and n.user_id = o.user_id and n.role = o.role)
                union
                select n.workspace_id, n.user_id from new_rows n
                where not exists (select from old_rows o where o.workspace_id = n.workspace_id and o.user_id = n.user_id and o.role = n.role)) a
          join app.canvases c on c.workspace_id = a.workspace_id and c.deleted_at is null) x;
  end if;
  return null;
end $$;

-- A canvas role replaces the workspace role on one canvas: any insert, change or removal.
create or replace function internal.canvas_members_access_changed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if tg_op = 'INSERT' then
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'canvas_member')
    from (select distinct n.canvas_id, n.user_id from new_rows n) x;
  elsif tg_op = 'DELETE' then
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'canvas_member')
    from (select distinct o.canvas_id, o.user_id from old_rows o
          join app.canvases c on c.canvas_id = o.canvas_id and c.deleted_at is null) x;
  else
    perform internal.send_access_changed(x.canvas_id, x.user_id, 'canvas_member')
    from (select o.canvas_id, o.user_id from old_rows o
          where not exists (select from new_rows n where n.canvas_id = o.canvas_id and n.user_id = o.user_id and n.role = o.role)
          union
          select n.canvas_id, n.user_id from new_rows n
          where not exists (select from old_rows o where o.canvas_id = n.canvas_id and o.user_id = n.user_id and o.role = n.role)) x;
  end if;
  return null;
end $$;

-- A canvas that is soft-deleted, purged while live, or moved to another workspace: everyone on
-- it re-checks (user_id null). Row triggers with a WHEN clause, because app.canvases is updated by
-- every block mutation (last_seq): the clause keeps that path free of any trigger call. Deferred
-- to commit, so the message comes after whatever else the transaction sends to the canvas (the
-- `canvas_deleted` broadcast of api.delete_canvas reaches clients before their channels close).
create or replace function internal.canvases_access_changed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform internal.send_access_changed(old.canvas_id, null,
    case when tg_op = 'DELETE' or new.deleted_at is not null then 'canvas_deleted' else 'canvas_moved' end);
  return null;
end $$;

drop trigger if exists access_changed_insert on app.workspace_members;
create trigger access_changed_insert after insert on app.workspace_members
  referencing new table as new_rows for each statement execute function internal.workspace_members_access_changed();
drop trigger if exists access_changed_update on app.workspace_members;
create trigger access_changed_update after update on app.workspace_members
  referencing old table as old_rows new table as new_rows for each statement execute function internal.workspace_members_access_changed();
drop trigger if exists access_changed_delete on app.workspace_members;
create trigger access_changed_delete after delete on app.workspace_members
  referencing old table as old_rows for each statement execute function internal.workspace_members_access_changed();

drop trigger if exists access_changed_insert on app.canvas_members;
create trigger access_changed_insert after insert on app.canvas_members
  referencing new table as new_rows for each statement execute function internal.canvas_members_access_changed();
drop trigger if exists access_changed_update on app.canvas_members;
create trigger access_changed_update after update on app.canvas_members
  referencing old table as old_rows new table as new_rows for each statement execute function internal.canvas_members_access_changed();
drop trigger if exists access_changed_delete on app.canvas_members;
create trigger access_changed_delete after delete on app.canvas_members
  referencing old table as old_rows for each statement execute function internal.canvas_members_access_changed();

drop trigger if exists access_changed_update on app.canvases;
create constraint trigger access_changed_update after update of deleted_at, workspace_id on app.canvases
  deferrable initially deferred
  for each row when (old.deleted_at is null and (new.deleted_at is not null or new.workspace_id <> old.workspace_id))
  execute function internal.canvases_access_changed();
drop trigger if exists access_changed_delete on app.canvases;
create constraint trigger access_changed_delete after delete on app.canvases
  deferrable initially deferred
  for each row when (old.deleted_at is null) execute function internal.canvases_access_changed();
