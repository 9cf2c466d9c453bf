import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { REPLAY_INVALID, REPLAY_LIMIT_CAP, REPLAY_PUBLIC } from '../../src/realtime/replay.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// Broadcast replay (realtime-js `config.broadcast.replay: { since, limit }`) through the real
// @supabase/realtime-js client against an in-process gateway: a subscriber cut off while a writer
// runs rejoins with `since` = the time it last received a message and recovers what it missed,
// once each, in order, seamlessly followed by live messages. Supabase's cap (25 per join), its
// choice of the newest rows when more match, and its refusals (public channel, bad params,
// no read access) hold here too. Also: the precise refusal of postgres_changes.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const realtime = realtimeClients();
const connect = (server: { url: string }, apikey: string, vsn: string) => realtime.connect(server.url, apikey, vsn);
const sockets: WebSocket[] = [];
type Received = { seq: number; canvasSeq: number; id: string; meta: Record<string, unknown> | undefined; at: number };

/** A private canvas channel collecting block_op broadcasts (with the client's receive time). */
function listen(client: RealtimeClient, canvasId: string, replay?: { since: number; limit?: number }) {
  const got: Received[] = [];
  const channel = client
    .channel(`canvas:${canvasId}`, { config: { private: true, ...(replay ? { broadcast: { replay } } : {}) } })
    .on('broadcast', { event: 'block_op' }, (m) => got.push({ seq: Number(m.payload.server_seq), canvasSeq: Number(m.payload.canvas_seq), id: m.meta?.id as string, meta: m.meta, at: Date.now() }));
  return { channel, got };
}

/** One applied operation by `userId`; returns its server_seq. */
async function write(userId: string, canvasId: string, i: number): Promise<number> {
  const r = await mutate(db.sql, userId, canvasId, { action: 'create', patch: { type: 'text', content: { text: `b${i}` } } });
  expect(r.status).toBe('success');
  return r.server_seq!;
}

