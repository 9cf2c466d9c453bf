import { Kysely } from 'kysely';
import { PostgresJSDialect } from 'kysely-postgres-js';
import postgres, { type Sql } from 'postgres';
import { CanvasLanes } from './canvas-lanes.ts';
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
 */
export type DatabaseOptions = { max?: number; applicationName?: string; transactionPooler?: boolean };

export function createDatabase(url: string, opts: DatabaseOptions = {}): Database {
  const sql = postgres(url, {
    max: opts.max ?? 10,
    prepare: !opts.transactionPooler,
    onnotice: () => {},
    connection: { application_name: opts.applicationName ?? 'potentia' },
    backoff: reconnectBackoffSeconds,
    connect_timeout: CONNECT_TIMEOUT_SECONDS,
  });
  const db = new Kysely<DB>({ dialect: new PostgresJSDialect({ postgres: sql }) });
  return {
    sql,
    db,
    lanes: new CanvasLanes(sql, { pipeline: !opts.transactionPooler }),
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
 * Delay (seconds) before a pooled connection that was closed reconnects. postgres.js's default
 * grows with a retry count shared by the whole pool (3^n / 100 s, up to 20 s), so one failover
 * that drops all N connections at once stalls the pool for seconds to come. A connection only
 * reconnects when a query waits for it, so a short jittered delay does not hammer a down server.
 */
export const reconnectBackoffSeconds = () => 0.1 + Math.random() * 0.2;
