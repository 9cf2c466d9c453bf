// A WebSocket upgrade of the gateway's paths (/realtime/v1/websocket, /ws/canvas/{id}) reaching a
// process whose realtime gateway does not serve yet is a temporary failure, answered as one:
// 503 `unavailable` with Retry-After and a body naming what to check (the server log, /ready),
// which realtime-js and a balancer retry. Role `api`, which runs no gateway at all, keeps its 404
// (tests/integration/process-roles.test.ts). Real processes (tests/helpers/chaos.ts), real causes:
//
// 1. Role `all` whose gateway could not start (its database connections refused through a TCP
//    proxy) and is tried again after a backoff: 503, Retry-After at most the backoff's 30 s. A
//    realtime-js client meanwhile meets the 503s, retries by itself, and is subscribed once the
//    database answers. Seen failing before: 404 `no route GET /realtime/v1/websocket`, the same
//    answer as a process that never runs a gateway.
// 2. Roles `gateway` and `all` while their gateway starts (its first read of realtime.messages
//    waits for a lock this test holds): 503 `starting`, Retry-After 1, then 101 once started.
//    Seen failing before: both accepted the socket (101) before the gateway's bus had started.
//
// No timed wait: each state is polled for (until).
import { randomUUID } from 'node:crypto';
import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { freePort } from '../helpers/free-port.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(2);
const started: PotentiaProcess[] = [];
const clients: RealtimeClient[] = [];
let proxy: TcpProxy | undefined;

afterAll(async () => {
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await Promise.all(started.map((p) => p.stop()));
  await proxy?.close();
  await db.close();
}, 30_000);

type UpgradeAnswer = { status: number; retryAfter?: string; body?: any };

/** What a WebSocket upgrade of `url` is answered: 101 when accepted, else the HTTP answer; null while nothing listens. */
const upgrade = (url: string) => new Promise<UpgradeAnswer | null>((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.once('open', () => { ws.close(); resolve({ status: 101 }); });
  ws.once('unexpected-response', (_req, res) => {
    let text = '';
    res.setEncoding('utf8');
    res.on('data', (chunk: string) => { text += chunk; });
    res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'], body: text ? JSON.parse(text) : undefined }));
  });
  ws.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve(null) : reject(err)));
});

const wsUrl = (p: { url: string } | string) => (typeof p === 'string' ? p : p.url).replace(/^http/, 'ws');

/** A canvas (made now: creating one writes to realtime.messages), and the URLs of both sockets on it at `base`. */
async function socketUrls() {
  const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.viewer! }, { expiresInSeconds: 600, audience: config.auth.audience });
  const anon = await apiKey(config.auth.jwtSecret, 'anon');
  return {
    at: (base: string) => ({
      realtime: `${wsUrl(base)}/realtime/v1/websocket?vsn=1.0.0&apikey=${anon}`,
      h1: `${wsUrl(base)}/ws/canvas/${canvasId}?access_token=${token}`,
    }),
    anon,
  };
}

