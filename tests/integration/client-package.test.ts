import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  AccessLostError, ConflictError, createPotentiaClient, PotentiaError, RateLimitedError, transformPosition, type Block, type BlockNode, type Canvas,
  type PotentiaClient,
} from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';
import { freePort } from '../helpers/free-port.ts';

// @potentia/client against a real server process, used as an app would: two people sign up
// through the client, share a workspace, open one canvas, and see each other's block changes,
// typing, conflicts and presence. Each person reaches the server through their own TCP proxy, so
// one person's network can be cut alone; the server process is also stopped and started again
// under both. No unhandled rejection or uncaught exception may happen in the whole file.

const faults: unknown[] = [];
const onFault = (err: unknown) => void faults.push(err);
let server: DevServer;
let port: number;
let anonKey: string;
const proxies: Record<'alice' | 'bob', TcpProxy> = {} as never;
const clients: PotentiaClient[] = [];
/** The URL of every socket the clients opened (H1 carries the access token in it). */
const socketUrls: string[] = [];
class RecordingWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    socketUrls.push(url);
  }
}
const password = 'correct horse battery';
const emails = { alice: `alice-${randomUUID()}@example.com`, bob: `bob-${randomUUID()}@example.com` };
let alice: PotentiaClient;
let bob: PotentiaClient;
let workspaceId: string;
let canvasId: string;
let ca: Canvas;
let cb: Canvas;

// the standard profile: its endpoint limits are the production ones (one canvas per 10 s per user)
const serverEnv = () => ({ POTENTIA_PROFILE: 'standard', PORT: String(port) });


function client(proxy: TcpProxy): PotentiaClient {
  const c = createPotentiaClient({
    url: proxy.url, anonKey, WebSocket: RecordingWebSocket,
    auth: { persistSession: false },
    canvas: { reconnectDelayMs: () => 100 }, // the default backoff (up to 5 s) only slows the test down
  });
  clients.push(c);
  return c;
}

/** The tree as [text, children] pairs: what a person sees. */
const shape = (nodes: BlockNode[]): unknown[] => nodes.map((n) => (n.children.length ? [n.content['text'], shape(n.children)] : n.content['text']));
/** Everything but the local-only view: for comparing two replicas. */
const replica = (c: Canvas) => [...c.blocks().values()].sort((x, y) => (x.block_id < y.block_id ? -1 : 1));

beforeAll(async () => {
  process.on('unhandledRejection', onFault);
  process.on('uncaughtException', onFault);
  port = await freePort();
  server = await startDevServer(serverEnv());
  anonKey = server.anonKey;
  proxies.alice = await startTcpProxy(port);
  proxies.bob = await startTcpProxy(port);
  alice = client(proxies.alice);
  bob = client(proxies.bob);
}, 90_000);

afterAll(async () => {
  ca?.close();
  cb?.close();
  await Promise.all(Object.values(proxies).map((p) => p?.close()));
  await server?.stop();
  process.off('unhandledRejection', onFault);
  process.off('uncaughtException', onFault);
});

