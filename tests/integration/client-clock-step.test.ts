import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { CanvasSync, type CanvasSyncOptions } from '../../packages/client/src/canvas-sync.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep } from '../helpers/wait.ts';
import { freePort } from '../helpers/free-port.ts';

// The H1 client (packages/client/src/canvas-sync.ts) when this host's wall clock steps (NTP
// correcting it, `date -s`, a laptop resumed): its heartbeat, pacing and holds are intervals of
// its own, so a step must move none of them (the server's src/clock.ts rule, which the client
// follows with its own monotonic clock). The server runs as a separate process, so only the
// client's wall clock steps (vitest's fake Date, advancing with real time; timers stay real).

const config = loadConfig();
const db = testDatabase(2);
let server: PotentiaProcess;
let proxy: TcpProxy;
const HOUR = 3_600_000;


beforeAll(async () => {
  const port = await freePort();
  server = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', LOG_LEVEL: 'warn', PORT: String(port) });
  proxy = await startTcpProxy(port);
}, 90_000);
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
  await db.close();
});
afterEach(() => {
  vi.useRealTimers();
  proxy.restore();
});

/**
 * Makes this process's wall clock (Date) one a test can step: it goes on advancing with real time;
 * timers stay real. Installed before the client starts, so what it reads of Date is this one.
 */
function steppableWallClock(): void {
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true, now: Date.now() });
}

/** Steps the wall clock by `ms` (steppableWallClock first). */
function stepWallClock(ms: number): void {
  vi.setSystemTime(Date.now() + ms);
}

/** Polls with the real clock (a deadline on the stepped Date would step too). */
async function until(check: () => boolean, ms: number, what: string): Promise<void> {
  const start = performance.now();
  while (!check()) {
    if (performance.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(20);
  }
}

function countingWebSocket() {
  const stats = { created: 0, received: {} as Record<string, number> };
  class CountingWebSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      stats.created++;
      this.on('message', (data) => {
        const m = JSON.parse(String(data)) as { type: string; code?: string };
        const key = m.type === 'error' ? `error:${m.code}` : m.type;
        stats.received[key] = (stats.received[key] ?? 0) + 1;
      });
    }
  }
  return { stats, WebSocket: CountingWebSocket };
}

async function editorClient(extra: Partial<CanvasSyncOptions> = {}) {
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
  const ws = countingWebSocket();
  const errors: unknown[] = [];
  const sync = new CanvasSync({
    url: proxy.url, canvasId, token: () => token, WebSocket: ws.WebSocket, reconnectDelayMs: () => 50,
    onError: (err) => void errors.push(err), ...extra,
  });
  return { sync, stats: ws.stats, errors };
}

describe('CanvasSync when the wall clock steps', () => {
  it('a step forward of an hour drops no live socket: the heartbeat pings and hears pongs on the same one', async () => {
    const { sync, stats } = await editorClient({ heartbeatMs: 400 });
    try {
      steppableWallClock();
      await sync.join();
      expect(stats.created).toBe(1);
      const pongs = stats.received['pong'] ?? 0;
      stepWallClock(HOUR);
      // before: the next heartbeat tick saw an hour of silence and dropped the socket (every
      // client of the host reconnecting at once)
      await until(() => (stats.received['pong'] ?? 0) >= pongs + 2 || stats.created > 1, 10_000, 'two pongs after the step, or a new socket');
      expect(stats.created).toBe(1);
    } finally {
      sync.close();
    }
  });

  it('after a step back of an hour, a dead path is still noticed by the heartbeat and the client resumes', async () => {
    const { sync, stats } = await editorClient({ heartbeatMs: 400, resumeTimeoutMs: 2000 });
    try {
      steppableWallClock();
      await sync.join();
      stepWallClock(-HOUR);
      proxy.cut({ existing: 'stall', incoming: 'refuse' });
      // before: the last frame seemed an hour in the future, so no silence was ever long enough
      await until(() => stats.created > 1, 10_000, 'the stalled socket dropped and a new one tried');
      proxy.restore();
      await until(() => stats.received['resumed']! >= 2, 15_000, 'live again on a new socket');
    } finally {
      sync.close();
    }
  });

  it('after a step back of an hour, mutations go out at the socket\'s rate (the pacer does not wait the step out)', async () => {
    const { sync } = await editorClient();
    try {
      steppableWallClock();
      await sync.join();
      stepWallClock(-HOUR);
      // more than one burst of the socket's 10 a second: the ones past it wait for the pacer's refill
      const outcomes: string[] = [];
      for (let i = 0; i < 15; i++) {
        void sync.mutate({ action: 'create', patch: { type: 'text', content: { text: `after the step ${i}` } } }).then((o) => void outcomes.push(o.type));
      }
      // before: the pacer counted an hour of negative refill, and after its burst held every message for about an hour
      await until(() => outcomes.length === 15, 15_000, 'all 15 mutations answered');
      expect(outcomes).toEqual(Array(15).fill('ack'));
    } finally {
      sync.close();
    }
  });
});
