import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors, mutate } from '../helpers/fixtures.ts';
import { bigCanvas as makeBigCanvas, blocksView, canvasState, type PagedBlock } from '../helpers/big-canvas.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { openH1 } from '../helpers/h1.ts';

// The snapshot (GET /api/v1/canvas/{id}/snapshot, GET /canvas/{id}, the H1 resume's `snapshot`)
// was the whole canvas in one answer: thousands of 64 KB blocks made one jsonb of hundreds of MB,
// then a string and a body of as much in the server process, for one request. It now comes a page
// at a time (1,000 blocks, about 4 MB of content; the first block always on it), every page with
// the first page's watermarks, pages after the first leaving out the blocks changed since; the
// pages plus the changes after that watermark are the whole canvas, consistent at the changes'
// watermark, however the canvas changes between page reads.

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer({}, { realtime: {} }); });
afterAll(async () => { await server?.stop(); await db.close(); });

const PAGE_BYTES = 4 * 1024 * 1024;
type Block = PagedBlock;

const bigCanvas = (n: number) => makeBigCanvas(db.sql, n);
const dbState = (canvasId: string) => canvasState(db.sql, canvasId);

const get = async (path: string, token: string) => {
  const res = await fetch(`${server.url}/api/v1${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, text: await res.text() };
};
const pause = (ms = 110) => new Promise((r) => setTimeout(r, ms)); // H7 (a page with a cursor): 10 a second

it('HTTP: pages stay near 4 MB, and pages plus the changes after their watermark are the canvas, with writes between page reads', async () => {
  const { canvasId, owner } = await bigCanvas(200); // about 12 MB of content: 3 or more pages
  const token = await tokenFor(server, owner);
  const first = await get(`/canvas/${canvasId}/snapshot`, token);
  expect(first.status).toBe(200);
  expect(first.text.length).toBeLessThan(PAGE_BYTES + 200_000);
  const page1 = JSON.parse(first.text);
  expect(page1.has_more).toBe(true);
  const w1 = page1.canvas_watermark as number;
  const onPage1 = new Set((page1.blocks as Block[]).map((b) => b.block_id));
  const later = (await dbState(canvasId)).blocks;
  const notYet = [...later.values()].filter((b) => !onPage1.has(b.block_id)).sort((a, b) => (a.y_order < b.y_order ? -1 : 1));

  // writes between the page reads: an update, a move to the front and a delete of blocks not read
  // yet, an update of one read already, and a new block
  const upd = notYet.at(-1)!;
  expect((await mutate(db.sql, owner, canvasId, { action: 'update', blockId: upd.block_id, baseVersion: upd.version,
    patch: { content: { text: 'changed after the first page' } } })).status).toBe('success');
  const mov = notYet.at(-2)!;
  expect((await mutate(db.sql, owner, canvasId, { action: 'move', blockId: mov.block_id, baseVersion: mov.version,
    patch: { after_id: null } })).status).toBe('success');
  const del = notYet.at(-3)!;
  expect((await mutate(db.sql, owner, canvasId, { action: 'delete', blockId: del.block_id, baseVersion: del.version })).status).toBe('success');
  const early = (page1.blocks as Block[])[1]!;
  expect((await mutate(db.sql, owner, canvasId, { action: 'update', blockId: early.block_id, baseVersion: early.version,
    patch: { content: { text: 'read, then changed' } } })).status).toBe('success');
  expect((await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'note', content: { text: 'new' } } })).status).toBe('success');

  const state = new Map<string, Block>((page1.blocks as Block[]).map((b) => [b.block_id, b]));
  let cursor = page1.next_cursor as string;
  let pages = 1;
  for (;;) {
    await pause();
    const next = await get(`/canvas/${canvasId}/snapshot?cursor=${encodeURIComponent(cursor)}`, token);
    expect(next.status).toBe(200);
    expect(next.text.length).toBeLessThan(PAGE_BYTES + 200_000);
    const page = JSON.parse(next.text);
    pages++;
    // every page speaks of the first page's state: the blocks changed since are left for the changes
    expect(page.canvas_watermark).toBe(w1);
    for (const b of page.blocks as Block[]) {
      expect([upd.block_id, mov.block_id, del.block_id]).not.toContain(b.block_id);
      expect(state.has(b.block_id)).toBe(false); // each block on one page only
      state.set(b.block_id, b);
    }
    if (!page.has_more) { expect(page.next_cursor).toBeNull(); break; }
    cursor = page.next_cursor;
  }
  expect(pages).toBeGreaterThan(2);
  // then the changes after the first page's watermark, applied in order
  let since = w1;
  for (;;) {
    const res = await get(`/canvas/${canvasId}/changes?since_canvas_seq=${since}`, token);
    expect(res.status).toBe(200);
    const page = JSON.parse(res.text);
    expect(page.snapshot_required).toBe(false);
    for (const c of page.changes) {
      if (c.action === 'delete') for (const id of [c.block_id, ...(c.deleted_ids ?? [])]) state.delete(id);
      else state.set(c.block_id, c.block);
    }
    since = page.canvas_watermark;
    if (!page.has_more) break;
  }
  const truth = await dbState(canvasId);
  expect(since).toBe(truth.canvasSeq);
  expect(state.size).toBe(truth.blocks.size);
  expect(blocksView(state)).toEqual(blocksView(truth.blocks));
}, 300_000);

it('HTTP: a cursor that is not one the endpoint returned is a 400 naming it', async () => {
  const { canvasId, owner } = await bigCanvas(1);
  const token = await tokenFor(server, owner);
  for (const cursor of ['abc', '99.99.a', '0.0.']) {
    await pause();
    const res = await get(`/canvas/${canvasId}/snapshot?cursor=${encodeURIComponent(cursor)}`, token);
    expect(res.status).toBe(400);
    expect(JSON.parse(res.text)).toMatchObject({ error: { code: 'invalid_input', field: 'cursor' } });
  }
});

it('H1: the snapshot comes in parts of about 4 MB, and the client assembles the whole canvas while it is written to', async () => {
  const { canvasId, owner } = await bigCanvas(150); // about 9 MB: 3 parts
  const token = await tokenFor(server, owner);
  // what the gateway sends, as the client reads it
  const frames: Array<{ type: string; bytes: number; part?: number; has_more?: boolean }> = [];
  class Recording extends WebSocket {
    constructor(url: string) {
      super(url);
      this.on('message', (data) => {
        const m = JSON.parse(String(data));
        frames.push({ type: m.type, bytes: String(data).length, part: m.part, has_more: m.has_more });
      });
    }
  }
  const sync = new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: Recording as any });
  // writes while the client joins: the parts after the first leave out what they change
  let writing = true;
  const writer = (async () => {
    for (let n = 0; writing && n < 60; n++) {
      const r = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'note', content: { text: `w${n}` } } });
      expect(r.status).toBe('success');
    }
  })();
  try {
    await sync.join();
    writing = false;
    await writer;
    const truth = await dbState(canvasId);
    // the client follows the log to the database's last change (deltas after the join)
    while (sync.canvasSeq < truth.canvasSeq) await new Promise((r) => setTimeout(r, 50));
    const parts = frames.filter((f) => f.type === 'snapshot');
    expect(parts.length).toBeGreaterThan(1);
    expect(parts.map((p) => p.part)).toEqual(parts.map((_, i) => i));
    expect(parts.map((p) => p.has_more)).toEqual(parts.map((_, i) => i < parts.length - 1));
    for (const p of parts) expect(p.bytes).toBeLessThan(PAGE_BYTES + 200_000);
    expect(blocksView(sync.blocks as Map<string, Block>)).toEqual(blocksView(truth.blocks));
  } finally {
    writing = false;
    sync.close();
  }
}, 300_000);

it('H1: after a snapshot in parts, onChange is told only whole states (the blocks written while the parts were read included)', async () => {
  const { canvasId, owner } = await bigCanvas(300); // about 18 MB: 5 parts, more than the socket buffers hold
  const token = await tokenFor(server, owner);
  const initial = (await dbState(canvasId)).blocks;
  // the last blocks in rank order are on the last part, which the gateway reads only once the
  // client has taken the parts before it: they are updated while the client holds its socket paused
  const last = [...initial.values()].sort((a, b) => (a.y_order < b.y_order ? -1 : 1)).slice(-5);
  let wrote: Promise<void> | null = null;
  class PausedAtFirstPart extends WebSocket {
    constructor(url: string) {
      super(url);
      this.on('message', (data) => {
        if (wrote || JSON.parse(String(data)).type !== 'snapshot') return;
        this.pause();
        wrote = (async () => {
          for (const b of last) {
            const r = await mutate(db.sql, owner, canvasId, { action: 'update', blockId: b.block_id, baseVersion: b.version, patch: { content: { text: 'changed while paged' } } });
            expect(r.status).toBe('success');
          }
        })().finally(() => this.resume());
      });
    }
  }
  const told: Array<{ delta: boolean; ids: number; changed: number }> = [];
  const sync = new CanvasSync({
    url: server.url, canvasId, token: () => token, WebSocket: PausedAtFirstPart as any,
    onChange: (blocks, delta) => told.push({
      delta: delta !== null,
      ids: [...initial.keys()].filter((id) => blocks.has(id)).length,
      changed: last.filter((b) => (blocks.get(b.block_id)?.content as any)?.text === 'changed while paged').length,
    }),
  });
  try {
    await sync.join();
    await wrote;
    expect(told.length).toBeGreaterThan(0);
    // every state told holds every block of the canvas, the updated ones as updated
    expect(told).toEqual(told.map((t) => ({ ...t, ids: initial.size, changed: last.length })));
    expect(told[0]!.delta).toBe(false);
  } finally {
    sync.close();
  }
}, 300_000);

it('H1: a client that does not say it joins parts is refused a snapshot in parts, told what to do; one part still comes to it', async () => {
  // a client from before the parts (it clears its blocks on every snapshot frame) would keep the
  // last part alone and take it for the canvas
  const { canvasId, owner } = await bigCanvas(150); // 3 parts
  const token = await tokenFor(server, owner);
  const old = await openH1(server.url, canvasId, token);
  try {
    await old.next((m) => m.type === 'hello');
    old.send({ type: 'resume', since_seq: 0, snapshot: true });
    expect(await old.next((m) => m.type === 'error')).toMatchObject({ code: 'invalid_input', field: 'snapshot_parts' });
    expect((await old.closed).code).toBe(4400);
    expect(old.inbox.filter((m) => m.type === 'snapshot')).toEqual([]);
  } finally {
    old.ws.close();
  }
  // with the parameter, the parts
  const joining = await openH1(server.url, canvasId, token, '&snapshot_parts=1');
  try {
    // the user's snapshot limit (H4, 1 a second) took the refused one's: sent again after its wait
    for (;;) {
      joining.send({ type: 'resume', since_seq: 0, snapshot: true });
      const m = await joining.next((x) => x.type === 'resumed' || (x.type === 'error' && x.code === 'rate_limited'), 60_000);
      if (m.type === 'resumed') break;
      await new Promise((r) => setTimeout(r, Number((m as { retry_after_ms?: number }).retry_after_ms ?? 1000)));
    }
    expect(joining.inbox.filter((m) => m.type === 'snapshot').length).toBeGreaterThan(1);
  } finally {
    joining.ws.close();
  }
  // a canvas of one page: as before, whatever the client
  const small = await createCanvasWithEditors(db.sql, 1);
  const one = await openH1(server.url, small.canvasId, await tokenFor(server, small.users[0]!));
  try {
    one.send({ type: 'resume', since_seq: 0, snapshot: true });
    await one.next((m) => m.type === 'resumed');
    expect(one.inbox.filter((m) => m.type === 'snapshot')).toHaveLength(1);
  } finally {
    one.ws.close();
  }
  // any other value of the parameter is refused at the upgrade, naming it
  const refused = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${token}&snapshot_parts=yes`);
    ws.once('open', () => { ws.close(); reject(new Error('upgraded')); });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (d) => { body += String(d); });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    ws.once('error', reject);
  });
  expect(refused.status).toBe(400);
  expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'invalid_input', field: 'snapshot_parts' } });
}, 300_000);