/** Raw Phoenix vsn 1.0.0 join; resolves with the phx_reply payload. */
async function rawJoin(server: Server, apikey: string, topic: string, config: Record<string, unknown>): Promise<any> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/realtime/v1/websocket?apikey=${apikey}&vsn=1.0.0`);
  sockets.push(ws);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  ws.send(JSON.stringify({ topic, event: 'phx_join', ref: '1', join_ref: '1', payload: { config } }));
  await until(() => frames.some((f) => f.event === 'phx_reply'), 5000, 'phx_reply');
  return frames.find((f) => f.event === 'phx_reply').payload;
}

let server: Server;
beforeAll(async () => {
  server = await startServer(config);
  await server.gateway!.bus.ready();
}, 90_000);
afterAll(async () => {
  await realtime.disconnectAll();
  for (const ws of sockets) ws.terminate();
  await server?.stop();
  await db.close();
});

describe('broadcast replay (realtime-js config.broadcast.replay)', () => {
  it('a subscriber cut off for 5 s recovers every missed delta once, in order, then live ones (0 missing, 0 duplicated)', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const written: number[] = [];
    const cut = connect(server, await token(users.editor!), '2.0.0');
    const before = listen(cut, canvasId);
    expect((await subscribed(before.channel)).status).toBe('SUBSCRIBED');
    for (let i = 0; i < 5; i++) written.push(await write(users.owner!, canvasId, i));
    await until(() => before.got.length === 5, 10_000, 'deltas before the cut');
    const since = before.got.at(-1)!.at; // the time of the last message received

    await cut.disconnect(); // cut off
    const cutAt = Date.now();
    for (let i = 0; Date.now() - cutAt < 5000; i++) { // the writer runs through the cut: < 25 deltas
      written.push(await write(users.owner!, canvasId, 100 + i));
      await sleep(400);
    }
    const missedDuringCut = written.slice(5);
    expect(missedDuringCut.length).toBeGreaterThan(5);
    expect(missedDuringCut.length).toBeLessThan(REPLAY_LIMIT_CAP);

    // rejoin while the writer keeps going: live deltas race the replay read across the seam
    const writer = (async () => {
      for (let i = 0; i < 8; i++) {
        written.push(await write(users.owner!, canvasId, 200 + i));
        await sleep(30);
      }
    })();
    const after = listen(connect(server, await token(users.editor!), '2.0.0'), canvasId, { since, limit: 25 });
    expect((await subscribed(after.channel)).status).toBe('SUBSCRIBED');
    await writer;
    // a last delta: the gateway delivers replay, held and live deltas in order, so once this one
    // is in, any duplicate of an earlier one would have arrived too
    const last = await write(users.owner!, canvasId, 999);
    written.push(last);
    await until(() => after.got.some((m) => m.seq === last), 10_000, 'the last delta');

    expect(before.got.map((m) => m.seq)).toEqual(written.slice(0, 5));
    expect(after.got.map((m) => m.seq)).toEqual(written.slice(5)); // every missed one, once, in order, then live
    expect(new Set(after.got.map((m) => m.id)).size).toBe(after.got.length);
    // replayed ones first, each marked; everything written during the cut was replayed
    const replayed = after.got.filter((m) => m.meta?.replayed === true);
    expect(after.got.slice(0, replayed.length)).toEqual(replayed);
    expect(replayed.map((m) => m.seq).slice(0, missedDuringCut.length)).toEqual(missedDuringCut);
    for (const m of replayed) expect(m.meta).toEqual({ replayed: true, id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const live = after.got.slice(replayed.length);
    expect(live.length).toBeGreaterThan(0);
    for (const m of live) expect(m.meta).toEqual({ id: expect.stringMatching(/^[0-9a-f-]{36}$/) }); // no `replayed` key
  }, 60_000);

  it('with more than 25 missed: exactly the 25 newest since `since`, oldest first; the rest is detectably missing', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const written: number[] = [];
    const cut = connect(server, await token(users.editor!), '1.0.0');
    const before = listen(cut, canvasId);
    expect((await subscribed(before.channel)).status).toBe('SUBSCRIBED');
    for (let i = 0; i < 3; i++) written.push(await write(users.owner!, canvasId, i));
    await until(() => before.got.length === 3, 10_000, 'deltas before the cut');
    const since = before.got.at(-1)!.at;
    await cut.disconnect();
    for (let i = 0; i < 30; i++) written.push(await write(users.owner!, canvasId, 100 + i));

    const after = listen(connect(server, await token(users.editor!), '1.0.0'), canvasId, { since, limit: 25 });
    expect((await subscribed(after.channel)).status).toBe('SUBSCRIBED');
    const last = await write(users.owner!, canvasId, 999);
    await until(() => after.got.some((m) => m.seq === last), 10_000, 'a live delta after the replay');

    const replayed = after.got.filter((m) => m.meta?.replayed === true);
    expect(replayed.map((m) => m.seq)).toEqual(written.slice(-25)); // Supabase: the newest 25, oldest first
    expect(after.got.map((m) => m.seq)).toEqual([...written.slice(-25), last]);
    // detection: canvas_seq numbers a canvas's operations 1, 2, 3…, so the first replayed one
    // shows exactly how many are missing; the operation log then has them (H1 resumes with no cap)
    expect(replayed.length).toBe(REPLAY_LIMIT_CAP);
    expect(before.got.map((m) => m.canvasSeq)).toEqual([1, 2, 3]);
    expect(replayed[0]!.canvasSeq - before.got.at(-1)!.canvasSeq - 1).toBe(5);
    expect(after.got.map((m) => m.canvasSeq)).toEqual(Array.from({ length: 26 }, (_, i) => 9 + i));
    const lastSeen = before.got.at(-1)!.seq;
    const log = await callAs(db.sql, users.editor!, 'get_canvas_changes', [canvasId, lastSeen, 1000]);
    const gap = (log.changes as { server_seq: number }[]).map((c) => Number(c.server_seq)).filter((s) => s < replayed[0]!.seq);
    expect(gap).toEqual(written.slice(3, 8)); // the 5 oldest of the 30: missing, and found
  }, 60_000);

  it('more than 25 in one transaction (a batch): the 25 committed last, not any 25 of it', async () => {
    // a transaction's messages share inserted_at (now()): ordered by it and then by the random
    // message id, the replay of a 30-op batch was 25 ops picked at random from it, with gaps
    // between them, where the doc (and Supabase's newest-first) promise the newest 25
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const since = Date.now() - 1000;
    const live = listen(connect(server, await token(users.editor!), '1.0.0'), canvasId);
    expect((await subscribed(live.channel)).status).toBe('SUBSCRIBED');
    const ops = Array.from({ length: 30 }, (_, i) => ({ action: 'create', client_op_id: `batch-${canvasId}-${i}`, patch: { type: 'text' } }));
    const batch = await callAs(db.sql, users.owner!, 'upsert_blocks_atomic', [canvasId, ops]);
    expect(batch.status).toBe('success');
    await until(() => live.got.length === 30, 10_000, 'the batch through the bus'); // so none of it arrives live below
    const after = listen(connect(server, await token(users.editor!), '1.0.0'), canvasId, { since, limit: 25 });
    expect((await subscribed(after.channel)).status).toBe('SUBSCRIBED');
    await until(() => after.got.length === 25, 10_000, 'the replay');
    await sleep(200);
    expect(after.got.every((m) => m.meta?.replayed === true)).toBe(true);
    expect(after.got.map((m) => m.canvasSeq)).toEqual(Array.from({ length: 25 }, (_, i) => 6 + i));
  }, 60_000);

  it('caps limit at 25 (a larger limit gets 25, a smaller one the newest `limit`, 0 gets 1) under both serializers', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const startedAt = Date.now() - 1000;
    const written: number[] = [];
    for (let i = 0; i < 30; i++) written.push(await write(users.owner!, canvasId, i));
    for (const vsn of ['1.0.0', '2.0.0']) {
      for (const [limit, expected] of [[1000, 25], [3, 3], [0, 1]] as const) {
        const sub = listen(connect(server, await token(users.owner!), vsn), canvasId, { since: startedAt, limit });
        expect((await subscribed(sub.channel)).status).toBe('SUBSCRIBED');
        const replay = written.slice(-expected);
        // a live delta after the join: it follows the replay, so everything replayed is in by then
        const sentinel = await write(users.owner!, canvasId, 1000 + written.length);
        written.push(sentinel);
        await until(() => sub.got.some((m) => m.seq === sentinel), 10_000, `live delta (limit ${limit}, vsn ${vsn})`);
        expect(sub.got.map((m) => m.seq)).toEqual([...replay, sentinel]);
        expect(sub.got.map((m) => m.meta?.replayed)).toEqual([...replay.map(() => true), undefined]);
      }
    }
    // limit omitted: Supabase's default, 25
    const dflt = listen(connect(server, await token(users.owner!), '2.0.0'), canvasId, { since: startedAt });
    expect((await subscribed(dflt.channel)).status).toBe('SUBSCRIBED');
    const replay = written.slice(-25);
    const sentinel = await write(users.owner!, canvasId, 2000);
    await until(() => dflt.got.some((m) => m.seq === sentinel), 10_000, 'default-limit replay');
    expect(dflt.got.map((m) => m.seq)).toEqual([...replay, sentinel]);
  }, 60_000);

  it('a non-member gets no replay: the join is refused and nothing is sent', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    await write(users.owner!, canvasId, 0);
    const stranger = await createUser(db.sql, 'stranger');
    const sub = listen(connect(server, await token(stranger), '2.0.0'), canvasId, { since: 0, limit: 25 });
    const res = await subscribed(sub.channel);
    expect(res.status).toBe('CHANNEL_ERROR');
    expect(res.err?.message).toMatch(/^Unauthorized: You do not have permissions to read from this Channel topic/);
    await sleep(300);
    expect(sub.got).toEqual([]);
  });

  it('refuses replay on a public channel and bad replay params, with Supabase\'s reasons', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const apikey = await token(users.owner!);
    // realtime-js already refuses this client-side
    const client = connect(server, apikey, '1.0.0');
    expect(() => client.channel(`canvas:${canvasId}`, { config: { broadcast: { replay: { since: 0 } } } }))
      .toThrow(/replay on public channel/);
    // the gateway refuses it too, for clients that do not
    const topic = `realtime:canvas:${canvasId}`;
    expect(await rawJoin(server, apikey, topic, { private: false, broadcast: { replay: { since: 0, limit: 5 } } }))
      .toEqual({ status: 'error', response: { reason: REPLAY_PUBLIC } });
    for (const replay of [{ since: 'yesterday' }, { limit: 5 }, { since: 1.5 }, { since: 0, limit: 'all' }, 'since=0']) {
      expect(await rawJoin(server, apikey, topic, { private: true, broadcast: { replay } }))
        .toEqual({ status: 'error', response: { reason: REPLAY_INVALID } });
    }
    // sanity: the same raw join with valid params succeeds
    expect((await rawJoin(server, apikey, topic, { private: true, broadcast: { replay: { since: 0, limit: 5 } } })).status).toBe('ok');
  });
});

describe('postgres_changes', () => {
  it('is refused at join with a reply naming why and what to use instead (CHANNEL_ERROR, not a timeout)', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const channel = connect(server, await token(users.owner!), '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('postgres_changes', { event: '*', schema: 'app', table: 'blocks' }, () => {});
    const res = await subscribed(channel);
    expect(res.status).toBe('CHANNEL_ERROR');
    expect(res.err?.message).toMatch(/^PostgresChangesNotServed: postgres_changes is not served by this gateway/);
    expect(res.err?.message).toContain('RLS');
    expect(res.err?.message).toContain('channel `canvas:{id}` with config { private: true }');
    expect(res.err?.message).toContain('block_op, presence, presence_leave, canvas_updated, canvas_deleted');
  });
});
