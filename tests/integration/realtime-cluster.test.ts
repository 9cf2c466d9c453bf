import { randomBytes } from 'node:crypto';
import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// The realtime cluster (src/realtime/cluster.ts): three gateway processes (`npm start`'s entry
// point, separate Node processes) on one database, real @supabase/realtime-js clients on each.
// Presence and client broadcasts reach every subscriber of a topic on every gateway; a gateway
// killed with SIGKILL has its presences removed from the others within the documented bound.

const config = loadConfig();
const db = testDatabase(3);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
/** cluster.ts defaults: heartbeat every 2 s, dead after 7 s of silence, swept every 0.5 s. */
const HEARTBEAT_MS = 2000;
const DEAD_AFTER_MS = 7000;
const DEAD_BOUND_MS = DEAD_AFTER_MS + HEARTBEAT_MS / 4;
/** A stream silent for longer than this would have had every node drop every other on silence alone (a ping's period of margin). */
const STALL_NEEDED_MS = DEAD_BOUND_MS + 250;

let gateways: PotentiaProcess[] = [];
const realtime = realtimeClients({ timeoutMs: 10_000 });
const connect = (server: { url: string }, apikey: string, vsn: string) => realtime.connect(server.url, apikey, vsn);

const keys = (ch: RealtimeChannel) => Object.keys(ch.presenceState()).sort();
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development' };

/** Backend pids of the gateways' walsenders that are streaming (one creating its slot, which waits for every transaction running in the cluster, is not yet). */
async function streamingPids(): Promise<number[]> {
  const rows = await db.sql`select r.pid from pg_stat_replication r join pg_stat_activity a using (pid)
                            where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`;
  return rows.map((r) => r.pid as number);
}

/** Waits until `n` gateway replication streams are streaming, none of them one of `not`. */
async function streaming(n: number, not: number[] = []): Promise<void> {
  const end = Date.now() + 60_000;
  for (;;) {
    const pids = (await streamingPids()).filter((p) => !not.includes(p));
    if (pids.length >= n) return;
    if (Date.now() > end) throw new Error(`only ${pids.length} of ${n} gateway streams are up`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

beforeAll(async () => {
  gateways = await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env), startPotentiaProcess(env)]);
  // each gateway's replication stream (a temporary slot per process) must be streaming: before
  // that a gateway hears nothing of the cluster
  await streaming(3);
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all(gateways.map((g) => g.stop()));
  await db.close();
});

/**
 * The owner on gateway 1 and the editor on gateway 2 of a new canvas, both subscribed; the owner
 * tracked and seen on gateway 2. `joins` and `leaves` list the presence keys of those gateway 2 got, and
 * `pings` the `ping` broadcasts with their arrival time (sent by the owner: once one arrives, gateway 2's stream carries
 * gateway 1's messages sent after everything before it).
 */
async function ownerSeenAcross() {
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const [g1, g2] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
  const a = connect(g1, await token(users.owner!), '2.0.0')
    .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.owner! } } });
  const b = connect(g2, await token(users.editor!), '2.0.0')
    .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.editor! } } });
  const joins: string[] = [];
  const leaves: string[] = [];
  const pings: { at: number; n?: number }[] = [];
  b.on('presence', { event: 'join' }, (p) => joins.push(p.key))
    .on('presence', { event: 'leave' }, (p) => leaves.push(p.key))
    .on('broadcast', { event: 'ping' }, ({ payload }) => pings.push({ at: Date.now(), n: payload.n }));
  for (const ch of [a, b]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  expect(await a.track({ name: 'owner' })).toBe('ok');
  await until(() => keys(b).includes(users.owner!), 10_000, 'the owner on gateway 2');
  /** Pings until one reaches gateway 2. */
  const heard = () => until(async () => (await a.send({ type: 'broadcast', event: 'ping', payload: {} }), pings.length > 0), 120_000, 'gateway 1 heard on gateway 2', 500);
  return { owner: users.owner!, a, b, g2, joins, leaves, pings, heard };
}

/** Numbers gateway 1's pings (bulkLoadStall) across rounds. */
let pingNumber = 0;

/**
 * Loads `rows` rows in one transaction while gateway 1's channel `a` pings every 250 ms; returns
 * the longest time gateway 2 received no ping, from just before the load until a ping sent after
 * its commit arrived (`pings`: what gateway 2's channel got, `at` its arrival). Every ping sent
 * meanwhile must have arrived: the silence was the stream's, not a gateway that stopped sending.
 */
