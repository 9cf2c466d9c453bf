// The path between an API process and PostgreSQL stops carrying packets without closing (a
// partition, a stateful firewall or NAT that lost the flows, a hung proxy): the connections the
// pool holds stay open, and a query sent on one waited for an answer until TCP gave up (about
// 15 minutes in production; for ever here, where the proxy's kernel acknowledges every byte).
// Before the fix a read sent during a 40 s stall was answered 200 only when the path healed,
// 40 s later; the process's /ready said 503 meanwhile (its own probe timed out) but the requests
// it held just hung. Now postgres.js's answer_timeout (patches/postgres+3.4.9.patch,
// ANSWER_TIMEOUT_SECONDS in src/db/index.ts) destroys a connection whose query got no byte for
// that long: the request is answered 503 unavailable with Retry-After, the mutation resent with
// the same client_op_id after the path healed is applied once, and the process serves on.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { ANSWER_TIMEOUT_SECONDS } from '../../src/db/index.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(3);
/** Every request sent during the stall is answered within this (and the stall lasts longer). */
const ANSWER_BOUND_MS = ANSWER_TIMEOUT_SECONDS * 1000 + 8000;
let proxy: TcpProxy;
let api: PotentiaProcess;

beforeAll(async () => {
  const url = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(url.port || 5432));
  api = await startPotentiaProcess({ DATABASE_URL: databaseUrlThrough(proxy, url), POTENTIA_ROLE: 'api', WORKER_MODE: 'off', NODE_ENV: 'development',
    PORT: '0' });
}, 90_000);

afterAll(async () => {
  proxy?.restore();
  await api?.stop();
  await proxy?.close();
  await db.close();
}, 30_000);

describe('the path to the database stalls under a running API process', () => {
  it('answers the requests waiting on stalled connections 503 within the answer timeout, and serves again after', { timeout: 120_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const read = () => fetch(`${api.url}/api/v1/canvas/${canvasId}`, { headers, signal: AbortSignal.timeout(90_000) });
    const create = (opId: string) => fetch(`${api.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers, signal: AbortSignal.timeout(90_000),
      body: JSON.stringify({ action: 'create', client_op_id: opId, patch: { type: 'text', content: { text: opId } } }),
    });
    // connections open in the pool (and the canvas's lane), each used once
    const warm = await Promise.all([read(), read(), read(), create('stall-warm')]);
    expect(warm.map((r) => r.status)).toEqual([200, 200, 200, 200]);

    // the path stalls: open connections carry nothing either way, a new one is refused
    proxy.cut({ existing: 'stall', incoming: 'refuse' });
    const started = Date.now();
    const answered = await Promise.all([read(), read(), create('stall-1'), create('stall-2')].map(async (request) => {
      const res = await request;
      const body = await res.json() as { error?: { code: string } };
      return { status: res.status, code: body.error?.code ?? 'ok', retryAfter: res.headers.get('retry-after'), ms: Date.now() - started };
    }));
    const tookMs = Math.max(...answered.map((a) => a.ms));
    proxy.restore();
    for (const a of answered) expect({ status: a.status, code: a.code, retryAfter: a.retryAfter }).toEqual({ status: 503, code: 'unavailable', retryAfter: '1' });
    expect(tookMs).toBeLessThan(ANSWER_BOUND_MS);

    // healed: served again, and the mutations resent with their client_op_ids are applied once
    await until(async () => (await read()).status === 200, 30_000, 'a read answered 200 after the stall');
    for (const opId of ['stall-1', 'stall-2']) {
      await until(async () => (await create(opId)).status === 200, 30_000, `${opId} acknowledged when resent`);
    }
    const rows = await db.sql`select client_op_id, count(*)::int as n from app.block_operations
                              where canvas_id = ${canvasId} and status = 'success' group by 1 order by 1`;
    expect(rows.map((r) => [r.client_op_id, r.n])).toEqual([['stall-1', 1], ['stall-2', 1], ['stall-warm', 1]]);
    expect(api.exited(), api.output()).toBeNull();
    expect(api.output()).not.toMatch(/unhandled|uncaught/i);
  });
});
