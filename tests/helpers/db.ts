import postgres from 'postgres';
import { afterAll, beforeAll } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { sleep } from './wait.ts';

/** A pool on the migrated test database (scripts/test migrates it fresh before vitest runs). */
export function testDatabase(max = 5): Database {
  // fixtures run long statements with no statement timeout (an HNSW build of 2,000 vectors took
  // over the server's 20 s answer bound on a loaded CI machine): no bound here
  return createDatabase(testDatabaseUrl(), { max, applicationName: 'potentia-test', answerTimeoutSeconds: 0 });
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
