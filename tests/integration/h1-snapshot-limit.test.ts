import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addCanvas, createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { rateLimitRejections } from '../helpers/metrics.ts';
import { awayFromWindowEdge, freshWindow, sleep, until } from '../helpers/wait.ts';

// An H1 `resume` that needs a snapshot (`snapshot: true`, or a since_canvas_seq the log cannot
// continue from) ran api.get_canvas_snapshot each time: up to 10 per second per socket (the
// socket's message rate), times the user's sockets, where GET /canvas/{id}/snapshot (H4) allows
// one per second per user. It now takes a hit of the same SQL limit (api.hit_endpoint_limit('H4'))
// in the snapshot's transaction: one count per user across sockets, HTTP and processes. Over it
// the resume is answered `error` `rate_limited` with retry_after_ms and no client_op_id, and the
// socket stays open; @potentia/client sends its resume again after retry_after_ms, on the same
// socket, rather than waiting out resumeTimeoutMs and reconnecting.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(2);
const is = (type: ServerMessage['type']) => (m: ServerMessage) => m.type === type;

let server: Server;
let canvasId: string;
let owner: string;
let token: string;
beforeAll(async () => {
  server = await startServer(config);
  const c = await createCanvas(db.sql);
  canvasId = c.canvasId;
  owner = c.users.owner!;
  token = await signAccessToken(config.auth.jwtSecret, { sub: owner });
  for (let i = 0; i < 3; i++) expect((await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } })).status).toBe('success');
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

/** potentia_rate_limit_rejections_total{endpoint} of the server under test. */
const rejections = (endpoint: string) => rateLimitRejections(server.url, endpoint);

/** The frames `h1` received from index `from` on. */
const since = (h1: H1Conn, from: number) => h1.inbox.slice(from);

/** The two resumes that need a snapshot. */
const loops: [string, object][] = [
  ['snapshot: true', { type: 'resume', since_seq: 0, snapshot: true }],
  ['a since_canvas_seq ahead of the canvas (the log says snapshot_required)', { type: 'resume', since_canvas_seq: 1_000_000_000 }],
];

describe('H1 resume with a snapshot: the user\'s snapshot limit (H4), across sockets and HTTP', () => {
  it('one snapshot per second: a second socket\'s is refused rate_limited (socket open), HTTP\'s too; the resume again after retry_after_ms is served', async () => {
    const a = await openH1(server.url, canvasId, token);
    const b = await openH1(server.url, canvasId, token);
    const h4Before = await rejections('H4');
    await awayFromWindowEdge(1, 900); // the three calls in one window of the limit
    a.send({ type: 'resume', since_seq: 0, snapshot: true });
    await a.next(is('resumed'));
    expect(a.inbox.filter(is('snapshot'))).toHaveLength(1);

    const from = b.inbox.length;
    b.send({ type: 'resume', since_seq: 0, snapshot: true });
    const refusal = await b.next(is('error'));
    // before: a second snapshot, `resumed`
    expect(refusal).toEqual({ type: 'error', code: 'rate_limited', retry_after_ms: 1000, message: expect.stringContaining('H4') });
    const http = await fetch(`${server.url}/api/v1/canvas/${canvasId}/snapshot`, { headers: { Authorization: `Bearer ${token}` } });
    expect(http.status).toBe(429);
    expect(await rejections('H4')).toBeGreaterThanOrEqual(h4Before + 2); // the socket's and HTTP's

    // the refused resume streams nothing; the socket is open and the resume, sent again, is served
    await sleep(200);
    expect(since(b, from).map((m) => m.type)).toEqual(['error']);
    expect(b.ws.readyState).toBe(WebSocket.OPEN);
    await sleep(refusal.type === 'error' ? refusal.retry_after_ms! : 0);
    b.send({ type: 'resume', since_seq: 0, snapshot: true });
    await b.next(is('resumed'));
    expect(since(b, from).map((m) => m.type)).toEqual(['error', 'snapshot', 'resumed']);
    // and live deltas follow it
    const op = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } });
    await b.next((m) => m.type === 'delta' && m.canvas_seq === Number(op.canvas_seq));
    a.ws.close();
    b.ws.close();
  }, 20_000);

  it.each(loops)('resume with %s in a loop at the socket\'s message rate: at most one snapshot per second', async (_name, resume) => {
    const h1 = await openH1(server.url, canvasId, token);
    const started = Date.now();
    for (let i = 0; i < 20; i++) {
      h1.send(resume);
      await sleep(110); // under 10 messages per second: none refused by the socket's rate
    }
    await sleep(300);
    const seconds = (Date.now() - started) / 1000;
    const snapshots = h1.inbox.filter(is('snapshot')).length;
    const refused = h1.inbox.filter((m) => m.type === 'error' && m.code === 'rate_limited');
    // before: 20 snapshots
    expect(snapshots).toBeGreaterThanOrEqual(1);
    expect(snapshots).toBeLessThanOrEqual(Math.ceil(seconds) + 1);
    // each answered a snapshot or a refusal, but for one still queued when the next came: that
    // one is superseded, unanswered (a slow first snapshot on a fresh server had 20 != 19)
    expect(snapshots + refused.length).toBeLessThanOrEqual(20);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) expect(r).toMatchObject({ retry_after_ms: 1000, message: expect.stringContaining('H4') });
    expect(refused.some((r) => 'client_op_id' in r)).toBe(false);
    expect(h1.ws.readyState).toBe(WebSocket.OPEN);
    h1.ws.close();
  }, 20_000);
});

