-- The foreign keys to auth.users and their indexes (docs/self-hosting.md, Deleting a user): each
-- referencing column has an index it leads (the deletion's ON DELETE action then reads only that
-- user's rows), but the three left without one on purpose, which must stay without: an index on
-- app.blocks.updated_by would make every edit by another user than the last a non-HOT update.
-- A new reference to auth.users fails here until it gets an index or is added to the exceptions
-- with its reason in the docs.
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(3);

create temp table user_refs on commit drop as
select c.conrelid::regclass::text || '.' || a.attname as ref, c.confdeltype as on_delete,
       exists (select from pg_index i
               where i.indrelid = c.conrelid and i.indkey[0] = c.conkey[1] and i.indisvalid
                 -- whole, or without the rows whose user is gone (the action's "= $1" implies it)
                 and (i.indpred is null or pg_get_expr(i.indpred, i.indrelid) = format('(%I IS NOT NULL)', a.attname)))
         as indexed
from pg_constraint c
join pg_attribute a on a.attrelid = c.conrelid and a.attnum = c.conkey[1]
where c.contype = 'f' and c.confrelid = 'auth.users'::regclass and cardinality(c.conkey) = 1;

select is((select array_agg(ref order by ref) from user_refs where not indexed),
          array['app.blocks.created_by', 'app.blocks.updated_by', 'app.presence.user_id'],
          'every column referencing auth.users is indexed but blocks.created_by, blocks.updated_by (HOT edits) and presence.user_id (bounded)');

select is((select array_agg(ref order by ref) from user_refs where indexed),
          array['app.canvas_members.user_id', 'app.canvases.created_by', 'app.files.uploaded_by', 'app.refresh_tokens.user_id',
                'app.workspace_invites.invited_by', 'app.workspace_members.user_id', 'app.workspaces.created_by'],
          'the indexed ones: memberships, canvases, files, refresh tokens, invites, workspaces');

-- auth_sign_out (/logout, a password change) finds a user's tokens by user_id too
select has_index('app', 'refresh_tokens', 'refresh_tokens_user_idx', array['user_id'],
                 'app.refresh_tokens_user_idx: a user''s tokens for internal.auth_sign_out and the deletion''s cascade');

select * from finish();
rollback;
