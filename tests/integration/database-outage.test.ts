import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, CONNECT_TIMEOUT_SECONDS } from '../../src/db/index.ts';
import { withRequest } from '../../src/db/request.ts';
import { apiErrorFromDatabase } from '../../src/http/errors.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { apiKey } from '../helpers/tokens.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1 } from '../helpers/h1.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';

// Postgres unreachable for a while (a restart, a failover, a network partition), seen by one
// `npm start` process whose every database connection goes through a proxy the test cuts:
// the process keeps answering /health, /ready says 503 during the outage and 200 after by
// itself, mutations get 503 + Retry-After (never a 500), and an H1 subscriber that stayed
// connected receives what was committed during the outage once the database is back.
// Also what a process sees when no session can be opened at all: a database that accepts TCP and
// never answers (a partition, a hung failover), or a server that refuses the session (a database
// not accepting connections, one that does not exist): 503 unavailable, never 500, and within the
// connect timeout (postgres.js's default of 30 s, retried twice, held a request 90 s).

const config = loadConfig();
const db = testDatabase(2);
let proxy: TcpProxy;
let server: PotentiaProcess;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432));
  const viaProxy = databaseUrlThrough(proxy, direct);
  server = await startPotentiaProcess({ DATABASE_URL: viaProxy, WORKER_MODE: 'inprocess', NODE_ENV: 'development' });
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
    // (ready once its realtime gateway's replication stream is up too: its new slot waits for the
    // transactions running in the whole cluster)
    await until(async () => (await get('/ready')) === 200, 60_000, '/ready before the cut', 100);

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

  it('answers 503 within the connect timeout when the database accepts connections and never answers', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! }, { expiresInSeconds: 600 });
    await until(async () => (await get('/ready')) === 200, 20_000, '/ready before the cut');
    proxy.cut({ existing: 'destroy', incoming: 'blackhole' });
    try {
      // each request needs a new connection, which never answers: the connect timeout, once
      const bound = AbortSignal.timeout((3 * CONNECT_TIMEOUT_SECONDS) * 1000);
      const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
      const [mutation, read, signIn] = await Promise.all([
        fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', headers: auth, signal: bound,
          body: JSON.stringify({ action: 'create', client_op_id: 'blackhole', patch: { type: 'text' } }) }),
        fetch(`${server.url}/api/v1/canvas/${canvasId}`, { headers: auth, signal: bound }),
        fetch(`${server.url}/auth/v1/token?grant_type=password`, { method: 'POST', signal: bound,
          headers: { apikey: await apiKey(config.auth.jwtSecret, 'anon'), 'content-type': 'application/json' },
          body: JSON.stringify({ email: 'nobody@example.com', password: 'not-checked' }) }),
      ]);
      for (const res of [mutation, read]) {
        expect(res.status).toBe(503);
        expect(res.headers.get('retry-after')).toBe('1');
        expect((await res.json() as { error: { code: string } }).error.code).toBe('unavailable');
      }
      expect(signIn.status).toBe(503); // GoTrue's shape: supabase-js retries it
      const signInBody = await signIn.json() as { error_code: string; msg: string };
      expect(signInBody).toMatchObject({ error_code: 'unexpected_failure' });
      // the cause, without the API's note on resending mutations, which an auth caller has none of
      expect(signInBody.msg).toMatch(/^the database /);
      expect(signInBody.msg).not.toMatch(/client_op_id/);
    } finally {
      proxy.restore();
    }
    await until(async () => (await get('/ready')) === 200, 30_000, '/ready to recover');
    expect(server.exited()).toBeNull();
  }, 90_000);
});

describe('a server that refuses the session', () => {
  const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  const closed = `potentia_closed_${process.pid}`;
  const urlOf = (name: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${name}`; return u.toString(); };
  afterAll(async () => {
    await admin.unsafe(`drop database if exists ${closed} with (force)`);
    await admin.end();
  });

  it.each([
    ['a database not accepting connections (55000 from CheckMyDatabase)', closed],
    ['a database that does not exist (3D000)', `potentia_missing_${process.pid}`],
  ])('%s: the request fails at once as unavailable (503), not internal', async (_, name) => {
    await admin.unsafe(`drop database if exists ${closed} with (force)`);
    await admin.unsafe(`create database ${closed}`);
    await admin.unsafe(`alter database ${closed} allow_connections false`);
    const pool = createDatabase(urlOf(name), { max: 1, applicationName: 'potentia-test-refused' });
    let attempts = 0;
    try {
      const err = await withRequest(pool.sql, { claims: { role: 'anon' } }, async (tx) => { attempts++; return tx`select 1`; })
        .then(() => null, (e: unknown) => e);
      const answer = apiErrorFromDatabase(err);
      expect(answer.code).toBe('unavailable');
      expect(answer.status).toBe(503);
      expect(answer.details.retry_after).toBe(1);
    } finally {
      await pool.close();
    }
  });
});
