import { randomUUID } from 'node:crypto';
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPotentiaClient, PotentiaError, type Canvas, type PotentiaClient } from '../../packages/client/src/index.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { startTestServer } from '../helpers/http.ts';
import { databaseUrlThrough, startTcpProxy } from '../helpers/tcp-proxy.ts';
import { awayFromWindowEdge, sleep, until } from '../helpers/wait.ts';

// What @potentia/client does with a change the server cannot take now or cannot take at all,
// against a real server process, as an app meets it (a newcomer's findings, 2026-12-04):
//  - over the per-user mutation limit (docs/limits.md) a canvas change is not refused: the
//    client resends it after the server's retry_after, as its docs say (it used to reject with a
//    RateLimitedError of a made-up 1 s, the server's delay dropped);
//  - a value JSON cannot carry (NaN, Infinity, 1e400, a BigInt, a cycle) is refused with
//    invalid_input naming it, and nothing is sent: NaN used to go out as null and delete the key,
//    and a BigInt left the change (and every later change of its block) pending for good;
//  - a malformed address at sign-up names the field `email`;
//  - a sign-in the auth server fails (5xx: its database unreachable) or that a proxy answers with
//    a page that is not JSON says so with the status and the server's message: auth-js reads no
//    body of a 5xx and made its message of the Response object, so the error said "{}".

const db = testDatabase(2);
/** Every mutate frame the client sent (its client_op_id), and the sockets it opened. */
const mutateFrames: string[] = [];
const sockets: WebSocket[] = [];
class RecordingWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    sockets.push(this);
  }

  override send(data: unknown, ...rest: unknown[]): void {
    if (typeof data === 'string' && data.startsWith('{"type":"mutate"')) mutateFrames.push((JSON.parse(data) as { client_op_id: string }).client_op_id);
    (super.send as (...a: unknown[]) => void)(data, ...rest);
  }
}
let server: DevServer;
let client: PotentiaClient;
let canvas: Canvas;
let userId: string;
const heard: PotentiaError[] = [];

beforeAll(async () => {
  server = await startDevServer();
  client = createPotentiaClient({ url: server.url, anonKey: server.anonKey, WebSocket: RecordingWebSocket, auth: { persistSession: false },
    canvas: { reconnectDelayMs: () => 100 } });
  userId = (await client.auth.signUp(`refusals-${randomUUID()}@example.com`, 'correct horse battery')).id;
  const ws = await client.workspaces.create('Refusals');
  const { canvas_id } = await client.canvases.create(ws.workspace_id, 'Refusals');
  canvas = client.canvas(canvas_id);
  canvas.onError((err) => void heard.push(err));
  await canvas.connect();
}, 90_000);

afterAll(async () => {
  canvas?.close();
  await server?.stop();
  await db.close();
});

