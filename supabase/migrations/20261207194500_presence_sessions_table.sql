-- app.presence_sessions: the live sessions that keep a user's app.presence row on a canvas, one row
-- per realtime-js channel (a tracking period of it) or H1 socket, named by the gateway process that
-- holds it (node_id, the part of session_id before '/': cluster.ts's node id). The row is deleted,
-- and presence_leave broadcast, when its user's last session on the canvas leaves
-- (api.leave_canvas with p_session, internal.remove_node_presence_sessions for a gateway taken for
-- dead): the database decides who is still present, not a gateway's view of the cluster, which
-- lagged behind a track's `ok` (sql/rpc/presence.sql; docs/realtime.md, presence_leave). Sessions
-- go with their row (its expiry by internal.cleanup, an access loss, the canvas or user deleted).
-- No policy and no grant to the API roles: only the api and internal functions read or write it.
create table app.presence_sessions (
  canvas_id uuid not null,
  user_id uuid not null,
  session_id text not null,
  node_id text generated always as (split_part(session_id, '/', 1)) stored,
  created_at timestamptz not null default now(),
  primary key (canvas_id, user_id, session_id),
  foreign key (canvas_id, user_id) references app.presence (canvas_id, user_id) on delete cascade
);
-- a gateway taken for dead: its sessions, found by node (internal.remove_node_presence_sessions)
create index presence_sessions_node_idx on app.presence_sessions (node_id);
alter table app.presence_sessions enable row level security;
comment on table app.presence_sessions is
  'A live session (realtime-js channel or H1 socket) of a user on a canvas, session_id ''<gateway node id>/<local id>''. '
  'The app.presence row goes, with presence_leave, when the last one leaves (sql/rpc/presence.sql). No policy: no API role reads or writes it.';

-- The most sessions one user may hold on one canvas (api.update_presence refuses one more:
-- invalid_input, field session). A user has at most REALTIME_MAX_SOCKETS_PER_USER (100) sockets
-- per gateway process, each with at most one session on a canvas.
insert into app.settings (key, value, description) values
  ('presence_sessions_max', '256', 'Live presence sessions (tabs, H1 sockets) one user may hold on one canvas; one more is refused (invalid_input, field session)')
on conflict (key) do nothing;