describe('a refused snapshot resume on a live socket', () => {
  // Before, the refusal came after the resume had started holding the live deltas for its replay
  // and forgotten the stream's position: the socket answered pings and streamed nothing more until
  // a resume was accepted. A refusal now leaves the stream as it was: nothing was done.
  it.each(loops)('resume with %s: the live stream goes on, consecutive, as if it had not been sent', async (_name, resume) => {
    const h1 = await openH1(server.url, canvasId, token);
    h1.send({ type: 'resume', since_canvas_seq: 0 });
    await h1.next(is('resumed'));
    const from = h1.inbox.length;
    // another tab of the user took this second's snapshot (again if a slow machine let the window
    // pass), and an operation commits while the resume runs: held, it must not be lost
    let refusal: ServerMessage | undefined;
    for (let tries = 0; tries < 5 && refusal === undefined; tries++) {
      await freshWindow(1); // a window of its own: the case before may have taken this one's snapshot (429 here)
      expect((await fetch(`${server.url}/api/v1/canvas/${canvasId}/snapshot`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
      const racing = mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } });
      h1.send(resume);
      const answer = await h1.next((m) => m.type === 'error' || m.type === 'resumed');
      if (answer.type === 'error') refusal = answer;
      expect((await racing).status).toBe('success');
    }
    expect(refusal).toMatchObject({ code: 'rate_limited', retry_after_ms: 1000 });
    const after = h1.inbox.length;
    let op: Awaited<ReturnType<typeof mutate>> | undefined;
    for (let i = 0; i < 3; i++) op = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } });
    // before: no delta after the refusal
    await until(() => h1.inbox.some((m) => m.type === 'delta' && m.canvas_seq === op!.canvas_seq), 5_000, 'the live deltas after the refusal');
    // one stream, every canvas_seq once and in order; after the refusal only live deltas
    let last = -1;
    for (const m of h1.inbox.slice(from - 1)) {
      if (m.type === 'resumed') last = m.canvas_watermark;
      else if (m.type === 'snapshot') last = m.canvas_watermark;
      else if (m.type === 'delta') {
        expect(m.canvas_seq).toBe(last + 1);
        last = m.canvas_seq;
      }
    }
    expect(last).toBe(op!.canvas_seq);
    expect(since(h1, after).every((m) => m.type === 'delta' && !m.replaying)).toBe(true);
    h1.ws.close();
  }, 30_000);
});

