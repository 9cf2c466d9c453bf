import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { DEFAULT_LIMITS } from '../../src/realtime/hub.ts';
import { FRAME_RATE_LIMIT_REACHED } from '../../src/realtime/rate-limit.ts';
import { startServer, type Server } from '../../src/server.ts';
import { rateLimitRejections } from '../helpers/metrics.ts';
import { subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// Every frame a realtime-js socket sends is bounded (limits.framesPerSecond / frameBurst), whatever
// its topic and event. Before, only a joined channel's broadcasts and presence had a rate: a socket
// flooding heartbeats, or phx_leave / access_token / unknown events on topics it never joined, or
// frames that do not decode, had each handled and answered as fast as it sent them. Past the bound
// the socket is closed (1008, FrameRateLimitReached), counted in
// potentia_rate_limit_rejections_total{endpoint="realtime:phoenix_frames"}, and realtime-js
// reconnects and rejoins; what a realtime-js client sends, however busy, is never refused. The
// server runs the default limits.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const { framesPerSecond, frameBurst, maxChannelsPerSocket } = DEFAULT_LIMITS;

let server: Server;
const clients: RealtimeClient[] = [];
const raw: WebSocket[] = [];
beforeAll(async () => {
  server = await startServer(config);
}, 90_000);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  for (const ws of raw) ws.terminate();
  await server?.stop();
});

const wsBase = () => `${server.url.replace(/^http/, 'ws')}/realtime/v1`;

/** potentia_rate_limit_rejections_total{endpoint} of the server under test. */
const rejections = (endpoint: string) => rateLimitRejections(server.url, endpoint);

/** A realtime-js client whose every frame sent (its time) is counted, and whose socket closes are recorded. */
function countingClient(key: string, heartbeatIntervalMs: number) {
  const sent: number[] = [];
  class Counting extends WebSocket {
    override send(data: any, ...rest: any[]): void {
      sent.push(Date.now());
      (super.send as any)(data, ...rest);
    }
  }
  const client = new RealtimeClient(wsBase(), { params: { apikey: key }, transport: Counting as any, vsn: '1.0.0', heartbeatIntervalMs, timeout: 10_000 });
  clients.push(client);
  const closes: { code: number; reason: string }[] = [];
  (client as any).socketAdapter.onClose((event: { code: number; reason: string }) => closes.push({ code: event.code, reason: String(event.reason) }));
  /** The most frames sent in any one second so far. */
  const busiestSecond = () => Math.max(0, ...sent.map((t) => sent.filter((u) => u >= t && u < t + 1000).length));
  return { client, sent, closes, busiestSecond };
}

/** A raw socket with the anon key: every frame it receives, and its close. */
async function openRaw(): Promise<{ ws: WebSocket; frames: any[]; closed: Promise<{ code: number; reason: string }> }> {
  const ws = new WebSocket(`${wsBase()}/websocket?apikey=${await apiKey(config.auth.jwtSecret, 'anon')}&vsn=1.0.0`);
  raw.push(ws);
  const frames: any[] = [];
  ws.on('message', (d) => frames.push(JSON.parse(String(d))));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  return { ws, frames, closed };
}

describe('a realtime-js client, however busy, is never refused', () => {
  it('rejoins a full socket, refreshes its token on every channel, broadcasts at its limit, leaves them all, heartbeating every second: nothing refused, never closed', async () => {
    const { client, closes, busiestSecond, sent } = countingClient(await apiKey(config.auth.jwtSecret, 'anon'), 1000);
    const received: number[] = [];
    const channels: RealtimeChannel[] = [];
    for (let i = 0; i < maxChannelsPerSocket; i++) {
      channels.push(client.channel(`frame-rate-${i}`, { config: { broadcast: { self: true } } }).on('broadcast', { event: 'tick' }, () => received.push(i)));
    }
    // the whole socket's channels at once, as after a reconnect
    const subs = await Promise.all(channels.map((c) => subscribed(c)));
    expect(subs.map((s) => s.status)).toEqual(channels.map(() => 'SUBSCRIBED'));
    // a new token: an access_token frame to each of them at once
    await client.setAuth(await apiKey(config.auth.jwtSecret, 'anon', 7200));
    // client broadcasts at the per-socket message limit for two seconds
    const sends: Promise<string>[] = [];
    for (let t = 0; t < 2 * DEFAULT_LIMITS.messagesPerSecond; t++) {
      sends.push(channels[t % channels.length]!.send({ type: 'broadcast', event: 'tick', payload: { t } }));
      await new Promise((r) => setTimeout(r, 1000 / DEFAULT_LIMITS.messagesPerSecond + 5));
    }
    expect(await Promise.all(sends)).toEqual(sends.map(() => 'ok'));
    await until(() => received.length === sends.length, 5000, 'every broadcast back (self)');
    // then every channel left at once, and a few more heartbeats
    const left = await Promise.all(channels.map((c) => client.removeChannel(c)));
    expect(left).toEqual(channels.map(() => 'ok'));
    const heartbeats = sent.length;
    await until(() => sent.length >= heartbeats + 2, 5000, 'two more heartbeats');
    expect(client.isConnected()).toBe(true);
    expect(closes).toEqual([]);
    // the bursts came close to the bound: joins, access_tokens and leaves of a full socket
    expect(busiestSecond()).toBeGreaterThan(maxChannelsPerSocket);
    expect(busiestSecond()).toBeLessThanOrEqual(frameBurst);
  }, 60_000);
});

