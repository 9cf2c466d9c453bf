import { randomUUID } from 'node:crypto';
import { type RealtimeChannel } from '@supabase/realtime-js';
import { SignJWT } from 'jose';
import type postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { untilVisible } from '../../src/realtime/access.ts';
import { CANVAS_TOPIC_SPELLING } from '../../src/realtime/canvas-topic.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { realtimeClients } from '../helpers/realtime.ts';
import { sleep, until } from '../helpers/wait.ts';
import { openH1 as connectH1, type H1Conn } from '../helpers/h1.ts';

// Authorization on the live path: a public join of `canvas:{id}` is a different room from the
// private channel (presence and client broadcasts never cross), and a membership or canvas change
// made by plain SQL re-authorizes the open H1 and realtime-js sockets of the affected users on
// every gateway process.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub });
/** The project's anon key: role anon, no sub (as Supabase issues it). */
const anonKey = () => {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'supabase', ref: 'potentia-test', role: 'anon', iat, exp: iat + 3600 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(config.auth.jwtSecret));
};
const wsUrl = (server: Server) => server.url.replace(/^http/, 'ws');

const realtime = realtimeClients();
const connect = (server: { url: string }, apikey: string, vsn: string) => realtime.connect(server.url, apikey, vsn);
const sockets: WebSocket[] = [];
/** Subscribes; resolves with the first status; records when (and if) the channel closes later. */
function subscribe(channel: RealtimeChannel): Promise<{ status: string; err?: Error; closedAt: () => number | null }> {
  let closedAt: number | null = null;
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status === 'CLOSED') closedAt ??= performance.now();
      else resolve({ status, err, closedAt: () => closedAt });
    });
  });
}

type H1 = H1Conn;

/** An H1 socket on `canvasId` as `userId`, resumed (live) before it is returned unless `live` is false. */
async function openH1(server: Server, canvasId: string, userId: string, live = true): Promise<H1> {
  const conn = await connectH1(server.url, canvasId, await token(userId), '&since_seq=0');
  sockets.push(conn.ws);
  if (live) await conn.next((m) => m.type === 'resumed');
  else await conn.next((m) => m.type === 'hello');
  return conn;
}

/** The socket's close, or a failure naming what it received meanwhile. */
function closedWithin(c: H1, ms = 5000): Promise<{ code: number; at: number }> {
  let timer!: NodeJS.Timeout;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`socket not closed after ${ms} ms; got ${JSON.stringify(c.inbox.slice(-5))}`)), ms);
  });
  return Promise.race([c.closed, late]).finally(() => clearTimeout(timer));
}

const is = (type: ServerMessage['type'], extra: (m: any) => boolean = () => true) => (m: ServerMessage) => m.type === type && extra(m);
const createBlock = (userId: string, canvasId: string, text: string) =>
  mutate(db.sql, userId, canvasId, { action: 'create', patch: { type: 'text', content: { text } } });

let server: Server;
let second: Server;
beforeAll(async () => {
  server = await startServer(config);
  second = await startServer(config); // a second gateway process on the same database
  await Promise.all([server.gateway!.bus.ready(), second.gateway!.bus.ready()]);
}, 120_000);
afterAll(async () => {
  await realtime.disconnectAll();
  for (const ws of sockets) ws.terminate();
  await server?.stop();
  await second?.stop();
  await db.close();
});

