import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// A gateway process (`--role gateway`) whose database backends are terminated over and over
// (pg_terminate_backend of its replication stream's walsender and its pool's connections, this
// database's only) while realtime-js's REST broadcasts are sent to it: it answers each 202 or
// 503 and stays up. A walsender terminated as its startup completed sent ReadyForQuery and its
// FATAL in one read: the replication client had no 'error' listener yet (pg-logical-replication
// added it after connect()), and the unhandled 'error' event ended the process (exit 1; seen in
// 3 of 7 runs of this before the fix, src/realtime/replication.ts TemporarySlotService.client).

const config = loadConfig();
const db = testDatabase(2);
let gateway: PotentiaProcess;

beforeAll(async () => {
  gateway = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' });
}, 120_000);
afterAll(async () => {
  await gateway?.stop();
  await db.close();
});

it('a gateway whose walsender and pool connections are terminated over and over stays up, answering REST broadcasts 202 or 503', async () => {
  const anon = await apiKey(config.auth.jwtSecret, 'anon');
  let stop = false;
  let kills = 0;
  const killer = (async () => {
    while (!stop && !gateway.exited()) {
      const [row] = await db.sql<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
        where datname = current_database() and pid <> pg_backend_pid() and application_name like 'potentia%'
          and backend_type in ('client backend', 'walsender')`;
      kills += row!.n;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const statuses = new Set<number>();
  try {
    for (let i = 0; i < 300 && !gateway.exited(); i++) {
      const res = await fetch(`${gateway.url}/realtime/v1/api/broadcast`, {
        method: 'POST', headers: { 'content-type': 'application/json', apikey: anon },
        body: JSON.stringify({ messages: [{ topic: 'room', event: 'n', payload: { i } }] }),
      }).catch((err: Error) => ({ status: 0, err }));
      statuses.add(res.status);
      await new Promise((r) => setTimeout(r, 10));
    }
  } finally {
    stop = true;
    await killer;
  }
  expect(gateway.exited(), gateway.output().slice(-3000)).toBeNull();
  expect(kills).toBeGreaterThan(10);
  expect([...statuses].filter((s) => s !== 202 && s !== 503)).toEqual([]);
  // and its stream is back
  await until(async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
    where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n === 1,
  60_000, 'the gateway\'s stream back');
  expect((await fetch(`${gateway.url}/health`)).status).toBe(200);
}, 180_000);
