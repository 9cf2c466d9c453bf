// The database's address accepts connections and closes them at once without a word: a TCP proxy
// or load balancer in front of a server that is down (HAProxy, a cloud SQL proxy, a sidecar). Each
// session postgres.js opened for a waiting query or reservation closed before it started, and it
// opened another after its backoff, for ever, each with a fresh connect timeout: the request
// hung for as long as the server was away. Now a caller waits for a session at most the connect
// timeout (CONNECT_TIMEOUT_SECONDS), then fails as a connect that timed out does: HTTP answers
// 503 unavailable with Retry-After, and serves again once the server is back. The pool alone, then
// one `npm start` process whose database connections go through a proxy the test cuts.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { CONNECT_TIMEOUT_SECONDS, reconnectBackoffSeconds } from '../../src/db/index.ts';
import { couldNotConnect } from '../../src/db/faults.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(2);
let proxy: TcpProxy;
let server: PotentiaProcess;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432));
  const viaProxy = databaseUrlThrough(proxy, direct);
  server = await startPotentiaProcess({ DATABASE_URL: viaProxy, WORKER_MODE: 'off', NODE_ENV: 'development',
    PORT: '0' });
}, 90_000);

afterAll(async () => {
  await server?.stop();
  await proxy?.close();
  await db.close();
}, 30_000);

type Outcome = string;
/** How `p` settles, or 'hangs' once it has waited well past the connect timeout (it waited for ever). */
const settle = (p: Promise<unknown>): Promise<Outcome> => Promise.race([
  p.then(() => 'ok', (e: { code?: string }) => String(e.code)),
  new Promise<Outcome>((resolve) => setTimeout(() => resolve('hangs'), (CONNECT_TIMEOUT_SECONDS + 10) * 1000)),
]);

describe('a database address that accepts connections and closes them at once', () => {
  it('fails a waiting query and reservation as a connect timeout, and the pool serves once the server is back', async () => {
    const url = databaseUrlThrough(proxy, testDatabaseUrl());
    const sql = postgres(url, { max: 2, onnotice: () => {}, backoff: reconnectBackoffSeconds, connect_timeout: CONNECT_TIMEOUT_SECONDS });
    try {
      proxy.cut({ incoming: 'close' });
      const before = proxy.counters.closed;
      const [query, reservation] = await Promise.all([settle(sql`select 1`), settle(sql.reserve().then((r) => r.release()))]);
      expect({ query, reservation }).toEqual({ query: 'CONNECT_TIMEOUT', reservation: 'CONNECT_TIMEOUT' });
      expect(couldNotConnect({ code: query })).toBe(true);
      expect(proxy.counters.closed - before, 'sessions were opened again meanwhile').toBeGreaterThan(2);
      proxy.restore();
      expect(await settle(sql`select 1`)).toBe('ok');
      expect(await settle(sql.reserve().then((r) => r.release()))).toBe('ok');
    } finally {
      proxy.restore();
      await sql.end({ timeout: 1 });
    }
  }, 60_000);

  it('answers HTTP reads and mutations 503 unavailable with Retry-After, and serves again after', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! }, { expiresInSeconds: 600 });
    const request = async (kind: 'read' | 'mutate') => {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}${kind === 'mutate' ? '/mutate' : ''}`, {
        ...(kind === 'mutate' ? { method: 'POST', body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }) } : {}),
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        signal: AbortSignal.timeout((CONNECT_TIMEOUT_SECONDS + 10) * 1000),
      }).catch((err: Error) => ({ status: err.name, headers: new Headers(), json: async () => null }));
      const body = await res.json().catch(() => null) as { error?: { code: string } } | null;
      return [res.status, res.status === 200 ? 'ok' : body?.error?.code, res.headers.get('retry-after')];
    };
    expect(await request('read')).toEqual([200, 'ok', null]);
    proxy.cut({ existing: 'destroy', incoming: 'close' });
    try {
      // the process's open connections were cut too: every request needs a new session
      expect(await request('read'), 'a read while the server is away').toEqual([503, 'unavailable', '1']);
      expect(await request('mutate'), 'a mutation while the server is away').toEqual([503, 'unavailable', '1']);
    } finally {
      proxy.restore();
    }
    for (const kind of ['read', 'mutate'] as const) await until(async () => (await request(kind))[0] === 200, 30_000, `${kind} to be served again`);
    expect(server.exited()).toBeNull();
    expect(server.output()).not.toMatch(/unhandled|uncaught|BUG/i);
  }, 90_000);
});
