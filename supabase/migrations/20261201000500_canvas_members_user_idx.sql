-- A user's canvas memberships by user: internal.readable_canvas_ids (the canvas RLS policies) and
-- the workspace/canvas listings look them up by user_id; the primary key leads with canvas_id.
create index if not exists canvas_members_user_idx on app.canvas_members (user_id);