describe.each(['1.0.0', '2.0.0'])('a public join of canvas:{id} (vsn %s)', (vsn) => {
  it('sees no presence or broadcast of the private channel, and cannot inject into it', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const stranger = await createUser(db.sql, 'stranger');
    await callAs(db.sql, stranger, 'create_workspace', ['Elsewhere']); // a user of another workspace
    const topic = `canvas:${canvasId}`;

    // the private room: the owner tracks presence; the editor is the control observer
    const owner = connect(server, await token(users.owner!), vsn).channel(topic, { config: { private: true, presence: { key: 'owner' } } });
    const ownerJoins: string[] = [];
    owner.on('presence', { event: 'join' }, (p) => ownerJoins.push(p.key));
    const ownerBroadcasts: any[] = [];
    owner.on('broadcast', { event: 'cursor' }, (m) => ownerBroadcasts.push(m.payload));
    expect((await subscribe(owner)).status).toBe('SUBSCRIBED');
    expect(await owner.track({ name: 'owner' })).toBe('ok');

    // the spies: the anon key, and a signed-in user of another workspace; config.private false
    const spies = [
      { name: 'anon', channel: connect(server, await anonKey(), vsn).channel(topic, { config: { presence: { key: 'spy-anon' }, broadcast: { self: false } } }) },
      { name: 'stranger', channel: connect(server, await token(stranger), vsn).channel(topic, { config: { presence: { key: 'spy-stranger' } } }) },
    ];
    const seen: Record<string, { joins: string[]; broadcasts: any[] }> = {};
    for (const spy of spies) {
      const s: { joins: string[]; broadcasts: any[] } = { joins: [], broadcasts: [] };
      seen[spy.name] = s;
      spy.channel.on('presence', { event: 'join' }, (p) => s.joins.push(p.key));
      spy.channel.on('broadcast', { event: 'cursor' }, (m) => s.broadcasts.push(m.payload));
      expect((await subscribe(spy.channel)).status).toBe('SUBSCRIBED'); // a public channel may have any name
      expect(Object.keys(spy.channel.presenceState())).toEqual([]); // presence_state of the public room: empty
    }
    // the spies track and broadcast on the public room
    for (const spy of spies) {
      expect(await spy.channel.track({ name: spy.name })).toBe('ok');
      expect(await spy.channel.send({ type: 'broadcast', event: 'cursor', payload: { from: spy.name } })).toBe('ok');
    }
    // the public room works: each spy sees the other's presence and broadcast (so absence below means something)
    await until(() => seen.anon!.joins.includes('spy-stranger') && seen.stranger!.joins.includes('spy-anon'), 5000, 'public presence');
    await until(() => seen.anon!.broadcasts.length === 1 && seen.stranger!.broadcasts.length === 1, 5000, 'public broadcasts');

    // the private room goes on: the owner re-tracks and broadcasts; an editor joins and tracks
    expect(await owner.track({ name: 'owner', cursor: { x: 1 } })).toBe('ok');
    expect(await owner.send({ type: 'broadcast', event: 'cursor', payload: { from: 'owner' } })).toBe('ok');
    const editor = connect(server, await token(users.editor!), vsn).channel(topic, { config: { private: true, presence: { key: 'editor' } } });
    editor.on('presence', { event: 'sync' }, () => {});
    expect((await subscribe(editor)).status).toBe('SUBSCRIBED');
    expect(Object.keys(editor.presenceState())).toEqual(['owner']); // the private room's state: the owner only
    expect(await editor.track({ name: 'editor' })).toBe('ok');
    await until(() => ownerJoins.includes('editor'), 5000, 'the editor in the private room');
    expect(await editor.send({ type: 'broadcast', event: 'cursor', payload: { from: 'editor' } })).toBe('ok');
    await until(() => ownerBroadcasts.length === 1, 5000, 'a private broadcast');
    // both spies' sockets got the public messages sent before; a leak would have arrived by now
    // (a spy's own follow-up round trip orders after everything the server sent it before)
    for (const spy of spies) expect(await spy.channel.send({ type: 'broadcast', event: 'cursor', payload: { from: `${spy.name}-2` } })).toBe('ok');
    await until(() => seen.anon!.broadcasts.length === 2 && seen.stranger!.broadcasts.length === 2, 5000, 'second public broadcasts');

    for (const spy of spies) {
      expect(Object.keys(spy.channel.presenceState()).sort()).toEqual(['spy-anon', 'spy-stranger']);
      expect(seen[spy.name]!.joins).not.toContain('owner');
      expect(seen[spy.name]!.joins).not.toContain('editor');
      expect(seen[spy.name]!.broadcasts.map((b) => b.from).sort()).toEqual(spy.name === 'anon' ? ['stranger', 'stranger-2'] : ['anon', 'anon-2']);
    }
    expect(Object.keys(owner.presenceState()).sort()).toEqual(['editor', 'owner']);
    expect(ownerJoins).not.toContain('spy-anon');
    expect(ownerJoins).not.toContain('spy-stranger');
    expect(ownerBroadcasts).toEqual([{ from: 'editor' }]);
  });
});

describe('the database\'s events on a private channel', () => {
  it('a member (a viewer here) cannot broadcast them to the others, in any case, on either gateway; its own events pass', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const topic = `canvas:${canvasId}`;
    // the listener: the editor on one gateway, as an app listens for applied operations and deletion
    const editor = connect(server, await token(users.editor!), '1.0.0').channel(topic, { config: { private: true } });
    const got: Array<{ event: string; payload: any; meta?: { id?: string } }> = [];
    editor.on('broadcast', { event: 'block_op' }, (m) => got.push(m as never));
    editor.on('broadcast', { event: 'canvas_deleted' }, (m) => got.push(m as never));
    editor.on('broadcast', { event: 'cursor' }, (m) => got.push(m as never));
    expect((await subscribe(editor)).status).toBe('SUBSCRIBED');

    // the forger: the viewer, on the other gateway (through the cluster), with and without ack
    const forged = { canvas_id: canvasId, action: 'delete', block_id: randomUUID(), deleted_ids: [randomUUID()], actor_id: users.owner };
    const events = ['block_op', 'BLOCK_OP', 'canvas_deleted', 'presence_leave', 'access_changed'];
    // vsn 1.0.0 (JSON) carries any name as is: the Kelvin sign, which realtime-js lowers to k, too
    // (vsn 2.0.0's binary push keeps the low byte of each character only)
    for (const [ack, vsn] of [[true, '1.0.0'], [false, '2.0.0']] as const) {
      const viewer = connect(second, await token(users.viewer!), vsn).channel(topic, { config: { private: true, broadcast: { ack } } });
      const system: string[] = [];
      viewer.on('system', {}, (m: { message?: string }) => system.push(String(m.message)));
      expect((await subscribe(viewer)).status).toBe('SUBSCRIBED');
      const names = vsn === '1.0.0' ? [...events, 'Bloc\u212A_op'] : events;
      for (const event of names) {
        const sent = await viewer.send({ type: 'broadcast', event, payload: forged });
        if (ack) expect(sent, event).toBe('error');
      }
      if (!ack) await until(() => system.length >= names.length, 5000, 'a system error per refused broadcast');
      expect(system.every((m) => /is an event the database sends on this channel/.test(m))).toBe(true);
      // its own event names still reach the others
      expect(await viewer.send({ type: 'broadcast', event: 'cursor', payload: { ack } })).toBe('ok');
    }
    await until(() => got.filter((m) => m.event === 'cursor').length === 2, 5000, 'the two cursor broadcasts');

    // a real operation's block_op arrives, from the database (meta.id), and nothing forged did
    const created = await createBlock(users.owner!, canvasId, 'real');
    await until(() => got.some((m) => m.event === 'block_op'), 5000, 'the real block_op');
    const ops = got.filter((m) => m.event !== 'cursor');
    expect(ops).toHaveLength(1);
    expect(ops[0]!.payload.block_id).toBe(created.block_id);
    expect(ops[0]!.meta?.id).toEqual(expect.any(String));
  });
});