describe('a socket flooding frames that no channel rate bounds', () => {
  const floods: [string, (i: number) => string | Buffer][] = [
    ['heartbeats', (i) => JSON.stringify({ topic: 'phoenix', event: 'heartbeat', ref: String(i), payload: {} })],
    ['phx_leave on a topic it never joined', (i) => JSON.stringify({ topic: 'realtime:never-joined', event: 'phx_leave', ref: String(i), payload: {} })],
    ['access_token on a topic it never joined', (i) => JSON.stringify({ topic: 'realtime:never-joined', event: 'access_token', ref: String(i), payload: { access_token: 'x' } })],
    ['unknown events on topics it never joined', (i) => JSON.stringify({ topic: `realtime:t${i}`, event: `garbage-${i}`, ref: String(i), payload: { x: i } })],
    ['frames that do not decode', (i) => (i % 2 ? `not json ${i}` : JSON.stringify({ topic: 'phoenix', event: 7, ref: String(i), payload: {} }))],
  ];
  it.each(floods)('%s: answered up to the burst, then closed 1008 FrameRateLimitReached and counted; the rest unread', async (_name, frame) => {
    const closesBefore = await rejections('realtime:phoenix_frames');
    const p = await openRaw();
    const sentAt = Date.now();
    const n = 4 * frameBurst;
    for (let i = 0; i < n; i++) p.ws.send(frame(i));
    // before: never closed, every frame handled and (but the undecodable text) answered
    const closed = await Promise.race([p.closed, new Promise((r) => setTimeout(() => r('still open after 10 s'), 10_000))]);
    const seconds = (Date.now() - sentAt) / 1000;
    expect(closed).toEqual({ code: 1008, reason: `${FRAME_RATE_LIMIT_REACHED}: more than ${framesPerSecond} frames per second (bursts of ${frameBurst})` });
    expect(p.frames.length).toBeLessThanOrEqual(frameBurst + Math.ceil(seconds * framesPerSecond));
    expect(await rejections('realtime:phoenix_frames')).toBe(closesBefore + 1);
  });

  it('a realtime-js client that floods (client.push) is closed, reconnects with its backoff and rejoins its channel', async () => {
    const { client, closes } = countingClient(await apiKey(config.auth.jwtSecret, 'anon'), 25_000);
    const statuses: string[] = [];
    const channel = client.channel('frame-rate-flooder');
    await new Promise<void>((resolve) => channel.subscribe((status) => {
      statuses.push(status);
      if (status === 'SUBSCRIBED') resolve();
    }));
    for (let i = 0; i < 2 * frameBurst; i++) client.push({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: `flood-${i}` } as any);
    await until(() => closes.length > 0, 10_000, 'the gateway to close the flooding socket');
    expect(closes[0]).toEqual({ code: 1008, reason: expect.stringMatching(new RegExp(`^${FRAME_RATE_LIMIT_REACHED}: `)) });
    // realtime-js reads it as a lost connection: the channel errors, then rejoins on the new socket
    await until(() => statuses.filter((s) => s === 'SUBSCRIBED').length === 2, 15_000, 'the channel to rejoin after the reconnect');
    expect(client.isConnected()).toBe(true);
  }, 30_000);
});

describe('a realtime-js client back from a lost connection', () => {
  // realtime-js keeps what a channel pushes while it is not joined (presence track / untrack, any
  // push but a broadcast, which goes over HTTP) in the channel's push buffer, up to
  // MAX_PUSH_BUFFER_SIZE (100) a channel, and sends a channel's whole buffer at once when its
  // rejoin is answered: after a reconnect, up to 100 frames per channel in the same instant.
  it('tracked presence on its channels while offline: the rejoin flushes every push buffer at once, and the socket is not closed', async () => {
    const { client, closes, sent } = countingClient(await apiKey(config.auth.jwtSecret, 'anon'), 25_000);
    const channels: RealtimeChannel[] = [];
    for (let i = 0; i < 10; i++) {
      channels.push(client.channel(`frame-rate-offline-${i}`, { config: { presence: { key: `k${i}` } } }).on('presence', { event: 'sync' }, () => {}));
    }
    const subs = await Promise.all(channels.map((c) => subscribed(c)));
    expect(subs.map((s) => s.status)).toEqual(channels.map(() => 'SUBSCRIBED'));
    // the connection goes (as on a network change); the app keeps tracking its presence meanwhile
    await client.disconnect();
    await until(() => !client.isConnected(), 5000, 'the client to be offline');
    const closesBefore = closes.length;
    for (let t = 0; t < 100; t++) for (const c of channels) void c.track({ t });
    const before = sent.length;
    client.connect();
    await until(() => sent.length >= before + channels.length * 101, 15_000, 'the rejoins and the push buffers flushed');
    await new Promise((r) => setTimeout(r, 1500));
    // before: closed 1008 FrameRateLimitReached right after the rejoin (10 x 100 buffered tracks
    // and 10 joins at once, past a burst of 500), and the buffered tracks were lost with it
    expect(closes.slice(closesBefore)).toEqual([]);
    expect(channels.map((c) => (c as any).state)).toEqual(channels.map(() => 'joined'));
    expect(client.isConnected()).toBe(true);
  }, 40_000);
});
