import { randomUUID } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, createPotentiaClient, TimeoutError, type PotentiaClient } from '../../packages/client/src/index.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
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
let server: PotentiaProcess;
let anonKey: string;
/** A listener that accepts every connection, reads it, and never answers. */
let silent: net.Server;
const silentConnections: Array<{ text: string; closed: boolean }> = [];
const silentSockets = new Set<net.Socket>();
/** Every request this process's fetch sent (the client calls the global fetch at each request): method and URL. */
const sent: string[] = [];
const realFetch = globalThis.fetch;

beforeAll(async () => {
  globalThis.fetch = (input, init) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    sent.push(`${init?.method ?? 'GET'} ${url}`);
    return realFetch(input, init);
  };
  server = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', LOG_LEVEL: 'warn', POTENTIA_PROFILE: 'development' });
  anonKey = /anon key\s+(\S+)/.exec(server.output())![1]!;
  silent = net.createServer((socket) => {
    silentSockets.add(socket);
    const connection = { text: '', closed: false };
    silentConnections.push(connection);
    socket.on('data', (d) => void (connection.text += d.toString('utf8')));
    socket.on('error', () => {});
    socket.on('close', () => {
      connection.closed = true;
      silentSockets.delete(socket);
    });
  });
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
}, 90_000);

afterAll(async () => {
  globalThis.fetch = realFetch;
  for (const s of silentSockets) s.destroy();
  await new Promise<void>((r) => (silent ? silent.close(() => r()) : r()));
  await server?.stop();
  await db.close();
});

/** The silent listener's connections whose request line includes `path` (and has its whole body, for a POST). */
const silentlyGot = (path: string) => silentConnections.filter((c) => {
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
    const before = sent.length;
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
    expect(sent.slice(before)).toEqual([]);
    expect(client.auth.user()?.id).toBe(userId);
    const [rows] = await db.sql`select (select count(*)::int from app.workspaces where workspace_id = ${workspaceId}) as w,
                                       (select count(*)::int from app.canvases where canvas_id = ${canvasId}) as c`;
    expect(rows).toEqual({ w: 0, c: 0 });
    // the session is untouched and works
    expect((await client.workspaces.list()).map((w) => w.workspace_id)).toEqual([workspace_id]);
    await client.auth.signOut();
  }, 60_000);

  it('aborted while a silent server holds the request: AbortError, the connection closed, nothing sent again', async () => {
    const { port } = silent.address() as net.AddressInfo;
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

  it('with timeoutMs: whichever comes first ends the call', async () => {
    const { port } = silent.address() as net.AddressInfo;
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
