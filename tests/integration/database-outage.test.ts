import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1 } from '../helpers/h1.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';

// Postgres unreachable for a while (a restart, a failover, a network partition), seen by one
// `npm start` process whose every database connection goes through a proxy the test cuts:
// the process keeps answering /health, /ready says 503 during the outage and 200 after by
// itself, mutations get 503 + Retry-After (never a 500), and an H1 subscriber that stayed
// connected receives what was committed during the outage once the database is back.

const config = loadConfig();
const db = testDatabase(2);
let proxy: TcpProxy;
let server: PotentiaProcess;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432));
  const viaProxy = new URL(direct);
  viaProxy.port = String(proxy.port);
  server = await startPotentiaProcess({ DATABASE_URL: viaProxy.toString(), WORKER_MODE: 'inprocess', NODE_ENV: 'development' });
}, 90_000);

afterAll(async () => {
  await server?.stop();
  await proxy?.close();
  await db.close();
}, 30_000);

async function get(path: string): Promise<number> {
  try {
    const res = await fetch(server.url + path, { signal: AbortSignal.timeout(4000) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}
describe('the database goes away and comes back', () => {
  it('keeps the process serving, says 503, and recovers by itself', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! }, { expiresInSeconds: 600 });
    const h1 = await openH1(server.url, canvasId, token, '&since_seq=0');
    await h1.next((m) => m.type === 'resumed');
    expect(await get('/ready')).toBe(200);

    proxy.cut(); // every open connection reset, new ones refused: Postgres is gone
    await until(async () => (await get('/ready')) === 503, 10_000, '/ready to say 503');
    const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ action: 'create', client_op_id: 'during-outage', patch: { type: 'text', content: { text: 'x' } } }),
    });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect((await res.json() as { error: { code: string } }).error.code).toBe('unavailable');
    // meanwhile other writers (another server, plain SQL) commit: nothing of it may be lost
    const committed: number[] = [];
    for (let i = 0; i < 5; i++) committed.push((await mutate(db.sql, users.editor!, canvasId, { action: 'create', patch: { type: 'text', content: { text: `o${i}` } } })).server_seq!);
    for (let i = 0; i < 5; i++) expect(await get('/health')).toBe(200);
    expect(h1.ws.readyState).toBe(WebSocket.OPEN);

    proxy.restore();
    await until(async () => (await get('/ready')) === 200, 20_000, '/ready to recover');
    await until(() => committed.every((s) => deltaSeqs(h1).includes(s)), 20_000, 'the deltas committed during the outage');
    const seqs = deltaSeqs(h1);
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect(new Set(seqs).size).toBe(seqs.length);
    expect(server.exited()).toBeNull();
    expect(server.output()).not.toMatch(/unhandled|uncaught/i);
    h1.ws.terminate();
  }, 90_000);
});
