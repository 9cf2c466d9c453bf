import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, createPotentiaClient, TimeoutError, type PotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { recordFetches } from '../helpers/fetch-recorder.ts';
import { startSilentListener, type SilentListener } from '../helpers/silent-listener.ts';
import { startTcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

// @potentia/client's per-call AbortSignal (`{ signal }`, as fetch and supabase-js's
// functions.invoke take it). Before, no call took one: an app could not end a call it no longer
// wanted (a page left, a search typed over) short of the client's timeoutMs, and a create whose
// request was aborted underneath came back as `network` and was sent again. Now every HTTP call
// and every canvas change takes one: an abort rejects with AbortError (code `aborted`), is never
// sent again nor refreshes the session, an already-aborted signal sends nothing, and the
// request's connection is closed; it composes with timeoutMs (whichever comes first). A canvas
// change not yet on a socket is taken back; one already sent rejects but goes on (H1 has no
// cancel), resent with its client_op_id until answered, applied once. Against a real server
// process and Postgres (a canvas row locked by another transaction holds mutations), and a real
// TCP listener that accepts and never answers. Outcomes only: no duration is asserted.

const db = testDatabase(2);
let server: DevServer;
let anonKey: string;
/** A listener that accepts every connection, reads it, and never answers. */
let silent: SilentListener;
let fetches: ReturnType<typeof recordFetches>;

beforeAll(async () => {
  fetches = recordFetches();
  server = await startDevServer();
  anonKey = server.anonKey;
  silent = await startSilentListener();
}, 90_000);

afterAll(async () => {
  fetches?.restore();
  await silent?.close();
  await server?.stop();
  await db.close();
});

/** The silent listener's connections whose request line includes `path` (and has its whole body, for a POST). */
const silentlyGot = (path: string) => silent.connections.filter((c) => {
  const line = c.text.split('\r\n', 1)[0]!;
  return line.includes(path) && (line.startsWith('GET') || /\r\n\r\n.+/s.test(c.text));
});

const signedIn = async (): Promise<{ client: PotentiaClient; userId: string }> => {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  const { id } = await client.auth.signUp(`abort-${randomUUID()}@example.com`, 'correct horse battery');
  return { client, userId: id };
};

describe('@potentia/client: an AbortSignal on every HTTP call', () => {
  it('an already-aborted signal: every call rejects with AbortError and sends nothing (the session stays)', async () => {
    const { client, userId } = await signedIn();
    const { workspace_id } = await client.workspaces.create('Aborted');
    const signal = AbortSignal.abort(new Error('the page was left'));
    const before = fetches.sent.length;
    const workspaceId = randomUUID();
    const canvasId = randomUUID();
    const calls: Array<[string, Promise<unknown>]> = [
      ['signUp', client.auth.signUp(`abort-${randomUUID()}@example.com`, 'correct horse battery', { signal })],
      ['signIn', client.auth.signIn('nobody@example.com', 'correct horse battery', { signal })],
      ['signOut', client.auth.signOut({ signal })],
      ['accessToken', client.auth.accessToken({ signal })],
      ['workspaces.list', client.workspaces.list({ signal })],
      ['workspaces.create', client.workspaces.create('Never', { workspaceId, signal })],
      ['workspaces.members', client.workspaces.members(workspace_id, { signal })],
      ['workspaces.addMember', client.workspaces.addMember(workspace_id, 'bob@example.com', 'editor', { signal })],
      ['canvases.list', client.canvases.list({ signal })],
      ['canvases.create', client.canvases.create(workspace_id, 'Never', { canvasId, signal })],
    ];
    for (const [name, call] of calls) {
      const err = await call.then(() => null, (e: unknown) => e);
      expect(err, name).toBeInstanceOf(AbortError);
      expect(err, name).toMatchObject({ code: 'aborted', name: 'AbortError', reason: signal.reason });
    }
    expect(fetches.sent.slice(before)).toEqual([]);
    expect(client.auth.user()?.id).toBe(userId);
    const [rows] = await db.sql`select (select count(*)::int from app.workspaces where workspace_id = ${workspaceId}) as w,
                                       (select count(*)::int from app.canvases where canvas_id = ${canvasId}) as c`;
    expect(rows).toEqual({ w: 0, c: 0 });
    // the session is untouched and works
    expect((await client.workspaces.list()).map((w) => w.workspace_id)).toEqual([workspace_id]);
    await client.auth.signOut();
  }, 60_000);

  it('aborted while a silent server holds the request: AbortError, the connection closed, nothing sent again', async () => {
    const { port } = silent;
    // no deadline at all: only the signal ends these calls
    const client = createPotentiaClient({ url: `http://127.0.0.1:${port}`, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false }, timeoutMs: 0 });
    const abortOnArrival = async <T>(path: string, call: (signal: AbortSignal) => Promise<T>) => {
      const controller = new AbortController();
      const before = silentlyGot(path).length;
      const p = call(controller.signal);
      p.catch(() => {});
      await until(() => silentlyGot(path).length > before, 10_000, `the request on ${path}`);
      controller.abort();
      const err = await p.then(() => null, (e: unknown) => e);
      // its connection is closed, not left waiting for an answer nobody would read
      await until(() => silentlyGot(path).slice(before).every((c) => c.closed), 10_000, `the connection of ${path} closed`);
      return { err, requests: silentlyGot(path).length - before };
    };

    // a sign-in aborted: auth-js takes no signal; its request is aborted all the same
    const signIn = await abortOnArrival('/auth/v1/token', (signal) => client.auth.signIn('silent@example.com', 'correct horse battery', { signal }));
    expect(signIn.err).toBeInstanceOf(AbortError);
    expect(signIn.requests).toBe(1);
    expect(client.auth.user()).toBeNull();

    const list = await abortOnArrival('GET /functions/v1/workspaces', (signal) => client.workspaces.list({ signal }));
    expect(list.err).toMatchObject({ code: 'aborted', name: 'AbortError' });
    expect(list.requests).toBe(1);

    // a create whose request was aborted is not an unknown outcome to resend: sent once
    const canvasId = randomUUID();
    const create = await abortOnArrival('POST /functions/v1/canvas', (signal) => client.canvases.create(randomUUID(), 'Silent', { canvasId, signal }));
    expect(create.err).toMatchObject({ code: 'aborted' });
    expect(create.requests).toBe(1);
  }, 60_000);

  it("one call's abort ends its own request only: a second sign-in with the same address, sent meanwhile, signs in", async () => {
    // CallSignals matched auth-js's requests to calls by path and email only: a sign-in sent twice
    // (a double submit; the app aborts the first) gave the second request the first call's signal
    // too, so the abort of the first ended the second, which rejected although nobody aborted it
    const email = `abort-${randomUUID()}@example.com`;
    const { id } = await createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } }).auth.signUp(email, 'correct horse battery');
    const proxy = await startTcpProxy(Number(new URL(server.url).port));
    try {
      const client = createPotentiaClient({ url: proxy.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false }, timeoutMs: 0 });
      proxy.cut({ incoming: 'blackhole' }); // both requests are held until restore()
      const first = new AbortController();
      const aborted = client.auth.signIn(email, 'correct horse battery', { signal: first.signal });
      aborted.catch(() => {});
      const second = client.auth.signIn(email, 'correct horse battery');
      second.catch(() => {});
      await until(() => proxy.counters.blackholed >= 2, 10_000, 'both sign-in requests');
      first.abort();
      await expect(aborted).rejects.toBeInstanceOf(AbortError);
      proxy.restore();
      expect((await second).id).toBe(id);
      expect(client.auth.user()?.id).toBe(id);
    } finally {
      await proxy.close();
    }
  }, 60_000);

  it('with timeoutMs: whichever comes first ends the call', async () => {
    const { port } = silent;
    const url = `http://127.0.0.1:${port}`;
    const short = createPotentiaClient({ url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false }, timeoutMs: 300 });
    // the deadline first: a signal that never aborts changes nothing
    await expect(short.workspaces.list({ signal: new AbortController().signal })).rejects.toBeInstanceOf(TimeoutError);
    await expect(short.auth.signIn('silent@example.com', 'correct horse battery', { signal: new AbortController().signal })).rejects.toBeInstanceOf(TimeoutError);
    // the signal first
    const long = createPotentiaClient({ url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false }, timeoutMs: 600_000 });
    const controller = new AbortController();
    const before = silentlyGot('GET /functions/v1/canvas').length;
    const list = long.canvases.list({ signal: controller.signal });
    list.catch(() => {});
    await until(() => silentlyGot('GET /functions/v1/canvas').length > before, 10_000, 'the list request');
    controller.abort();
    await expect(list).rejects.toBeInstanceOf(AbortError);
  }, 60_000);
});

