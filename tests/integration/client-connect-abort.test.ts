import { randomUUID } from 'node:crypto';
import { getEventListeners } from 'node:events';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, CanvasSync, createPotentiaClient, PotentiaError, type Canvas, type PotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { recordFetches } from '../helpers/fetch-recorder.ts';
import { startSilentListener, type SilentListener } from '../helpers/silent-listener.ts';
import { until } from '../helpers/wait.ts';

// @potentia/client's Canvas.connect({ signal }). Every HTTP call and every canvas change took an
// AbortSignal, but connect() took none: an app leaving a canvas page while it was connecting
// could only close() it, and its access check went on regardless. Now an abort at any stage
// before the canvas is live (the access check over HTTP, the socket's opening, the join, the
// snapshot) rejects with AbortError (code `aborted`, the signal's reason) and closes the canvas:
// no socket (each one is seen closed), no timer and no listener (on the signal, or the canvas's
// own) is left. Against a real server process and Postgres: the HTTP access check and the
// snapshot are held by a transaction locking the table every endpoint limit reads (A8, H4), the
// opening by a TCP listener that accepts and never answers the upgrade, the join by holding the
// client's first frame (its resume) back. Outcomes only: no duration is asserted.

const db = testDatabase(2);
let server: DevServer;
let anonKey: string;
/** A listener that accepts every connection, reads it, and never answers. */
let silent: SilentListener;
let fetches: ReturnType<typeof recordFetches>;

/** The test's hold on the client's sockets: sent elsewhere (the silent listener), or their frames held back. */
const sockets: TrackedSocket[] = [];
let redirectTo: string | null = null;
let holdFrames = false;
const heldFrames: Array<() => void> = [];

/** The real `ws` WebSocket, seen by the test: every one made, and (when asked) sent to another host or with its frames held. */
class TrackedSocket extends WebSocket {
  closed = false;
  constructor(address: string, ...rest: unknown[]) {
    super(redirectTo ? address.replace(/^ws:\/\/[^/]+/, redirectTo) : address, ...(rest as []));
    sockets.push(this);
    this.on('close', () => void (this.closed = true));
  }

  override send(data: unknown, ...rest: unknown[]): void {
    if (holdFrames) {
      heldFrames.push(() => super.send(data as string, ...(rest as [])));
      return;
    }
    super.send(data as string, ...(rest as []));
  }
}

beforeAll(async () => {
  fetches = recordFetches();
  server = await startDevServer();
  anonKey = server.anonKey;
  silent = await startSilentListener();
}, 90_000);

afterAll(async () => {
  fetches?.restore();
  for (const s of sockets) s.terminate();
  await silent?.close();
  await server?.stop();
  await db.close();
});

/** A signed-up user's client (no session refresh timer) and a canvas of theirs, not connected. */
async function canvasOfNewUser(): Promise<{ client: PotentiaClient; canvas: Canvas; canvasId: string }> {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket: TrackedSocket, auth: { persistSession: false, autoRefreshToken: false } });
  await client.auth.signUp(`connect-abort-${randomUUID()}@example.com`, 'correct horse battery');
  const { workspace_id } = await client.workspaces.create('Connect');
  const { canvas_id } = await client.canvases.create(workspace_id, 'Connect');
  return { client, canvas: client.canvas(canvas_id), canvasId: canvas_id };
}

type Internals = { accessTimer: unknown; sync: Record<string, unknown> };
/** What the canvas keeps running: its timers and its socket (none once it ended). */
function leftRunning(canvas: Canvas): Record<string, unknown> {
  const c = canvas as unknown as Internals;
  const timers = ['reconnectTimer', 'resumeTimer', 'heartbeatTimer', 'resendTimer', 'retireTimer', 'resumeRetryTimer'];
  return Object.fromEntries([['accessTimer', c.accessTimer], ['ws', c.sync['ws']], ['retiring', c.sync['retiring']],
    ...timers.map((t) => [t, c.sync[t]])].filter(([, v]) => v !== null && v !== undefined));
}

