// A request drawing pooled connections the same fault already ended: every connection of a pool of
// four goes through a TCP proxy that forgets them at once (their server ends closed, each client
// hearing of it only at its next write: a reset, as after a restart, a pg_terminate_backend of
// every backend, or a NAT's idle timeout, whose ends the pool has not read yet). A request's
// transaction is run again on another connection when its own was lost; the dead connections it
// drew were counted as tries, so with three or more of them in the pool the request failed (503)
// while the database answered: a gateway's snapshot page read, terminated with the pool's idle
// connections, gave its socket up. A try whose BEGIN was not answered ran nothing and is not
// counted, up to the pool's size; a try the database ended after answering it still is.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { CONNECTION_RETRIES } from '../../src/db/faults.ts';
import { withRequest } from '../../src/db/request.ts';
import { readyQuery } from '../../src/http/readiness.ts';
import { sendMutation } from '../../src/http/rpc.ts';
import { mayAccessTopic } from '../../src/realtime/authorize.ts';
import { testDatabase } from '../helpers/db.ts';
import { claimsFor, createCanvas } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

const POOL = 4;
const db = testDatabase(2);
let proxy: TcpProxy;
let pool: Database;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432), { upstreamHost: direct.hostname });
  pool = createDatabase(databaseUrlThrough(proxy, direct), { max: POOL, applicationName: 'stale-pool-test' });
}, 60_000);
afterAll(async () => {
  await pool?.close();
  await proxy?.close();
  await db.close();
});

/** Opens every connection of the pool (POOL statements at once), then the proxy forgets them all. */
async function poolOfDeadConnections(): Promise<void> {
  await Promise.all(Array.from({ length: POOL }, () => pool.sql`select pg_sleep(0.05)`));
  expect(proxy.openConnections()).toBe(POOL);
  proxy.forget();
}

it(`a request whose pool holds ${POOL} connections already ended runs on a new one (the dead ones it drew are not counted as tries)`, async () => {
  expect(POOL).toBeGreaterThan(CONNECTION_RETRIES + 1);
  for (let round = 0; round < 3; round++) {
    await poolOfDeadConnections();
    const forwarded = proxy.counters.forwarded;
    const [row] = await withRequest(pool.sql, { claims: { role: 'service_role' } }, (tx) => tx`select current_user as role`);
    expect(row!.role).toBe('service_role');
    expect(proxy.counters.forwarded).toBeGreaterThan(forwarded); // on new connections
  }
});

it('a realtime channel authorization drawing the dead connections is answered by the database, not refused', async () => {
  const { canvasId, users } = await createCanvas(db.sql);
  const claims = { sub: users.owner, role: 'authenticated', exp: Math.floor(Date.now() / 1000) + 600 } as const;
  await poolOfDeadConnections();
  expect(await mayAccessTopic(pool.sql, claims, `canvas:${canvasId}`, 'read', 'broadcast')).toBe(true);
});

it('a readiness query drawing the dead connections is answered (/ready stays 200)', async () => {
  await poolOfDeadConnections();
  const [row] = await readyQuery(pool.sql, (sql) => sql`select 1 as one`);
  expect(row!.one).toBe(1);
});

it('a database that cannot be reached still fails the request (past the dead connections, the failed connect is not tried again)', async () => {
  await poolOfDeadConnections();
  proxy.cut({ incoming: 'close' });
  try {
    const failed = await withRequest(pool.sql, { claims: { role: 'service_role' } }, (tx) => tx`select 1`).then(() => null, (err) => err);
    expect(failed?.code).toMatch(/^(CONNECT_TIMEOUT|CONNECTION_CLOSED|ECONNRESET|CONNECTION_ENDED|EPIPE)$/);
  } finally {
    proxy.restore();
  }
});

it('a canvas lane drawing the dead connections sends its group again on a live one (BEGIN unanswered: nothing of it ran), not a 503', async () => {
  const { canvasId, users } = await createCanvas(db.sql);
  for (let round = 0; round < 3; round++) {
    await poolOfDeadConnections();
    const clientOpId = randomUUID();
    const results = await Promise.all([0, 1, 2].map((i) => sendMutation(pool.lanes, { claims: claimsFor(users.owner!) }, 'upsert_block_atomic',
      [canvasId, null, 'create', `${clientOpId}-${i}`, null, { type: 'text', content: { text: String(i) } }], null)));
    expect(results.map((r) => r?.status)).toEqual(['success', 'success', 'success']);
  }
  // each acknowledged once: three blocks a round, none doubled
  const [row] = await db.sql<{ n: number }[]>`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
  expect(row!.n).toBe(9);
});
