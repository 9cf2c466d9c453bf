import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import type { DeltaMessage, ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, barrier, callAs, createCanvas, mutate, type MutationResult } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';

// canvas_seq: per canvas, applied operations are numbered 1, 2, 3, … with no gap, in commit
// order. Proven with concurrent writers through the real RPC (and a reader racing them that must
// never see a number before the ones below it), with H1 subscribers that miss deltas (a dropped
// socket; frames lost on a live socket) and resume by canvas_seq with nothing missing or
// duplicated, and with a resume longer than one page of the log.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const WRITERS = 6;
const ROUNDS = 8;
const db = testDatabase(4);
let wide: Database; // one connection per concurrent writer, plus the racing reader
let server: Server;

beforeAll(async () => {
  wide = createDatabase(testDatabaseUrl(), { max: WRITERS + 2, applicationName: 'potentia-test-canvas-seq' });
  server = await startServer(config);
});
afterAll(async () => {
  await server?.stop();
  await wide?.close();
  await db.close();
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const oneTo = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/** Polls `check` every 20 ms for at most `ms`; returns its last answer (a bounded wait, not a speed claim). */
async function until(check: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > end) return false;
    await sleep(20);
  }
}

/** A canvas with `n` editors besides its owner (writers get their own users: the limit is 100 mutations a minute each). */
async function canvasWithEditors(n: number) {
  const { canvasId, workspaceId, users } = await createCanvas(db.sql);
  const editors: string[] = [];
  for (let i = 0; i < n; i++) editors.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `seq-editor-${i}`));
  return { canvasId, owner: users.owner!, editors };
}

async function opRows(canvasId: string) {
  return db.sql<{ server_seq: string; canvas_seq: string; client_op_id: string }[]>`
    select server_seq, canvas_seq, client_op_id from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by server_seq`;
}

type Conn = H1Conn;

async function open(canvasId: string, userId: string, query = ''): Promise<Conn> {
  return openH1(server.url, canvasId, await signAccessToken(config.auth.jwtSecret, { sub: userId }), query);
}

const is = <T extends ServerMessage['type']>(type: T, extra: (m: any) => boolean = () => true) => (m: ServerMessage) => m.type === type && extra(m);
const deltaSeqs = (inbox: ServerMessage[]) => inbox.filter((m): m is DeltaMessage => m.type === 'delta').map((d) => d.canvas_seq);

