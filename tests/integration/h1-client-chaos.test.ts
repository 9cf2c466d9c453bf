import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { CanvasAccessLostError, CanvasSync, type CanvasSyncOptions, type MutationOutcome } from '../../packages/client/src/canvas-sync.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas } from '../helpers/fixtures.ts';
import { startTcpProxy, type CutOptions, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { prng } from '../../src/prng.ts';

// The H1 client (packages/client/src/canvas-sync.ts) under network loss: a TCP proxy between the client
// and an in-process server cuts the path while mutations are pending. Every mutation must be
// acked exactly once and applied once, the client must end with the server's state, never hold
// two sockets, and never throw or reject into the process.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(3);
let server: Server;
let proxy: TcpProxy;

beforeAll(async () => {
  server = await startServer(config);
  proxy = await startTcpProxy(Number(new URL(server.url).port));
});
afterAll(async () => {
  await proxy?.close();
  await server?.stop();
  await db.close();
});
afterEach(() => {
  proxy.restore();
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * A `ws` WebSocket subclass, passed to CanvasSync as its constructor, that records every socket
 * the client makes: `alive` counts sockets from construction until their `close` event, `open`
 * from `open` until `close`. No `error` listener is added here: an `error` the client leaves
 * unhandled must still surface as an uncaught exception.
 */
function instrumentedWebSocket() {
  const stats = { created: 0, alive: 0, maxAlive: 0, open: 0, maxOpen: 0, createdAt: [] as number[], received: {} as Record<string, number> };
  class InstrumentedWebSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      stats.created++;
      stats.createdAt.push(Date.now());
      stats.alive++;
      stats.maxAlive = Math.max(stats.maxAlive, stats.alive);
      let opened = false;
      this.on('open', () => {
        opened = true;
        stats.open++;
        stats.maxOpen = Math.max(stats.maxOpen, stats.open);
      });
      this.on('message', (data) => {
        const m = JSON.parse(String(data));
        const key = m.type === 'error' ? `error:${m.code}` : m.type === 'ack' ? `ack:${m.status}` : m.type;
        stats.received[key] = (stats.received[key] ?? 0) + 1;
      });
      this.on('close', () => {
        stats.alive--;
        if (opened) stats.open--;
      });
    }
  }
  return { stats, WebSocket: InstrumentedWebSocket };
}

/** Records unhandled rejections and uncaught exceptions while installed. */
function processFaults() {
  const seen: unknown[] = [];
  const onFault = (err: unknown) => void seen.push(err);
  process.on('unhandledRejection', onFault);
  process.on('uncaughtException', onFault);
  return {
    seen,
    uninstall() {
      process.off('unhandledRejection', onFault);
      process.off('uncaughtException', onFault);
    },
  };
}

async function editorClient(extra: Partial<CanvasSyncOptions> = {}) {
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
  const ws = instrumentedWebSocket();
  let asked = 0; // token() calls
  const sync = new CanvasSync({ url: proxy.url, canvasId, token: () => (asked++, token), WebSocket: ws.WebSocket as any, ...extra });
  return { canvasId, users, sync, stats: ws.stats, tokensAsked: () => asked };
}

/** Resolves with `p`, or with `fallback` after `ms` (bounded waits: a hang must fail an assertion, not the timeout). */
function within<T, F>(p: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  return Promise.race([p, sleep(ms).then(() => fallback)]);
}

/** Polls `check` every 20 ms for at most `ms`; returns its last answer. */
async function until(check: () => Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(20);
  }
}

/**
 * Holds the row lock of a canvas (as a concurrent writer would), so the server's
 * api.upsert_block_atomic on it waits; `release()` commits.
 */
async function holdCanvasLock(canvasId: string) {
  let release!: () => void;
  const released = new Promise<void>((r) => (release = r));
  let locked!: () => void;
  const isLocked = new Promise<void>((r) => (locked = r));
  const tx = db.sql.begin(async (t) => {
    await t`select 1 from app.canvases where canvas_id = ${canvasId} for update`;
    locked();
    await released;
  });
  await isLocked;
  return { release: async () => { release(); await tx; } };
}

/** The server's backends waiting on a lock inside api.upsert_block_atomic. */
async function blockedMutations(): Promise<number[]> {
  const rows = await db.sql<{ pid: number }[]>`
    select pid from pg_stat_activity
    where datname = current_database() and wait_event_type = 'Lock' and query ilike '%upsert_block_atomic%'`;
  return rows.map((r) => r.pid);
}

