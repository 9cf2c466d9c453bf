import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// Broadcast from Database, private-channel authorization, presence and client broadcasts through
// the real @supabase/realtime-js client, under both serializer versions.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const token = (sub: string, expiresInSeconds = 3600) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds });

const realtime = realtimeClients();
const connect = (server: { url: string }, apikey: string, vsn: string) => realtime.connect(server.url, apikey, vsn);
const createBlock = (userId: string, canvasId: string, i: number) =>
  mutate(db.sql, userId, canvasId, { action: 'create', patch: { type: 'text', content: { text: `b${i}` } } });

let server: Server;
beforeAll(async () => {
  server = await startServer(config);
  // creating a logical slot waits for every transaction running in the cluster; meanwhile the
  // gateway polls realtime.messages, but the kill test needs the stream itself
  await server.gateway!.bus.ready();
}, 90_000);
afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
  await db.close();
});

describe.each(['1.0.0', '2.0.0'])('realtime-js vsn %s', (vsn) => {
  it('delivers database broadcasts on a private canvas channel, in commit order', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const client = connect(server, await token(users.editor!), vsn);
    const got: any[] = [];
    const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (msg) => got.push(msg));
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');

    const results = [];
    for (let i = 0; i < 15; i++) results.push(await createBlock(users.owner!, canvasId, i));
    const seqs = results.map((r) => r.server_seq);
    await until(() => got.length >= 15, 8000, 'block_op broadcasts');
    expect(got.map((m) => m.payload.server_seq)).toEqual(seqs);
    expect(got[0]).toMatchObject({ type: 'broadcast', event: 'block_op', payload: { action: 'create', block: { content: { text: 'b0' } } } });
    expect(typeof got[0].meta?.id).toBe('string');
  });

  it('refuses a private channel to a non-member and to an expired token', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const stranger = await createUser(db.sql, 'stranger');
    const denied = await subscribed(connect(server, await token(stranger), vsn).channel(`canvas:${canvasId}`, { config: { private: true } }));
    expect(denied.status).toBe('CHANNEL_ERROR');
    expect(denied.err?.message).toMatch(/Unauthorized/);

    const client = connect(server, await token(users.owner!), vsn);
    await client.setAuth(await token(users.owner!, -120));
    const expired = await subscribed(client.channel(`canvas:${canvasId}`, { config: { private: true } }));
    expect(expired.status).toBe('CHANNEL_ERROR');
    expect(expired.err?.message).toMatch(/expired/i);
  });

  it('closes a channel with a system error when its token expires', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const client = connect(server, await token(users.owner!), vsn);
    await client.setAuth(await token(users.owner!, 2));
    const system: any[] = [];
    let closed = false;
    const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } }).on('system', {}, (p) => system.push(p));
    await new Promise<void>((resolve) => channel.subscribe((s) => {
      if (s === 'SUBSCRIBED') resolve();
      if (s === 'CLOSED') closed = true;
    }));
    await until(() => closed, 10_000, 'channel close');
    expect(system.at(-1)).toMatchObject({ extension: 'system', status: 'error', message: expect.stringMatching(/expired/i) });
  });

  it('tracks presence: presence_state, join and leave diffs, cleanup on disconnect', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const a = connect(server, await token(users.owner!), vsn);
    const b = connect(server, await token(users.editor!), vsn);
    const joins: any[] = [];
    const leaves: any[] = [];
    const chB = b.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.editor! } } })
      .on('presence', { event: 'join' }, (p) => joins.push(p))
      .on('presence', { event: 'leave' }, (p) => leaves.push(p));
    expect((await subscribed(chB)).status).toBe('SUBSCRIBED');
    const chA = a.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.owner! } } });
    chA.on('presence', { event: 'sync' }, () => {});
    expect((await subscribed(chA)).status).toBe('SUBSCRIBED');
    expect(await chA.track({ name: 'owner', cursor: { x: 1, y: 2 } })).toBe('ok');
    await until(() => joins.some((j) => j.key === users.owner), 5000, 'presence join');
    expect(chB.presenceState()[users.owner!]?.[0]).toMatchObject({ name: 'owner' });
    // the durable row was written through api.update_presence
    const present = async () => (await db.sql`select count(*)::int as n from app.presence where canvas_id = ${canvasId} and user_id = ${users.owner!}`)[0]!.n as number;
    expect(await present()).toBe(1);

    await a.disconnect();
    await until(() => leaves.some((l) => l.key === users.owner), 5000, 'presence leave');
    expect(chB.presenceState()[users.owner!]).toBeUndefined();
    for (let i = 0; i < 50 && (await present()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
    expect(await present()).toBe(0);
  });

  it('a token refresh to another user untracks the old user\'s presence (leave for everyone, durable row cleared); the new user tracks and untracks as itself', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const presenceRow = async (userId: string) =>
      (await db.sql`select count(*)::int as n from app.presence where canvas_id = ${canvasId} and user_id = ${userId}`)[0]!.n as number;
    // the observer: realtime-js presence, and the durable presence_leave broadcasts H1 clients get
    const joins: string[] = [];
    const leaves: string[] = [];
    const leftCanvas: string[] = [];
    const observer = connect(server, await token(users.viewer!), vsn)
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: users.viewer! } } })
      .on('presence', { event: 'join' }, ({ newPresences }) => joins.push(...newPresences.map((p) => p.name)))
      .on('presence', { event: 'leave' }, ({ leftPresences }) => leaves.push(...leftPresences.map((p) => p.name)))
      .on('broadcast', { event: 'presence_leave' }, ({ payload }) => leftCanvas.push(payload.user_id));
    expect((await subscribed(observer)).status).toBe('SUBSCRIBED');
    // one browser tab: the owner signed in, tracking
    const client = connect(server, await token(users.owner!), vsn);
    const tab = client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'tab' } } });
    tab.on('presence', { event: 'sync' }, () => {});
    expect((await subscribed(tab)).status).toBe('SUBSCRIBED');
    expect(await tab.track({ name: 'owner' })).toBe('ok');
    await until(() => joins.includes('owner'), 5000, 'the owner\'s join');
    expect(await presenceRow(users.owner!)).toBe(1);

    // the app signs the editor in on the same client: the channel's token becomes the editor's
    await client.setAuth(await token(users.editor!));
    await until(() => leaves.includes('owner'), 5000, 'the owner\'s presence to leave');
    expect(observer.presenceState().tab).toBeUndefined();
    await until(() => leftCanvas.includes(users.owner!), 5000, 'the owner\'s presence_leave');
    expect(await presenceRow(users.owner!)).toBe(0);

    // the editor tracks and untracks as itself: its own row, its own leave
    expect(await tab.track({ name: 'editor' })).toBe('ok');
    await until(() => joins.includes('editor'), 5000, 'the editor\'s join');
    expect(observer.presenceState().tab?.map((p: any) => p.name)).toEqual(['editor']);
    expect(await presenceRow(users.editor!)).toBe(1);
    expect(await tab.untrack()).toBe('ok');
    await until(() => leaves.includes('editor') && leftCanvas.includes(users.editor!), 5000, 'the editor\'s leave');
    expect(await presenceRow(users.editor!)).toBe(0);
    expect(leftCanvas).toEqual([users.owner!, users.editor!]);
    expect(joins).toEqual(['owner', 'editor']);
  });

  it('relays client broadcasts (self off), rate-limited per socket', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const a = connect(server, await token(users.owner!), vsn);
    const b = connect(server, await token(users.editor!), vsn);
    const gotA: any[] = [];
    const gotB: any[] = [];
    const chA = a.channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { ack: true } } }).on('broadcast', { event: 'cursor' }, (m) => gotA.push(m));
    const chB = b.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'cursor' }, (m) => gotB.push(m));
    expect((await subscribed(chA)).status).toBe('SUBSCRIBED');
    expect((await subscribed(chB)).status).toBe('SUBSCRIBED');
    const replies = await Promise.all(Array.from({ length: 14 }, (_, i) => chA.send({ type: 'broadcast', event: 'cursor', payload: { x: i } })));
    expect(replies.filter((r) => r === 'ok').length).toBe(10);
    expect(replies.filter((r) => r === 'error').length).toBe(4);
    await until(() => gotB.length >= 10, 5000, 'client broadcasts');
    expect(gotB.map((m) => m.payload.x)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(gotA).toHaveLength(0);
  });
});