it('raw Phoenix vsn 1.0.0: an anon public phx_join gets an empty presence_state and no diff of the private room', async () => {
  const { canvasId, users } = await createCanvas(db.sql);
  const topic = `realtime:canvas:${canvasId}`;
  const owner = connect(server, await token(users.owner!), '1.0.0').channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'owner' } } });
  expect((await subscribe(owner)).status).toBe('SUBSCRIBED');
  expect(await owner.track({ name: 'owner' })).toBe('ok');

  const ws = new WebSocket(`${wsUrl(server)}/realtime/v1/websocket?apikey=${await anonKey()}&vsn=1.0.0`);
  sockets.push(ws);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ topic, event: 'phx_join', ref: '1', join_ref: '1',
    payload: { config: { broadcast: { self: false, ack: false }, presence: { key: 'spy', enabled: true }, postgres_changes: [], private: false } } }));
  await until(() => frames.some((f) => f.event === 'presence_state'), 5000, 'presence_state');
  expect(frames.find((f) => f.event === 'phx_reply')?.payload).toMatchObject({ status: 'ok' });
  expect(frames.find((f) => f.event === 'presence_state')?.payload).toEqual({});

  expect(await owner.track({ name: 'owner', typing: true })).toBe('ok'); // a diff in the private room
  ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', ref: '2', join_ref: null, payload: {} }));
  await until(() => frames.some((f) => f.topic === 'phoenix' && f.ref === '2'), 5000, 'heartbeat reply');
  expect(frames.filter((f) => f.event === 'presence_diff')).toEqual([]);
});