async function bulkLoadStall(rows: number, a: RealtimeChannel, pings: { at: number; n?: number }[]): Promise<number> {
  const dba = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  const table = `cluster_bulk_${process.pid}`;
  const first = pingNumber + 1;
  const pinger = setInterval(() => void a.send({ type: 'broadcast', event: 'ping', payload: { n: ++pingNumber } }), 250);
  try {
    await until(() => pings.some((p) => p.n === first), 10_000, 'the first ping');
    await dba.unsafe(`create table ${table} (id int)`);
    await dba.unsafe(`insert into ${table} select g from generate_series(1, ${rows}) g`);
    const committed = pingNumber;
    // a ping sent after the commit reached gateway 2: its stream is through the bulk load
    await until(() => pings.some((p) => (p.n ?? 0) > committed), 300_000, 'a ping sent after the commit', 50);
    const mine = pings.filter((p) => (p.n ?? 0) >= first && (p.n ?? 0) <= committed + 1);
    expect(mine.map((p) => p.n)).toEqual(Array.from({ length: committed + 2 - first }, (_, i) => first + i));
    return Math.max(...mine.slice(1).map((p, i) => p.at - mine[i]!.at));
  } finally {
    clearInterval(pinger);
    await dba.unsafe(`drop table if exists ${table}`).catch(() => {});
    await dba.end();
  }
}

