import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';

// H1 /ws/canvas/{id}: mutate → ack / conflict, scope, rate limit, resume with no gap or duplicate.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
let server: Server;

beforeAll(async () => {
  server = await startServer(config);
});
afterAll(async () => {
  await server?.stop();
  await db.close();
});

type Conn = H1Conn;

async function open(canvasId: string, userId: string, opts: { scope?: string; query?: string } = {}): Promise<Conn> {
  const token = await signAccessToken(config.auth.jwtSecret, { sub: userId, ...(opts.scope !== undefined ? { scope: opts.scope } : {}) });
  return openH1(server.url, canvasId, token, opts.query ?? '');
}

const is = <T extends ServerMessage['type']>(type: T, extra: (m: any) => boolean = () => true) => (m: ServerMessage) => m.type === type && extra(m);

describe('H1 /ws/canvas/{id}', () => {
  it('acks a mutation with server_seq and version, and reports a conflict with the current block', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const c = await open(canvasId, users.editor!);
    expect(await c.next(is('hello'))).toMatchObject({ v: 1, canvas_id: canvasId, can_write: true });
    const op = randomUUID();
    c.send({ type: 'mutate', client_op_id: op, action: 'create', patch: { type: 'text', content: { text: 'hi' } } });
    const ack: any = await c.next(is('ack'));
    expect(ack).toMatchObject({ client_op_id: op, status: 'success', version: 1 });
    expect(ack.server_seq).toBeGreaterThan(0);
    // the same op again: the original result, nothing applied twice
    c.send({ type: 'mutate', client_op_id: op, action: 'create', patch: { type: 'text', content: { text: 'hi' } } });
    expect(await c.next(is('ack', (m) => m.client_op_id === op))).toMatchObject({ server_seq: ack.server_seq });

    await mutate(db.sql, users.owner!, canvasId, { blockId: ack.block_id, action: 'update', baseVersion: 1, patch: { content: { text: 'theirs' } } });
    c.send({ type: 'mutate', client_op_id: randomUUID(), action: 'update', block_id: ack.block_id, base_version: 1, patch: { content: { text: 'mine' } } });
    const conflict: any = await c.next(is('conflict'));
    expect(conflict.block).toMatchObject({ block_id: ack.block_id, version: 2, content: { text: 'theirs' } });
    c.ws.close();
  });

  it('is read-only for a token whose scope lacks canvas:{id}:write, and refuses non-members', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const c = await open(canvasId, users.owner!, { scope: `canvas:${canvasId}:read` });
    expect(await c.next(is('hello'))).toMatchObject({ can_write: false });
    c.send({ type: 'mutate', client_op_id: 'x1', action: 'create', patch: { type: 'text' } });
    expect(await c.next(is('error'))).toMatchObject({ code: 'read_only', client_op_id: 'x1' });
    c.ws.close();
    const w = await open(canvasId, users.owner!, { scope: `canvas:${canvasId}:write` });
    expect(await w.next(is('hello'))).toMatchObject({ can_write: true });
    w.ws.close();
    const stranger = await createUser(db.sql, 'stranger');
    await expect(open(canvasId, stranger)).rejects.toThrow(/404/);
  });

  it('closes when its token expires (exp + the 5 s leeway): error unauthorized, close 4401; until then it writes', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 1 });
    const c = await openH1(server.url, canvasId, token);
    await c.next(is('hello'));
    c.send({ type: 'mutate', client_op_id: randomUUID(), action: 'create', patch: { type: 'text' } });
    expect(await c.next(is('ack'))).toMatchObject({ status: 'success' });
    // until 2026-12-04 an H1 socket outlived its token: writes were acked long after exp
    expect(await c.next(is('error'), 15_000)).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/^the access token expired \d+ seconds ago/) });
    expect((await c.closed).code).toBe(4401);
  }, 20_000);

  it('answers more than 10 messages per second with a rate_limited error frame', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const c = await open(canvasId, users.owner!);
    await c.next(is('hello'));
    for (let i = 0; i < 13; i++) c.send({ type: 'ping' });
    const err: any = await c.next(is('error'));
    expect(err).toMatchObject({ code: 'rate_limited' });
    expect(err.retry_after_ms).toBeGreaterThan(0);
    await new Promise((r) => setTimeout(r, 300));
    expect(c.inbox.filter((m) => m.type === 'pong')).toHaveLength(10);
    expect(c.inbox.filter((m) => m.type === 'error')).toHaveLength(3);
    c.ws.close();
  });

  it('resumes across a forced disconnect while another client keeps writing: ends with exactly the server state', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const state = new Map<string, any>();
    let lastSeq = 0;
    const seen = new Set<number>();
    const apply = (m: any) => {
      expect(seen.has(m.server_seq)).toBe(false); // no duplicate
      expect(m.server_seq).toBeGreaterThan(lastSeq); // in order
      seen.add(m.server_seq);
      lastSeq = m.server_seq;
      if (m.action === 'delete') for (const id of [m.block_id, ...(m.deleted_ids ?? [])]) state.delete(id);
      else state.set(m.block_id, m.block);
    };
    const reader = await open(canvasId, users.editor!);
    await reader.next(is('hello'));
    reader.send({ type: 'resume', since_seq: 0, snapshot: true });
    const snap: any = await reader.next(is('snapshot'));
    for (const b of snap.blocks) state.set(b.block_id, b);
    lastSeq = snap.watermark;
    reader.ws.on('message', (d) => { const m = JSON.parse(String(d)); if (m.type === 'delta') apply(m); });
    await reader.next(is('resumed'));

    // the writer keeps going the whole time
    let writing = true;
    const ids: string[] = [];
    const writer = (async () => {
      for (let i = 0; writing && i < 60; i++) {
        const r = i % 4 === 3 && ids.length > 0
          ? await mutate(db.sql, users.owner!, canvasId, { blockId: ids[0]!, action: 'update', patch: { content: { text: `u${i}` } } })
          : await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: `c${i}` } } });
        if (r.status === 'success' && r.block_id && !ids.includes(r.block_id)) ids.push(r.block_id);
        await new Promise((res) => setTimeout(res, 10));
      }
    })();
    await new Promise((r) => setTimeout(r, 150));
    reader.ws.terminate(); // forced disconnect
    await new Promise((r) => setTimeout(r, 250)); // writes land while we are away
    const again = await open(canvasId, users.editor!, { query: `&since_seq=${lastSeq}` });
    again.ws.on('message', (d) => { const m = JSON.parse(String(d)); if (m.type === 'delta') apply(m); });
    await again.next(is('resumed'));
    await new Promise((r) => setTimeout(r, 200));
    writing = false;
    await writer;
    const { watermark, blocks } = await callAs(db.sql, users.owner!, 'get_canvas_snapshot', [canvasId]);
    const end = Date.now() + 8000;
    while (lastSeq < Number(watermark) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(lastSeq).toBe(Number(watermark));
    const server = new Map((blocks as any[]).map((b) => [b.block_id, b]));
    expect([...state.keys()].sort()).toEqual([...server.keys()].sort());
    for (const [id, b] of server) expect({ v: state.get(id)?.version, c: state.get(id)?.content }).toEqual({ v: b.version, c: b.content });
    again.ws.close();
  });
});

