-- Workspaces over the API (issue 14): pending invitations by email, and the rate limits of the
-- workspace endpoints (sql/rpc/workspaces.sql, functions/workspaces.ts).

-- An invitation of an email that has no user yet. It becomes a workspace membership, with this
-- role, when a user with that (confirmed) email appears in auth.users, and is deleted then
-- (internal.accept_workspace_invites). One pending invite per workspace and email: inviting again
-- changes its role. Emails are stored trimmed and lower-cased, as GoTrue stores them.
create table app.workspace_invites (
  invite_id uuid primary key default gen_random_uuid(),
  workspace_id uuid not null references app.workspaces on delete cascade,
  email text not null check (email = lower(btrim(email)) and char_length(email) between 3 and 320 and email ~ '^[^@\s]+@[^@\s]+$'),
  role app.member_role not null,
  invited_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  unique (workspace_id, email)
);
-- the sign-up trigger finds a new user's invites by email
create index workspace_invites_email_idx on app.workspace_invites (email);
alter table app.workspace_invites enable row level security;

-- Invitees' emails are for the people who manage members: owners and admins of the workspace read
-- its invites; nobody else (the invitee has no user yet). Written only through api functions.
-- Plain SQL instead of internal.workspace_role: on a fresh database the migrations run before the
-- sql/ sources define it (the membership subquery is itself member-only under RLS).
grant select on app.workspace_invites to authenticated;
create policy workspace_invites_manager_read on app.workspace_invites for select to authenticated
  using (exists (select from app.workspace_members m
                 where m.workspace_id = workspace_invites.workspace_id and m.user_id = auth.uid() and m.role in ('owner', 'admin')));

-- W1 list workspaces, W2 create, W3 rename, W4 list members, W5 add a member / invite (an invite
-- is an email to someone: kept low), W6 change a role, W7 remove, W8 list a workspace's canvases,
-- W9 list invites, W10 revoke an invite.
insert into app.endpoint_limits (endpoint, max_hits, window_seconds) values
  ('W1', 5, 1), ('W2', 5, 60), ('W3', 1, 1), ('W4', 5, 1), ('W5', 20, 60), ('W6', 5, 1), ('W7', 5, 1),
  ('W8', 5, 1), ('W9', 5, 1), ('W10', 5, 1)
on conflict (endpoint) do nothing;
