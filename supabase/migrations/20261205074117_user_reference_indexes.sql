-- Indexes on the columns that reference auth.users, where they are cheap. Deleting a user runs
-- each foreign key's ON DELETE action (SET NULL or CASCADE) as "… where <column> = $1", and a
-- column without an index is read in full for it while the deletion holds the user's row
-- (measured on 200,000 blocks, 20,000 files, 40,000 refresh tokens: docs/self-hosting.md,
-- Deleting a user; scripts/user-deletion-plan.sql).
-- Each column here is written once, when its row is made, and never again but by that action: no
-- update the app makes changes it, so the updates of these rows stay HOT (canvases take one at
-- every mutation: last_seq). Partial on "is not null" where the action is SET NULL: rows whose
-- user is gone leave the index (the action's "= $1" implies it, so it is used).
-- refresh_tokens.user_id also serves /logout and a password change (internal.auth_sign_out,
-- "where user_id = $1 and revoked_at is null"), which read the whole table before; the table
-- keeps one row per refresh until expiry, the largest of these. On a large existing
-- refresh_tokens, create the index concurrently by hand before this migration runs (the same
-- name: "if not exists" then skips it), or sign-ins and refreshes wait for the build.
-- Left without one, on purpose (docs/self-hosting.md): app.blocks.created_by and updated_by (an
-- index on updated_by makes every edit by another user than the last a non-HOT update, and with
-- updated_by read in full anyway one on created_by would halve the deletion's cost for an index
-- entry per block created) and app.presence.user_id (bounded by the users present: the cleanup
-- job removes stale rows).
create index if not exists workspaces_created_by_idx on app.workspaces (created_by) where created_by is not null;
create index if not exists canvases_created_by_idx on app.canvases (created_by) where created_by is not null;
create index if not exists workspace_invites_invited_by_idx on app.workspace_invites (invited_by) where invited_by is not null;
create index if not exists files_uploaded_by_idx on app.files (uploaded_by) where uploaded_by is not null;
create index if not exists refresh_tokens_user_idx on app.refresh_tokens (user_id);