describe('realtime cluster of three gateway processes', () => {
  it('shares presence: joins, leaves and the state of a late joiner span the gateways', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const channel = (c: RealtimeClient, key: string) => c.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } });
    const a = channel(connect(g1, await token(users.owner!), '2.0.0'), users.owner!);
    const b = channel(connect(g2, await token(users.editor!), '1.0.0'), users.editor!);
    const leavesSeenByA: string[] = [];
    a.on('presence', { event: 'leave' }, (p) => leavesSeenByA.push(p.key));
    a.on('presence', { event: 'sync' }, () => {});
    b.on('presence', { event: 'sync' }, () => {});
    expect((await subscribed(a)).status).toBe('SUBSCRIBED');
    expect((await subscribed(b)).status).toBe('SUBSCRIBED');
    expect(await a.track({ name: 'owner' })).toBe('ok');
    expect(await b.track({ name: 'editor' })).toBe('ok');
    // each sees itself and the user on the other gateway
    await until(() => keys(a).length === 2 && keys(b).length === 2, 10_000, 'presence on both gateways');
    expect(keys(a)).toEqual([users.owner, users.editor].sort());
    expect(a.presenceState()[users.editor!]).toEqual([expect.objectContaining({ name: 'editor' })]);
    expect(b.presenceState()[users.owner!]).toEqual([expect.objectContaining({ name: 'owner' })]);

    // a re-track replaces the meta everywhere (no stale meta left on the other gateway)
    expect(await a.track({ name: 'owner', cursor: { x: 5 } })).toBe('ok');
    await until(() => (b.presenceState()[users.owner!] as any)?.[0]?.cursor?.x === 5, 10_000, 're-track on gateway 2');
    expect(b.presenceState()[users.owner!]).toHaveLength(1);
    expect(a.presenceState()[users.owner!]).toEqual([expect.objectContaining({ cursor: { x: 5 } })]);

    // late joiner on gateway 3: its presence_state already holds the users on gateways 1 and 2
    const c = channel(connect(g3, await token(users.viewer!), '2.0.0'), users.viewer!);
    let firstSync: string[] | null = null;
    c.on('presence', { event: 'sync' }, () => { firstSync ??= keys(c); });
    expect((await subscribed(c)).status).toBe('SUBSCRIBED');
    await until(() => firstSync !== null, 10_000, 'presence_state on gateway 3');
    expect(firstSync).toEqual([users.owner, users.editor].sort());
    expect(c.presenceState()[users.owner!]).toEqual([expect.objectContaining({ name: 'owner', cursor: { x: 5 } })]);

    // untrack on gateway 2 leaves gateways 1 and 3
    expect(await b.untrack()).toBe('ok');
    await until(() => !keys(a).includes(users.editor!) && !keys(c).includes(users.editor!), 10_000, 'leave across gateways');
    expect(leavesSeenByA).toContain(users.editor);
    expect(keys(c)).toEqual([users.owner]);
  });

  it('relays JSON client broadcasts across gateways (self, ack)', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const got = { a: [] as any[], b: [] as any[], c: [] as any[] };
    const a = connect(g1, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { self: true, ack: true } } })
      .on('broadcast', { event: 'cursor' }, (m) => got.a.push(m.payload));
    const b = connect(g2, await token(users.editor!), '1.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { ack: true } } })
      .on('broadcast', { event: 'cursor' }, (m) => got.b.push(m.payload));
    const c = connect(g3, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'cursor' }, (m) => got.c.push(m.payload));
    for (const ch of [a, b, c]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');

    expect(await a.send({ type: 'broadcast', event: 'cursor', payload: { from: 'a', x: 1 } })).toBe('ok');
    expect(await b.send({ type: 'broadcast', event: 'cursor', payload: { from: 'b', x: 2 } })).toBe('ok');
    expect(await a.send({ type: 'broadcast', event: 'cursor', payload: { from: 'a', x: 3 } })).toBe('ok');
    await until(() => got.a.length >= 3 && got.b.length >= 2 && got.c.length >= 3, 10_000, 'broadcasts on every gateway');
    await new Promise((r) => setTimeout(r, 300)); // anything extra (a self echo) would arrive by now
    // one sender's broadcasts arrive in its order; two senders on two gateways have no order between
    // them (b's x:2 reaches a's gateway through replication, a's x:3 is local): compared by x
    const byX = (list: { x: number }[]) => [...list].sort((p, q) => p.x - q.x);
    expect(byX(got.a)).toEqual([{ from: 'a', x: 1 }, { from: 'b', x: 2 }, { from: 'a', x: 3 }]); // self: true
    expect(got.a.filter((m) => m.from === 'a')).toEqual([{ from: 'a', x: 1 }, { from: 'a', x: 3 }]);
    expect(got.b).toEqual([{ from: 'a', x: 1 }, { from: 'a', x: 3 }]); // self off: not its own
    expect(byX(got.c)).toEqual([{ from: 'a', x: 1 }, { from: 'b', x: 2 }, { from: 'a', x: 3 }]);
    expect(got.c.filter((m) => m.from === 'a')).toEqual([{ from: 'a', x: 1 }, { from: 'a', x: 3 }]);
  });

  it('relays vsn 2.0.0 binary broadcasts byte for byte across gateways; vsn 1.0.0 gets none', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const sub = (g: PotentiaProcess, user: string, vsn: '1.0.0' | '2.0.0', into: any[], opts: Record<string, unknown> = {}) =>
      connect(g, user, vsn).channel(`canvas:${canvasId}`, { config: { private: true, broadcast: opts } })
        .on('broadcast', { event: '*' }, (m) => into.push(m));
    const sameGw: any[] = [];
    const remote2: any[] = [];
    const remote3: any[] = [];
    const v1: any[] = [];
    const owner = await token(users.owner!);
    const sender = sub(g1, owner, '2.0.0', [], { ack: true });
    const channels = [sender, sub(g1, owner, '2.0.0', sameGw), sub(g2, await token(users.editor!), '2.0.0', remote2), sub(g3, owner, '2.0.0', remote3), sub(g3, owner, '1.0.0', v1)];
    for (const ch of channels) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');

    const bytes = randomBytes(3000);
    bytes[0] = 0; bytes[1] = 255; bytes[2] = 0x7b; // starts like nothing JSON would
    const payload = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    expect(await sender.send({ type: 'broadcast', event: 'blob', payload })).toBe('ok');
    // a JSON marker after it: the vsn 1.0.0 subscriber getting the marker but no blob proves it was skipped
    expect(await sender.send({ type: 'broadcast', event: 'marker', payload: { after: 'blob' } })).toBe('ok');
    await until(() => [sameGw, remote2, remote3, v1].every((l) => l.some((m) => m.event === 'marker')), 10_000, 'marker everywhere');
    for (const list of [sameGw, remote2, remote3]) {
      expect(list.map((m) => m.event)).toEqual(['blob', 'marker']);
      expect(list[0].payload).toBeInstanceOf(ArrayBuffer);
      expect(Buffer.from(list[0].payload as ArrayBuffer).equals(bytes)).toBe(true);
    }
    expect(v1.map((m) => m.event)).toEqual(['marker']);
  });

  it('a user who still tracks the canvas on another gateway does not leave it durably when one of their channels closes; their last one does', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const editorToken = await token(users.editor!);
    const tab = (g: PotentiaProcess, name: string) => connect(g, editorToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: name } } });
    const leaves: string[] = [];
    const ops: number[] = [];
    const observer = connect(g3, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'observer' } } })
      .on('presence', { event: 'sync' }, () => {})
      .on('broadcast', { event: 'presence_leave' }, ({ payload }) => leaves.push(payload.user_id))
      .on('broadcast', { event: 'block_op' }, ({ payload }) => ops.push(payload.server_seq));
    const a = tab(g1, 'tab-a');
    const b = tab(g2, 'tab-b');
    for (const ch of [observer, a, b]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    expect(await a.track({ name: 'a' })).toBe('ok');
    expect(await b.track({ name: 'b' })).toBe('ok');
    await until(() => ['tab-a', 'tab-b'].every((k) => keys(observer).includes(k)), 10_000, 'both tabs seen on gateway 3');

    // the tab on gateway 2 closes: its session leaves, and the tab on gateway 1 still holds one, so
    // the durable row stays (sql/rpc/presence.sql)
    await b.unsubscribe();
    await until(() => !keys(observer).includes('tab-b'), 10_000, 'tab b gone on gateway 3');
    await new Promise((r) => setTimeout(r, 500)); // a leave_canvas of gateway 2 would have committed
    const marker = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'marker' } } });
    await until(() => ops.includes(marker.server_seq!), 10_000, 'the marker after tab b left');
    expect(leaves).toEqual([]);
    expect(await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).toHaveLength(1);

    // the last tab closes: the user leaves the canvas
    await a.unsubscribe();
    await until(() => leaves.length > 0, 10_000, 'the presence_leave of the last tab');
    expect(new Set(leaves)).toEqual(new Set([users.editor!]));
    expect(await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).toHaveLength(0);
  });

  it('a gateway whose stream is behind does not clear the row of a user who left there and came back on another gateway', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const editorToken = await token(users.editor!);
    const ownerToken = await token(users.owner!);
    const tab = (g: PotentiaProcess, name: string) => connect(g, editorToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: name } } })
      .on('presence', { event: 'sync' }, () => {});
    const leaves: string[] = [];
    const ops: number[] = [];
    const observer = connect(g3, ownerToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'observer' } } })
      .on('presence', { event: 'sync' }, () => {})
      .on('broadcast', { event: 'presence_leave' }, ({ payload }) => leaves.push(payload.user_id))
      .on('broadcast', { event: 'block_op' }, ({ payload }) => ops.push(payload.server_seq));
    // what gateway 1's cluster view holds, seen through a channel of its own
    const watcher = connect(g1, ownerToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'watcher' } } })
      .on('presence', { event: 'sync' }, () => {});
    const a = tab(g1, 'tab-a');
    const b = tab(g2, 'tab-b');
    for (const ch of [observer, watcher, a, b]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    expect(await a.track({ name: 'a' })).toBe('ok');
    expect(await b.track({ name: 'b' })).toBe('ok');
    await until(() => ['tab-a', 'tab-b'].every((k) => keys(observer).includes(k) && keys(watcher).includes(k) && keys(b).includes(k)), 10_000, 'both tabs seen everywhere');
    // tab a closes: its session leaves, tab b on gateway 2 holds the row
    await a.unsubscribe();
    await until(() => !keys(observer).includes('tab-a') && !keys(b).includes('tab-a'), 10_000, 'tab a gone on gateways 2 and 3');
    // gateway 1 falls behind (stopped, well within the dead-node bound): tab b closes, its gateway
    // clears the row itself, and the user comes back on gateway 2
    process.kill(g1.pid, 'SIGSTOP');
    let resumed = false;
    try {
      await b.unsubscribe();
      await until(() => leaves.length === 1, 10_000, 'the presence_leave of tab b');
      const c = tab(g2, 'tab-c');
      expect((await subscribed(c)).status).toBe('SUBSCRIBED');
      expect(await c.track({ name: 'c' })).toBe('ok');
      await until(async () => (await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).length === 1,
        10_000, 'the row of tab c');
      process.kill(g1.pid, 'SIGCONT');
      resumed = true;
      // gateway 1 reads tab b's leave, then tab c's join
      await until(() => keys(watcher).includes('tab-c') && !keys(watcher).includes('tab-b'), 10_000, 'gateway 1 caught up');
      await new Promise((r) => setTimeout(r, 500)); // a leave_canvas of gateway 1 would have committed
      const marker = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'marker' } } });
      await until(() => ops.includes(marker.server_seq!), 10_000, 'the marker');
      expect(leaves).toEqual([users.editor!]); // tab b's only: the user is back
      expect(await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).toHaveLength(1);
    } finally {
      if (!resumed) process.kill(g1.pid, 'SIGCONT');
    }
  });

  it('two tabs of a user on two gateways closing at once: the user leaves the canvas durably (the database serializes the two leaves)', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const editorToken = await token(users.editor!);
    const leaves: string[] = [];
    const observer = connect(g3, await token(users.owner!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'observer' } } })
      .on('presence', { event: 'sync' }, () => {})
      .on('broadcast', { event: 'presence_leave' }, ({ payload }) => leaves.push(payload.user_id));
    const tabs = [g1, g2].map((g, i) => connect(g, editorToken, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: `tab-${i}` } } })
      .on('presence', { event: 'sync' }, () => {}));
    for (const ch of [observer, ...tabs]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    for (const ch of tabs) expect(await ch.track({ name: 'tab' })).toBe('ok');
    // each gateway has heard of the other's tab
    await until(() => ['tab-0', 'tab-1'].every((k) => tabs.every((ch) => keys(ch).includes(k))), 10_000, 'both tabs seen on both gateways');
    await Promise.all(tabs.map((ch) => ch.unsubscribe()));
    await until(() => leaves.length > 0, 10_000, 'the presence_leave once both tabs are gone');
    expect(new Set(leaves)).toEqual(new Set([users.editor!]));
    await until(async () => (await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).length === 0,
      10_000, 'the durable presence row cleared');
  });

  it('keeps the private and the public room of a topic apart across gateways', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const topic = `canvas:${canvasId}`;
    const got = { priv1: [] as any[], pub2: [] as any[], priv3: [] as any[], pub3: [] as any[] };
    const open = (g: PotentiaProcess, user: string, isPrivate: boolean, key: string, into: any[]) => {
      const ch = connect(g, user, '2.0.0').channel(topic, { config: { private: isPrivate, broadcast: { ack: true }, presence: { key } } })
        .on('broadcast', { event: 'note' }, (m) => into.push(m.payload));
      ch.on('presence', { event: 'sync' }, () => {});
      return ch;
    };
    const owner = await token(users.owner!);
    const editor = await token(users.editor!);
    const priv1 = open(g1, owner, true, 'private-owner', got.priv1);
    const pub2 = open(g2, editor, false, 'public-editor', got.pub2);
    const priv3 = open(g3, editor, true, 'private-editor', got.priv3);
    const pub3 = open(g3, owner, false, 'public-owner', got.pub3);
    for (const ch of [priv1, pub2, priv3, pub3]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    expect(await priv1.track({ room: 'private' })).toBe('ok');
    expect(await pub2.track({ room: 'public' })).toBe('ok');
    expect(await priv1.send({ type: 'broadcast', event: 'note', payload: { room: 'private' } })).toBe('ok');
    expect(await pub2.send({ type: 'broadcast', event: 'note', payload: { room: 'public' } })).toBe('ok');
    await until(() => got.priv3.length >= 1 && got.pub3.length >= 1, 10_000, 'each room delivered on gateway 3');
    await until(() => keys(priv3).includes('private-owner') && keys(pub3).includes('public-editor'), 10_000, 'each room presence on gateway 3');
    await new Promise((r) => setTimeout(r, 300));
    expect(got.priv3).toEqual([{ room: 'private' }]);
    expect(got.pub3).toEqual([{ room: 'public' }]);
    expect(got.priv1).toEqual([]);
    expect(got.pub2).toEqual([]);
    expect(keys(priv1)).toEqual(['private-owner']);
    expect(keys(priv3)).toEqual(['private-owner']);
    expect(keys(pub2)).toEqual(['public-editor']);
    expect(keys(pub3)).toEqual(['public-editor']);
  });

  it('resyncs presence after a gateway\'s replication stream was cut (what it missed meanwhile)', { timeout: 60_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, , g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const channel = (c: RealtimeClient, key: string) => {
      const ch = c.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } });
      ch.on('presence', { event: 'sync' }, () => {});
      return ch;
    };
    const a = channel(connect(g1, await token(users.owner!), '2.0.0'), users.owner!);
    const c = channel(connect(g3, await token(users.editor!), '2.0.0'), users.editor!);
    for (const ch of [a, c]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    // gateway 3's walsender is cut; the track on gateway 1 right after lands while gateway 3 has
    // no slot (a new temporary slot starts after it), so only a resync can bring it
    // one stream per gateway: a stream restarted by an earlier case (or a stall under load) may
    // leave its old walsender listed for a moment
    await until(async () => (await streamingPids()).length === 3, 30_000, 'exactly one replication stream per gateway');
    const before = await streamingPids();
    expect(before).toHaveLength(3);
    expect(await terminateBackends(db.sql, g3.pid, ['potentia-realtime-bus'])).toBe(1);
    expect(await a.track({ name: 'owner' })).toBe('ok');
    await streaming(1, before); // gateway 3's new stream
    // the resync it asks for on reconnect, not the periodic one (every 30 s): within 3 s
    await until(() => keys(c).includes(users.owner!), 3000, 'presence on gateway 3 after its stream came back');
    expect(c.presenceState()[users.owner!]).toEqual([expect.objectContaining({ name: 'owner' })]);
  });

  it('a resync repeats no join: a presence another gateway already showed is not announced again', { timeout: 60_000 }, async () => {
    const { owner, b, g2, joins, heard } = await ownerSeenAcross();
    // gateway 2's stream is cut: back up, it asks every gateway for its full presence (sync_request),
    // and gateway 1 sends the owner's presence again, unchanged
    const before = await streamingPids();
    expect(await terminateBackends(db.sql, g2.pid, ['potentia-realtime-bus'])).toBe(1);
    await streaming(1, before);
    await heard(); // the resync was sent before this ping
    await new Promise((r) => setTimeout(r, 1000));
    expect(keys(b)).toEqual([owner]);
    expect(joins.filter((k) => k === owner)).toHaveLength(1);
  });

  it(`a bulk load that keeps every walsender decoding for longer than ${STALL_NEEDED_MS} ms drops no presence: silence the stream has not carried is not death`, { timeout: 600_000 }, async () => {
    const { owner, a, b, leaves, pings } = await ownerSeenAcross();
    const outputBefore = gateways.map((g) => g.output().length);
    // a DBA's bulk load: at its commit every walsender decodes it, and every gateway's heartbeats
    // wait behind it in the WAL. The stall is measured, not assumed: gateway 1 pings every 250 ms
    // and the longest gap between their arrivals on gateway 2 is how long its stream carried
    // nothing. On a machine that decodes fast the load grows until that gap is past the dead-node
    // bound (silence alone would have dropped gateway 1), or the test fails: it cannot pass
    // without the stall it is about.
    let rows = 3_000_000;
    let stallMs = 0;
    for (let round = 1; ; round++) {
      stallMs = await bulkLoadStall(rows, a, pings);
      console.info(`bulk load of ${rows} rows: gateway 2 heard nothing for ${stallMs} ms`);
      if (stallMs > STALL_NEEDED_MS || round === 3) break;
      rows = Math.min(40_000_000, Math.ceil((rows * 1.5 * STALL_NEEDED_MS) / Math.max(stallMs, 500)));
    }
    expect(stallMs, 'the longest silence of gateway 2\'s stream during the load').toBeGreaterThan(STALL_NEEDED_MS);
    await new Promise((r) => setTimeout(r, 1000));
    expect(leaves).toEqual([]);
    expect(keys(b)).toEqual([owner]);
    gateways.forEach((g, i) => expect(g.output().slice(outputBefore[i])).not.toMatch(/cluster node silent/));
  });

  it('a user whose last tab is on a gateway killed with SIGKILL leaves once that gateway is taken for dead (its sessions removed)', { timeout: 90_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const [g1, , g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const g4 = await startPotentiaProcess(env);
    try {
      await streaming(4);
      const editorToken = await token(users.editor!);
      const tab = (g: PotentiaProcess, name: string) => connect(g, editorToken, '2.0.0')
        .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: name } } })
        .on('presence', { event: 'sync' }, () => {});
      const leaves: string[] = [];
      const observer = connect(g3, await token(users.owner!), '2.0.0')
        .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'observer' } } })
        .on('presence', { event: 'sync' }, () => {})
        .on('broadcast', { event: 'presence_leave' }, ({ payload }) => leaves.push(payload.user_id));
      const a = tab(g1, 'tab-a');
      const d = tab(g4, 'tab-d');
      for (const ch of [observer, a, d]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
      expect(await a.track({ name: 'a' })).toBe('ok');
      expect(await d.track({ name: 'd' })).toBe('ok');
      await until(() => ['tab-a', 'tab-d'].every((k) => keys(observer).includes(k) && keys(a).includes(k)), 10_000, 'both tabs seen');
      await a.unsubscribe(); // no leave: tab d on gateway 4 holds a session
      await until(() => !keys(observer).includes('tab-a'), 10_000, 'tab a gone');
      expect(leaves).toEqual([]);
      g4.child.kill('SIGKILL');
      await until(() => leaves.length > 0, DEAD_BOUND_MS + 10_000, 'the presence_leave once gateway 4 is taken for dead');
      expect(new Set(leaves)).toEqual(new Set([users.editor!]));
      expect(await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.editor!}`).toHaveLength(0);
    } finally {
      await g4.stop();
    }
  });

  it('drops the presences of a gateway stopped normally at once (leave)', { timeout: 90_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const g4 = await startPotentiaProcess(env);
    try {
      await streaming(4);
      const channel = (c: RealtimeClient, key: string) => {
        const ch = c.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } });
        ch.on('presence', { event: 'sync' }, () => {});
        return ch;
      };
      const a = channel(connect(gateways[0]!, await token(users.owner!), '2.0.0'), users.owner!);
      const d = channel(connect(g4, await token(users.editor!), '2.0.0'), users.editor!);
      for (const ch of [a, d]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
      expect(await d.track({ name: 'editor' })).toBe('ok');
      await until(() => keys(a).includes(users.editor!), 10_000, 'gateway 4 presence seen');
      const stoppedAt = Date.now();
      await g4.stop(); // SIGTERM: the gateway says `leave` before it exits
      await until(() => !keys(a).includes(users.editor!), 10_000, 'leave of the stopped gateway');
      // well before the 5 s a silent node needs at the least to be declared dead
      expect(Date.now() - stoppedAt).toBeLessThan(DEAD_AFTER_MS - HEARTBEAT_MS);
    } finally {
      await g4.stop();
    }
  });

  // last: it kills gateway 2
  it(`drops the presences of a gateway killed with SIGKILL within ${DEAD_BOUND_MS} ms`, { timeout: 60_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const [g1, g2, g3] = gateways as [PotentiaProcess, PotentiaProcess, PotentiaProcess];
    const channel = (c: RealtimeClient, key: string) => {
      const ch = c.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } });
      ch.on('presence', { event: 'sync' }, () => {});
      return ch;
    };
    const a = channel(connect(g1, await token(users.owner!), '2.0.0'), users.owner!);
    const b = channel(connect(g2, await token(users.editor!), '2.0.0'), users.editor!);
    const c = channel(connect(g3, await token(users.viewer!), '1.0.0'), users.viewer!);
    const leftAt: Record<string, number> = {};
    a.on('presence', { event: 'leave' }, (p) => { if (p.key === users.editor) leftAt.a ??= Date.now(); });
    c.on('presence', { event: 'leave' }, (p) => { if (p.key === users.editor) leftAt.c ??= Date.now(); });
    for (const ch of [a, b, c]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    expect(await b.track({ name: 'editor' })).toBe('ok');
    await until(() => keys(a).includes(users.editor!) && keys(c).includes(users.editor!), 10_000, 'gateway 2 presence seen');

    const killedAt = Date.now();
    g2.child.kill('SIGKILL');
    await until(() => leftAt.a !== undefined && leftAt.c !== undefined, DEAD_BOUND_MS + 5000, 'leave of the killed gateway');
    for (const at of [leftAt.a!, leftAt.c!]) {
      // not before the liveness bound could apply (so it is the heartbeat timeout, not luck)...
      expect(at - killedAt).toBeGreaterThanOrEqual(DEAD_AFTER_MS - HEARTBEAT_MS - 1000);
      // ...and within it (+1 s for the frame's trip to the client on a loaded machine)
      expect(at - killedAt).toBeLessThanOrEqual(DEAD_BOUND_MS + 1000);
    }
    expect(keys(a)).toEqual([]);
    expect(keys(c)).toEqual([]);
    expect(g2.exited()?.signal ?? (await new Promise((r) => g2.child.once('exit', (_c, s) => r(s))))).toBe('SIGKILL');
  });
});