describe('canvas_seq', () => {
  it('numbers concurrent writers 1..N in commit order: a racing reader never sees a number before the ones below it', async () => {
    const { canvasId, editors } = await canvasWithEditors(WRITERS);
    // the reader follows api.get_canvas_changes_since from its last number while the writers run;
    // a number committed before a lower one would show up as a jump (snapshot_required, or a
    // first change that is not last + 1)
    let readerLast = 0;
    const jumps: string[] = [];
    let progressedPolls = 0;
    let writing = true;
    const reader = (async () => {
      while (writing || readerLast < (await opRows(canvasId)).length) {
        const page = await callAs(wide.sql, editors[0]!, 'get_canvas_changes_since', [canvasId, readerLast, 1000]);
        if (page.snapshot_required) jumps.push(`snapshot_required after ${readerLast}`);
        if (page.changes.length > 0) progressedPolls++;
        for (const c of page.changes) {
          if (Number(c.canvas_seq) !== readerLast + 1) jumps.push(`${readerLast} -> ${c.canvas_seq}`);
          readerLast = Number(c.canvas_seq);
        }
      }
    })();

    // each round, every writer calls the RPC at the same moment (a barrier), on its own connection;
    // one in three also sends a rejected attempt (invalid type) that must take no number
    const results: any[] = [];
    const rejected: any[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const gate = barrier(WRITERS);
      await Promise.all(editors.map(async (editor, w) => {
        await gate.wait();
        results.push(await mutate(wide.sql, editor, canvasId, { action: 'create', patch: { type: 'text', content: { w, round } } }));
        if ((round + w) % 3 === 0) {
          rejected.push(await mutate(wide.sql, editor, canvasId, { action: 'create', patch: { type: 'Not A Type' } }));
        }
      }));
    }
    // and a batch, numbered op by op
    const batch = await callAs(wide.sql, editors[1]!, 'upsert_blocks_atomic', [canvasId,
      [1, 2, 3].map((i) => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { batch: i } } }))]);
    writing = false;
    await reader;

    const n = WRITERS * ROUNDS + 3;
    expect(results.every((r) => r.status === 'success')).toBe(true);
    expect(rejected.length).toBeGreaterThan(0);
    expect(rejected.map((r) => `${r.status}:${r.canvas_seq}`)).toEqual(rejected.map(() => 'failed:null'));
    expect(batch.results.map((r: any) => r.canvas_seq)).toEqual([n - 2, n - 1, n]);
    expect(batch.canvas_seq).toBe(n);
    const numbers = [...results.map((r) => Number(r.canvas_seq)), ...batch.results.map((r: any) => Number(r.canvas_seq))];
    expect(numbers.sort((a, b) => a - b)).toEqual(oneTo(n)); // every applied op got one number, none twice, none skipped

    // in the log, canvas_seq order is server_seq order (both taken under the canvas lock) ...
    const rows = await opRows(canvasId);
    expect(rows.map((r) => Number(r.canvas_seq))).toEqual(oneTo(n));
    const [canvas] = await db.sql<{ last_canvas_seq: number }[]>`select last_canvas_seq::int from app.canvases where canvas_id = ${canvasId}`;
    expect(canvas!.last_canvas_seq).toBe(n);
    // ... and commit order: the reader saw the numbers grow while the writers ran, never with a jump
    expect(jumps).toEqual([]);
    expect(readerLast).toBe(n);
    expect(progressedPolls).toBeGreaterThan(1);
  });

  it('a usual edit that waits for the canvas lock is numbered after the writer that held it (its numbers are drawn again after the wait)', async () => {
    // A content edit takes its server_seq and canvas_seq in the canvas row's UPDATE, which is also
    // its canvas lock; the UPDATE evaluates nextval before it finds the row locked. Here it draws
    // a number, waits for a writer that holds the lock and only then draws and commits a higher
    // one; the edit must come out numbered after that writer (READ COMMITTED's recheck draws its
    // numbers again), or replay by server_seq would read it before an operation that committed
    // first.
    const { canvasId, editors } = await canvasWithEditors(2);
    const [holder, waiter] = editors as [string, string];
    const a = await mutate(db.sql, holder, canvasId, { action: 'create', patch: { type: 'text', content: { t: 'a' } } });
    const b = await mutate(db.sql, waiter, canvasId, { action: 'create', patch: { type: 'text', content: { t: 'b' } } });
    let waiterResult: Promise<MutationResult> | undefined;
    const held = await wide.sql.begin(async (tx) => {
      await tx`select from app.canvases where canvas_id = ${canvasId} for no key update`;
      waiterResult = mutate(wide.sql, waiter, canvasId, { action: 'update', blockId: b.block_id!, baseVersion: b.version!, patch: { content: { t: 'b2' } } });
      const blocked = await until(async () => (await db.sql`
        select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%upsert_block_atomic%'`).length > 0);
      expect(blocked, 'the usual edit waits for the canvas row').toBe(true);
      const [seq] = await db.sql<{ drawn: string }[]>`select last_value::text as drawn from app.seq_block_events`;
      await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: holder, role: 'authenticated' })}, true)`;
      const [row] = await tx`select api.upsert_block_atomic(${canvasId}, ${a.block_id!}, 'update', ${randomUUID()}, ${a.version!}, ${tx.json({ content: { t: 'a2' } })}) as result`;
      return { result: row!.result as MutationResult & { canvas_seq: number }, drawn: Number(seq!.drawn) };
    });
    const waited = (await waiterResult!) as MutationResult & { canvas_seq: number };
    expect(held.result.status).toBe('success');
    expect(waited.status).toBe('success');
    expect(Number(held.result.server_seq)).toBeGreaterThan(held.drawn); // the holder drew after the waiter's first draw
    expect(Number(waited.server_seq)).toBeGreaterThan(Number(held.result.server_seq));
    expect(Number(waited.canvas_seq)).toBe(Number(held.result.canvas_seq) + 1);
    const rows = await opRows(canvasId);
    expect(rows.map((r) => Number(r.canvas_seq))).toEqual([1, 2, 3, 4]);
  });

  it('an edit and a create that wait for the canvas lock while its owner deletes the canvas are refused (not_found), logged nowhere, numbered never', async () => {
    // Both read the caller's role before the canvas lock; the delete commits while they wait.
    // After the wait each reads the row the deleter committed: no live canvas, nothing applied.
    const { canvasId, owner, editors } = await canvasWithEditors(1);
    const editor = editors[0]!;
    const b = await mutate(db.sql, editor, canvasId, { action: 'create', patch: { type: 'text', content: { t: 'b' } } });
    let waiting: Promise<MutationResult>[] = [];
    await wide.sql.begin(async (tx) => {
      await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: owner, role: 'authenticated' })}, true)`;
      await tx`select api.delete_canvas(${canvasId})`;
      waiting = [
        mutate(wide.sql, editor, canvasId, { action: 'update', blockId: b.block_id!, baseVersion: b.version!, patch: { content: { t: 'b2' } } }),
        mutate(wide.sql, editor, canvasId, { action: 'create', patch: { type: 'text', content: { t: 'c' } } }),
      ];
      const blocked = await until(async () => (await db.sql`
        select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%upsert_block_atomic%'`).length === 2);
      expect(blocked, 'both wait for the canvas row').toBe(true);
    });
    const answers = await Promise.all(waiting);
    expect(answers.map((r) => `${r.status} ${r.error?.code} ${r.error?.field}`)).toEqual(['failed not_found canvas_id', 'failed not_found canvas_id']);
    const rows = await opRows(canvasId);
    expect(rows.map((r) => Number(r.canvas_seq))).toEqual([1]);
    const [canvas] = await db.sql<{ last_canvas_seq: number; content: unknown }[]>`
      select c.last_canvas_seq::int, b.content from app.canvases c join app.blocks b using (canvas_id) where c.canvas_id = ${canvasId}`;
    expect(canvas).toEqual({ last_canvas_seq: 1, content: { t: 'b' } });
  });

  it('update_canvas that waits for the canvas row while its owner deletes the canvas is refused (not_found): no title lands on a deleted canvas', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['admin']);
    const [owner, admin] = [users.owner!, users.admin!];
    let waiting: Promise<unknown> | undefined;
    await wide.sql.begin(async (tx) => {
      await tx`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: owner, role: 'authenticated' })}, true)`;
      await tx`select api.delete_canvas(${canvasId})`;
      waiting = callAs(wide.sql, admin, 'update_canvas', [canvasId, 'Renamed after the delete', null]).then(() => 'applied', (e: Error) => e.message);
      const blocked = await until(async () => (await db.sql`
        select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%update_canvas%'`).length === 1);
      expect(blocked, 'update_canvas waits for the canvas row').toBe(true);
    });
    expect(await waiting).toMatch(/canvas not found/);
    const [canvas] = await db.sql<{ title: string; deleted: boolean }[]>`
      select title, deleted_at is not null as deleted from app.canvases where canvas_id = ${canvasId}`;
    expect(canvas).toEqual({ title: expect.not.stringContaining('Renamed'), deleted: true });
  });

  it('H1: a subscriber whose socket was dropped resumes by since_canvas_seq with nothing missing or duplicated', async () => {
    const { canvasId, owner, editors } = await canvasWithEditors(1);
    const writer = editors[0]!;
    const write = (i: number) => mutate(db.sql, writer, canvasId, { action: 'create', patch: { type: 'text', content: { i } } });

    const first = await open(canvasId, owner, '&since_canvas_seq=0');
    expect(await first.next(is('resumed'))).toMatchObject({ canvas_watermark: 0 });
    for (let i = 1; i <= 5; i++) await write(i);
    await first.next(is('delta', (d) => d.canvas_seq === 5));
    first.ws.terminate(); // the subscriber is gone while the writer goes on
    for (let i = 6; i <= 12; i++) await write(i);

    const seen = deltaSeqs(first.inbox);
    const last = seen[seen.length - 1]!;
    const second = await open(canvasId, owner, `&since_canvas_seq=${last}`);
    const resumed: any = await second.next(is('resumed'));
    expect(resumed.canvas_watermark).toBe(12);
    for (let i = 13; i <= 15; i++) await write(i);
    await second.next(is('delta', (d) => d.canvas_seq === 15));

    // replayed 6..12 from the log, then live 13..15; with the first socket's 1..5: exactly 1..15
    expect(second.inbox.filter((m) => m.type === 'delta' && m.replaying).map((d: any) => d.canvas_seq)).toEqual(oneTo(12).slice(5));
    expect([...seen, ...deltaSeqs(second.inbox)]).toEqual(oneTo(15));
    const serverSeqs = [...first.inbox, ...second.inbox].filter((m): m is DeltaMessage => m.type === 'delta').map((d) => String(d.server_seq));
    expect(serverSeqs).toEqual((await opRows(canvasId)).map((r) => r.server_seq));

    // the same through the `resume` frame, and an ack carries the op's canvas_seq
    second.send({ type: 'resume', since_canvas_seq: 13 });
    await second.next(is('resumed', (m) => m.canvas_watermark === 15));
    const op = randomUUID();
    second.send({ type: 'mutate', client_op_id: op, action: 'create', patch: { type: 'text' } });
    expect(await second.next(is('ack'))).toMatchObject({ client_op_id: op, status: 'success', canvas_seq: 16 });
    // the ack comes from the RPC, the delta through the bus: either may come first
    expect(await until(() => second.inbox.some((m) => m.type === 'delta' && m.canvas_seq === 16))).toBe(true);
    const afterResume = second.inbox.slice(second.inbox.findIndex((m) => m.type === 'resumed' && m.canvas_watermark === 15) - 2);
    expect(deltaSeqs(afterResume)).toEqual([14, 15, 16]);
    first.ws.close();
    second.ws.close();
  });

  it('H1: a resume pages through the whole log (more than one page), and one from beyond the canvas starts with a snapshot', async () => {
    const { canvasId, owner, editors } = await canvasWithEditors(6);
    // 540 operations: 6 writers x 90 (batches of 90; the limit is 100 a minute per user)
    for (const editor of editors) {
      const r = await callAs(db.sql, editor, 'upsert_blocks_atomic', [canvasId,
        Array.from({ length: 90 }, () => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }))]);
      expect(r.status).toBe('success');
    }
    const c = await open(canvasId, owner, '&since_canvas_seq=0');
    expect(await c.next(is('resumed'))).toMatchObject({ canvas_watermark: 540 });
    expect(deltaSeqs(c.inbox)).toEqual(oneTo(540));

    c.send({ type: 'resume', since_canvas_seq: 9999 }); // a number this canvas has not reached
    const snapshot: any = await c.next(is('snapshot'));
    expect(snapshot.canvas_watermark).toBe(540);
    expect(snapshot.blocks).toHaveLength(540);
    expect(await c.next(is('resumed'))).toMatchObject({ canvas_watermark: 540 });
    c.ws.close();

    await expect(open(canvasId, owner, '&since_canvas_seq=abc')).rejects.toThrow('upgrade refused: 400');
  });

  it('H1: a live delta that skips a number is not sent; the server fills the gap from the log, and drops what the log never had', async () => {
    const { canvasId, owner, editors } = await canvasWithEditors(1);
    const write = (i: number) => mutate(db.sql, editors[0]!, canvasId, { action: 'create', patch: { type: 'text', content: { i } } });
    const forge = (canvasSeq: number) => db.sql`select realtime.send(${db.sql.json({
      canvas_id: canvasId, server_seq: 1e12 + canvasSeq, canvas_seq: canvasSeq, action: 'create', block_id: randomUUID(), version: 1,
      block: { forged: true }, client_op_id: 'forged', actor_id: null })}::jsonb, 'block_op', ${`canvas:${canvasId}`}, true)`;
    const c = await open(canvasId, owner, '&since_canvas_seq=0');
    await c.next(is('resumed'));
    await write(1);
    await c.next(is('delta', (d) => d.canvas_seq === 1));
    // a block_op numbered 3 reaches the socket before 2 exists (as if the bus had skipped 2) ...
    await forge(3);
    await write(2);
    await write(3);
    await c.next(is('delta', (d) => d.canvas_seq === 3));
    // ... and one the log will never have: dropped after a few fills; the stream goes on at 4
    await forge(10);
    await write(4);
    await c.next(is('delta', (d) => d.canvas_seq === 4));
    const deltas = c.inbox.filter((m): m is DeltaMessage => m.type === 'delta');
    expect(deltas.map((d) => d.canvas_seq)).toEqual([1, 2, 3, 4]);
    expect(deltas.filter((d) => d.client_op_id === 'forged')).toEqual([]);
    expect(deltas.map((d) => String(d.server_seq))).toEqual((await opRows(canvasId)).map((r) => r.server_seq));
    expect(c.inbox.filter((m) => m.type === 'resumed')).toHaveLength(1); // a fill is not announced
    c.ws.close();
  });

  it('CanvasSync: detects a gap in live deltas from the numbers, resumes from its last canvas_seq, and after a dropped socket too; ends equal to the server', async () => {
    const { canvasId, editors } = await canvasWithEditors(2);
    const [reader, writer] = [editors[0]!, editors[1]!];
    const token = await signAccessToken(config.auth.jwtSecret, { sub: reader });
    // the transport loses live delta frames 3 and 7 (as a broken path might); replays get through
    const lost = new Set([3, 7]);
    const sent: string[] = [];
    const urls: string[] = [];
    const onmessage = Object.getOwnPropertyDescriptor(WebSocket.prototype, 'onmessage')!;
    class LossyWebSocket extends WebSocket {
      constructor(url: string) {
        super(url);
        urls.push(url);
        // the client's onmessage handler sees every frame but the lost ones
        Object.defineProperty(this, 'onmessage', {
          configurable: true,
          get: () => onmessage.get!.call(this),
          set: (fn: ((ev: WebSocket.MessageEvent) => void) | null) => onmessage.set!.call(this, fn && ((ev: WebSocket.MessageEvent) => {
            const m = JSON.parse(String(ev.data));
            if (m.type === 'delta' && !m.replaying && lost.delete(m.canvas_seq)) return;
            fn(ev);
          })),
        });
      }
      override send(data: any, ...rest: any[]): void {
        sent.push(String(data));
        (super.send as any)(data, ...rest);
      }
    }
    const applied: number[] = [];
    const sync = new CanvasSync({
      url: server.url, canvasId, token: () => token, WebSocket: LossyWebSocket as any,
      onChange: (_blocks, delta) => void (delta && applied.push(delta.canvas_seq)),
    });
    try {
      await sync.join();
      for (let i = 1; i <= 10; i++) {
        await mutate(db.sql, writer, canvasId, { action: 'create', patch: { type: 'text', content: { i } } });
        // the first gap's resume is over before frame 7 is lost: otherwise its replay can bring 7
        // (committed by then) and the second loss needs no resume of its own
        if (i === 5) expect(await until(() => sync.canvasSeq === 5)).toBe(true);
      }
      expect(await until(() => sync.canvasSeq === 10)).toBe(true);
      expect(lost.size).toBe(0); // both frames were really lost
      // it asked for what followed its last applied number, each time, on the same socket
      expect(sent.filter((f) => JSON.parse(f).type === 'resume').map((f) => JSON.parse(f).since_canvas_seq)).toEqual([undefined, 2, 6]);
      expect(urls).toHaveLength(1);

      // now the socket drops while the writer goes on: the reconnect resumes by canvas_seq
      sync.drop();
      for (let i = 11; i <= 16; i++) {
        await mutate(db.sql, writer, canvasId, { action: 'create', patch: { type: 'text', content: { i } } });
      }
      expect(await until(() => sync.canvasSeq === 16)).toBe(true);
      expect(urls).toHaveLength(2);
      expect(new URL(urls[1]!).searchParams.get('since_canvas_seq')).toBe('10');

      // every operation applied exactly once, in order, and the state is the server's
      expect(applied).toEqual(oneTo(16));
      const snap = await callAs(db.sql, reader, 'get_canvas_snapshot', [canvasId, null]);
      expect(snap.canvas_watermark).toBe(16);
      expect(sync.seq).toBe(Number(snap.watermark));
      const mine = [...sync.blocks.values()].map((b) => `${b.block_id}@${b.version}`).sort();
      expect(mine).toEqual(snap.blocks.map((b: any) => `${b.block_id}@${b.version}`).sort());
      expect(mine).toHaveLength(16);
    } finally {
      sync.close();
    }
  });
});
