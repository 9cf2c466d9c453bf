// A change's promise (@potentia/client Canvas.create/update/…) resolves once the server has
// answered it, not as soon as its own delta arrives. The delta comes from logical decoding, which
// reads the commit record once it is flushed; the committing backend makes its transaction visible
// to other sessions' snapshots only after that, and the server answers after that. So a delta can
// reach the client before the change can be read anywhere else: found under load, where a create
// resolved by its delta and a read right after it (another connection) did not find the block.
// Here the server's database connection goes through a proxy that holds the answer to the
// mutation's COMMIT (tests/helpers/commit-loss-proxy.ts): Postgres has committed, the delta goes
// out, the answer waits.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, AccessLostError, TimeoutError, createPotentiaClient, type Block, type Canvas } from '../../packages/client/src/index.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { startCommitLossProxy, type CommitLossProxy } from '../helpers/commit-loss-proxy.ts';
import { testDatabase } from '../helpers/db.ts';
import { startTestServer } from '../helpers/http.ts';
import { databaseUrlThrough, startTcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(2);
let proxy: CommitLossProxy;
let server: Server;

beforeAll(async () => {
  const url = new URL(testDatabaseUrl());
  proxy = await startCommitLossProxy(Number(url.port || 5432));
  server = await startTestServer({ databaseUrl: databaseUrlThrough(proxy, url), directDatabaseUrl: url.toString(), profile: 'development' }, { realtime: {} });
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
  await db.close();
});

/** Resolves at the first change of `canvas` whose cause is `cause`. */
function nextChange(canvas: { subscribe(l: (v: { cause: string }) => void): () => void }, cause: string): Promise<void> {
  return new Promise((resolve) => {
    const stop = canvas.subscribe((v) => {
      if (v.cause !== cause) return;
      stop();
      resolve();
    });
  });
}

/**
 * Sends a change (`send`) with the answer to its COMMIT held at the proxy (the statement naming
 * `marker`), and waits until Postgres has committed it and its own delta has applied it to the
 * local state: the change applied, not answered. (In an object: an async function's result would
 * be awaited.)
 */
async function appliedUnanswered<T>(canvas: Canvas, marker: string, send: () => Promise<T>): Promise<{ change: Promise<T> }> {
  const held = proxy.holdCommitAnswer(marker);
  const ownDelta = nextChange(canvas, 'ack');
  const change = send();
  await held;
  await ownDelta;
  return { change };
}

describe('@potentia/client: a change resolves at the server\'s answer, after its commit is visible', () => {
  it('create and update: their deltas applied while the COMMIT\'s answer is held do not resolve them; the answer does, and the rows are there', async () => {
    const { canvas, canvasId: canvas_id, signOut } = await liveCanvas();
    for (const step of ['create', 'update'] as const) {
      const id = step === 'create' ? randomUUID() : canvas.blocks().keys().next().value!;
      const marker = step === 'create' ? id : `marker-${randomUUID()}`;
      let settled: Block | undefined | 'no' = 'no';
      const { change } = await appliedUnanswered(canvas, marker, (): Promise<Block | undefined> => step === 'create'
        ? canvas.create({ type: 'text', id, content: { t: 'held' } }) : canvas.update(id, { content: { t: marker } }));
      void change.then((b) => { settled = b; });
      expect(canvas.block(id)?.content).toEqual({ t: step === 'create' ? 'held' : marker });
      await new Promise((r) => setImmediate(r)); // what the delta resolved would have run by now
      expect(settled, `${step}: resolved by its delta, before the server answered`).toBe('no');
      proxy.releaseCommitAnswer();
      const block = await change;
      expect(block?.block_id).toBe(id);
      const [row] = await db.sql`select content from app.blocks where block_id = ${id} and canvas_id = ${canvas_id}`;
      expect(row?.content).toEqual({ t: step === 'create' ? 'held' : marker });
    }
    canvas.close();
    await signOut();
  }, 60_000);

  it('close() while the answer is held, the delta applied: the change resolves (it is in the server state), not rejected as closed', async () => {
    const { canvas, signOut } = await liveCanvas();
    const id = randomUUID();
    const { change } = await appliedUnanswered(canvas, id, () => canvas.create({ type: 'text', id }));
    canvas.close();
    expect((await change)?.block_id).toBe(id);
    proxy.releaseCommitAnswer();
    await signOut();
  }, 60_000);

  /** A signed-up user's new canvas, connected (its client's HTTP and socket to `url`: the server's, or a proxy's). */
  async function liveCanvas(url = server.url): Promise<{ canvas: Canvas; canvasId: string; signOut: () => Promise<unknown> }> {
    const client = createPotentiaClient({ url, anonKey: (await apiKeys(server.deps.config)).anon, WebSocket,
      auth: { persistSession: false, autoRefreshToken: false } });
    await client.auth.signUp(`answer-${randomUUID()}@example.com`, 'correct horse battery');
    const { workspace_id } = await client.workspaces.create('Answers');
    const { canvas_id } = await client.canvases.create(workspace_id, 'Answers');
    const canvas = client.canvas(canvas_id);
    await canvas.connect();
    return { canvas, canvasId: canvas_id, signOut: () => client.auth.signOut() };
  }

  /** How `p` has settled once everything due now has run: 'no', or its value / error. */
  async function settledNow<T>(p: Promise<T>): Promise<{ value: T } | { error: unknown } | 'no'> {
    let out: { value: T } | { error: unknown } | 'no' = 'no';
    p.then((value) => { out = { value }; }, (error: unknown) => { out = { error }; });
    await new Promise((r) => setImmediate(r));
    return out;
  }

  it('an applied change whose caller aborts before the answer: its promise rejects with AbortError at once (its signal, like timeoutMs, is a deadline for the answer)', async () => {
    const { canvas, signOut } = await liveCanvas();
    const id = randomUUID();
    await canvas.create({ type: 'text', id });
    const marker = `abort-${randomUUID()}`;
    const stop = new AbortController();
    const { change } = await appliedUnanswered(canvas, marker, () => canvas.update(id, { content: { t: marker } }, { signal: stop.signal }));
    stop.abort();
    const now = await settledNow(change);
    proxy.releaseCommitAnswer();
    expect(now, 'the abort ended the wait').not.toBe('no');
    expect((now as { error: unknown }).error).toBeInstanceOf(AbortError);
    expect(String((now as { error: Error }).error.message)).toMatch(/applied/);
    expect(canvas.block(id)?.content).toEqual({ t: marker }); // it applied: the canvas shows it
    expect(canvas.pending, 'not answered yet: still pending, as a sent change whose caller stopped waiting is').toBe(1);
    await until(() => canvas.pending === 0, 20_000, 'its answer');
    canvas.close();
    await signOut();
  }, 60_000);

  it('an applied change whose timeoutMs passes before the answer: TimeoutError (the deadline is for the answer), not a wait for the answer', async () => {
    const { canvas, signOut } = await liveCanvas();
    const id = randomUUID();
    await canvas.create({ type: 'text', id });
    const marker = `deadline-${randomUUID()}`;
    const { change } = await appliedUnanswered(canvas, marker, () => canvas.update(id, { content: { t: marker } }, { timeoutMs: 1500 }));
    const err = await change.catch((e: unknown) => e); // without a deadline for it, this waited for the release below
    proxy.releaseCommitAnswer();
    expect(err).toBeInstanceOf(TimeoutError);
    expect(canvas.block(id)?.content).toEqual({ t: marker });
    canvas.close();
    await signOut();
  }, 30_000);

  it('pending counts an applied change until its answer, and the answer is told to subscribers (cause ack, pending 0)', async () => {
    const { canvas, signOut } = await liveCanvas();
    const id = randomUUID();
    const { change } = await appliedUnanswered(canvas, id, () => canvas.create({ type: 'text', id }));
    expect(canvas.pending, 'its promise has not settled: a "saving" indicator must stay on').toBe(1);
    const told: number[] = [];
    canvas.subscribe((v) => { if (v.cause === 'ack') told.push(v.pending); });
    proxy.releaseCommitAnswer();
    await change;
    expect(canvas.pending).toBe(0);
    expect(told).toContain(0);
    canvas.close();
    await signOut();
  }, 60_000);

  it('the socket lost between the delta and the answer: the client resends by client_op_id, and the change resolves once, with its block', async () => {
    const front = await startTcpProxy(Number(new URL(server.url).port));
    try {
      const { canvas, canvasId, signOut } = await liveCanvas(front.url);
      const id = randomUUID();
      let settled = 0;
      const { change } = await appliedUnanswered(canvas, id, () => canvas.create({ type: 'text', id, content: { t: 'resent' } }));
      void change.then(() => settled++, () => settled++);
      const back = new Promise<void>((resolve) => {
        let away = false;
        const stop = canvas.subscribe((v) => {
          if (v.status !== 'live') away = true;
          else if (away) { stop(); resolve(); }
        });
      });
      front.cut({ existing: 'destroy' });
      front.restore();
      await back;
      proxy.releaseCommitAnswer();
      const block = await change;
      expect(block.block_id).toBe(id);
      expect(block.content).toEqual({ t: 'resent' });
      await new Promise((r) => setImmediate(r));
      expect(settled).toBe(1);
      const [row] = await db.sql`select content from app.blocks where block_id = ${id} and canvas_id = ${canvasId}`;
      expect(row?.content).toEqual({ t: 'resent' });
      canvas.close();
      await signOut();
    } finally {
      await front.close();
    }
  }, 60_000);

  it('the COMMIT\'s answer lost for good (the server\'s database connection reset at it): the change resolves once, with its block', async () => {
    const { canvas, canvasId, signOut } = await liveCanvas();
    const id = randomUUID();
    const lost = proxy.loseCommitAnswer(id);
    const block = await canvas.create({ type: 'text', id, content: { t: 'lost' } });
    await lost;
    expect(block.block_id).toBe(id);
    const [row] = await db.sql`select content from app.blocks where block_id = ${id} and canvas_id = ${canvasId}`;
    expect(row?.content).toEqual({ t: 'lost' });
    canvas.close();
    await signOut();
  }, 60_000);

  it('a clientOpId still unanswered (its delta applied) is refused on the same canvas, as one not yet applied is: invalid_input, nothing sent', async () => {
    const { canvas, signOut } = await liveCanvas();
    const id = randomUUID();
    await canvas.create({ type: 'text', id });
    const clientOpId = randomUUID();
    const marker = `again-${randomUUID()}`;
    const { change: first } = await appliedUnanswered(canvas, marker, () => canvas.update(id, { content: { t: marker } }, { clientOpId }));
    const again = await settledNow(canvas.update(id, { content: { t: marker } }, { clientOpId }));
    proxy.releaseCommitAnswer();
    expect(again, 'refused at once').not.toBe('no');
    expect((again as { error: { code?: string; field?: string } }).error).toMatchObject({ code: 'invalid_input', field: 'clientOpId' });
    expect((await first).content).toEqual({ t: marker });
    canvas.close();
    await signOut();
  }, 60_000);

  it('changes of one block behind an applied, unanswered one: sent on their base, each resolves once, in order, with its own block; a delete likewise', async () => {
    const { canvas, canvasId, signOut } = await liveCanvas();
    const a = randomUUID();
    const b = randomUUID();
    await canvas.create({ type: 'text', id: a });
    await canvas.create({ type: 'text', id: b });
    const marker = `first-${randomUUID()}`;
    const order: string[] = [];
    const { change: first } = await appliedUnanswered(canvas, marker, () => canvas.update(a, { content: { t: marker } }));
    void first.then(() => order.push('first'));
    const moved = canvas.move(a, { after: b });
    void moved.then(() => order.push('move'));
    const second = canvas.update(a, { content: { u: 2 } });
    void second.then(() => order.push('second'));
    expect(canvas.pending).toBe(3);
    proxy.releaseCommitAnswer();
    const [f, m, s2] = await Promise.all([first, moved, second]);
    expect(order).toEqual(['first', 'move', 'second']);
    expect(f.content).toEqual({ t: marker });
    expect(m.version).toBeGreaterThan(f.version);
    expect(s2.version).toBeGreaterThan(m.version);
    expect(s2.content).toEqual({ t: marker, u: 2 });
    expect(canvas.pending).toBe(0);

    const { change: deleted } = await appliedUnanswered(canvas, a, () => canvas.delete(a));
    expect(canvas.block(a)).toBeUndefined();
    expect(await settledNow(deleted)).toBe('no');
    expect(canvas.pending).toBe(1);
    proxy.releaseCommitAnswer();
    expect(await deleted).toBeUndefined();
    const rows = await db.sql`select 1 from app.blocks where block_id = ${a} and canvas_id = ${canvasId}`;
    expect(rows.length).toBe(0);
    canvas.close();
    await signOut();
  }, 60_000);

  it('a create with text typed while it was created: the text goes out at the delta, the create resolves at its answer with its block, the text reaches the server', async () => {
    const { canvas, canvasId, signOut } = await liveCanvas();
    const id = randomUUID();
    const { change } = await appliedUnanswered(canvas, id, () => {
      const created = canvas.create({ type: 'text', id, content: { body: '' } });
      canvas.editText(id, 'body', ['typed early']);
      return created;
    });
    expect(canvas.text(id, 'body')).toBe('typed early');
    expect(await settledNow(change)).toBe('no');
    proxy.releaseCommitAnswer();
    const block = await change;
    expect(block.block_id).toBe(id);
    expect(block.content).toEqual({ body: '' }); // the server's block its create made
    await until(async () => (await db.sql`select content->>'body' as body from app.blocks where block_id = ${id} and canvas_id = ${canvasId}`)[0]?.body === 'typed early', 20_000, 'the early text on the server');
    expect(canvas.text(id, 'body')).toBe('typed early');
    canvas.close();
    await signOut();
  }, 60_000);

  it('access revoked between the delta and the answer, while offline (AccessLostError ends the canvas): the applied change resolves with its block', async () => {
    const front = await startTcpProxy(Number(new URL(server.url).port));
    try {
      const anonKey = (await apiKeys(server.deps.config)).anon;
      const alice = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      const bob = createPotentiaClient({ url: front.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      const bobEmail = `bob-${randomUUID()}@example.com`;
      await alice.auth.signUp(`alice-${randomUUID()}@example.com`, 'correct horse battery');
      await bob.auth.signUp(bobEmail, 'correct horse battery');
      const { workspace_id } = await alice.workspaces.create('Answers');
      const { canvas_id } = await alice.canvases.create(workspace_id, 'Answers');
      await alice.workspaces.addMember(workspace_id, bobEmail, 'editor');
      const canvas = bob.canvas(canvas_id);
      await canvas.connect();
      const errors: unknown[] = [];
      canvas.onError((e) => errors.push(e));
      const id = randomUUID();
      const { change: applied } = await appliedUnanswered(canvas, id, () => canvas.create({ type: 'text', id, content: { t: 'bob' } }));
      front.cut({ existing: 'destroy', incoming: 'refuse' });
      await until(() => canvas.status === 'reconnecting', 20_000, "bob's canvas offline");
      const removed = await fetch(`${server.url}/api/v1/workspaces/${workspace_id}/members/${canvas.userId}`, {
        method: 'DELETE', headers: { authorization: `Bearer ${await alice.auth.accessToken()}` } });
      expect(removed.status).toBe(204);
      front.restore();
      await until(() => canvas.status === 'closed', 30_000, "bob's canvas to close");
      const now = await settledNow(applied);
      proxy.releaseCommitAnswer();
      expect(now).toMatchObject({ value: { block_id: id, content: { t: 'bob' } } });
      expect(errors.some((e) => e instanceof AccessLostError)).toBe(true);
      expect(canvas.pending).toBe(0);
      await alice.auth.signOut();
    } finally {
      await front.close();
    }
  }, 60_000);

  it('a change waiting behind another of its block whose client_op_id another tab of the user applied meanwhile: sent when its turn comes, answered (duplicate), resolved; never left unsent', async () => {
    const front = await startTcpProxy(Number(new URL(server.url).port));
    try {
      const anonKey = (await apiKeys(server.deps.config)).anon;
      const email = `tabs-${randomUUID()}@example.com`;
      const tabB = createPotentiaClient({ url: front.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      await tabB.auth.signUp(email, 'correct horse battery');
      const tabA = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      await tabA.auth.signIn(email, 'correct horse battery');
      const { workspace_id } = await tabB.workspaces.create('Tabs');
      const { canvas_id } = await tabB.canvases.create(workspace_id, 'Tabs');
      const b = tabB.canvas(canvas_id);
      await b.connect();
      const id = randomUUID();
      await b.create({ type: 'text', id });
      const a = tabA.canvas(canvas_id);
      await a.connect();
      await until(() => a.block(id) !== undefined, 20_000, 'tab A to see the block');

      front.cut({ existing: 'destroy', incoming: 'refuse' });
      await until(() => b.status === 'reconnecting', 20_000, 'tab B offline');
      const clientOpId = randomUUID();
      const first = b.update(id, { content: { first: 1 } }); // queued offline: its block is busy
      const same = b.update(id, { content: { same: 1 } }, { clientOpId }); // waits behind it, unsent
      const viaA = await a.update(id, { content: { same: 1 } }, { clientOpId }); // the same change, from the other tab
      front.restore(); // tab B resumes: the delta of `clientOpId` comes before its change was sent
      await first;
      const settled = await Promise.race([same.then((blk) => blk, (e: unknown) => e),
        until(() => b.pending === 0 && b.status === 'live', 20_000, 'tab B to settle').then(() => settledNow(same))]);
      expect(settled).toMatchObject({ block_id: id });
      expect((settled as Block).version).toBeGreaterThanOrEqual(viaA.version);
      a.close();
      b.close();
    } finally {
      await front.close();
    }
  }, 60_000);
});
