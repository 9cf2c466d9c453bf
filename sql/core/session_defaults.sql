-- Defaults of every session on this database, whichever client opens it: the API, gateway and
-- worker pools, Graphile Worker's pg pool, the edge functions, a pooler's server connections.
--
-- client_connection_check_interval (PostgreSQL 14+): a backend running a statement polls its
-- socket this often and ends the statement (rolled back, its locks released, its session gone)
-- once the client has closed the connection. Without it the backend learns of a vanished client
-- only when it next writes to it, after the statement: a query the driver gave up on
-- (answer_timeout, src/db/index.ts) or whose process died went on running, holding its row
-- locks and a connection slot, for as long as it took. The poll is a cheap syscall every 2 s of
-- a running statement. It sees a close that reaches the server: behind PgBouncer too, which
-- closes the server connection of a client that leaves mid-transaction; across a stalled path
-- only once the path heals (README, "When Postgres fails").
-- A database setting, not a startup parameter: PgBouncer refuses unknown startup parameters
-- (08P01) and drops the ones in ignore_startup_parameters; this one applies to its server
-- connections too, and to sessions opened from now on.
-- Setting it takes the database's owner (or a superuser), and a platform that supports it: a
-- migrating role that is neither, or a platform that does not, gets a warning (with what to run)
-- instead of a failed migration (the setting protects; nothing depends on it).
do $$
begin
  execute format('alter database %I set client_connection_check_interval = %L', current_database(), '2s');
exception when insufficient_privilege then
  raise warning 'client_connection_check_interval is not set: the role % does not own database %', current_user, current_database()
    using hint = format('as its owner, run: alter database %I set client_connection_check_interval = ''2s'' (README, "When Postgres fails")',
                        current_database());
when invalid_parameter_value then  -- a platform without POLLRDHUP (Windows, macOS) allows only 0
  raise warning 'client_connection_check_interval is not set: %', sqlerrm
    using hint = 'this platform cannot check a client connection during a statement; nothing to do';
end
$$;