describe('@potentia/client: a deadline longer than a timer can wait', () => {
  it('timeoutMs past 2^31 - 1 ms (about 24.8 days) is a deadline that far off, not one that ends every call at once', async () => {
    // setTimeout (Node and browsers alike) fires a delay above 2^31 - 1 ms after 1 ms: a client
    // made with timeoutMs: 30 days, or a change given it, timed out at once
    const far = 2 ** 31;
    const email = `abort-${randomUUID()}@example.com`;
    const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false }, timeoutMs: far });
    const { id } = await client.auth.signUp(email, 'correct horse battery');
    const { workspace_id } = await client.workspaces.create('Far');
    expect((await client.workspaces.list()).map((w) => w.workspace_id)).toEqual([workspace_id]);
    const { canvas_id } = await client.canvases.create(workspace_id, 'Far');
    const canvas = client.canvas(canvas_id);
    const made = canvas.create({ type: 'text' }, { timeoutMs: far }); // offline: waits for connect()
    await canvas.connect();
    expect((await made).created_by).toBe(id);
    canvas.close();
    await client.auth.signOut();
  }, 60_000);
});

describe('@potentia/client: an AbortSignal and a deadline on canvas changes', () => {
  it('a change not yet sent (the canvas not connected): taken back, never sent', async () => {
    const { client } = await signedIn();
    const { workspace_id } = await client.workspaces.create('Offline');
    const { canvas_id } = await client.canvases.create(workspace_id, 'Offline');
    const canvas = client.canvas(canvas_id);
    const [aborted, timedOut, never, kept] = [randomUUID(), randomUUID(), randomUUID(), randomUUID()];
    const controller = new AbortController();
    const p1 = canvas.create({ type: 'text', id: aborted }, { signal: controller.signal });
    const p2 = canvas.create({ type: 'text', id: timedOut }, { timeoutMs: 50 });
    const p3 = canvas.create({ type: 'text', id: never }, { signal: AbortSignal.abort() });
    const p4 = canvas.create({ type: 'text', id: kept });
    expect(canvas.block(aborted)).toBeDefined();
    controller.abort();
    await expect(p1).rejects.toMatchObject({ code: 'aborted', name: 'AbortError' });
    await expect(p2).rejects.toMatchObject({ code: 'timeout', name: 'TimeoutError', timeoutMs: 50 });
    await expect(p3).rejects.toMatchObject({ code: 'aborted' });
    for (const id of [aborted, timedOut, never]) expect(canvas.block(id), id).toBeUndefined();
    expect(canvas.pending).toBe(1);
    await canvas.connect();
    expect((await p4).block_id).toBe(kept);
    const rows = await db.sql<{ block_id: string }[]>`select block_id from app.blocks where canvas_id = ${canvas_id}`;
    expect(rows.map((r) => r.block_id)).toEqual([kept]);
    const ops = await db.sql<{ n: number }[]>`select count(*)::int as n from app.block_operations where canvas_id = ${canvas_id}`;
    expect(ops[0]!.n).toBe(1);
    canvas.close();
    await client.auth.signOut();
  }, 60_000);

  it('a clientOpId or content the server refuses: rejected invalid_input naming the field, as the server named it', async () => {
    // the server's input policy refuses these over H1 with an `error` frame naming the field
    // (client_op_id, patch.content.a); the client dropped the field, and the rejection named none
    const { client } = await signedIn();
    const { workspace_id } = await client.workspaces.create('Refused');
    const { canvas_id } = await client.canvases.create(workspace_id, 'Refused');
    const canvas = client.canvas(canvas_id);
    await canvas.connect();
    const cases: Array<[() => Promise<unknown>, string]> = [
      [() => canvas.create({ type: 'text' }, { clientOpId: 'a\uD800' }), 'client_op_id'],
      [() => canvas.create({ type: 'text' }, { clientOpId: 'a\u0000b' }), 'client_op_id'],
      [() => canvas.create({ type: 'text', content: { a: 'x\u0000' } }), 'patch.content.a'],
    ];
    for (const [change, field] of cases) {
      await expect(change()).rejects.toMatchObject({ code: 'invalid_input', field });
    }
    expect(canvas.pending).toBe(0);
    const rows = await db.sql<{ n: number }[]>`select count(*)::int as n from app.block_operations where canvas_id = ${canvas_id}`;
    expect(rows[0]!.n).toBe(0);
    canvas.close();
    await client.auth.signOut();
  }, 60_000);

  it('a change already sent and held by the server: rejects, goes on, applies once; one waiting behind it is taken back', async () => {
    const { client } = await signedIn();
    const { workspace_id } = await client.workspaces.create('Held');
    const { canvas_id } = await client.canvases.create(workspace_id, 'Held');
    const canvas = client.canvas(canvas_id);
    await canvas.connect();
    const a = await canvas.create({ type: 'text', content: { n: 0 } });
    const b = await canvas.create({ type: 'text', content: { n: 0 } });
    const tx = await reservedTransaction(db.sql);
    let abortedErr: unknown;
    let timedOutErr: unknown;
    try {
      // every mutation of the canvas locks its row first: these wait for this transaction
      await tx.conn`select from app.canvases where canvas_id = ${canvas_id} for update`;
      const controller = new AbortController();
      const behind = new AbortController();
      const pa = canvas.update(a.block_id, { content: { n: 1 } }, { signal: controller.signal });
      const pb = canvas.update(b.block_id, { content: { n: 2 } }, { timeoutMs: 300 });
      // waits for pa (changes of one block go out in order): never sent
      const pc = canvas.update(a.block_id, { content: { m: 3 } }, { signal: behind.signal });
      await tx.waitedFor('the canvas updates');
      controller.abort();
      behind.abort();
      abortedErr = await pa.then(() => null, (e: unknown) => e);
      timedOutErr = await pb.then(() => null, (e: unknown) => e);
      await expect(pc).rejects.toMatchObject({ code: 'aborted' });
      expect(canvas.block(a.block_id)?.content).toEqual({ n: 1 }); // pc rolled back, pa still on top
      expect(canvas.pending).toBe(2);
      // the client is sending it still: a second send of its client_op_id here is refused
      await expect(canvas.update(b.block_id, { content: { n: 2 } }, { clientOpId: (timedOutErr as TimeoutError).clientOpId! }))
        .rejects.toMatchObject({ code: 'invalid_input', field: 'clientOpId' });
    } finally {
      await tx.release();
    }
    expect(abortedErr).toBeInstanceOf(AbortError);
    expect(abortedErr).toMatchObject({ code: 'aborted', clientOpId: expect.any(String) });
    expect(timedOutErr).toBeInstanceOf(TimeoutError);
    expect(timedOutErr).toMatchObject({ code: 'timeout', timeoutMs: 300, clientOpId: expect.any(String) });
    // the client goes on: both apply, once each
    await until(() => canvas.pending === 0, 20_000, 'both changes answered');
    expect(canvas.block(a.block_id)?.content).toEqual({ n: 1 });
    expect(canvas.block(b.block_id)?.content).toEqual({ n: 2 });
    for (const err of [abortedErr, timedOutErr] as Array<{ clientOpId: string }>) {
      const rows = await db.sql<{ n: number }[]>`select count(*)::int as n from app.block_operations where client_op_id = ${err.clientOpId} and status = 'success'`;
      expect(rows[0]!.n).toBe(1);
    }
    const [blockA] = await db.sql<{ content: Record<string, unknown> }[]>`select content from app.blocks where block_id = ${a.block_id}`;
    expect(blockA!.content).toEqual({ n: 1 }); // pc (m: 3) was never sent
    canvas.close();
    // after a reload: the same change with the same client_op_id learns its outcome, applied once
    const again = client.canvas(canvas_id);
    await again.connect();
    const version = again.block(b.block_id)!.version;
    const resent = await again.update(b.block_id, { content: { n: 2 } }, { clientOpId: (timedOutErr as TimeoutError).clientOpId! });
    expect(resent.version).toBe(version);
    const rows = await db.sql<{ status: string; n: number }[]>`select status, count(*)::int as n from app.block_operations
      where client_op_id = ${(timedOutErr as TimeoutError).clientOpId!} group by status order by status`;
    expect(rows).toEqual([{ status: 'duplicate', n: 1 }, { status: 'success', n: 1 }]);
    again.close();
    await client.auth.signOut();
  }, 60_000);
});
