// A worker's job drawing its pool's connections the same fault already ended: every connection of
// the worker's postgres.js pool (what its tasks query through) goes through a TCP proxy that forgets
// them at once (a NAT's idle timeout, a restart or every backend terminated whose ends the pool has
// not read yet: the next bytes get a reset). The task's statement failed on the first dead
// connection it drew: the job failed (Graphile counted an attempt and put it off by its backoff)
// while the database answered. A statement lost before the server said anything is run again on
// another connection, up to the pool's size, within the attempt; a loss the server announced (a
// backend terminated mid-query: 57P01) is still the attempt's failure (worker-job-connection-loss).
import type { JobHelpers } from 'graphile-worker';
import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { createTaskList } from '../../src/worker/tasks.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

const POOL = 4;
const db = testDatabase(2);
let proxy: TcpProxy;
let sql: postgres.Sql;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432), { upstreamHost: direct.hostname });
  sql = postgres(databaseUrlThrough(proxy, direct), { max: POOL, onnotice: () => {} });
}, 60_000);
afterAll(async () => {
  await sql?.end({ timeout: 1 });
  await proxy?.close();
  await db.close();
});

it(`a job whose task draws the ${POOL} dead connections of the worker's pool runs on a new one: no failed attempt`, async () => {
  const tasks = createTaskList({ sql, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 'test', failureThreshold: 3, cooldownMs: 1000 }) });
  const { canvasId, users } = await createCanvas(db.sql);
  await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'embed me' } } });
  const [block] = await db.sql`select block_id from app.blocks where canvas_id = ${canvasId}`;
  const logged: string[] = [];
  const helpers = { logger: { info: (m: string) => logged.push(m), debug: () => {}, warn: () => {}, error: () => {} }, job: { id: '0', locked_by: 'test' } } as unknown as JobHelpers;
  for (let round = 0; round < 3; round++) {
    await Promise.all(Array.from({ length: POOL }, () => sql`select pg_sleep(0.05)`));
    expect(proxy.openConnections()).toBe(POOL);
    proxy.forget();
    await tasks.rebalance_canvas({ canvas_id: canvasId }, helpers);
    expect(logged.at(-1)).toMatch(/^rebalanced canvas/);
    await Promise.all(Array.from({ length: POOL }, () => sql`select pg_sleep(0.05)`));
    proxy.forget();
    await tasks.embed_block({ block_id: block!.block_id }, helpers);
  }
  const [row] = await db.sql`select embedded_hash = content_hash as embedded from app.blocks where block_id = ${block!.block_id}`;
  expect(row!.embedded).toBe(true);
});
