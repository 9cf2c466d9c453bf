import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { DEFAULT_LIMITS } from '../../src/realtime/hub.ts';
import { PRESENCE_KEY_MAX_METAS } from '../../src/realtime/presence.ts';
import { startServer, type Server } from '../../src/server.ts';
import { openPhoenix as openPhoenixSocket, type Phoenix } from '../helpers/phoenix.ts';
import { until } from '../helpers/wait.ts';

// What one realtime-js socket's presence makes the cluster hold. A tracked state is kept in the
// memory of every gateway process of the cluster (and in each one's presence_sync, every 30 s),
// for as long as the socket stays. Each was bounded (maxPayloadBytes, 16 KiB) but their number
// only by the channels a socket may join (100) and the sockets an address may open (1000): with
// the public anon key one address could make every gateway hold 1.6 GiB of presence JSON
// (measured: 2,000 tracks of 16 KiB, 32 MiB of JSON, took the tracking gateway from 167 to 491 MB
// and the other from 191 to 356 MB). The presence a socket tracks across its channels is bounded
// (maxPresenceBytesPerSocket). Raw Phoenix frames (vsn 1.0.0) with the anon key, as an attacker
// sends them; the server's default limits.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const BOUND = DEFAULT_LIMITS.maxPresenceBytesPerSocket;
/** A state of about a quarter of the bound: four fit, a fifth does not. */
const state = (n: number) => ({ n, blob: 'x'.repeat(Math.floor(BOUND / 4) - 100) });
const size = (n: number) => Buffer.byteLength(JSON.stringify(state(n)));

const anonKey = () => {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'supabase', ref: 'potentia-test', role: 'anon', iat, exp: iat + 3600 })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .sign(new TextEncoder().encode(config.auth.jwtSecret));
};

const sockets: WebSocket[] = [];
const openPhoenix = async () => openPhoenixSocket(server.url, await anonKey(), { sockets });
const track = (p: Phoenix, room: number, n: number) =>
  p.ask(`realtime:bounds-${room}`, 'presence', { type: 'presence', event: 'track', payload: state(n) });

let server: Server;
beforeAll(async () => {
  server = await startServer(config);
}, 90_000);
afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await server?.stop();
});

it('a socket tracks at most maxPresenceBytesPerSocket across its channels: past it, payload_too_large and nobody sees it; untracking or leaving makes room', async () => {
  expect(BOUND).toBe(64 * 1024);
  const p = await openPhoenix();
  const watcher = await openPhoenix();
  for (let room = 1; room <= 6; room++) {
    expect(await p.ask(`realtime:bounds-${room}`, 'phx_join', { config: { presence: { key: `p${room}` } } })).toBe('ok');
  }
  expect(await watcher.ask('realtime:bounds-5', 'phx_join', { config: { presence: { key: 'watcher', enabled: true } } })).toBe('ok');
  for (let room = 1; room <= 4; room++) expect(await track(p, room, room)).toBe('ok');
  const refusal = `payload_too_large: presence tracked on one socket: at most ${BOUND} bytes across its channels (this state is ${size(5)}, its other channels hold ${size(1) + size(2) + size(3) + size(4)}): untrack one first`;
  expect(await track(p, 5, 5)).toBe(refusal);
  // a re-track replaces the channel's state: it is not counted twice
  expect(await track(p, 1, 11)).toBe('ok');
  expect(await p.ask('realtime:bounds-2', 'presence', { type: 'presence', event: 'untrack' })).toBe('ok');
  expect(await track(p, 5, 5)).toBe('ok');
  expect(await track(p, 6, 6)).toMatch(/^payload_too_large: presence tracked on one socket/);
  expect(await p.ask('realtime:bounds-3', 'phx_leave', {})).toBe('ok');
  expect(await track(p, 6, 6)).toBe('ok');
  // the watcher of room 5 saw its one accepted track, never the refused one
  await until(() => watcher.frames.some((f) => f.event === 'presence_diff'), 5000, 'the watcher\'s presence_diff');
  expect(watcher.frames.filter((f) => f.event === 'presence_diff').map((f) => Object.values(f.payload.joins).flatMap((j: any) => j.metas.map((m: any) => m.n))))
    .toEqual([[5]]);
  // another socket of the same address has its own bound
  const q = await openPhoenix();
  expect(await q.ask('realtime:bounds-1', 'phx_join', { config: { presence: { key: 'q' } } })).toBe('ok');
  expect(await track(q, 1, 1)).toBe('ok');
});

