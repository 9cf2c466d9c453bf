-- What deleting a user costs, foreign key by foreign key (docs/self-hosting.md, Deleting a user):
--   createdb deletion_plan && npm run db:migrate -- --database-url postgres://…/deletion_plan
--   psql -X -q -f scripts/user-deletion-plan.sql postgres://…/deletion_plan
-- 2,000 users, 200 workspaces, 400 canvases, 200,000 blocks (each user created 100 and last
-- edited 100), 20,000 files, 40,000 refresh tokens, 2,000 invites, 400 presence rows (~10 s to
-- insert, triggers off for the load). Then EXPLAIN ANALYZE of deleting three users in turn, with the
-- indexes of migration 20261205074117_user_reference_indexes and without them: each "Trigger for
-- constraint" line is one foreign key's ON DELETE action. One transaction, rolled back: nothing
-- stays, but it holds the tables it fills locked while it runs (DROP INDEX), so use a scratch database.
\set ON_ERROR_STOP on
\set QUIET on
begin;
set local idle_in_transaction_session_timeout = '60s';
set local session_replication_role = replica;
insert into auth.users (id, email) select gen_random_uuid(), 'fill-' || g || '@example.com' from generate_series(1, 2000) g;
create temp table u on commit drop as select row_number() over (order by id) as n, id from auth.users where email like 'fill-%'; create index on u (n); analyze u;
insert into app.workspaces (workspace_id, name, created_by) select gen_random_uuid(), 'w' || g, (select id from u where n = 1 + g % 2000) from generate_series(1, 200) g;
create temp table w on commit drop as select row_number() over (order by workspace_id) as n, workspace_id from app.workspaces where name ~ '^w[0-9]+$'; create index on w (n); analyze w;
insert into app.canvases (canvas_id, workspace_id, title, created_by)
  select gen_random_uuid(), (select workspace_id from w where n = 1 + g % 200), 'c' || g, (select id from u where n = 1 + (g * 7) % 2000) from generate_series(1, 400) g;
create temp table c on commit drop as select row_number() over (order by canvas_id) as n, canvas_id from app.canvases where title ~ '^c[0-9]+$'; create index on c (n); analyze c;
insert into app.blocks (canvas_id, type, content, y_order, created_by, updated_by)
  select c.canvas_id, 'text', jsonb_build_object('text', repeat('lorem ipsum ', 20) || g), to_hex(g) || '1',
         u1.id, u2.id
  from generate_series(1, 200000) g
  join c on c.n = 1 + g % 400
  join u u1 on u1.n = 1 + (g * 13) % 2000
  join u u2 on u2.n = 1 + (g * 31) % 2000;
insert into app.files (canvas_id, uploaded_by, object_key, filename, content_type, size_bytes, status, completed_at, checksum)
  select (select canvas_id from c where n = 1 + g % 400), (select id from u where n = 1 + (g * 17) % 2000), 'obj/' || g, 'f' || g || '.png', 'image/png', 1000, 'ready', now(), 'AAAAAAAAAAAAAAAAAAAAAA=='
  from generate_series(1, 20000) g;
insert into app.refresh_tokens (token_hash, family_id, user_id, expires_at)
  select md5(g::text), gen_random_uuid(), (select id from u where n = 1 + g % 2000), now() + interval '30 days' from generate_series(1, 40000) g;
insert into app.workspace_invites (workspace_id, email, role, invited_by)
  select (select workspace_id from w where n = 1 + g % 200), 'inv' || g || '@example.com', 'editor', (select id from u where n = 1 + (g * 3) % 2000) from generate_series(1, 2000) g;
insert into app.presence (canvas_id, user_id) select (select canvas_id from c where n = 1 + g % 400), (select id from u where n = 1 + (g * 11) % 2000) from generate_series(1, 400) g;
insert into app.workspace_members (workspace_id, user_id, role) select w.workspace_id, u.id, 'editor' from u join w on w.n = 1 + u.n % 200 on conflict do nothing;
reset session_replication_role;
analyze auth.users; analyze app.workspaces; analyze app.canvases; analyze app.blocks; analyze app.files;
analyze app.refresh_tokens; analyze app.workspace_invites; analyze app.presence; analyze app.workspace_members;
select id as u1 from auth.users where email = 'fill-1@example.com' \gset
select id as u2 from auth.users where email = 'fill-2@example.com' \gset
select id as u3 from auth.users where email = 'fill-3@example.com' \gset
\echo '== with the indexes =='
savepoint with_indexes;
explain (analyze, costs off, summary on) delete from auth.users where id = :'u1';
explain (analyze, costs off, summary on) delete from auth.users where id = :'u2';
explain (analyze, costs off, summary on) delete from auth.users where id = :'u3';
rollback to with_indexes;
\echo '== without them =='
drop index app.workspaces_created_by_idx, app.canvases_created_by_idx, app.workspace_invites_invited_by_idx,
  app.files_uploaded_by_idx, app.refresh_tokens_user_idx;
explain (analyze, costs off, summary on) delete from auth.users where id = :'u1';
explain (analyze, costs off, summary on) delete from auth.users where id = :'u2';
explain (analyze, costs off, summary on) delete from auth.users where id = :'u3';
rollback;
