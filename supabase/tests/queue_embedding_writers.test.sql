-- internal.queue_embedding, the trigger on every content write of app.blocks, runs as the writer
-- (no SECURITY DEFINER, no SET clause: docs/performance.md, "RPC instructions (2026-12-07, h204)").
-- So every role that may write a block's content must be able to queue it in app.embedding_outbox,
-- or its writes fail; and nothing a writer controls (its search path, a temporary table named like
-- the outbox) may send the queued row anywhere else. The writers: the mutation RPCs and the other
-- SECURITY DEFINER functions (their owner), service_role (PostgREST, supabase-js with the service
-- key), the processes' login role in potentia_app (docs/self-hosting.md, "Database": BYPASSRLS),
-- and the schemas' owner (db:migrate, upgrade:v1, a DBA).
begin;
create extension if not exists pgtap with schema extensions;
set search_path = extensions, public;
select plan(9);

-- 1. Privileges: whoever may insert a block or update its content may insert into the outbox and
-- update its queued_at (the trigger's ON CONFLICT DO UPDATE), whatever role it is granted later.
select is(
  (select array_agg(r.rolname::text order by 1) from pg_roles r
   where (has_table_privilege(r.oid, 'app.blocks', 'INSERT') or has_column_privilege(r.oid, 'app.blocks', 'content', 'UPDATE'))
     and not (has_table_privilege(r.oid, 'app.embedding_outbox', 'INSERT')
              and has_column_privilege(r.oid, 'app.embedding_outbox', 'queued_at', 'UPDATE'))),
  null, 'every role that may write a block''s content may queue it in app.embedding_outbox');
-- Row security: the outbox has RLS and no policy, so only a role that bypasses it (its owner, a
-- BYPASSRLS role) may write it; app.blocks has no policy that lets anyone else write a block
-- either, and both have one owner, so a role bypasses on the one exactly where it does on the other.
select is((select relowner from pg_class where oid = 'app.embedding_outbox'::regclass),
          (select relowner from pg_class where oid = 'app.blocks'::regclass), 'app.blocks and app.embedding_outbox have one owner');
select is((select array_agg(policyname::text) from pg_policies
           where schemaname = 'app' and tablename = 'blocks' and cmd in ('INSERT', 'UPDATE', 'ALL')),
          null, 'and no policy of app.blocks lets a role bound by row security write a block');

-- 2. service_role writing app.blocks directly, with the outbox's name taken in its search path
-- (a temporary table, searched first): the rows land in app.embedding_outbox
select tests.create_user('qe_owner');
create temp table qe (canvas_id uuid, block_id uuid, queued_at timestamptz);
grant all on qe to public;
select tests.authenticate_as('qe_owner');
insert into qe (canvas_id) select (api.create_canvas((api.create_workspace('QE') ->> 'workspace_id')::uuid, 'QE') ->> 'canvas_id')::uuid;
select tests.clear_authentication();

set local role service_role;
create temp table embedding_outbox (block_id uuid primary key, canvas_id uuid, first_queued_at timestamptz, queued_at timestamptz);
set local search_path = pg_temp, app, extensions, public;
with b as (insert into app.blocks (canvas_id, type, content, y_order)
           select canvas_id, 'text', '{"text":"by service_role"}', 'U' from qe returning block_id)
update qe set block_id = (select block_id from b);
select is((select count(*)::int from app.embedding_outbox o join qe using (block_id, canvas_id)), 1,
          'a block service_role inserts with a temporary embedding_outbox in its path is queued in app.embedding_outbox');
select is((select count(*)::int from pg_temp.embedding_outbox), 0, 'and nothing lands in the temporary table');
update app.embedding_outbox set queued_at = '2000-01-01' where block_id = (select block_id from qe);
update app.blocks set content = '{"text":"edited by service_role"}' where block_id = (select block_id from qe);
select ok((select queued_at > '2000-01-01' from app.embedding_outbox where block_id = (select block_id from qe)),
          'its content edited by service_role queues it again');
drop table pg_temp.embedding_outbox;
set local search_path = extensions, public;
reset role;

-- 3. the processes' login role (a member of potentia_app with BYPASSRLS, as docs/self-hosting.md
-- has the DBA make it), writing a block directly
do $$ begin
  execute format('create role %I login bypassrls in role potentia_app', 'qe_runtime_' || pg_backend_pid());
  execute format('set local role %I', 'qe_runtime_' || pg_backend_pid());
  insert into app.blocks (canvas_id, type, content, y_order) select canvas_id, 'text', '{"text":"by the runtime role"}', 'V' from qe;
  reset role;
end $$;
select is((select count(*)::int from app.embedding_outbox o join app.blocks b using (block_id)
           where b.content ->> 'text' = 'by the runtime role'), 1, 'a block the processes'' login role inserts is queued');

-- 4. the mutation RPC called with a temporary embedding_outbox in the caller's path (the trigger
-- runs as the RPC's owner, with the RPC's pinned path)
select tests.authenticate_as('qe_owner');
create temp table embedding_outbox (block_id uuid primary key, canvas_id uuid, first_queued_at timestamptz, queued_at timestamptz);
set local search_path = pg_temp, extensions, public;
update qe set block_id = (api.upsert_block_atomic(canvas_id, null, 'create', 'qe-rpc', null, '{"type":"text","content":{"text":"by the RPC"}}')
                          ->> 'block_id')::uuid;
select tests.clear_authentication();
select is((select count(*)::int from app.embedding_outbox o join qe using (block_id, canvas_id)), 1,
          'a block the RPC creates for a caller with a temporary embedding_outbox in its path is queued in app.embedding_outbox');
select is((select count(*)::int from pg_temp.embedding_outbox), 0, 'and nothing lands in the temporary table');

select * from finish();
rollback;
