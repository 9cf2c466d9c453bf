import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TransactionSql } from 'postgres';
import { CanvasSync, type MutationOutcome } from '../../packages/client/src/canvas-sync.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas } from '../helpers/fixtures.ts';
import { realtimeClients } from '../helpers/realtime.ts';
import { sleep, until } from '../helpers/wait.ts';

// The database messages a realtime-js channel or an H1 socket holds while its access is re-checked
// are bounded (hub.ts maxHeldDatabaseMessages / maxHeldDatabaseBytes). They cannot be dropped
// silently, so past the bound the channel ends (`system` error HeldMessagesLimitReached, then
// phx_error: realtime-js rejoins) or the H1 socket closes with 1013 (the client resumes from its
// last canvas_seq, nothing lost). Before, a re-check waiting on a lock held every delta the canvas
// committed, in every channel it concerned, for as long as it waited. A re-check holding a few
// hundred deltas under the default bound ends nothing.
//
// How a re-check is held: one transaction changes the member's role (its access_changed message)
// and then writes the deltas, so they all reach the gateway behind the change; a `share` lock on
// realtime.messages queued behind that transaction gets it at commit, and the re-check's RLS probe
// (an insert there) waits until the test releases it.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub });
const tight = { maxHeldDatabaseMessages: 20, maxHeldDatabaseBytes: 64 * 1024 };
const realtime = realtimeClients();

let server: Server; // the default limits
let small: Server; // `tight`
beforeAll(async () => {
  [server, small] = await Promise.all([startServer(config), startServer(config, { realtime: { limits: tight } })]);
  await Promise.all([server.gateway!.bus.ready(), small.gateway!.bus.ready()]);
}, 120_000);
afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
  await small?.stop();
  await db.close();
});

/** Every status a channel reports, in order, with the time it came. */
function subscribe(channel: RealtimeChannel): { statuses: string[]; at: number[] } {
  const seen = { statuses: [] as string[], at: [] as number[] };
  channel.subscribe((status) => {
    seen.statuses.push(status);
    seen.at.push(performance.now());
  });
  return seen;
}

/** `count` block creates of about `bytes` each, as one batch of `userId` inside `tx`. */
async function writeBlocks(tx: TransactionSql, canvasId: string, userId: string, count: number, bytes = 40): Promise<void> {
  await tx`select set_config('request.jwt.claims', ${JSON.stringify({ sub: userId, role: 'authenticated' })}, true)`;
  const ops = Array.from({ length: count }, (_, i) => ({
    action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: `${userId.slice(0, 8)}-${i}-`.padEnd(bytes, 'x') } },
  }));
  const [row] = await tx`select api.upsert_blocks_atomic(${canvasId}::uuid, ${ops as never}::jsonb) as r`;
  expect(row!.r.status).toBe('success');
}

const waiting = (mode: string) => async () => (await db.sql`select from pg_locks l join pg_class c on c.oid = l.relation
                                                        where c.relname = 'messages' and l.mode = ${mode} and not l.granted`).length > 0;

/**
 * Commits `change` (an access change, then deltas) and holds the re-check it starts on a lock
 * until the returned release() is called; `beforeCommit` runs once the lock is queued.
 */
async function holdRecheck(change: (tx: TransactionSql) => Promise<void>, beforeCommit = async () => {}): Promise<{ release(): Promise<void> }> {
  let commit!: () => void;
  let changed = false;
  const tx1 = db.sql.begin(async (tx) => {
    await tx`set local idle_in_transaction_session_timeout = '20s'`; // not left open by a failed wait (its xid holds off slot creation)
    await change(tx);
    changed = true;
    await new Promise<void>((r) => { commit = r; });
  });
  await until(() => changed, 10_000, 'the change and its deltas to be written');
  let release!: () => void;
  const tx2 = db.sql.begin(async (tx) => {
    await tx`set local idle_in_transaction_session_timeout = '20s'`; // nor the lock every mutation's delta waits for
    await tx`lock table realtime.messages in share mode`;
    await new Promise<void>((r) => { release = r; });
  });
  await until(waiting('ShareLock'), 5000, 'the lock to queue behind the change');
  await beforeCommit();
  commit();
  await tx1;
  await until(waiting('RowExclusiveLock'), 3000, 'the re-check\'s probe to wait on the lock');
  return {
    async release() {
      release();
      await tx2;
    },
  };
}

/** A `ws` WebSocket that records the close code of every socket a CanvasSync makes. */
function recordingWebSocket() {
  const closes: number[] = [];
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url);
      this.on('close', (code) => closes.push(code));
    }
  }
  return { closes, WebSocket: Recording };
}

