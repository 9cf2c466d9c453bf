-- Development seed: a demo user, workspace and canvas with fixed ids. Idempotent: `npm start`
-- loads it on every start; `supabase db reset` loads it on Supabase's local stack.
insert into auth.users (id, email)
values ('00000000-0000-4000-8000-00000000d001', 'demo@potentia.local')
on conflict (id) do nothing;

insert into app.workspaces (workspace_id, name, created_by)
values ('00000000-0000-4000-8000-00000000d002', 'Demo workspace', '00000000-0000-4000-8000-00000000d001')
on conflict (workspace_id) do nothing;

insert into app.workspace_members (workspace_id, user_id, role)
values ('00000000-0000-4000-8000-00000000d002', '00000000-0000-4000-8000-00000000d001', 'owner')
on conflict (workspace_id, user_id) do nothing;

insert into app.canvases (canvas_id, workspace_id, title, created_by)
values ('00000000-0000-4000-8000-00000000d003', '00000000-0000-4000-8000-00000000d002', 'Demo canvas',
        '00000000-0000-4000-8000-00000000d001')
on conflict (canvas_id) do nothing;

-- The demo app's "Continue as demo user" signs in as demo@potentia.local with password
-- demo-password: the same bcrypt (pgcrypto, cost 10) as sql/auth/password.sql, set only while the
-- user has no password, so a password changed since is kept.
update auth.users
set encrypted_password = extensions.crypt('demo-password', extensions.gen_salt('bf', 10)),
    email_confirmed_at = coalesce(email_confirmed_at, now())
where id = '00000000-0000-4000-8000-00000000d001' and coalesce(encrypted_password, '') = '';