describe('@potentia/client: changes the server cannot take', () => {
  it('a malformed address at sign-up: validation_failed naming email', async () => {
    await expect(client.auth.signUp('not-an-email', 'correct horse battery'))
      .rejects.toMatchObject({ code: 'validation_failed', field: 'email', status: 400 });
  });

  it('NaN, Infinity, 1e400, a BigInt and a cycle are refused naming the field; nothing is sent, and the block goes on', async () => {
    const block = await canvas.create({ type: 'text', content: { text: 'kept', count: 1 } });
    const cycle: Record<string, unknown> = { a: 1 };
    cycle['self'] = cycle;
    let deep: Record<string, unknown> = { end: true };
    for (let i = 0; i < 3500; i++) deep = { d: deep };
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ count: NaN }, 'patch.content.count'],
      [{ count: Infinity }, 'patch.content.count'],
      [{ nested: { list: [1, 1e400] } }, 'patch.content.nested.list.1'],
      [{ count: 10n }, 'patch.content.count'],
      [{ loop: cycle }, 'patch.content.loop.self'],
      // what JSON turns into null or {} as silently: a boxed NaN, an invalid Date, a Set, a Map
      [{ count: new Number(NaN) }, 'patch.content.count'],
      [{ when: new Date('garbage') }, 'patch.content.when'],
      [{ tags: new Set(['a', 'b']) }, 'patch.content.tags'],
      [{ index: new Map([['a', 1]]) }, 'patch.content.index'],
      // what made update() throw instead of reject: a getter that throws, nesting past the engine's stack
      [Object.defineProperty({}, 'boom', { enumerable: true, get: () => { throw new Error('getter failed'); } }), 'patch.content'],
      [{ deep }, 'patch.content.deep.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d.d'],
    ];
    for (const [content, field] of cases) {
      heard.length = 0;
      let call!: Promise<unknown>;
      expect(() => (call = canvas.update(block.block_id, { content })), field).not.toThrow();
      const err = await call.catch((e: unknown) => e);
      expect(err, field).toBeInstanceOf(PotentiaError);
      expect(err, field).toMatchObject({ code: 'invalid_input', field });
      expect(heard.map((e) => e.field), field).toEqual([field]); // onError hears every refused change
      expect(canvas.block(block.block_id)?.content, field).toEqual({ text: 'kept', count: 1 }); // rolled back
    }
    await expect(canvas.create({ type: 'text', content: { big: 1e400 } })).rejects.toMatchObject({ code: 'invalid_input', field: 'patch.content.big' });
    // the block was never held up by what was refused: the next change goes out and applies;
    // a Date goes as its ISO string, and the local state shows what was sent
    const pending = canvas.update(block.block_id, { content: { count: 2, when: new Date(Date.UTC(2026, 11, 4)) } });
    expect(canvas.block(block.block_id)?.content['when']).toBe('2026-12-04T00:00:00.000Z');
    const next = await pending;
    expect(next.content).toEqual({ text: 'kept', count: 2, when: '2026-12-04T00:00:00.000Z' });
    const [row] = await db.sql`select content, version from app.blocks where block_id = ${block.block_id}`;
    expect(row).toEqual({ content: next.content, version: next.version });
  });

  it('a presence JSON cannot carry is refused by set(), naming the field; later ones go out', async () => {
    heard.length = 0;
    let err: unknown;
    try {
      canvas.presence.set({ selection: { blockId: randomUUID(), start: NaN, end: 1 } });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PotentiaError);
    expect(err).toMatchObject({ code: 'invalid_input', field: 'presence.selection.start' });
    canvas.presence.set({ cursor: { x: 1, y: 2 } });
    // the broadcast others receive (realtime.messages): the cursor went out
    await until(async () => (await db.sql`select 1 from realtime.messages where topic = ${`canvas:${canvas.id}`} and event = 'presence'
      and payload @> ${db.sql.json({ user_id: userId, cursor: { cursor: { x: 1, y: 2 } } })}`).length > 0, 5_000, 'the presence broadcast');
    expect(heard).toEqual([]);
  });

  it('over the per-user mutation limit a change waits for the next window and is applied, never refused', async () => {
    await awayFromWindowEdge(60, 3_000);
    // this user's minute is used up (app.rate_limit_slots: a slot per mutation, docs/limits.md)
    const [w] = await db.sql`
      insert into app.rate_limit_slots (window_key, user_id, window_start, bucket, slot)
      select internal.rate_limit_window_key(${userId}::uuid, 'mutations', internal.rate_window_start(60)),
             ${userId}::uuid, internal.rate_window_start(60), 'mutations', g
      from generate_series(1, internal.setting_int('mutations_per_minute')) g
      on conflict do nothing
      returning window_start`;
    const nextWindow = new Date(w!.window_start as Date).getTime() + 60_000;
    heard.length = 0;
    mutateFrames.length = 0;
    const creating = canvas.create({ type: 'text', content: { text: 'after the limit' } });
    await until(() => mutateFrames.length === 1, 5_000, 'the first send');
    await sleep(500); // refused (rate_limited, retry_after: the rest of the minute)
    // a reconnect meanwhile sends nothing before the server's delay (it used to resend at once, into the full window)
    sockets.at(-1)!.terminate();
    await until(() => canvas.status !== 'live', 5_000, 'the socket to drop');
    await until(() => canvas.status === 'live', 10_000, 'the reconnect');
    const created = await creating;
    expect(created.content).toEqual({ text: 'after the limit' });
    expect(heard).toEqual([]);
    expect(mutateFrames).toEqual([mutateFrames[0], mutateFrames[0]]); // refused once, sent again once the window reopened
    // applied in the next window, as the server's retry_after said
    const [op] = await db.sql`select created_at from app.blocks where block_id = ${created.block_id}`;
    expect(new Date(op!.created_at as Date).getTime()).toBeGreaterThanOrEqual(nextWindow);
  }, 90_000);
});

describe('@potentia/client: sign-in when the auth server fails', () => {
  it('a 503 from /auth/v1 (its database unreachable) carries the status and the server\'s message, not "{}"', async () => {
    const direct = new URL(testDatabaseUrl());
    const proxy = await startTcpProxy(Number(direct.port || 5432));
    const viaProxy = databaseUrlThrough(proxy, direct);
    const failing = await startTestServer({ databaseUrl: viaProxy });
    try {
      const c = createPotentiaClient({ url: failing.url, anonKey: server.anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      proxy.cut();
      const err = await c.auth.signIn(`nobody-${randomUUID()}@example.com`, 'correct horse battery').then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(PotentiaError);
      expect(err).toMatchObject({ code: 'unavailable', status: 503 });
      expect((err as Error).message).toMatch(/^HTTP 503 Service Unavailable: the database .+ \(unexpected_failure\)$/);
    } finally {
      await failing.stop();
      await proxy.close();
    }
  });

  it('an error page that is not JSON (a proxy\'s 502, 413) carries its status and status text', async () => {
    let status = 502;
    const page: HttpServer = createServer((_req, res) => {
      res.writeHead(status, { 'content-type': 'text/html' }).end('<html><body><h1>nginx</h1></body></html>');
    });
    await new Promise<void>((r) => page.listen(0, '127.0.0.1', r));
    try {
      const c = createPotentiaClient({ url: `http://127.0.0.1:${(page.address() as AddressInfo).port}`, anonKey: 'any', WebSocket,
        auth: { persistSession: false, autoRefreshToken: false } });
      const signIn = () => c.auth.signIn('someone@example.com', 'correct horse battery').then(() => null, (e: unknown) => e);
      const gateway = await signIn();
      expect(gateway).toMatchObject({ code: 'unavailable', status: 502, message: 'HTTP 502 Bad Gateway' });
      status = 413;
      // a 4xx auth-js could not parse was an AuthUnknownError without status: the client called it a network failure
      expect(await signIn()).toMatchObject({ code: 'auth_error', status: 413, message: 'HTTP 413 Payload Too Large' });
    } finally {
      await new Promise((r) => page.close(r));
    }
  });
});
