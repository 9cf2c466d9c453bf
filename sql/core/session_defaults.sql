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
-- once TCP keepalive gives the connection up (below).
--
-- tcp_keepalives_idle / _interval / _count: across a path that stops carrying packets without
-- closing (a partition, a firewall or NAT that lost the flow, a host gone), no close ever reaches
-- the server; it learns the client is gone only from TCP keepalive, whose OS default waits 2 h
-- before the first probe (Linux: 7200 s, then 9 probes 75 s apart). Meanwhile the session holds
-- its connection slot, and an idle-in-transaction or running one its locks. Here: the first probe
-- after 60 s without a packet, then one every 10 s, the connection given up after 6 unanswered:
-- a client gone is known within about 2 minutes of its last packet (and a running statement's
-- client check above then ends the statement). A probe is a few bytes a minute on an idle
-- connection; 60 s also keeps a NAT or firewall on the path (which forget idle flows after
-- 4-15 minutes) from dropping a pooled connection that waits unused. A minute of lost probes
-- (six 10 s apart) is not taken for a dead client: a brief outage of the path leaves sessions be.
-- They apply to TCP connections (a Unix socket has no keepalive); our own pools probe the server
-- the same way (KEEPALIVE_IDLE_SECONDS, src/db/index.ts).
--
-- tcp_user_timeout (PostgreSQL 12+, Linux): keepalive probes are sent only while nothing the
-- server wrote waits to be acknowledged. A backend writing a result (or a notice, or the error of
-- a statement the client check ended) into a stalled path retransmits instead, and TCP gives the
-- connection up only at its retransmission limit (tcp_retries2: about 15 minutes), the session
-- holding its slot and locks all along. Here: given up once data has waited 120 s unacknowledged.
-- 120 s is the keepalive's own bound (60 s idle + 6 probes 10 s apart), and must stay so: with a
-- user timeout set, Linux also ends a connection whose keepalive probes go unanswered once this
-- long has passed since its last packet, in place of the probe count (a shorter value would cut the
-- six probes short, a longer one draw them out). A client that leaves a result unread that long
-- (its receive window full) is given up too: Potentia's read what they ask for (a cursor asks a
-- batch at a time). PgBouncer sets the same four values on its sockets (deploy/pgbouncer).
-- Node cannot set TCP_USER_TIMEOUT on our processes' sockets: their side is ANSWER_TIMEOUT_SECONDS
-- and KEEPALIVE_IDLE_SECONDS (src/db/index.ts).
--
-- Database settings, not startup parameters: PgBouncer refuses unknown startup parameters (08P01)
-- and drops the ones in ignore_startup_parameters; these apply to its server connections too, and
-- to sessions opened from now on.
-- Setting them takes the database's owner (or a superuser), and a platform that supports them: a
-- migrating role that is neither, or a platform that does not, gets a warning (with what to run)
-- instead of a failed migration (the settings protect; nothing depends on them).
do $$
declare
  setting text[];
  refused text[] := '{}';
  commands text[] := '{}';
begin
  foreach setting slice 1 in array array[
    ['client_connection_check_interval', '2s'],
    ['tcp_keepalives_idle', '60'], ['tcp_keepalives_interval', '10'], ['tcp_keepalives_count', '6'],
    ['tcp_user_timeout', '120s']]
  loop
    begin
      execute format('alter database %I set %s = %L', current_database(), setting[1], setting[2]);
    exception when insufficient_privilege then
      refused := refused || setting[1];
      commands := commands || format('alter database %I set %s = %L', current_database(), setting[1], setting[2]);
    when invalid_parameter_value then  -- a platform without POLLRDHUP (Windows, macOS) allows only 0
      raise warning '% is not set: %', setting[1], sqlerrm
        using hint = 'this platform does not support it; nothing to do';
    end;
  end loop;
  if cardinality(refused) > 0 then
    raise warning 'the database settings % are not set: the role % does not own database %',
      array_to_string(refused, ', '), current_user, current_database()
      using hint = format('as its owner, run: %s (README, "When Postgres fails")', array_to_string(commands, '; '));
  end if;
end
$$;