/** An aborted connect: AbortError with the signal's reason, the canvas closed, nothing left behind. */
async function expectAborted(canvas: Canvas, connecting: Promise<void>, controller: AbortController, made: TrackedSocket[]): Promise<void> {
  const err = await connecting.then(() => null, (e: unknown) => e);
  expect(err).toBeInstanceOf(AbortError);
  expect(err).toMatchObject({ code: 'aborted', name: 'AbortError', reason: controller.signal.reason });
  expect(canvas.status).toBe('closed');
  expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  await until(() => made.every((s) => s.closed), 10_000, 'the canvas\'s sockets closed');
  expect(leftRunning(canvas)).toEqual({});
}

describe('@potentia/client: Canvas.connect({ signal })', () => {
  it('an already-aborted signal: AbortError, nothing sent, the canvas as it was (connect() then works)', async () => {
    const { client, canvas } = await canvasOfNewUser();
    const signal = AbortSignal.abort(new Error('the page was left'));
    const [requests, made] = [fetches.sent.length, sockets.length];
    const err = await canvas.connect({ signal }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AbortError);
    expect(err).toMatchObject({ code: 'aborted', name: 'AbortError', reason: signal.reason });
    expect(fetches.sent.length).toBe(requests);
    expect(sockets.length).toBe(made);
    expect(canvas.status).toBe('idle');
    await canvas.connect();
    expect(canvas.status).toBe('live');
    canvas.close();
    await client.auth.signOut();
  }, 60_000);

  it('aborted during the access check (HTTP, held by the database): no socket is ever made', async () => {
    const { client, canvas } = await canvasOfNewUser();
    const made = sockets.length;
    const controller = new AbortController();
    const tx = await reservedTransaction(db.sql);
    let connecting: Promise<void>;
    try {
      await tx.conn`lock table app.endpoint_limits in access exclusive mode`; // every endpoint limit's hit reads it
      connecting = canvas.connect({ signal: controller.signal });
      await tx.waitedFor('the access check (A8) waiting for its endpoint limit');
      expect(canvas.status).toBe('connecting');
      controller.abort(new Error('left the page'));
      await expectAborted(canvas, connecting, controller, []);
    } finally {
      await tx.release();
    }
    expect(sockets.length).toBe(made);
    expect((canvas as unknown as Internals).sync['started']).toBe(false);
    await client.auth.signOut();
  }, 60_000);

  it('aborted while the socket opens (an upgrade never answered): the connection is closed', async () => {
    const { client, canvas } = await canvasOfNewUser();
    const controller = new AbortController();
    const { port } = silent;
    const before = silent.connections.length;
    redirectTo = `ws://127.0.0.1:${port}`;
    let connecting: Promise<void>;
    try {
      connecting = canvas.connect({ signal: controller.signal });
      await until(() => silent.connections.slice(before).some((c) => c.text.includes('/ws/canvas/')), 10_000, 'the upgrade request at the silent listener');
    } finally {
      redirectTo = null;
    }
    const made = sockets.filter((s) => s.url.includes(`:${port}/`));
    expect(made.map((s) => s.readyState)).toEqual([WebSocket.CONNECTING]);
    controller.abort(new Error('left the page'));
    await expectAborted(canvas, connecting, controller, made);
    await until(() => silent.connections.slice(before).every((c) => c.closed), 10_000, 'the upgrade\'s TCP connection closed');
    await client.auth.signOut();
  }, 60_000);

  it('aborted while joining (the socket open, its resume not sent yet): the socket closed; a second connect() waiting rejects closed', async () => {
    const { client, canvas } = await canvasOfNewUser();
    const controller = new AbortController();
    const before = sockets.length;
    holdFrames = true;
    let connecting: Promise<void>;
    let other: Promise<void>;
    try {
      connecting = canvas.connect({ signal: controller.signal });
      other = canvas.connect(); // the same connection, no signal of its own
      await until(() => sockets.length > before && sockets[before]!.readyState === WebSocket.OPEN && heldFrames.length > 0, 10_000,
        'the socket open, its resume held');
    } finally {
      holdFrames = false;
      heldFrames.length = 0; // never sent
    }
    expect(canvas.status).toBe('connecting');
    controller.abort(new Error('left the page'));
    await expectAborted(canvas, connecting, controller, sockets.slice(before));
    const otherErr = await other.then(() => null, (e: unknown) => e);
    expect(otherErr).toBeInstanceOf(PotentiaError);
    expect(otherErr).toMatchObject({ code: 'closed' });
    expect(sockets.length).toBe(before + 1);
    await client.auth.signOut();
  }, 60_000);

  it('aborted while the snapshot loads (held by the database): the socket closed, the canvas never live', async () => {
    const { client, canvas } = await canvasOfNewUser();
    const controller = new AbortController();
    const before = sockets.length;
    holdFrames = true;
    let connecting: Promise<void>;
    try {
      connecting = canvas.connect({ signal: controller.signal });
      await until(() => sockets.length > before && sockets[before]!.readyState === WebSocket.OPEN && heldFrames.length > 0, 10_000,
        'the socket open, its resume held');
    } finally {
      holdFrames = false;
    }
    const tx = await reservedTransaction(db.sql);
    try {
      await tx.conn`lock table app.endpoint_limits in access exclusive mode`; // the snapshot's H4 hit waits for it
      for (const send of heldFrames.splice(0)) send(); // the resume: the server reads the snapshot
      await tx.waitedFor('the snapshot (H4) waiting for its endpoint limit');
      expect(canvas.status).toBe('connecting');
      controller.abort(new Error('left the page'));
      await expectAborted(canvas, connecting, controller, sockets.slice(before));
    } finally {
      await tx.release();
    }
    expect(canvas.status).toBe('closed');
    expect(canvas.tree()).toEqual([]);
    await client.auth.signOut();
  }, 60_000);

  it('a signal that aborts once the canvas is live ends nothing, and no listener was left on it', async () => {
    const { client, canvas, canvasId } = await canvasOfNewUser();
    const controller = new AbortController();
    await canvas.connect({ signal: controller.signal });
    expect(canvas.status).toBe('live');
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    controller.abort();
    expect(canvas.status).toBe('live');
    const block = await canvas.create({ type: 'text', content: { text: 'still live' } });
    const rows = await db.sql`select block_id from app.blocks where canvas_id = ${canvasId}`;
    expect(rows.map((r) => r.block_id)).toEqual([block.block_id]);
    canvas.close();
    await client.auth.signOut();
  }, 60_000);

  it('CanvasSync (the low-level client): ready({ signal }) stops that wait only; join({ signal }) aborted closes it, its socket too', async () => {
    const { client, canvasId } = await canvasOfNewUser();
    const token = async () => (await client.auth.accessToken())!;
    const before = sockets.length;
    holdFrames = true;
    const sync = new CanvasSync({ url: server.url, canvasId, token, WebSocket: TrackedSocket });
    const joinController = new AbortController();
    const readyController = new AbortController();
    let joining: Promise<void>;
    let waiting: Promise<void>;
    try {
      expect(await sync.join({ signal: AbortSignal.abort() }).then(() => null, (e: unknown) => e)).toBeInstanceOf(AbortError);
      expect(sockets.length).toBe(before); // nothing started
      joining = sync.join({ signal: joinController.signal });
      waiting = sync.ready({ signal: readyController.signal });
      await until(() => sockets.length > before && sockets[before]!.readyState === WebSocket.OPEN && heldFrames.length > 0, 10_000,
        'the socket open, its resume held');
    } finally {
      holdFrames = false;
      heldFrames.length = 0;
    }
    readyController.abort(new Error('not waiting any more'));
    await expect(waiting).rejects.toMatchObject({ code: 'aborted', name: 'AbortError', reason: readyController.signal.reason });
    expect(getEventListeners(readyController.signal, 'abort')).toHaveLength(0);
    expect(sockets[before]!.readyState).toBe(WebSocket.OPEN); // the client goes on
    joinController.abort(new Error('left the page'));
    await expect(joining).rejects.toMatchObject({ code: 'aborted', name: 'AbortError', reason: joinController.signal.reason });
    expect(getEventListeners(joinController.signal, 'abort')).toHaveLength(0);
    await until(() => sockets.slice(before).every((s) => s.closed), 10_000, 'the socket closed');
    const internals = sync as unknown as Record<string, unknown>;
    expect(internals['closed']).toBe(true);
    for (const t of ['reconnectTimer', 'resumeTimer', 'heartbeatTimer', 'resendTimer', 'retireTimer', 'resumeRetryTimer', 'ws']) expect(internals[t], t).toBeNull();
    await client.auth.signOut();
  }, 60_000);
});
