import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { bigCanvas, blocksView, canvasState, type PagedBlock } from '../helpers/big-canvas.ts';
import { databaseClientPorts, startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { mutate } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

// A gateway process whose database connections are all terminated between two parts of an H1
// snapshot in parts (api.get_canvas_snapshot read a page at a time, each after the part before it
// was sent). The hold is made of the database's own locks, no timing: T1 holds app.feature_flags
// (ACCESS EXCLUSIVE) before the client connects, so the first page's read, which has read its
// blocks (and holds app.blocks) when it reads the flags, waits; T2 then asks app.blocks (ACCESS
// EXCLUSIVE) and waits for that read; T1 ends, the first page is read, T2 gets app.blocks, part 0
// is sent, and the next page's read, which can only start after that, waits behind T2. (T2 queued
// for app.blocks behind a read waiting for it, not yet holding it, was granted first: Postgres's
// queue is no order to rely on.) Then every backend of the gateway on this database is terminated
// (the page read waiting, the pool's idle connections, the replication stream), and T2 ends.
// Whatever the gateway does then (read the page again on a new connection, or answer an error
// and close), the client keeps no half snapshot, the socket it stays on received every part once,
// and it ends equal to the database; the gateway process is still up.

const config = loadConfig();
const db = testDatabase(6);
let gateway: PotentiaProcess;

beforeAll(async () => {
  gateway = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', POTENTIA_ROLE: 'gateway', DB_POOL_MAX: '3' });
}, 120_000);
afterAll(async () => {
  await gateway?.stop();
  await db.close();
});

/** Backends (pids) of this database that `blocker` holds up. */
async function blockedBy(blocker: number): Promise<number[]> {
  const rows = await db.sql<{ pid: number }[]>`select pid from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and ${blocker}::int = any(pg_blocking_pids(pid))`;
  return rows.map((r) => r.pid);
}

/** Terminates every backend of the gateway process on this database (its pool, its replication stream); how many. */
async function killGateway(): Promise<number> {
  const ports = databaseClientPorts(gateway.pid);
  const [row] = await db.sql<{ killed: number }[]>`select count(pg_terminate_backend(pid))::int as killed from pg_stat_activity
    where datname = current_database() and pid <> pg_backend_pid() and client_port = any(${ports}::int[])`;
  return row!.killed;
}

async function killBetweenParts(everyAttempt: boolean) {
  const { canvasId, owner, users } = await bigCanvas(db.sql, 150); // 3 parts
  const token = await signAccessToken(config.auth.jwtSecret, { sub: owner }, { expiresInSeconds: 600 });
  const initial = await canvasState(db.sql, canvasId);

  // every frame each socket received, in order
  const sockets: { type: string; part?: number; has_more?: boolean; code?: string }[][] = [];
  const closes: number[] = [];
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url);
      const frames: (typeof sockets)[number] = [];
      sockets.push(frames);
      this.on('message', (data) => {
        const m = JSON.parse(String(data));
        frames.push({ type: m.type, part: m.part, has_more: m.has_more, code: m.code });
      });
      this.on('close', (code) => closes.push(code));
    }
  }

  const t1 = await reservedTransaction(db.sql);
  const t2 = await reservedTransaction(db.sql);
  let sync: CanvasSync | undefined;
  const told: number[] = [];
  try {
    await t1.conn`lock table app.feature_flags in access exclusive mode`;
    sync = new CanvasSync({ url: gateway.url, canvasId, token: () => token, WebSocket: Recording as any, resumeTimeoutMs: 120_000,
      onChange: (blocks) => told.push([...initial.blocks.keys()].filter((id) => blocks.has(id)).length) });
    const joined = sync.join();
    joined.catch(() => {}); // awaited below; a failure before is the test's
    // the first page's read has read its blocks (it holds app.blocks) and waits for T1 on the flags
    const [first] = await until(async () => (await blockedBy(t1.pid)).length > 0, 30_000, 'the first page read waiting for T1')
      .then(() => blockedBy(t1.pid));
    // T2 waits for the first page's read to end
    const t2Locked = t2.conn`lock table app.blocks in access exclusive mode`.execute();
    await until(async () => (await blockedBy(first!)).includes(t2.pid), 10_000, 'T2 waiting for the first page read');
    await t1.end('rollback');
    await t2Locked;
    // the first part was sent; the next page's read waits for T2
    await until(async () => (await blockedBy(t2.pid)).length > 0, 30_000, 'the next page read waiting for T2');
    expect(sockets.length).toBe(1);
    const waiting = await blockedBy(t2.pid);
    expect(await killGateway()).toBeGreaterThanOrEqual(waiting.length);
    if (everyAttempt) {
      // each read of the page again, on a new connection, waits for T2 too: terminated as well,
      // until the socket is answered (the gateway gives the read up)
      const killed = new Set(waiting);
      const answered = () => sockets[0]!.some((m) => m.type === 'error') || closes.length > 0;
      for (;;) {
        await until(async () => answered() || (await blockedBy(t2.pid)).some((pid) => !killed.has(pid)), 30_000, 'the page read again, or an answer');
        if (answered()) break;
        for (const pid of await blockedBy(t2.pid)) killed.add(pid);
        await killGateway();
        expect(killed.size).toBeLessThan(10);
      }
      expect(sockets[0]!.filter((m) => m.type === 'snapshot').map((m) => m.part)).toEqual([0]);
    }
    await t2.end('rollback');
    // a write after the pages were held: the replay (or a fresh snapshot) must bring it
    expect((await mutate(db.sql, users[1]!, canvasId, { action: 'create', patch: { type: 'note', content: { text: 'after the kill' } } })).status).toBe('success');
    await joined;
    const truth = await canvasState(db.sql, canvasId);
    await until(() => sync!.canvasSeq >= truth.canvasSeq, 60_000, 'the client at the database\'s canvas_seq');

    expect(gateway.exited(), gateway.output().slice(-3000)).toBeNull();
    expect((await fetch(`${gateway.url}/health`)).status).toBe(200);
    expect(blocksView(sync.blocks as Map<string, PagedBlock>)).toEqual(blocksView(truth.blocks));
    // only whole states were told (never a part alone)
    expect(told.length).toBeGreaterThan(0);
    expect(told.every((n) => n === initial.blocks.size)).toBe(true);
    // the socket that became live received parts 0, 1, 2 once each, in order, then `resumed`
    const live = sockets.filter((f) => f.some((m) => m.type === 'resumed'));
    expect(live.length).toBe(1);
    expect(sockets.indexOf(live[0]!)).toBe(everyAttempt ? sockets.length - 1 : 0);
    const parts = live[0]!.filter((m) => m.type === 'snapshot');
    expect(parts.map((m) => [m.part, m.has_more])).toEqual([[0, true], [1, true], [2, false]]);
    // a socket given up before that ended with a clear answer: an error frame with a code, or a close code
    for (const frames of sockets.filter((f) => f !== live[0])) {
      const error = frames.find((m) => m.type === 'error');
      if (error) expect(error.code).toMatch(/^[a-z_]+$/);
    }
    if (everyAttempt) {
      // the socket whose page read was given up: answered with a code and closed, part 0 only
      expect(sockets[0]!.filter((m) => m.type === 'error').map((m) => m.code)).toEqual(['unavailable']);
      expect(closes[0]).toBe(1011);
    }
  } finally {
    sync?.close();
    await t2.release();
    await t1.release();
  }
}

it('every database connection of the gateway terminated between two snapshot parts (the next page read waiting): the page is read again on a new connection; the client gets every part once and ends equal to the database; the gateway stays up', async () => {
  await killBetweenParts(false);
}, 300_000);

it('the page read terminated at every attempt: the socket is answered unavailable and closed 1011 after part 0; the client keeps no half snapshot, reconnects, and ends equal to the database; the gateway stays up', async () => {
  await killBetweenParts(true);
}, 300_000);