it(`a caller (here an address) holds at most ${PRESENCE_KEY_MAX_METAS} metas under a key in a channel: each change is sent whole, the next track refused with too_many_presences (nobody sees it) until one leaves`, async () => {
  const topic = 'realtime:bounds-crowd';
  const watcher = await openPhoenix();
  expect(await watcher.ask(topic, 'phx_join', { config: { presence: { key: 'watcher', enabled: true } } })).toBe('ok');
  /** The metas (their `n`) of each presence_diff the watcher got after `from`, leaves then joins. */
  const diffs = (from: number) => watcher.frames.slice(from).filter((f) => f.event === 'presence_diff').map((f) => ({
    leaves: Object.values(f.payload.leaves).flatMap((k: any) => k.metas.map((m: any) => m.n)).sort((a, b) => a - b),
    joins: Object.values(f.payload.joins).flatMap((k: any) => k.metas.map((m: any) => m.n)).sort((a, b) => a - b),
  }));
  const crowd: Phoenix[] = [];
  for (let n = 1; n <= PRESENCE_KEY_MAX_METAS; n++) {
    const p = await openPhoenix();
    crowd.push(p);
    expect(await p.ask(topic, 'phx_join', { config: { presence: { key: 'crowd' } } })).toBe('ok');
    const from = watcher.frames.length;
    expect(await p.ask(topic, 'presence', { type: 'presence', event: 'track', payload: { n } })).toBe('ok');
    await until(() => diffs(from).length > 0, 5000, `the diff of track ${n}`);
    // whole: the key's metas so far join again with the new one
    expect(diffs(from), `track ${n}`).toEqual([{ leaves: [], joins: Array.from({ length: n }, (_, i) => i + 1) }]);
  }
  const extra = await openPhoenix();
  expect(await extra.ask(topic, 'phx_join', { config: { presence: { key: 'crowd' } } })).toBe('ok');
  // every socket here is the anon key's from one address: one caller
  const refusal = `too_many_presences: presence key "crowd" holds ${PRESENCE_KEY_MAX_METAS} presences from this address in this channel, `
    + 'the most one caller may hold under one key: untrack one first, or track under a key of its own';
  expect(await extra.ask(topic, 'presence', { type: 'presence', event: 'track', payload: { n: 17 } })).toBe(refusal);
  // a re-track of a member replaces its meta: not refused, and sent whole (the key leaves, then joins)
  let from = watcher.frames.length;
  expect(await crowd[0]!.ask(topic, 'presence', { type: 'presence', event: 'track', payload: { n: 101 } })).toBe('ok');
  await until(() => diffs(from).length > 1, 5000, 'the diffs of the re-track');
  expect(diffs(from)).toEqual([
    { leaves: Array.from({ length: PRESENCE_KEY_MAX_METAS }, (_, i) => i + 1), joins: [] },
    { leaves: [], joins: [...Array.from({ length: PRESENCE_KEY_MAX_METAS - 1 }, (_, i) => i + 2), 101] },
  ]);
  // one leaves: sent whole (all 16 leave, the 15 that stay join), and the refused one may track
  from = watcher.frames.length;
  expect(await crowd[0]!.ask(topic, 'presence', { type: 'presence', event: 'untrack' })).toBe('ok');
  await until(() => diffs(from).length > 1, 5000, 'the diffs of the untrack');
  expect(diffs(from)).toEqual([
    { leaves: [...Array.from({ length: PRESENCE_KEY_MAX_METAS - 1 }, (_, i) => i + 2), 101], joins: [] },
    { leaves: [], joins: Array.from({ length: PRESENCE_KEY_MAX_METAS - 1 }, (_, i) => i + 2) },
  ]);
  from = watcher.frames.length;
  expect(await extra.ask(topic, 'presence', { type: 'presence', event: 'track', payload: { n: 17 } })).toBe('ok');
  await until(() => diffs(from).length > 0, 5000, 'the diff of the track that now fits');
  // the refused track was never shown: the key's 15 and the new one join, nothing before it
  expect(diffs(from)).toEqual([{ leaves: [], joins: Array.from({ length: PRESENCE_KEY_MAX_METAS }, (_, i) => i + 2) }]);
});