describe('database messages held during an access re-check', () => {
  it('realtime-js: past maxHeldDatabaseMessages the channel gets HeldMessagesLimitReached and phx_error at once, then rejoins', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const writer = await addMember(db.sql, users.owner!, workspaceId, 'editor', 'writer');
    const editorOps: string[] = [];
    const ownerOps: string[] = [];
    const system: Array<{ status: string; message: string }> = [];
    const editor = realtime.connect(small.url, await token(users.editor!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, ({ payload }) => editorOps.push(payload.block_id))
      .on('system', {}, (p) => system.push(p));
    // the owner's channel is not re-checked (the change is the editor's): it gets every delta
    const owner = realtime.connect(small.url, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, ({ payload }) => ownerOps.push(payload.block_id));
    const editorSeen = subscribe(editor);
    const ownerSeen = subscribe(owner);
    await until(() => editorSeen.statuses.includes('SUBSCRIBED') && ownerSeen.statuses.includes('SUBSCRIBED'), 5000, 'both channels joined');

    // the editor becomes a viewer (access survives), then 30 deltas: one over the bound of 20
    const lock = await holdRecheck(async (tx) => {
      await tx`update app.workspace_members set role = 'viewer' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
      await writeBlocks(tx, canvasId, writer, 30);
    });
    try {
      // ended while the re-check still waits: nothing more is held for it
      await until(() => editorSeen.statuses.includes('CHANNEL_ERROR'), 5000, 'the channel to error');
      expect(system).toEqual([{ extension: 'system', channel: `canvas:${canvasId}`, status: 'error',
        message: 'HeldMessagesLimitReached: more than 20 database messages or 65536 bytes arrived while your access was re-checked; ' +
          'they were not delivered and the channel rejoins: read what you show again from the database' }]);
      await until(() => ownerOps.length === 30, 5000, 'the owner\'s deltas');
    } finally {
      await lock.release();
    }
    // realtime-js rejoins (its join authorized again, now as a viewer), and deltas flow again
    await until(() => editorSeen.statuses.filter((s) => s === 'SUBSCRIBED').length === 2, 10_000, 'the rejoin');
    expect(editorSeen.statuses).toEqual(['SUBSCRIBED', 'CHANNEL_ERROR', 'SUBSCRIBED']);
    expect(editorOps).toEqual([]); // the held ones were not delivered: the app refetches
    await db.sql.begin((tx) => writeBlocks(tx, canvasId, users.owner!, 1));
    await until(() => editorOps.length === 1, 5000, 'a delta after the rejoin');
    expect(ownerSeen.statuses).toEqual(['SUBSCRIBED']);
  }, 30_000);

  it('H1: past maxHeldDatabaseBytes the socket closes with 1013; the client resumes and loses nothing, its acked mutation included', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const writer = await addMember(db.sql, users.owner!, workspaceId, 'editor', 'writer');
    const editorToken = await token(users.editor!);
    const ws = recordingWebSocket();
    const sync = new CanvasSync({ url: small.url, canvasId, token: () => editorToken, WebSocket: ws.WebSocket as never, reconnectDelayMs: () => 100 });
    try {
      await sync.join();
      // the editor becomes an admin (still writing), then 8 deltas of 10 KB: 80 KB, over the
      // bound of 64 KiB with fewer messages than its 20
      let outcome!: Promise<MutationOutcome>;
      const lock = await holdRecheck(async (tx) => {
        await tx`update app.workspace_members set role = 'admin' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
        await writeBlocks(tx, canvasId, writer, 8, 10_000);
      }, async () => {
        // a mutation of the client's own, in flight when the socket closes: it waits for the
        // change's canvas row, then for the lock, and commits once the lock goes
        outcome = sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'mine' } } });
        await until(async () => (await db.sql`select from pg_stat_activity where wait_event_type = 'Lock'
                                                and query ilike '%upsert_block_atomic%'`).length > 0, 5000, 'the mutation to wait');
      });
      try {
        await until(() => ws.closes.includes(1013), 5000, 'the H1 socket to close with 1013');
        await sleep(200);
      } finally {
        await lock.release();
      }
      // answered on the old socket, which is gone: resent on the new one (same client_op_id)
      const ack = await outcome;
      expect(ack).toMatchObject({ type: 'ack', status: 'duplicate' }); // applied once, acked on the second socket
      // resumed from its last canvas_seq: the canvas as the database has it, every delta applied once
      const rows = await db.sql<{ block_id: string }[]>`select block_id from app.blocks where canvas_id = ${canvasId}`;
      const [last] = await db.sql<{ seq: number }[]>`select max(canvas_seq)::int as seq from app.block_operations where canvas_id = ${canvasId}`;
      await until(() => sync.canvasSeq === last!.seq, 10_000, 'the client to catch up');
      expect(rows).toHaveLength(9);
      expect([...sync.blocks.keys()].sort()).toEqual(rows.map((r) => r.block_id).sort());
      expect(sync.blocks.has((ack as { block_id: string }).block_id)).toBe(true);
      expect(ws.closes).toEqual([1013]);
    } finally {
      sync.close();
    }
  }, 30_000);

  it('a re-check holding 300 deltas under the default bound ends nothing: realtime-js and H1 get them all once it passes', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const writers = await Promise.all([0, 1, 2].map((i) => addMember(db.sql, users.owner!, workspaceId, 'editor', `writer${i}`)));
    const editorToken = await token(users.editor!);
    const ops: string[] = [];
    const system: unknown[] = [];
    const editor = realtime.connect(server.url, editorToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, ({ payload }) => ops.push(payload.block_id))
      .on('system', {}, (p) => system.push(p));
    const seen = subscribe(editor);
    const ws = recordingWebSocket();
    const sync = new CanvasSync({ url: server.url, canvasId, token: () => editorToken, WebSocket: ws.WebSocket as never });
    try {
      await until(() => seen.statuses.includes('SUBSCRIBED'), 5000, 'the channel joined');
      await sync.join();
      const lock = await holdRecheck(async (tx) => {
        await tx`update app.workspace_members set role = 'admin' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
        for (const w of writers) await writeBlocks(tx, canvasId, w, 100, 200);
      });
      await sleep(500);
      expect(ops).toEqual([]); // held
      await lock.release();
      await until(() => ops.length === 300 && sync.blocks.size === 300, 10_000, 'every held delta');
      expect(new Set(ops).size).toBe(300);
      expect(system).toEqual([]);
      expect(seen.statuses).toEqual(['SUBSCRIBED']);
      expect(ws.closes).toEqual([]);
    } finally {
      sync.close();
    }
  }, 30_000);
});