describe('@potentia/client against a real server', () => {
  it('two people sign up through the client, share a workspace and open one canvas', async () => {
    const a = await alice.auth.signUp(emails.alice, password);
    const b = await bob.auth.signUp(emails.bob, password);
    expect(alice.auth.user()).toEqual({ id: a.id, email: emails.alice });
    expect(bob.auth.user()?.id).toBe(b.id);
    await expect(alice.auth.signUp(emails.alice, password)).rejects.toMatchObject({ code: 'user_already_exists', field: 'email' });

    const ws = await alice.workspaces.create('Client team');
    workspaceId = ws.workspace_id;
    expect(ws).toMatchObject({ name: 'Client team', role: 'owner' });
    const added = await alice.workspaces.addMember(workspaceId, emails.bob, 'editor');
    expect(added).toMatchObject({ kind: 'member', member: { user_id: b.id, role: 'editor' } });
    expect((await bob.workspaces.list()).map((w) => w.workspace_id)).toContain(workspaceId);
    const err = await alice.workspaces.create('').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PotentiaError);
    expect(err).toMatchObject({ code: 'invalid_input', status: 400 });

    ({ canvas_id: canvasId } = await alice.canvases.create(workspaceId, 'Plans'));
    const tooSoon = await alice.canvases.create(workspaceId, 'Too soon').catch((e: unknown) => e);
    expect(tooSoon).toBeInstanceOf(RateLimitedError);
    expect((tooSoon as RateLimitedError).retryAfterMs).toBeGreaterThan(0);
    expect((tooSoon as RateLimitedError).retryAfterMs).toBeLessThanOrEqual(10_000);
    expect((await bob.canvases.list()).find((c) => c.canvas_id === canvasId)).toMatchObject({ title: 'Plans', role: 'editor' });

    ca = alice.canvas(canvasId);
    cb = bob.canvas(canvasId);
    expect(alice.canvas(canvasId)).toBe(ca);
    await Promise.all([ca.connect(), cb.connect()]);
    expect([ca.status, cb.status]).toEqual(['live', 'live']);
    expect([ca.canWrite, cb.canWrite, ca.userId, cb.userId]).toEqual([true, true, a.id, b.id]);
    expect(ca.tree()).toEqual([]);
  });

  it('create / update / move / delete: optimistic at once, seen by the other in order', async () => {
    const seenByBob: unknown[] = [];
    const off = cb.subscribe((v) => {
      if (v.cause === 'remote') seenByBob.push(shape(v.tree()));
    });

    const pending = ca.create({ type: 'text', content: { text: 'one' } });
    // optimistic: in alice's tree before any answer, version 0
    expect(shape(ca.tree())).toEqual(['one']);
    const optimistic = ca.tree()[0]!;
    expect(optimistic.version).toBe(0);
    expect(ca.pending).toBe(1);
    const one = await pending;
    expect(one).toMatchObject({ block_id: optimistic.block_id, version: 1, content: { text: 'one' }, parent_id: null });
    expect(ca.pending).toBe(0);
    expect(ca.block(one.block_id)).toEqual(one);

    const two = await ca.create({ type: 'text', content: { text: 'two' } });
    const child = await ca.create({ type: 'text', content: { text: 'child' }, parent: one.block_id });
    const updated = await ca.update(one.block_id, { content: { title: 'First', text: 'one!' } });
    expect(updated).toMatchObject({ version: 2, content: { title: 'First', text: 'one!' } });

    // before: two goes right before one; at once locally
    const moving = ca.move(two.block_id, { before: one.block_id });
    expect(shape(ca.tree())).toEqual(['two', ['one!', ['child']]]);
    await moving;
    const deleting = ca.delete(one.block_id);
    expect(shape(ca.tree())).toEqual(['two']);
    await deleting;
    expect(ca.block(child.block_id)).toBeUndefined(); // the subtree went with it

    await until(() => cb.canvasSeq === ca.canvasSeq, 10_000, 'bob to catch up');
    off();
    expect(seenByBob).toEqual([
      ['one'],
      ['one', 'two'],
      [['one', ['child']], 'two'],
      [['one!', ['child']], 'two'],
      ['two', ['one!', ['child']]],
      ['two'],
    ]);
    expect(replica(cb)).toEqual(replica(ca));
    expect(cb.tree()[0]).toMatchObject({ block_id: two.block_id, version: 2 });

    // move after / parent, by bob this time
    const three = await cb.create({ type: 'text', content: { text: 'three' }, after: null });
    expect(shape(cb.tree())).toEqual(['three', 'two']);
    await cb.move(three.block_id, { parent: two.block_id });
    await cb.move(three.block_id, { after: two.block_id }); // out again: joins two's parent (top level), right after it
    await until(() => ca.canvasSeq === cb.canvasSeq);
    expect(shape(ca.tree())).toEqual(['two', 'three']);
    expect(replica(ca)).toEqual(replica(cb));
  });

  it('a change made on a block still being created waits for it, then goes out with the right base', async () => {
    const creating = ca.create({ type: 'text', content: { text: 'draft' } });
    const id = ca.tree().find((n) => n.content['text'] === 'draft')!.block_id;
    const typed = ca.editText(id, 'text', [5, ' v1']);
    expect(typed).toBe('draft v1');
    const retitled = ca.update(id, { content: { title: 'Draft' } });
    expect(ca.block(id)).toMatchObject({ version: 0, content: { text: 'draft v1', title: 'Draft' } });
    await creating;
    expect(await retitled).toMatchObject({ content: { title: 'Draft' } });
    await until(() => cb.block(id)?.content['title'] === 'Draft' && cb.text(id, 'text') === 'draft v1' && ca.text(id, 'text') === 'draft v1',
      10_000, 'the early text and the title on both sides');
    expect(cb.block(id)).toEqual(ca.block(id));
    expect(cb.block(id)).toMatchObject({ version: 3, content: { title: 'Draft', text: 'draft v1' } });
    await ca.delete(id);
  });

  it('concurrent typing through editText converges on both sides and on the server', async () => {
    const block = await ca.create({ type: 'text', content: { text: '|' } });
    await until(() => cb.block(block.block_id) !== undefined);
    const id = block.block_id;
    // alice types before the bar, bob after it, each at their own caret, which others' edits move
    const typists = [
      { canvas: ca, word: 'Hello', caret: 0 },
      { canvas: cb, word: 'World', caret: 1 },
    ];
    for (const t of typists) {
      t.canvas.onText((change) => {
        if (change.blockId === id && change.source === 'remote' && change.op) t.caret = transformPosition(t.caret, change.op);
      });
    }
    const type = (t: (typeof typists)[number], ch: string) => {
      t.canvas.editText(id, 'text', t.caret === 0 ? [ch] : [t.caret, ch]);
      t.caret += 1;
    };
    // the first letters in the same tick (neither has seen the other's), then concurrently
    for (const t of typists) type(t, t.word[0]!);
    await Promise.all(typists.map(async (t) => {
      for (const ch of t.word.slice(1)) {
        await sleep(10 + Math.floor(Math.random() * 20));
        type(t, ch);
      }
    }));
    await until(() => ca.text(id, 'text') === 'Hello|World' && cb.text(id, 'text') === 'Hello|World', 15_000, 'both texts to converge');
    // the server's copy is the same (through the HTTP API, as supabase-js sees it)
    await until(async () => {
      const { data } = await alice.supabase.functions.invoke(`canvas/${canvasId}/blocks/${id}`, { method: 'GET' });
      return (data as Block).content['text'] === 'Hello|World';
    }, 10_000, "the server's text");
    expect(ca.block(id)).toEqual(cb.block(id));
  });

  it('a same-field conflict raises ConflictError with base/theirs/mine and rolls the change back', async () => {
    const block = await ca.create({ type: 'text', content: { text: 'x', title: 'original' } });
    await until(() => cb.block(block.block_id)?.version === 1);
    const bobSaw: unknown[] = [];
    const off = cb.subscribe((v) => bobSaw.push(v.block(block.block_id)?.content['title']));

    // bob's network stalls: his edit is made on version 1 and cannot leave yet
    proxies.bob.cut({ existing: 'stall', incoming: 'blackhole' });
    const bobs = cb.update(block.block_id, { content: { title: 'from bob' } });
    expect(cb.block(block.block_id)?.content['title']).toBe('from bob'); // optimistic
    await ca.update(block.block_id, { content: { title: 'from alice' } }); // version 2
    proxies.bob.restore();

    const err = await bobs.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ConflictError);
    const conflict = err as ConflictError;
    expect(conflict).toMatchObject({
      code: 'conflict', blockId: block.block_id, version: 2, changed: ['content.title'],
      fields: { 'content.title': { base: 'original', theirs: 'from alice', mine: 'from bob' } },
    });
    expect(conflict.block).toMatchObject({ version: 2, content: { title: 'from alice' } });
    // rolled back: bob sees alice's value, and alice never saw his
    expect(cb.block(block.block_id)?.content['title']).toBe('from alice');
    expect(cb.pending).toBe(0);
    expect(bobSaw.at(-1)).toBe('from alice');
    off();

    // resolving: bob sends his choice again, based on the current version
    const resolved = await cb.update(block.block_id, { content: { title: 'from bob, after all' } });
    expect(resolved).toMatchObject({ version: 3, content: { title: 'from bob, after all' } });
    await until(() => ca.block(block.block_id)?.content['title'] === 'from bob, after all');

    // a refused change whose promise nobody holds (delete's too) is rolled back and is never an
    // unhandled rejection: Canvas.delete's own promise was one
    proxies.bob.cut({ existing: 'stall', incoming: 'blackhole' });
    void cb.delete(block.block_id);
    expect(cb.block(block.block_id)).toBeUndefined(); // optimistic
    await ca.update(block.block_id, { content: { title: 'kept by alice' } });
    proxies.bob.restore();
    await until(() => cb.block(block.block_id)?.content['title'] === 'kept by alice', 15_000, 'bob\'s delete rolled back');
    await until(() => cb.pending === 0);
    await new Promise((resolve) => setImmediate(resolve));
    expect(faults).toEqual([]);
  });

  it('different fields from the same old version merge without a conflict', async () => {
    const block = await cb.create({ type: 'text', content: { a: 1, b: 1 } });
    await until(() => ca.block(block.block_id) !== undefined);
    proxies.bob.cut({ existing: 'stall', incoming: 'blackhole' });
    const bobs = cb.update(block.block_id, { content: { b: 2 } });
    await ca.update(block.block_id, { content: { a: 2 } });
    proxies.bob.restore();
    expect(await bobs).toMatchObject({ version: 3, content: { a: 2, b: 2 } });
    await until(() => ca.block(block.block_id)?.version === 3);
    expect(ca.block(block.block_id)?.content).toEqual({ a: 2, b: 2 });
  });

  it('presence: the other appears with name and color, updates, and goes on leave', async () => {
    ca.presence.set({ name: 'Alice', color: '#e33', cursor: { x: 10, y: 20 } });
    await until(() => cb.presence.others().some((p) => p.userId === ca.userId && p.cursor?.x === 10), 10_000, 'alice in bob\'s presence');
    expect(cb.presence.others()).toEqual([
      { userId: ca.userId, name: 'Alice', color: '#e33', cursor: { x: 10, y: 20 }, selection: null, typing: false, lastSeen: expect.any(Number) },
    ]);
    const changes: number[] = [];
    const off = cb.presence.subscribe((others) => changes.push(others.length));
    // many moves in a burst: throttled, and the last one arrives
    for (let x = 0; x <= 30; x++) ca.presence.set({ cursor: { x, y: 0 } });
    ca.presence.set({ typing: true, selection: { blockId: 'b1', key: 'text', start: 1, end: 3 } });
    await until(() => cb.presence.others()[0]?.typing === true, 10_000, 'typing');
    expect(cb.presence.others()[0]).toMatchObject({ name: 'Alice', cursor: { x: 30, y: 0 }, selection: { blockId: 'b1', key: 'text', start: 1, end: 3 } });
    expect(changes.length).toBeLessThan(10);
    expect(() => ca.presence.set({ name: 'x'.repeat(1100) })).toThrow(PotentiaError);
    expect(ca.presence.mine()).toMatchObject({ name: 'Alice' }); // unchanged by the refused set

    // alice leaves: she is gone from bob's list
    ca.close();
    await until(() => cb.presence.others().length === 0, 10_000, 'alice to leave');
    off();
    ca = alice.canvas(canvasId);
    expect(ca.status).toBe('idle');
    await ca.connect();
  });

  it('a dropped socket and a stopped server: both resume, nothing is lost or applied twice', async () => {
    await until(() => ca.canvasSeq === cb.canvasSeq);
    const before = ca.tree().length;
    const statuses: string[] = [];
    const off = cb.subscribe((v) => {
      if (v.cause === 'status') statuses.push(v.status);
    });

    // bob's session is refreshed: the next socket carries the new access token
    const { data: refreshed } = await bob.supabase.auth.refreshSession();
    const freshToken = refreshed.session!.access_token;
    expect(await bob.auth.accessToken()).toBe(freshToken);

    // bob's network drops (connections reset, new ones refused) while both keep working
    proxies.bob.cut();
    await until(() => cb.status === 'reconnecting', 5000, 'bob to notice');
    const bobsOffline = [cb.create({ type: 'text', content: { text: 'bob offline 1' } }), cb.create({ type: 'text', content: { text: 'bob offline 2' } })];
    expect(cb.tree().length).toBe(before + 2); // shown at once
    const alices = await ca.create({ type: 'text', content: { text: 'alice meanwhile' } });
    await sleep(300);
    proxies.bob.restore();
    const bobs = await Promise.all(bobsOffline);
    await until(() => cb.canvasSeq === ca.canvasSeq && cb.block(alices.block_id) !== undefined, 10_000, 'bob to resume');
    expect(statuses).toContain('reconnecting');
    expect(cb.status).toBe('live');
    const h1 = socketUrls.filter((u) => u.includes(`/ws/canvas/${canvasId}`) && u.includes(`:${proxies.bob.port}/`));
    expect(new URL(h1.at(-1)!).searchParams.get('access_token')).toBe(freshToken);

    // the server stops under both; both keep editing; it comes back on the same port
    await server.stop();
    await until(() => ca.status === 'reconnecting' && cb.status === 'reconnecting', 10_000, 'both to notice');
    const whileDown = [
      ca.create({ type: 'text', content: { text: 'alice while down' } }),
      cb.update(bobs[0]!.block_id, { content: { text: 'bob offline 1, edited while down' } }),
    ];
    expect(cb.editText(alices.block_id, 'text', [15, '!'])).toBe('alice meanwhile!');
    server = await startDevServer(serverEnv());
    const [alicesDown] = await Promise.all(whileDown);
    await until(() => ca.status === 'live' && cb.status === 'live' && ca.canvasSeq === cb.canvasSeq
      && ca.text(alices.block_id, 'text') === 'alice meanwhile!' && cb.block(alicesDown!.block_id) !== undefined, 30_000, 'both to resume');
    off();

    expect(replica(ca)).toEqual(replica(cb));
    const texts = ca.tree().map((n) => n.content['text']);
    for (const t of ['bob offline 1, edited while down', 'bob offline 2', 'alice meanwhile!', 'alice while down']) {
      expect(texts.filter((x) => x === t)).toHaveLength(1); // each applied exactly once
    }
    // the server agrees: as many blocks as both replicas show
    const { data } = await alice.supabase.functions.invoke(`canvas/${canvasId}/blocks`, { method: 'GET' });
    expect((data as { items: Block[] }).items.map((b) => b.block_id).sort()).toEqual(replica(ca).map((b) => b.block_id));
    expect(faults).toEqual([]);
  }, 90_000);

  it('access: a non-member cannot connect; a removed member loses the canvas, live or offline', async () => {
    const carol = client(proxies.alice);
    await carol.auth.signUp(`carol-${randomUUID()}@example.com`, password);
    const refused = await carol.canvas(canvasId).connect().catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(AccessLostError);
    expect(carol.canvas(canvasId).status).toBe('idle'); // a fresh one: the refused canvas closed

    // removed while connected: the server says so on the socket
    const errors: PotentiaError[] = [];
    cb.onError((e) => errors.push(e));
    const bobId = cb.userId!;
    const removeBob = async () => {
      const { error } = await alice.supabase.functions.invoke(`workspaces/${workspaceId}/members/${bobId}`, { method: 'DELETE' });
      expect(error).toBeNull();
    };
    await removeBob();
    await until(() => cb.status === 'closed', 10_000, "bob's canvas to close");
    expect(errors.find((e) => e instanceof AccessLostError)).toMatchObject({ code: 'forbidden' });

    // removed while offline, with a change waiting: the reconnects are refused, the access check ends it
    await alice.workspaces.addMember(workspaceId, emails.bob, 'editor');
    cb = bob.canvas(canvasId);
    cb.onError((e) => errors.push(e));
    await cb.connect();
    proxies.bob.cut();
    await until(() => cb.status === 'reconnecting');
    const stuck = cb.create({ type: 'text', content: { text: 'never' } });
    await removeBob();
    proxies.bob.restore();
    const err = await stuck.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AccessLostError);
    expect(cb.status).toBe('closed');
    // the HTTP check cannot tell a removed member from a missing canvas: the server hides which
    expect(errors.at(-1)).toMatchObject({ code: 'not_found' });

    // signing out closes open canvases
    const reopened = alice.canvas(canvasId);
    await alice.auth.signOut();
    expect(alice.auth.user()).toBeNull();
    expect(reopened.status).toBe('closed');
    await expect(alice.canvas(canvasId).connect()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(faults).toEqual([]);
  });
});