describe('a canvas id spelled another way', () => {
  // Postgres reads a uuid in any case and with its dashes anywhere, but topics are matched as
  // strings: the deltas and access_changed messages go to canvas:<lower-case id>, so another
  // spelling would be a private room that no access change ever re-checks
  it('a private join of canvas:<id> in upper case or with its dashes moved is refused, naming the spelling', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const hex = canvasId.replaceAll('-', '');
    // a hyphen after each of the first four groups of four digits: uuid_in reads it as the same id
    const spellings = [canvasId.toUpperCase(), `${hex.match(/.{4}/g)!.slice(0, 4).join('-')}-${hex.slice(16)}`];
    for (const spelled of spellings) {
      expect(spelled).toHaveLength(36);
      const channel = connect(server, await token(users.editor!), '1.0.0').channel(`canvas:${spelled}`, { config: { private: true } });
      const sub = await subscribe(channel);
      expect(sub.status).toBe('CHANNEL_ERROR');
      expect(sub.err?.message).toBe(CANVAS_TOPIC_SPELLING);
    }
    const canonical = connect(server, await token(users.editor!), '1.0.0').channel(`canvas:${canvasId}`, { config: { private: true } });
    expect((await subscribe(canonical)).status).toBe('SUBSCRIBED');
  });

  it('an H1 socket opened with the id in upper case gets the live deltas and is closed when the member is removed', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const h1 = await openH1(second, canvasId.toUpperCase(), users.editor!);
    const before = await createBlock(users.owner!, canvasId, 'seen by the upper-case socket');
    await h1.next(is('delta', (m) => m.server_seq === before.server_seq));
    await db.sql`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
    expect((await closedWithin(h1)).code).toBe(4403);
  });
});

describe('re-authorization of open sockets', () => {
  /**
   * A membership change committed while the re-check it starts waits: `change` runs in a
   * transaction held open until a lock on realtime.messages has queued behind it, which gets the
   * lock at the change's commit, so the re-check's RLS probe (an insert there) waits until
   * `release()`. Resolves once the change has committed and the probe waits on the lock.
   * `probeWaiting()`: whether it still does.
   */
  async function recheckHeld(change: (tx: postgres.TransactionSql) => Promise<unknown>) {
    let commit!: () => void;
    let unlock!: () => void;
    const changed = db.sql.begin(async (tx) => {
      await tx`set local idle_in_transaction_session_timeout = '30s'`; // not left open by a failed wait (its xid holds off slot creation)
      await change(tx);
      await new Promise<void>((r) => { commit = r; });
    });
    await until(() => commit !== undefined, 5000, 'the change to run');
    const lock = db.sql.begin(async (tx) => {
      await tx`set local idle_in_transaction_session_timeout = '30s'`; // nor the lock every mutation's delta waits for
      await tx`lock table realtime.messages in share mode`;
      await new Promise<void>((r) => { unlock = r; });
    });
    const waiting = (mode: string) => async () => (await db.sql`select from pg_locks l join pg_class c on c.oid = l.relation
                                                            where c.relname = 'messages' and l.mode = ${mode} and not l.granted`).length > 0;
    await until(waiting('ShareLock'), 5000, 'the lock to queue');
    commit();
    await changed;
    await until(waiting('RowExclusiveLock'), 3000, 'the re-check\'s probe to wait on the lock');
    return {
      probeWaiting: waiting('RowExclusiveLock'),
      release: async () => { unlock(); await lock; },
    };
  }
  const removeMember = (workspaceId: string, userId: string) => (tx: postgres.TransactionSql) =>
    tx`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${userId}`;

  it('closes a removed member\'s H1 and realtime-js sockets on both gateway processes when a plain-SQL delete commits', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const topic = `canvas:${canvasId}`;
    const h1 = await openH1(server, canvasId, users.editor!);
    const h1Other = await openH1(second, canvasId, users.editor!);
    const ownerH1 = await openH1(second, canvasId, users.owner!);
    const channels: Array<{ vsn: string; system: any[]; ops: any[]; closedAt: () => number | null }> = [];
    for (const [srv, vsn] of [[server, '1.0.0'], [second, '2.0.0']] as const) {
      const system: any[] = [];
      const ops: any[] = [];
      const channel = connect(srv, await token(users.editor!), vsn).channel(topic, { config: { private: true } })
        .on('system', {}, (p) => system.push(p))
        .on('broadcast', { event: 'block_op' }, (m) => ops.push(m.payload));
      const sub = await subscribe(channel);
      expect(sub.status).toBe('SUBSCRIBED');
      channels.push({ vsn, system, ops, closedAt: sub.closedAt });
    }
    // live before the change: every socket gets a delta
    const before = await createBlock(users.owner!, canvasId, 'before');
    await until(() => channels.every((c) => c.ops.length === 1), 5000, 'the first delta on realtime-js');
    for (const c of [h1, h1Other]) await c.next(is('delta', (m) => m.server_seq === before.server_seq));

    await db.sql`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
    const after = await createBlock(users.owner!, canvasId, 'after the removal'); // committed after the removal

    for (const c of [h1, h1Other]) {
      expect((await closedWithin(c)).code).toBe(4403);
      expect(c.inbox.at(-1)).toMatchObject({ type: 'error', code: 'forbidden', message: 'you no longer have access to this canvas' });
      expect(c.inbox.filter((m) => m.type === 'delta').map((m: any) => m.server_seq)).toEqual([before.server_seq]); // nothing after the removal
    }
    for (const c of channels) {
      await until(() => c.closedAt() !== null, 10_000, `realtime-js ${c.vsn} channel close`);
      expect(c.system).toEqual([{ extension: 'system', status: 'error', channel: topic,
        message: `Unauthorized: You do not have permissions to read from this Channel topic: ${topic}` }]);
      expect(c.ops.map((o) => o.server_seq)).toEqual([before.server_seq]);
    }
    // the owner is untouched and gets the delta the removed member did not
    expect(await ownerH1.next(is('delta', (m) => m.server_seq === after.server_seq))).toMatchObject({ block: { content: { text: 'after the removal' } } });
    expect(ownerH1.ws.readyState).toBe(WebSocket.OPEN);
    // and the door is shut too
    await expect(openH1(server, canvasId, users.editor!)).rejects.toThrow(/404/);
    ownerH1.ws.close();
  });

  it('answers the mutation running when the member is removed, then closes (4403): its outcome is not lost with the socket', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const made = await createBlock(users.owner!, canvasId, 'locked');
    const h1 = await openH1(server, canvasId, users.editor!);
    // the editor's update waits on the block row, held by another transaction, while the removal
    // commits and the gateway re-checks: before, the socket closed first and the answer was lost
    const locker = await db.sql.reserve();
    try {
      await locker`begin`;
      await locker`set local idle_in_transaction_session_timeout = '30s'`; // never left open (it blocks slot creation)
      const pid = (await locker<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
      await locker`select from app.blocks where block_id = ${made.block_id!} for update`;
      const opId = randomUUID();
      h1.send({ type: 'mutate', client_op_id: opId, action: 'update', block_id: made.block_id, base_version: 1, patch: { content: { text: 'edited' } } });
      await until(async () => (await db.sql`select from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))`).length > 0,
        10_000, 'the mutation waiting for the locked block');
      await db.sql`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
      // time for the re-check (well under 1 s on an idle machine); it waits for the running mutation now
      await Promise.race([h1.closed, sleep(1500)]);
      await locker`commit`;
      const answer = await h1.next((m) => 'client_op_id' in m && m.client_op_id === opId);
      const [block] = await db.sql<{ version: number }[]>`select version from app.blocks where block_id = ${made.block_id!}`;
      // its role was read before the removal: it commits, and the ack says so
      expect({ answer, version: block!.version }).toMatchObject({ answer: { type: 'ack', status: 'success', version: 2 }, version: 2 });
      expect((await closedWithin(h1)).code).toBe(4403);
      expect(h1.inbox.at(-1)).toMatchObject({ type: 'error', code: 'forbidden' });
    } finally {
      await locker`rollback`.catch(() => {});
      locker.release();
    }
  });

  it('closes every socket on a canvas deleted by plain SQL when it commits (H1: not_found, 4404)', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
    const topic = `canvas:${canvasId}`;
    const owner = await openH1(server, canvasId, users.owner!);
    const viewer = await openH1(second, canvasId, users.viewer!);
    const system: any[] = [];
    const channel = connect(server, await token(users.viewer!), '2.0.0').channel(topic, { config: { private: true } }).on('system', {}, (p) => system.push(p));
    const sub = await subscribe(channel);
    expect(sub.status).toBe('SUBSCRIBED');

    await db.sql`update app.canvases set deleted_at = now() where canvas_id = ${canvasId}`;
    for (const c of [owner, viewer]) {
      expect((await closedWithin(c)).code).toBe(4404);
      expect(c.inbox.at(-1)).toMatchObject({ type: 'error', code: 'not_found', message: 'this canvas was deleted' });
    }
    await until(() => sub.closedAt() !== null, 10_000, 'realtime-js channel close');
    expect(system).toMatchObject([{ status: 'error', message: expect.stringMatching(/^Unauthorized/) }]);
  });

  it('api.delete_canvas: realtime-js gets the canvas_deleted broadcast, then the channel closes', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const events: string[] = [];
    const channel = connect(second, await token(users.editor!), '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'canvas_deleted' }, (m) => events.push(`broadcast ${m.payload.canvas_id}`))
      .on('broadcast', { event: 'access_changed' }, () => events.push('access_changed leaked'))
      .on('system', {}, (p) => events.push(`system ${p.status}`));
    const sub = await subscribe(channel);
    expect(sub.status).toBe('SUBSCRIBED');
    await callAs(db.sql, users.owner!, 'delete_canvas', [canvasId]);
    await until(() => sub.closedAt() !== null, 10_000, 'channel close');
    expect(events).toEqual([`broadcast ${canvasId}`, 'system error']);
  });

  it('makes a member downgraded to viewer by plain SQL read-only when it commits, still receiving deltas', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const h1 = await openH1(server, canvasId, users.editor!);
    expect(h1.inbox[0]).toMatchObject({ type: 'hello', can_write: true });
    const ops: number[] = [];
    const channel = connect(second, await token(users.editor!), '1.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (m) => ops.push(m.payload.server_seq));
    const sub = await subscribe(channel);
    expect(sub.status).toBe('SUBSCRIBED');

    await db.sql`update app.workspace_members set role = 'viewer' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
    const access = await h1.next(is('access'), 10_000);
    expect(access).toEqual({ type: 'access', can_write: false, role: 'viewer', message: 'your role on this canvas (viewer) cannot edit it' });
    const opId = randomUUID();
    h1.send({ type: 'mutate', client_op_id: opId, action: 'create', patch: { type: 'text' } });
    expect(await h1.next(is('error'))).toMatchObject({ code: 'read_only', client_op_id: opId, message: 'your role on this canvas (viewer) cannot edit it' });
    // still a reader on both socket kinds
    const theirs = await createBlock(users.owner!, canvasId, 'still visible');
    expect(await h1.next(is('delta', (m) => m.server_seq === theirs.server_seq))).toMatchObject({ block: { content: { text: 'still visible' } } });
    await until(() => ops.includes(theirs.server_seq!), 5000, 'the delta on realtime-js');
    expect(sub.closedAt()).toBeNull();
    expect(h1.ws.readyState).toBe(WebSocket.OPEN);

    // promoted back: writable again, told so
    await db.sql`update app.workspace_members set role = 'editor' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`;
    expect(await h1.next(is('access'), 10_000)).toEqual({ type: 'access', can_write: true, role: 'editor', message: null });
    const again = randomUUID();
    h1.send({ type: 'mutate', client_op_id: again, action: 'create', patch: { type: 'text' } });
    expect(await h1.next(is('ack'))).toMatchObject({ client_op_id: again, status: 'success' });
    h1.ws.close();
  });

  /** Runs `join` while the removal of `users.editor` commits behind the join's own authorization check. */
  async function removeDuringCheck<T>(workspaceId: string, editor: string, join: () => Promise<T>): Promise<T> {
    let joined!: Promise<T>;
    // hold a table the RLS probe reads (through internal.canvas_role): the probe's statement has
    // taken its snapshot and waits; the removal commits, releasing the lock; the probe answers
    // from its snapshot — still a member — so the socket is admitted on the old state
    await db.sql.begin(async (tx) => {
      await tx`lock table app.canvas_members in access exclusive mode`;
      joined = join();
      for (let i = 0; i < 200; i++) {
        const [row] = await db.sql`select count(*)::int as n from pg_locks l join pg_class c on c.oid = l.relation
                                    where c.relname = 'canvas_members' and not l.granted`;
        if (row!.n > 0) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      await tx`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${editor}`;
    });
    return joined;
  }

  it('re-checks a realtime-js join admitted on the state from before a removal committed during its check', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const system: any[] = [];
    const channel = connect(server, await token(users.editor!), '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('system', {}, (p) => system.push(p));
    const sub = await removeDuringCheck(workspaceId, users.editor!, () => subscribe(channel));
    expect(sub.status).toBe('SUBSCRIBED'); // admitted on the old state ...
    await until(() => sub.closedAt() !== null, 10_000, 'the late re-check closing the channel'); // ... then re-checked
    expect(system).toMatchObject([{ status: 'error', message: expect.stringMatching(/^Unauthorized/) }]);
  });

  it('re-checks a token refresh to another user admitted on the state from before that user\'s removal committed during its check', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const system: any[] = [];
    const ops: unknown[] = [];
    const client = connect(server, await token(users.owner!), '2.0.0');
    const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('system', {}, (p) => system.push(p))
      .on('broadcast', { event: 'block_op' }, ({ payload }) => ops.push(payload));
    const sub = await subscribe(channel);
    expect(sub.status).toBe('SUBSCRIBED');
    // supabase-js signs another user in on the same client: the channel refreshes to the editor's
    // token, whose check reads the state from before the editor's removal
    const editorToken = await token(users.editor!);
    await removeDuringCheck(workspaceId, users.editor!, async () => { await client.setAuth(editorToken); });
    await until(() => sub.closedAt() !== null, 10_000, 'the late re-check closing the channel');
    expect(system).toMatchObject([{ status: 'error', message: expect.stringMatching(/^Unauthorized/) }]);
    await createBlock(users.owner!, canvasId, 'after the removal');
    await new Promise((r) => setTimeout(r, 500));
    expect(ops).toEqual([]);
  });

  it('holds client broadcasts and presence changes from another gateway while a removed member\'s channel is re-checked, and drops them', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const owner = connect(second, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.owner! } } });
    const cursors: unknown[] = [];
    const names: unknown[] = [];
    const editor = connect(server, await token(users.editor!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'cursor' }, ({ payload }) => cursors.push(payload.n))
      .on('presence', { event: 'join' }, ({ newPresences }) => names.push(...newPresences.map((p) => p.name)));
    expect((await subscribe(owner)).status).toBe('SUBSCRIBED');
    const sub = await subscribe(editor);
    expect(sub.status).toBe('SUBSCRIBED');
    expect(await owner.track({ name: 'before' })).toBe('ok');
    expect(await owner.send({ type: 'broadcast', event: 'cursor', payload: { n: 1 } })).toBe('ok');
    await until(() => cursors.length === 1 && names.length === 1, 5000, 'the broadcast and the join before the removal');

    // the editor's removal commits, and the re-check it starts waits (recheckHeld). Nothing the
    // removal's commit held back is a database message: the owner's re-track and broadcast go
    // between gateways (cluster.ts)
    const held = await recheckHeld(removeMember(workspaceId, users.editor!));
    expect(await owner.track({ name: 'during' })).toBe('ok');
    expect(await owner.send({ type: 'broadcast', event: 'cursor', payload: { n: 2 } })).toBe('ok');
    await new Promise((r) => setTimeout(r, 700));
    await held.release();
    await until(() => sub.closedAt() !== null, 5000, 'the re-check closing the channel');
    expect(cursors).toEqual([1]);
    expect(names).toEqual(['before']);
  });

  it('a removed member\'s own broadcasts and tracks sent while its channel is re-checked reach nobody: they wait for the re-check and are refused', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const cursors: unknown[] = [];
    const names: unknown[] = [];
    const owner = connect(second, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.owner! } } })
      .on('broadcast', { event: 'cursor' }, ({ payload }) => cursors.push(payload.n))
      .on('presence', { event: 'join' }, ({ newPresences }) => names.push(...newPresences.map((p) => p.name)));
    const editor = connect(server, await token(users.editor!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.editor! }, broadcast: { ack: true } } });
    expect((await subscribe(owner)).status).toBe('SUBSCRIBED');
    const sub = await subscribe(editor);
    expect(sub.status).toBe('SUBSCRIBED');
    // the editor's send and track rights are checked (and kept for the channel) before the removal
    expect(await editor.track({ name: 'before' })).toBe('ok');
    expect(await editor.send({ type: 'broadcast', event: 'cursor', payload: { n: 1 } })).toBe('ok');
    await until(() => cursors.length === 1 && names.length === 1, 5000, 'the broadcast and the join before the removal');

    // the removal commits and the editor's gateway re-checks its channel, the probe waiting on a
    // lock (recheckHeld); meanwhile the removed editor keeps sending
    const held = await recheckHeld(removeMember(workspaceId, users.editor!));
    const sent = editor.send({ type: 'broadcast', event: 'cursor', payload: { n: 2 } });
    const tracked = editor.track({ name: 'during' });
    await new Promise((r) => setTimeout(r, 700)); // what was relayed reached the owner's gateway
    expect(cursors).toEqual([1]);
    expect(names).toEqual(['before']);
    await held.release();
    await until(() => sub.closedAt() !== null, 5000, 'the re-check closing the channel');
    // refused after the channel's phx_close: realtime-js, which has let the channel go, reads no
    // answer to them ('timed out'); neither was taken
    expect(await sent).not.toBe('ok');
    expect(await tracked).not.toBe('ok');
    await new Promise((r) => setTimeout(r, 300));
    expect(cursors).toEqual([1]);
    expect(names).toEqual(['before']);
    await until(() => !Object.keys(owner.presenceState()).includes(users.editor!), 5000, 'the removed editor\'s presence gone');
  });

  it('a channel waiting for its re-check holds up none of the socket\'s other frames: a public channel\'s broadcast on the same socket is answered while the probe still waits on a lock', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const client = connect(server, await token(users.editor!), '2.0.0');
    const canvas = client.channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { ack: true } } });
    const room = client.channel(`room-${randomUUID()}`, { config: { broadcast: { ack: true } } });
    expect((await subscribe(canvas)).status).toBe('SUBSCRIBED');
    expect((await subscribe(room)).status).toBe('SUBSCRIBED');
    expect(await canvas.send({ type: 'broadcast', event: 'cursor', payload: { n: 1 } })).toBe('ok');

    const held = await recheckHeld(removeMember(workspaceId, users.editor!));
    const sent = canvas.send({ type: 'broadcast', event: 'cursor', payload: { n: 2 } }); // waits for the re-check
    // the other channel of the socket is not the re-checked one's business
    const other = await room.send({ type: 'broadcast', event: 'x', payload: {} });
    const stillWaiting = await held.probeWaiting();
    await held.release();
    expect(other).toBe('ok');
    expect(stillWaiting).toBe(true);
    expect(await sent).not.toBe('ok');
  });

  it('holds at most the newest 1 MiB of client broadcasts and one net presence diff while a re-check waits on a lock; the channel stays joined', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const ownerToken = await token(users.owner!);
    // the owner tracks on one client and broadcasts from five (each socket sends 10 per second)
    const owner = connect(second, ownerToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.owner! } } });
    const senders = Array.from({ length: 5 }, () => connect(second, ownerToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { ack: true } } }));
    const cursors: Array<{ s: number; n: number; pad: string }> = [];
    const system: Array<{ status: string; message: string }> = [];
    const joins: string[] = [];
    const editor = connect(server, await token(users.editor!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.editor! } } })
      .on('broadcast', { event: 'cursor' }, ({ payload }) => cursors.push(payload))
      .on('presence', { event: 'join' }, ({ newPresences }) => joins.push(...newPresences.map((p) => p.name)))
      .on('system', {}, (p) => system.push(p));
    for (const c of [owner, ...senders]) expect((await subscribe(c)).status).toBe('SUBSCRIBED');
    const sub = await subscribe(editor);
    expect(sub.status).toBe('SUBSCRIBED');
    expect(await owner.track({ name: 'before' })).toBe('ok');
    // each sender's write right is checked (and cached) now: the lock below would hold that probe too
    for (const [s, c] of senders.entries()) expect(await c.send({ type: 'broadcast', event: 'cursor', payload: { s, n: 0, pad: '' } })).toBe('ok');
    await until(() => cursors.length === senders.length && joins.includes('before'), 5000, 'the broadcasts and the join before the re-check');
    cursors.length = 0;

    // the editor's downgrade to viewer commits (access survives it), and the re-check it starts
    // waits: a lock on realtime.messages queued behind the downgrade gets it at its commit, so the
    // re-check's RLS probe (an insert there) waits until it ends
    const held = await recheckHeld((tx) =>
      tx`update app.workspace_members set role = 'viewer' where workspace_id = ${workspaceId} and user_id = ${users.editor!}`);

    // meanwhile: 100 broadcasts of 15 KB (1.5 MB; a channel holds 1 MiB) and three re-tracks
    const pad = 'x'.repeat(15_000);
    const perSender = 20;
    const sends = senders.map(async (c, s) => {
      for (let n = 1; n <= perSender; n++) {
        let answer: string;
        // 10 per second per socket: a refused send waits its turn (ack: 'error' with rate_limited)
        while ((answer = await c.send({ type: 'broadcast', event: 'cursor', payload: { s, n, pad } })) !== 'ok') {
          expect(answer).toBe('error');
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    });
    for (const name of ['during 1', 'during 2', 'during 3']) expect(await owner.track({ name })).toBe('ok');
    await Promise.all(sends);
    await new Promise((r) => setTimeout(r, 200)); // the last ones reached the editor's gateway
    expect(cursors).toEqual([]); // held
    await held.release();

    // the re-check passes: the newest broadcasts arrive, the oldest were dropped and the channel told how many
    await until(() => senders.every((_, s) => cursors.some((c) => c.s === s && c.n === perSender)), 5000, 'each sender\'s last broadcast');
    const sent = senders.length * perSender;
    const bytes = cursors.reduce((sum, c) => sum + JSON.stringify(c).length + 'cursor'.length, 0);
    expect(bytes).toBeLessThanOrEqual(1024 * 1024);
    expect(cursors.length).toBeGreaterThan(50); // ... most of 1 MiB of them
    await until(() => system.length > 0, 10_000, 'the dropped broadcasts\' notice');
    expect(system).toEqual([{ extension: 'system', channel: `canvas:${canvasId}`, status: 'error',
      message: `BroadcastsDropped: ${sent - cursors.length} client broadcasts sent while your access was re-checked were dropped, oldest first (a channel holds at most 256 broadcasts or 1048576 bytes meanwhile)` }]);
    for (let s = 0; s < senders.length; s++) { // each sender's newest, without a gap
      const ns = cursors.filter((c) => c.s === s).map((c) => c.n);
      expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => perSender - ns.length + 1 + i));
    }
    // presence: the room as it is now, not three diffs
    await until(() => joins.includes('during 3'), 10_000, 'the last track');
    expect(joins).toEqual(['before', 'during 3']);
    expect(Object.values(editor.presenceState()).flat().map((p: any) => p.name)).toEqual(['during 3']);
    expect(sub.closedAt()).toBeNull();
    // and later broadcasts flow at once again
    expect(await senders[0]!.send({ type: 'broadcast', event: 'cursor', payload: { s: 0, n: perSender + 1, pad: '' } })).toBe('ok');
    await until(() => cursors.some((c) => c.n === perSender + 1), 10_000, 'a broadcast after the re-check');
  });

  it('re-checks an H1 upgrade admitted on the state from before a removal committed during its check', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql, ['editor']);
    const h1 = await removeDuringCheck(workspaceId, users.editor!, () => openH1(server, canvasId, users.editor!, false));
    expect(h1.inbox[0]).toMatchObject({ type: 'hello' }); // admitted ...
    expect((await closedWithin(h1)).code).toBe(4403); // ... then re-checked
    expect(h1.inbox.at(-1)).toMatchObject({ type: 'error', code: 'forbidden', message: 'you no longer have access to this canvas' });
    expect(h1.inbox.filter((m) => m.type === 'error' && m.code === 'internal')).toEqual([]);
  });

  it('untilVisible: a re-check waits until the announcing message is visible (logical decoding may be ahead of it)', async () => {
    const id = randomUUID();
    let visibleAt = 0;
    let committedAt = 0;
    await db.sql.begin(async (tx) => {
      await tx`insert into realtime.messages (id, topic, extension, event, payload, private)
               values (${id}, 'canvas:untilvisible', 'broadcast', 'access_changed', '{}', true)`;
      void untilVisible(db.sql, [id]).then(() => { visibleAt = performance.now(); });
      await new Promise((r) => setTimeout(r, 150));
      expect(visibleAt).toBe(0); // not committed yet: still waiting
      committedAt = performance.now();
    });
    await until(() => visibleAt > 0, 10_000, 'untilVisible to return');
    expect(visibleAt).toBeGreaterThanOrEqual(committedAt);
  });

  it('says hello can_write false to a viewer, and re-checks a canvas role change too', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['viewer', 'editor']);
    const viewer = await openH1(server, canvasId, users.viewer!);
    expect(viewer.inbox[0]).toMatchObject({ type: 'hello', can_write: false });
    const editor = await openH1(server, canvasId, users.editor!);
    await db.sql`insert into app.canvas_members (canvas_id, user_id, role) values (${canvasId}, ${users.editor!}, 'viewer')`;
    expect(await editor.next(is('access'), 10_000)).toMatchObject({ can_write: false, role: 'viewer' });
    await db.sql`insert into app.canvas_members (canvas_id, user_id, role) values (${canvasId}, ${users.viewer!}, 'editor')`;
    expect(await viewer.next(is('access'), 10_000)).toMatchObject({ can_write: true, role: 'editor' });
    viewer.ws.close();
    editor.ws.close();
  });
});
