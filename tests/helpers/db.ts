import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { sleep, until } from './wait.ts';

/** A pool on the migrated test database (scripts/test migrates it fresh before vitest runs). */
export function testDatabase(max = 5): Database {
  // fixtures run long statements with no statement timeout (an HNSW build of 2,000 vectors took
  // over the server's 20 s answer bound on a loaded CI machine): no bound here
  return createDatabase(testDatabaseUrl(), { max, applicationName: 'potentia-test', answerTimeoutSeconds: 0 });
}

/** A transaction on a connection of its own: see reservedTransaction. */
export type ReservedTransaction = {
  /** The reserved connection, in the transaction until end() or release(). */
  conn: postgres.ReservedSql;
  /** Its backend's pid (for pg_blocking_pids, pg_terminate_backend). */
  pid: number;
  /** Resolves once some backend waits for a lock this transaction holds; throws naming `what` after 10 s. */
  waitedFor(what: string): Promise<void>;
  /** Commits or rolls back the transaction; the connection stays reserved until release(). */
  end(how: 'commit' | 'rollback'): Promise<void>;
  /** Rolls the transaction back unless end() ended it, and returns the connection to the pool; only the first call does anything. */
  release(): Promise<void>;
};

/**
 * A connection reserved from `sql`'s pool, in an open transaction (begun, its pid read), for a
 * test that holds a lock or an uncommitted change while other calls run: `conn`, `pid`,
 * `waitedFor`, `end` and `release` (ReservedTransaction). It must be released, in a `finally`:
 * release() rolls back what end() did not end and gives the connection back. Never left open by a
 * test that fails before that: idle_in_transaction_session_timeout is 30 s in it (an open
 * transaction with an xid holds off every logical slot creation on the server, other databases'
 * too).
 */
export async function reservedTransaction(sql: postgres.Sql): Promise<ReservedTransaction> {
  const conn = await sql.reserve();
  let open = false;
  let released = false;
  const release = async () => {
    if (released) return;
    released = true;
    if (open) await conn`rollback`.catch(() => {});
    open = false;
    conn.release();
  };
  try {
    await conn`begin`;
    open = true;
    await conn`set local idle_in_transaction_session_timeout = '30s'`;
    const pid = (await conn<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
    return {
      conn, pid, release,
      waitedFor: (what) => until(async () => (await sql`select from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))`).length > 0,
        10_000, what),
      async end(how) {
        open = false;
        await conn.unsafe(how);
      },
    };
  } catch (err) {
    await release();
    throw err;
  }
}

/**
 * For a describe block that kills backends: `db` (a pool on the test database), `admin` (one
 * connection, for pg_terminate_backend and checks) and `pool(max)`, pools whose connections carry
 * an application_name of their own (`potentia-test-<name>-<pid>-<n>`, returned as `app`) so the
 * test finds them in pg_stat_activity; `running` and `killRunning` find them there. Opened on
 * first use, all closed after the block.
 */
export function backendKillFixture(name: string) {
  let db: Database | undefined;
  let admin: postgres.Sql | undefined;
  const opened: Database[] = [];
  const adminSql = () => (admin ??= postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} }));
  /** Polls every 10 ms, up to ~3 s, until `probe` returns more than 0; its last value. */
  const poll = async (probe: () => Promise<number>) => {
    let n = 0;
    for (let i = 0; i < 300 && n === 0; i++) {
      n = await probe();
      if (n === 0) await sleep(10);
    }
    return n;
  };
  afterAll(async () => {
    await Promise.all(opened.map((pool) => pool.close()));
    await admin?.end();
    await db?.close();
  });
  return {
    get db(): Database {
      return (db ??= testDatabase());
    },
    get admin(): postgres.Sql {
      return adminSql();
    },
    pool(max: number): Database & { app: string } {
      const app = `potentia-test-${name}-${process.pid}-${opened.length}`;
      const pool = createDatabase(testDatabaseUrl(), { max, applicationName: app, answerTimeoutSeconds: 0 });
      opened.push(pool);
      return { ...pool, app };
    },
    /** Waits until `count` backends of pool `app` run a statement containing `marker`; throws after ~3 s. */
    async running(app: string, marker: string, count = 1): Promise<void> {
      const n = await poll(async () => {
        const [{ n }] = await adminSql()`select count(*)::int as n from pg_stat_activity
          where application_name = ${app} and state = 'active' and query like ${`%${marker}%`}` as unknown as [{ n: number }];
        return n >= count ? n : 0;
      });
      if (n === 0) throw new Error(`fewer than ${count} of ${app} ran ${marker}`);
    },
    /** Terminates the backends of pool `app` running a statement containing `marker`, once one does (up to ~3 s); how many. */
    killRunning(app: string, marker: string): Promise<number> {
      return poll(async () => ((await adminSql()`select count(pg_terminate_backend(pid))::int as killed from pg_stat_activity
        where application_name = ${app} and state = 'active' and query like ${`%${marker}%`}`)[0]!.killed as number));
    },
  };
}

/**
 * For a describe block that makes COMMITs fail: a table (its name returned) with a unique check
 * deferred to COMMIT, insertable by `authenticated`, created before the block and dropped after.
 * `insert into public.<table> (k) values (1), (1)` succeeds as a statement and fails its COMMIT.
 */
export function deferredCheckTable(admin: () => postgres.Sql, name: string): string {
  const table = `${name}_${process.pid}`;
  beforeAll(async () => {
    await admin().unsafe(`create table public.${table} (k integer unique deferrable initially deferred);
      grant insert on public.${table} to authenticated`);
  });
  afterAll(async () => {
    await admin().unsafe(`drop table if exists public.${table}`);
  });
  return table;
}