describe('CanvasSync client helper', () => {
  it('joins, applies deltas, and resends unacked mutations with the same client_op_id after a reconnect', async () => {
    const { CanvasSync } = await import('../../packages/client/src/canvas-sync.ts');
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
    const sync = new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: WebSocket as any, reconnectDelayMs: () => 50 });
    await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'before' } } });
    await sync.join();
    expect(sync.blocks.size).toBe(1);
    const first = await sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'mine' } } });
    expect(first).toMatchObject({ type: 'ack', status: 'success' });
    // a mutation in flight when the socket drops is resent (same client_op_id) and applied once
    const opId = randomUUID();
    const inFlight = sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'in flight' } } }, opId);
    sync.drop();
    await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'while away' } } });
    expect(await inFlight).toMatchObject({ type: 'ack', client_op_id: opId });
    const { watermark, blocks } = await callAs(db.sql, users.owner!, 'get_canvas_snapshot', [canvasId]);
    const end = Date.now() + 5000;
    while (sync.seq < Number(watermark) && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(sync.seq).toBe(Number(watermark));
    expect([...sync.blocks.keys()].sort()).toEqual((blocks as any[]).map((b) => b.block_id).sort());
    const [{ n }] = await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${opId} and status = 'success'` as any;
    expect(n).toBe(1);
    sync.close();
  });

  it('a client_op_id used for another operation: refused by the client while pending, by the server once applied, nothing applied', async () => {
    const { CanvasSync } = await import('../../packages/client/src/canvas-sync.ts');
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
    const sync = new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: WebSocket as any, reconnectDelayMs: () => 50 });
    await sync.join();
    const a = await sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'a' } } });
    const b = await sync.mutate({ action: 'create', patch: { type: 'text', content: { text: 'b' } } });
    if (a.type !== 'ack' || b.type !== 'ack') throw new Error('setup: both creates apply');
    const opId = randomUUID();
    const onA = sync.mutate({ action: 'update', block_id: a.block_id!, base_version: 1, patch: { content: { text: 'a2' } } }, opId);
    const onB = sync.mutate({ action: 'update', block_id: b.block_id!, base_version: 1, patch: { content: { text: 'b2' } } }, opId);
    const sameAgain = sync.mutate({ action: 'update', block_id: a.block_id!, base_version: 1, patch: { content: { text: 'a2' } } }, opId);
    expect(await onB).toMatchObject({ type: 'rejected', error: { code: 'invalid_input', field: 'client_op_id' } });
    expect(await onA).toMatchObject({ type: 'ack', status: 'success', version: 2 });
    expect(await sameAgain).toEqual(await onA);
    // applied now: the server refuses the reuse, over H1 too
    const late = await sync.mutate({ action: 'update', block_id: b.block_id!, base_version: 1, patch: { content: { text: 'b3' } } }, opId);
    expect(late).toMatchObject({ type: 'rejected', error: { code: 'invalid_input', field: 'client_op_id' } });
    const [row] = await db.sql`select version, content from app.blocks where block_id = ${b.block_id!}` as any;
    expect(row).toMatchObject({ version: 1, content: { text: 'b' } });
    sync.close();
  });
});
