// A query the driver gives up on (answer_timeout, src/db/index.ts: ANSWER_TIMEOUT after that long
// without a byte from the server) had its connection destroyed, but its backend went on running
// the statement, holding its row locks and a connection slot, until the statement ended:
// PostgreSQL notices a vanished client only when it next writes to it. Here a minute, during which
// a canvas row stayed locked. Now the database sets client_connection_check_interval
// (sql/core/session_defaults.sql): the backend polls its socket while it runs a statement, sees
// the close and ends, its transaction rolled back, within seconds; the pool serves on. Across a
// stalled path the close reaches the server only when the path heals; then it ends within
// seconds too. tests/integration/pgbouncer.test.ts shows the same through the pooler.
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { abandonLockingQuery, expectBackendEnded } from '../helpers/abandoned-query.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep } from '../helpers/wait.ts';

/** The check interval (2 s) and a margin for a loaded machine: a backend that ran on would take a minute. */
const ENDS_WITHIN_MS = 6_000;
const db = testDatabase(2);
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const pools: Database[] = [];
const pids: number[] = [];
const pool = (url: string) => {
  const p = createDatabase(url, { max: 1, applicationName: 'potentia-test-abandoned', answerTimeoutSeconds: 2 });
  pools.push(p);
  return p;
};

afterAll(async () => {
  // without the check the backends still sleep, holding their canvas rows
  if (pids.length) await admin`select pg_terminate_backend(pid) from pg_stat_activity where pid in ${admin(pids)}`;
  await Promise.all(pools.map((p) => p.close()));
  await admin.end();
  await db.close();
});

describe('a query abandoned by the answer timeout', () => {
  it('does not keep running on the server: its backend ends within seconds, its row lock goes, the pool serves on', { timeout: 60_000 }, async () => {
    const { canvasId } = await createCanvas(db.sql);
    const p = pool(testDatabaseUrl());
    const pid = await abandonLockingQuery(p, admin, canvasId);
    pids.push(pid);
    await expectBackendEnded(p, admin, pid, canvasId, ENDS_WITHIN_MS);
  });

  it('across a stalled path: runs on while the path is down, ends within seconds once it heals', { timeout: 60_000 }, async () => {
    const { canvasId } = await createCanvas(db.sql);
    const url = new URL(testDatabaseUrl());
    const proxy = await startTcpProxy(Number(url.port || 5432));
    try {
      const p = pool(databaseUrlThrough(proxy, url));
      const pid = await abandonLockingQuery(p, admin, canvasId, () => proxy.cut({ existing: 'stall', incoming: 'refuse' }));
      pids.push(pid);
      // the close cannot cross the stalled path: the server cannot know the client is gone
      await sleep(3_000);
      expect(await admin`select state from pg_stat_activity where pid = ${pid}`).toEqual([{ state: 'active' }]);
      proxy.restore(); // the close arrives
      await expectBackendEnded(p, admin, pid, canvasId, ENDS_WITHIN_MS);
    } finally {
      proxy.restore();
      await proxy.close();
    }
  });
});