async function successRows(clientOpId: string): Promise<number> {
  return (await opRows(clientOpId)).filter((r) => r.status === 'success').length;
}

async function opRows(clientOpId: string): Promise<{ status: string; server_seq: number | null }[]> {
  return db.sql<{ status: string; server_seq: number | null }[]>`
    select status, server_seq::int from app.block_operations where client_op_id = ${clientOpId} order by created_at`;
}

describe('CanvasSync under network loss (through a TCP proxy)', () => {
  it('survives 10 cuts with mutations pending: every op acked once and applied once, final state equals the server, one socket at a time', async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
    const random = prng(seed);
    const faults = processFaults();
    const seqs: number[] = [];
    const { canvasId, users, sync, stats } = await editorClient({
      heartbeatMs: 400, // a stalled path is noticed after about a second of silence
      resumeTimeoutMs: 1500, // a blackholed connect is given up and retried
      onChange: (_blocks, delta) => void (delta && seqs.push(delta.server_seq)),
    });
    try {
      await sync.join();

      // the writer: creates, and updates of acked blocks (one in flight per block, at its last
      // acked version, so no conflict can be legitimate); 60 ops from the writer and 35 in bursts
      // right before the cuts (the per-user limit is 100 a minute)
      const issued: string[] = [];
      const outcomes = new Map<string, MutationOutcome[]>();
      const versions = new Map<string, number>();
      const busy = new Set<string>();
      const all: Promise<unknown>[] = [];
      let n = 0;
      let unsettled = 0;
      const issue = (): void => {
        const i = n++;
        unsettled++;
        const id = `chaos-${seed}-${i}`;
        const idle = [...versions.keys()].filter((b) => !busy.has(b));
        const blockId = i % 3 !== 0 && idle.length > 0 ? idle[Math.floor(random() * idle.length)]! : null;
        issued.push(id);
        outcomes.set(id, []);
        if (blockId) busy.add(blockId);
        const p = blockId
          ? sync.mutate({ action: 'update', block_id: blockId, base_version: versions.get(blockId)!, patch: { content: { text: `u${i}` } } }, id)
          : sync.mutate({ action: 'create', patch: { type: 'text', content: { text: `c${i}` } } }, id);
        all.push(p.then((o) => {
          unsettled--;
          outcomes.get(id)!.push(o);
          if (blockId) busy.delete(blockId);
          if (o.type === 'ack' && o.block_id && o.version !== null) versions.set(o.block_id, o.version);
        }));
      };

      let writing = true;
      const writer = (async () => {
        for (let w = 0; writing && w < 60; w++) {
          issue();
          await sleep(150 + random() * 200);
        }
      })();
      const pendingAtCut: number[] = [];
      const modes: CutOptions[] = [
        { existing: 'destroy', incoming: 'refuse' },
        { existing: 'destroy', incoming: 'blackhole' },
        { existing: 'stall', incoming: 'refuse' },
        { existing: 'stall', incoming: 'blackhole' },
      ];
      for (let c = 0; c < 10; c++) {
        await within(sync.ready(), 10_000, null); // live again (bounded), then let some writes through
        await sleep(150 + random() * 350);
        // sent right before the cut: lost, applied, or applied with the ack lost (the cut comes in
        // the same tick, or a few milliseconds later, while the server may be applying them)
        for (let k = 0; k < 3; k++) issue();
        if (c % 2 === 1) {
          await sleep(random() * 15);
          // the burst may be acked by now (a mutation is one pipelined round trip, a few ms): one
          // more in the same tick as the cut, so every cut has a mutation in flight
          issue();
        }
        pendingAtCut.push(unsettled);
        proxy.cut(modes[Math.floor(c / 2) % modes.length]);
        await sleep(500 + random() * 1000);
        proxy.restore();
      }
      writing = false;
      await writer;

      expect(await within(Promise.all(all).then(() => 'settled'), 20_000, 'hung'), `seed ${seed}`).toBe('settled');
      expect(proxy.counters.cuts).toBe(10);
      expect(issued.length).toBeGreaterThan(40);
      for (const id of issued) {
        const got = outcomes.get(id)!;
        expect(got.map((o) => o.type), `${id} (seed ${seed})`).toEqual(['ack']);
        expect(['success', 'duplicate']).toContain((got[0] as any).status);
      }
      const rows = await db.sql<{ client_op_id: string; n: number }[]>`
        select client_op_id, count(*)::int as n from app.block_operations
        where canvas_id = ${canvasId} and status = 'success' group by client_op_id`;
      expect(new Map(rows.map((r) => [r.client_op_id, r.n])), `seed ${seed}`).toEqual(new Map(issued.map((id) => [id, 1])));

      const { watermark, blocks } = await callAs(db.sql, users.owner!, 'get_canvas_snapshot', [canvasId]);
      for (let t = 0; t < 250 && sync.seq < Number(watermark); t++) await sleep(20);
      expect(sync.seq).toBe(Number(watermark));
      const byId = (bs: any[]) => [...bs].sort((a, b) => a.block_id.localeCompare(b.block_id));
      expect(byId([...sync.blocks.values()])).toEqual(byId(blocks as any[]));
      // deltas were applied in server_seq order, each once
      expect(seqs).toEqual([...new Set(seqs)].sort((a, b) => a - b));
      expect(pendingAtCut.every((p) => p > 0), `mutations pending at each cut: ${pendingAtCut}`).toBe(true);
      expect(stats.received.hello, 'the first session, and a new one after each of the 6 destroying cuts').toBeGreaterThanOrEqual(7);
      expect(stats.maxAlive, 'sockets alive at once').toBe(1);
      expect(stats.maxOpen, 'sockets open at once').toBe(1);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  }, 60_000);

  it('resends a mutation whose ack was lost in a cut: answered as a duplicate, applied once', async () => {
    const faults = processFaults();
    const { canvasId, sync, stats } = await editorClient({ reconnectDelayMs: () => 50 });
    try {
      await sync.join();
      const lock = await holdCanvasLock(canvasId);
      const opId = randomUUID();
      const outcome = sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'ack lost' } } }, opId);
      expect(await until(async () => (await blockedMutations()).length === 1)).toBe(true);
      proxy.cut(); // the server applies it once the lock goes, but its ack has no path back
      await lock.release();
      expect(await until(async () => (await successRows(opId)) === 1)).toBe(true);
      proxy.restore();
      const o = await within(outcome, 5000, 'hung');
      const rows = await opRows(opId);
      // applied once, then the resend was answered from the operation log
      expect(rows.map((r) => r.status).sort()).toEqual(['duplicate', 'success']);
      expect(o).toMatchObject({ type: 'ack', client_op_id: opId, status: 'duplicate', server_seq: rows.find((r) => r.status === 'success')!.server_seq });
      expect(await until(async () => sync.blocks.has((o as any).block_id))).toBe(true);
      expect(stats.maxAlive).toBe(1);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('resends in-flight mutations after the server answers a failed one with an internal/unavailable/timeout error', async () => {
    const faults = processFaults();
    const { canvasId, sync, stats } = await editorClient();
    try {
      await sync.join();
      const lock = await holdCanvasLock(canvasId);
      const opId = randomUUID();
      const outcome = sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'retried' } } }, opId);
      let pids: number[] = [];
      expect(await until(async () => (pids = await blockedMutations()).length === 1)).toBe(true);
      // cancelled, the op fails, and recording that failure then waits on the same lock until
      // lock_timeout: the statement errors and the server answers `timeout` (55P03, with the
      // client_op_id), which the client resends like `internal` / `unavailable`
      await db.sql`select pg_cancel_backend(${pids[0]!})`;
      expect(await until(async () => ['internal', 'unavailable', 'timeout'].some((code) => (stats.received[`error:${code}`] ?? 0) > 0), 10_000)).toBe(true);
      expect(await successRows(opId)).toBe(0);
      await lock.release();
      const o = await within(outcome, 5000, 'hung');
      expect(o).toMatchObject({ type: 'ack', client_op_id: opId, status: 'success' });
      expect(await successRows(opId)).toBe(1);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('stops, without reconnecting, when the server closes the socket for lost access (4403)', async () => {
    const faults = processFaults();
    const errors: unknown[] = [];
    const { canvasId, users, sync, stats } = await editorClient({ reconnectDelayMs: () => 50, onError: (e) => errors.push(e) });
    try {
      await sync.join();
      const [canvas] = await db.sql<{ workspace_id: string }[]>`select workspace_id from app.canvases where canvas_id = ${canvasId}`;
      await db.sql`delete from app.workspace_members where workspace_id = ${canvas!.workspace_id} and user_id = ${users.editor!}`;
      expect(await until(async () => errors.length > 0)).toBe(true);
      expect(errors[0]).toBeInstanceOf(CanvasAccessLostError);
      expect(errors[0]).toMatchObject({ code: 'forbidden' });
      await sleep(400); // several reconnect delays: none may happen
      expect(stats.created).toBe(1);
      expect(stats.alive).toBe(0);
      await expect(sync.join()).rejects.toThrow(/closed/);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('a user deleted while live: the 4401 close is met as an expired token\'s, by reconnecting with token() asked again, not as lost access', async () => {
    const faults = processFaults();
    const errors: unknown[] = [];
    const { users, sync, stats, tokensAsked } = await editorClient({ reconnectDelayMs: () => 50, onError: (e) => errors.push(e) });
    try {
      await sync.join();
      expect(tokensAsked()).toBe(1);
      await db.sql`delete from auth.users where id = ${users.editor!}`;
      // the server's answer (error unauthorized, close 4401), then a new socket with token() asked again
      // (the app's token() would sign in again; this one's upgrade is refused 401, and retried)
      expect(await until(async () => (stats.received['error:unauthorized'] ?? 0) > 0 && tokensAsked() > 1)).toBe(true);
      expect(stats.received['error:forbidden']).toBeUndefined();
      expect(errors.filter((e) => e instanceof CanvasAccessLostError)).toEqual([]);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('schedules exactly one reconnect per failed connect (no doubling), and joins once the path is back', async () => {
    const faults = processFaults();
    proxy.cut({ incoming: 'refuse' });
    const { sync, stats } = await editorClient({ reconnectDelayMs: () => 100 });
    try {
      const joined = sync.join();
      await sleep(1200);
      const refused = proxy.counters.refused;
      expect(stats.created).toBeGreaterThan(3);
      // one chain of attempts: consecutive sockets are at least one delay apart
      const gaps = stats.createdAt.slice(1).map((t, i) => t - stats.createdAt[i]!);
      expect(Math.min(...gaps)).toBeGreaterThanOrEqual(99);
      expect(stats.maxAlive).toBe(1);
      proxy.restore();
      expect(await within(joined.then(() => 'live'), 5000, 'not live')).toBe('live');
      expect(refused).toBeGreaterThan(3);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('drops a connection that never reaches `resumed` and retries it', async () => {
    const faults = processFaults();
    proxy.cut({ incoming: 'blackhole' });
    const { sync, stats } = await editorClient({ resumeTimeoutMs: 300, reconnectDelayMs: () => 50 });
    try {
      const joined = sync.join();
      await sleep(1200);
      expect(proxy.counters.blackholed).toBeGreaterThanOrEqual(2);
      expect(stats.created).toBeGreaterThanOrEqual(2);
      expect(stats.maxAlive).toBe(1);
      proxy.restore();
      expect(await within(joined.then(() => 'live'), 5000, 'not live')).toBe('live');
      expect(sync.seq).toBeGreaterThanOrEqual(0);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('gives up a connection attempt whose token() never answers, and retries with a new one', async () => {
    const faults = processFaults();
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
    let asked = 0;
    const errors: unknown[] = [];
    const ws = instrumentedWebSocket();
    const sync = new CanvasSync({
      url: proxy.url, canvasId, WebSocket: ws.WebSocket as any, resumeTimeoutMs: 300, reconnectDelayMs: () => 50,
      token: () => (++asked === 1 ? new Promise<string>(() => {}) : token), // the first never answers
      onError: (e) => errors.push(e),
    });
    try {
      expect(await within(sync.join().then(() => 'live'), 5000, 'not live')).toBe('live');
      expect(asked).toBe(2);
      expect(ws.stats.created).toBe(1);
      expect(String(errors[0])).toMatch(/token\(\) did not answer/);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });

  it('close() before the client is live rejects join() and cancels every reconnect', async () => {
    const faults = processFaults();
    proxy.cut({ incoming: 'refuse' });
    const { sync, stats } = await editorClient({ reconnectDelayMs: () => 50 });
    try {
      const joined = sync.join();
      await sleep(300);
      sync.close();
      await expect(joined).rejects.toThrow(/closed/);
      await sleep(50);
      const created = stats.created;
      proxy.restore();
      await sleep(400);
      expect(stats.created).toBe(created);
      expect(stats.alive).toBe(0);
      expect(faults.seen).toEqual([]);
    } finally {
      sync.close();
      faults.uninstall();
    }
  });
});