describe('a WebSocket upgrade while the realtime gateway does not serve is a temporary failure', () => {
  it('role all, its gateway start failed and tried again: 503 with Retry-After naming the log and /ready; realtime-js gets in once it starts', { timeout: 120_000 }, async () => {
    const direct = new URL(testDatabaseUrl());
    proxy = await startTcpProxy(Number(direct.port || 5432));
    proxy.cut({ incoming: 'refuse' });
    const viaProxy = databaseUrlThrough(proxy, direct);
    const p = await startPotentiaProcess({ DATABASE_URL: viaProxy, WORKER_MODE: 'off', POTENTIA_ROLE: 'all', NODE_ENV: 'development' });
    started.push(p);
    expect(p.output()).toMatch(/realtime gateway did not start; retrying/);
    const sockets = await socketUrls();
    const urls = sockets.at(p.url);
    for (const url of [urls.realtime, urls.h1]) {
      const answer = await upgrade(url);
      expect(answer).toEqual({ status: 503, retryAfter: expect.stringMatching(/^\d+$/), body: { error: {
        code: 'unavailable', retry_after: Number(answer!.retryAfter),
        message: expect.stringMatching(/^the realtime gateway of this process is not running: its start failed \(\d+ attempts?\) and is tried again in \d+ s; the server log has the error .*GET \/ready/),
      } } });
      // seconds until the next attempt: the backoff is at most 30 s
      expect(Number(answer!.retryAfter)).toBeGreaterThanOrEqual(1);
      expect(Number(answer!.retryAfter)).toBeLessThanOrEqual(30);
    }
    // a path no gateway serves is not "unavailable"
    expect(await upgrade(`${wsUrl(p)}/ws/nowhere`)).toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
    // the HTTP API is served meanwhile, and says so on /ready
    expect((await fetch(`${p.url}/ready`)).status).toBe(503);

    // realtime-js (the `ws` transport, as on Node) meets the 503s and keeps trying by itself
    const transportErrors: string[] = [];
    class Transport extends WebSocket {
      constructor(...args: ConstructorParameters<typeof WebSocket>) {
        super(...args);
        this.on('error', (err) => transportErrors.push(err.message));
      }
    }
    const client = new RealtimeClient(`${wsUrl(p)}/realtime/v1`, { params: { apikey: sockets.anon }, transport: Transport as any, vsn: '1.0.0',
      heartbeatIntervalMs: 5000, timeout: 5000 });
    clients.push(client);
    const statuses: string[] = [];
    client.channel(`room:${randomUUID()}`).subscribe((status) => statuses.push(status));
    await until(() => transportErrors.length >= 2, 60_000, 'realtime-js to meet two refusals', 50);
    expect(transportErrors.slice(0, 2)).toEqual(['Unexpected server response: 503', 'Unexpected server response: 503']);
    expect(statuses).not.toContain('SUBSCRIBED');
    proxy.restore();
    await until(() => statuses.includes('SUBSCRIBED'), 90_000, 'realtime-js subscribed once the gateway started', 100);
    expect(await upgrade(urls.h1)).toEqual({ status: 101 });
    await p.stop();
  });

  it('roles gateway and all while their gateway starts: 503 starting with Retry-After 1, then 101', { timeout: 120_000 }, async () => {
    // the gateway's start reads realtime.messages (the rows before it count as delivered): held
    // behind this lock, it starts only once the lock is released
    const sockets = await socketUrls();
    const lock = await reservedTransaction(db.sql);
    let processes: PotentiaProcess[] = [];
    try {
      await lock.conn`lock table realtime.messages in access exclusive mode`;
      const ports = [await freePort(), await freePort()];
      const starting = (['gateway', 'all'] as const).map((role, i) => startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), POTENTIA_ROLE: role, PORT: String(ports[i]),
        WORKER_MODE: 'off', NODE_ENV: 'development' }).then((p) => { started.push(p); return p; }));
      starting.forEach((s) => s.catch(() => {})); // awaited below
      for (const port of ports) {
        const urls = sockets.at(`http://127.0.0.1:${port}`);
        await until(async () => (await upgrade(urls.h1)) !== null, 60_000, `port ${port} listening`, 50);
        for (const url of [urls.h1, urls.realtime]) {
          expect(await upgrade(url)).toEqual({ status: 503, retryAfter: '1', body: { error: { code: 'unavailable', retry_after: 1,
            message: 'the realtime gateway of this process is starting: connect again in 1 s (if it lasts, GET /ready says why, and the server log)' } } });
        }
      }
      await lock.end('commit');
      processes = await Promise.all(starting);
      for (const p of processes) {
        const urls = sockets.at(p.url);
        expect(await upgrade(urls.h1)).toEqual({ status: 101 });
        expect(await upgrade(urls.realtime)).toEqual({ status: 101 });
      }
    } finally {
      await lock.release();
      await Promise.all(processes.map((p) => p.stop()));
    }
  });
});