describe('database bus', () => {
  it('delivers through two gateway processes on one database', async () => {
    const second = await startServer(config);
    try {
      const { canvasId, users } = await createCanvas(db.sql);
      const got1: number[] = [];
      const got2: number[] = [];
      const c1 = connect(server, await token(users.owner!), '2.0.0');
      const c2 = connect(second, await token(users.owner!), '1.0.0');
      const ch1 = c1.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'block_op' }, (m) => got1.push(m.payload.server_seq));
      const ch2 = c2.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'block_op' }, (m) => got2.push(m.payload.server_seq));
      expect((await subscribed(ch1)).status).toBe('SUBSCRIBED');
      expect((await subscribed(ch2)).status).toBe('SUBSCRIBED');
      const seqs: number[] = [];
      for (let i = 0; i < 5; i++) seqs.push((await createBlock(users.owner!, canvasId, i)).server_seq!);
      await until(() => got1.length >= 5 && got2.length >= 5, 8000, 'both gateways');
      expect(got1).toEqual(seqs);
      expect(got2).toEqual(seqs);
      await c2.disconnect();
    } finally {
      await second.stop();
    }
  });

  it('loses nothing committed when its replication connection is killed mid-stream', { timeout: 30_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const got: number[] = [];
    const client = connect(server, await token(users.owner!), '2.0.0');
    const ch = client.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'block_op' }, (m) => got.push(m.payload.server_seq));
    expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    const bus = server.gateway!.bus;
    const before = bus.stats().lost;
    const seqs: number[] = [];
    for (let i = 0; i < 40; i++) {
      seqs.push((await createBlock(users.owner!, canvasId, i)).server_seq!);
      if (i === 10 || i === 25) {
        // the gateway's replication backend (streaming, or still creating its new slot)
        await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
                     where application_name = 'potentia-realtime-bus' and datname = current_database()`;
      }
    }
    await until(() => got.length >= 40, 15_000, `all 40 deltas (got ${got.length})`);
    expect(got).toEqual(seqs);
    await until(() => bus.stats().lost >= before + 1, 5000, 'the loss noticed');
  });
});

it('has no replication slot left behind by a stopped gateway', async () => {
  const extra = await startServer(config);
  await extra.stop();
  const [r] = await db.sql`select count(*)::int as n from pg_replication_slots where database = current_database() and not temporary`;
  expect(r!.n).toBe(0);
});

void randomUUID;

// A newcomer's first subscribe, before signing in (docs/realtime.md: "the anon key alone is
// refused"): the refusal was Supabase's bare "Unauthorized: You do not have permissions to read
// from this Channel topic", the same a stranger gets, with no word that the join carried no user.
describe('a private join with an API key alone (no user)', () => {
  it('is refused as on Supabase, and the message says to sign in first; a user\'s refusal does not', async () => {
    const { canvasId } = await createCanvas(db.sql);
    const iat = Math.floor(Date.now() / 1000);
    const anon = await new SignJWT({ iss: 'supabase', role: 'anon', iat, exp: iat + 3600 })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(config.auth.jwtSecret));
    const refused = await subscribed(connect(server, anon, '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } }));
    expect(refused.status).toBe('CHANNEL_ERROR');
    expect(refused.err?.message).toMatch(new RegExp(`^Unauthorized: You do not have permissions to read from this Channel topic: canvas:${canvasId}`));
    expect(refused.err?.message).toContain('sign in first');
    expect(refused.err?.message).toContain('setAuth');
    const stranger = await createUser(db.sql, 'stranger');
    const denied = await subscribed(connect(server, await token(stranger), '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } }));
    expect(denied.err?.message).toBe(`Unauthorized: You do not have permissions to read from this Channel topic: canvas:${canvasId}`);
  });
});