describe('@potentia/client joining over the snapshot limit', () => {
  /** A WebSocket class recording each socket made and each resume frame sent. */
  function recording() {
    const sockets: WebSocket[] = [];
    const resumes: string[] = [];
    class Recording extends WebSocket {
      constructor(url: string) {
        super(url);
        sockets.push(this);
      }

      override send(data: any, ...rest: any[]): void {
        if (typeof data === 'string' && data.startsWith('{"type":"resume"')) resumes.push(data);
        (super.send as any)(data, ...rest);
      }
    }
    return { Recording, sockets, resumes };
  }

  it('a join refused rate_limited sends its resume again after retry_after_ms on the same socket, and is live on that socket (not after resumeTimeoutMs on another)', async () => {
    const { Recording, sockets, resumes } = recording();
    const sync = new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: Recording as any, onError: () => {} });
    try {
      await freshWindow(1); // the tests before took this user's snapshots: a window of its own
      // another tab of the user (here over HTTP) took this second's snapshot
      expect((await fetch(`${server.url}/api/v1/canvas/${canvasId}/snapshot`, { headers: { Authorization: `Bearer ${token}` } })).status).toBe(200);
      // before: the refused resume was never sent again; the socket was dropped after
      // resumeTimeoutMs (10 s) and the join took another socket (so: live before that, on one socket)
      await Promise.race([sync.join(), sleep(9_000).then(() => { throw new Error('not live within 9 s'); })]);
      expect(sockets).toHaveLength(1);
      expect(resumes).toEqual([JSON.stringify({ type: 'resume', since_seq: 0, snapshot: true }), JSON.stringify({ type: 'resume', since_seq: 0, snapshot: true })]);
      expect(sync.blocks.size).toBeGreaterThan(0);
    } finally {
      sync.close();
    }
  }, 20_000);

  it('one user opening 10 canvases at once (10 snapshots at 1 a second): each live on its first socket, none starved', async () => {
    // a user of their own: no other test's snapshot in their windows
    const c = await createCanvas(db.sql);
    const user = c.users.owner!;
    const canvases = [c.canvasId];
    for (let i = 1; i < 10; i++) canvases.push(await addCanvas(db.sql, user, c.workspaceId, `canvas ${i}`));
    for (const id of canvases) expect((await mutate(db.sql, user, id, { action: 'create', patch: { type: 'text' } })).status).toBe('success');
    const userToken = await signAccessToken(config.auth.jwtSecret, { sub: user });
    const tabs = canvases.map(() => recording());
    const liveAt: number[] = [];
    const syncs = canvases.map((id, i) => new CanvasSync({ url: server.url, canvasId: id, token: () => userToken,
      WebSocket: tabs[i]!.Recording as any, onError: () => {}, onLive: (live) => { if (live) liveAt[i] ??= Date.now(); } }));
    try {
      const t0 = Date.now();
      await Promise.race([Promise.all(syncs.map((s) => s.join())), sleep(20_000).then(() => {
        throw new Error(`not all live within 20 s: ${syncs.filter((_, i) => liveAt[i] === undefined).length} of 10 not live`);
      })]);
      // one snapshot a second: about 9 s for the tenth; none waited out resumeTimeoutMs on a socket
      for (const [i, tab] of tabs.entries()) {
        expect(tab.sockets).toHaveLength(1); // no resumeTimeoutMs drop, no reconnect
        expect(tab.resumes.length).toBeLessThanOrEqual(Math.ceil((liveAt[i]! - t0) / 1000) + 2); // at most one a second
        expect(syncs[i]!.blocks.size).toBe(1);
      }
    } finally {
      for (const s of syncs) s.close();
    }
  }, 40_000);

  it('three tabs of one user joining at once: each live on its first socket, one snapshot a second, no tight retry', async () => {
    const tabs = [recording(), recording(), recording()];
    const syncs = tabs.map(({ Recording }) => new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: Recording as any, onError: () => {} }));
    try {
      await awayFromWindowEdge(1, 900);
      await Promise.race([Promise.all(syncs.map((s) => s.join())), sleep(9_000).then(() => { throw new Error('not all live within 9 s'); })]);
      for (const tab of tabs) {
        expect(tab.sockets).toHaveLength(1);
        // one resume, then one per refusal: at most one a second (they took turns)
        expect(tab.resumes.length).toBeLessThanOrEqual(4);
      }
      await until(() => syncs.every((s) => s.blocks.size === syncs[0]!.blocks.size), 2_000, 'the same state in every tab');
    } finally {
      for (const s of syncs) s.close();
    }
  }, 20_000);
});
