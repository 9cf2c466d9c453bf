import { Kysely } from 'kysely';
import { PostgresJSDialect } from 'kysely-postgres-js';
import type { Logger } from 'pino';
import postgres, { type Sql } from 'postgres';
import { CanvasLanes, LOCK_CALLERS } from './canvas-lanes.ts';
import type { DB } from './types.ts';

export type Database = {
  /** postgres.js: parameterised tagged-template SQL, used for RPC calls and transactions. */
  sql: Sql;
  /** Kysely over the same pool, typed by the generated `DB` interface. */
  db: Kysely<DB>;
  /** The pool's connections by canvas for mutations (requestStatement): see canvas-lanes.ts. */
  lanes: CanvasLanes;
  close(): Promise<void>;
};

/**
 * `transactionPooler`: `url` is a transaction pooler (PgBouncer `pool_mode = transaction`,
 * Supavisor on :6543: src/db/pooling.ts), where a server connection is ours for one transaction
 * only: no named prepared statements, and canvas lanes send one transaction at a time.
 * `answerTimeoutSeconds`: ANSWER_TIMEOUT_SECONDS unless given; 0 for none, for a pool whose
 * statements may run long without a statement timeout (fixtures, maintenance). `logger`: the
 * canvas lanes' (a failure to lock a group's callers; nothing is logged without one).
 */
export type DatabaseOptions = { max?: number; applicationName?: string; transactionPooler?: boolean; answerTimeoutSeconds?: number; logger?: Logger };

/** postgres.js's options with `answer_timeout`, which only patches/postgres+3.4.9.patch adds: Node loads it patched
 *  (npm install's postinstall), the edge functions the patched copy in supabase/functions/_vendor (npm run edge:vendor). */
type PatchedOptions = postgres.Options<{}> & { answer_timeout?: number };

export function createDatabase(url: string, opts: DatabaseOptions = {}): Database {
  const options: PatchedOptions = {
    max: opts.max ?? 10,
    prepare: !opts.transactionPooler,
    onnotice: () => {},
    connection: { application_name: opts.applicationName ?? 'potentia' },
    backoff: reconnectBackoffSeconds,
    connect_timeout: CONNECT_TIMEOUT_SECONDS,
    answer_timeout: opts.answerTimeoutSeconds ?? ANSWER_TIMEOUT_SECONDS,
    keep_alive: KEEPALIVE_IDLE_SECONDS,
  };
  const sql = postgres(url, options);
  const db = new Kysely<DB>({ dialect: new PostgresJSDialect({ postgres: sql }) });
  return {
    sql,
    db,
    lanes: new CanvasLanes(sql, { pipeline: !opts.transactionPooler, lockCallers: LOCK_CALLERS, logger: opts.logger }),
    async close() {
      // Kysely's driver starts lazily: end the postgres.js pool ourselves (end() is idempotent)
      await db.destroy();
      await sql.end({ timeout: 5 });
    },
  };
}

/**
 * How long (seconds) opening a connection may take before the request waiting for it fails with
 * CONNECT_TIMEOUT (answered 503 unavailable), however many sessions are opened for it meanwhile
 * (an address that accepts and closes at once: patches/postgres+3.4.9.patch). postgres.js waits 30 s by default: a database that
 * accepts TCP but never answers (a partition, a hung failover) then held every request that long,
 * past most proxies' and clients' own timeouts. A healthy server answers in milliseconds, over TLS
 * from another region in well under a second; the statement timeout is 5 s.
 */
export const CONNECT_TIMEOUT_SECONDS = 5;

/**
 * How long (seconds) a query may wait without a byte from the server before its connection is
 * destroyed and it fails with ANSWER_TIMEOUT (postgres.js `answer_timeout`, added by
 * patches/postgres+3.4.9.patch), which src/db/faults.ts counts as a lost connection: a request is
 * run again before COMMIT, else answered 503. A path that stops carrying packets without closing
 * (a partition, a stateful firewall or NAT that lost the flow, a hung proxy) held its queries
 * until TCP gave up, about 15 minutes: every request on that connection, and on a reserved one
 * (a canvas lane) every later mutation of the canvas. A server answers a statement within its
 * statement timeout (5 s for requests) and a row at a time after that; four times that is never a
 * healthy wait. Only the server's turn counts: a cursor's callback, COPY FROM STDIN until its end and
 * a COPY TO STDOUT reader that paused the socket are the client's. The worker's pool (src/worker/runtime.ts) has no such bound: its jobs (cleanup,
 * rebalancing) run without a statement timeout and may take longer on a large database.
 * A statement still running on the server when its connection is destroyed ends there, its
 * transaction rolled back and its locks released, within seconds of the close reaching the server
 * (directly or through PgBouncer, which closes its server connection): the database sets
 * client_connection_check_interval (sql/core/session_defaults.sql). Across a stalled path that is
 * once the server gives the connection up (TCP keepalive, or tcp_user_timeout while what it wrote
 * waits to be acknowledged: 2 minutes, the same file), or the path heals. No CancelRequest is
 * sent: its connection would take the same stalled path. This is also this side's bound for a
 * query written into a stalled path, which keepalive does not probe (the query waits to be
 * acknowledged) and TCP_USER_TIMEOUT would end: Node cannot set that socket option.
 */
export const ANSWER_TIMEOUT_SECONDS = 20;

/**
 * TCP keepalive of every connection our processes hold to the database (postgres.js `keep_alive`
 * here and in the worker's pool; `pg`'s `keepAlive` in Graphile Worker's pool and the realtime
 * replication stream): the first probe after this many seconds without a packet, then Node's own
 * 1 s apart, the connection given up after 10 unanswered (Node sets TCP_KEEPINTVL 1 and
 * TCP_KEEPCNT 10 with it). So a path to the database that went dead without closing (a partition,
 * a firewall or NAT that lost the flow, a server host gone) is noticed within about 70 s on a
 * connection that waits unused in its pool, and it reconnects, instead of after the OS default
 * (over 2 h on Linux) or, at best, the first query's answer_timeout on it. A statement in flight
 * is covered by answer_timeout, and a LISTEN connection waits for the server without a query. No
 * probe is sent while data we wrote waits to be acknowledged: a query the worker's pools (no
 * answer_timeout: their statements may run long) wrote into a stalled path waits for TCP's
 * retransmission limit (tcp_retries2, about 15 minutes), its job with it, though the server has
 * ended its session within 2 minutes (its keepalive or tcp_user_timeout); the replication stream,
 * which writes a status update every second, is restarted by the bus's stall probe
 * (src/realtime/bus.ts). The probes also keep a NAT or firewall on the path from forgetting an
 * idle pooled connection (they do after 4-15 minutes). The server probes its clients the same way
 * (tcp_keepalives_*, with tcp_user_timeout: sql/core/session_defaults.sql).
 */
export const KEEPALIVE_IDLE_SECONDS = 60;

/** `pg`'s options for the same keepalive (KEEPALIVE_IDLE_SECONDS). */
export const PG_KEEPALIVE = { keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_IDLE_SECONDS * 1000 } as const;

/**
 * Delay (seconds) before a pooled connection that was closed reconnects. postgres.js's default
 * grows with a retry count shared by the whole pool (3^n / 100 s, up to 20 s), so one failover
 * that drops all N connections at once stalls the pool for seconds to come. A connection only
 * reconnects when a query waits for it, so a short jittered delay does not hammer a down server.
 */
export const reconnectBackoffSeconds = () => 0.1 + Math.random() * 0.2;
