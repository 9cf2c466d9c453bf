-- potentia_app: what the running processes (api, gateway, worker) need, so that they may connect as
-- a login role that does not own Potentia's schemas and so can alter or drop nothing. A DBA grants
-- it to the processes' login role (docs/self-hosting.md, "Database"): `create role potentia_runtime
-- login replication bypassrls password '…' in role potentia_app`. REPLICATION (the gateway's slot)
-- and BYPASSRLS (the gateway's and worker's own reads, as the owner made them) are attributes of the
-- login role: Postgres passes neither through membership.
-- db:migration: always — its grants name functions other sources may drop and create again (a
-- changed signature), which loses them; every generated migration carries it after them.

-- Roles are cluster-wide and making one takes CREATEROLE (granting the API roles: CREATEROLE or
-- their ADMIN OPTION), which the role running db:migrate may lack: the schemas' owner of
-- docs/self-hosting.md has neither. The split is optional, so where potentia_app is missing and
-- cannot be made, or an API role cannot be granted to it, this says so and goes on: an upgrade
-- never stops here. A superuser makes it (docs/self-hosting.md, "Database"), then the owner runs
-- this file again (`psql -f sql/security/app_role.sql`) or the next migration does.
do $$
declare
  r text;
  can_make boolean := (select rolcreaterole or rolsuper from pg_roles where rolname = current_user);
begin
  if not exists (select from pg_roles where rolname = 'potentia_app') then
    if not can_make then
      raise notice 'potentia_app (the processes'' least-privilege group role) is not made: % lacks CREATEROLE; '
        'as a superuser: create role potentia_app nologin; grant anon, authenticated, service_role to potentia_app; '
        'then as %: psql -f sql/security/app_role.sql (docs/self-hosting.md, "Database")', current_user, current_user;
      return;
    end if;
    create role potentia_app nologin;
    comment on role potentia_app is 'Potentia: what the api, gateway and worker need at run time; granted to their login role (docs/self-hosting.md, "Database")';
  end if;
  -- Requests run as the API roles (`set local role`, as PostgREST's authenticator does); being an
  -- inheriting member also gives the processes' own reads and calls what service_role is granted
  -- (they could `set role service_role` for them anyway).
  foreach r in array array['anon', 'authenticated', 'service_role'] loop
    if not exists (select from pg_auth_members where roleid = r::regrole and member = 'potentia_app'::regrole) then
      if can_make or pg_has_role(current_user, r, 'MEMBER WITH ADMIN OPTION') then
        execute format('grant %I to potentia_app', r);
      else
        raise notice 'potentia_app is not a member of %, and % may not grant it: as a superuser: grant % to potentia_app', r, current_user, r;
      end if;
    end if;
  end loop;

  execute 'grant usage on schema app, internal, realtime, graphile_worker to potentia_app';
  -- internal functions the processes call as the connecting role that no API role is granted:
  -- the gateway's write check (src/realtime/access.ts), the worker's rebalance task (src/worker/tasks.ts),
  -- a canvas lane's lock of its transaction's callers (src/db/canvas-lanes.ts)
  execute 'grant execute on function internal.can_write_role(app.member_role) to potentia_app';
  execute 'grant execute on function internal.lock_callers(text[], text) to potentia_app';
  execute 'grant execute on function internal.rebalance_canvas(uuid) to potentia_app';
  -- a gateway taken for dead, or stopping: its presence sessions leave (src/realtime/gateway.ts)
  execute 'grant execute on function internal.remove_node_presence_sessions(text) to potentia_app';
  -- and the nodes that hold sessions, to find those of a node no live gateway knew (src/realtime/presence-sessions.ts)
  execute 'grant execute on function internal.presence_session_nodes() to potentia_app';
  -- Graphile Worker's runtime (graphile-worker's run(): its start reads graphile_worker.migrations,
  -- then it takes, completes, fails and reschedules jobs in the _private tables and adds jobs and
  -- crontab rows). Its installer and migrations stay with the owner (db:migrate): no CREATE here.
  execute 'grant select on graphile_worker.migrations to potentia_app';
  execute 'grant select, insert, update, delete on graphile_worker._private_jobs, graphile_worker._private_job_queues,
    graphile_worker._private_tasks, graphile_worker._private_known_crontabs to potentia_app';
  execute 'grant select on graphile_worker.jobs to potentia_app';
  execute 'grant usage, select on all sequences in schema graphile_worker to potentia_app';
  -- the start check (src/db/migrated.ts) reads which migrations the database holds, as the
  -- connecting role: without this a process connecting as a member of potentia_app could not,
  -- took it for "no record" and started on a database that lacked this code's migrations (a deploy
  -- that skipped db:migrate), failing request by request. The versions only, not the statements.
  if to_regclass('supabase_migrations.schema_migrations') is not null then
    if has_schema_privilege('supabase_migrations', 'USAGE WITH GRANT OPTION')
       and has_column_privilege('supabase_migrations.schema_migrations', 'version', 'SELECT WITH GRANT OPTION') then
      execute 'grant usage on schema supabase_migrations to potentia_app';
      execute 'grant select (version) on supabase_migrations.schema_migrations to potentia_app';
    else
      raise notice 'potentia_app may not read supabase_migrations.schema_migrations, and % may not grant it: the start check cannot '
        'tell a database that lacks migrations (as its owner: grant usage on schema supabase_migrations to potentia_app; '
        'grant select (version) on supabase_migrations.schema_migrations to potentia_app)', current_user;
    end if;
  end if;
end $$;
