import { randomUUID } from 'node:crypto';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// What one caller may cost a gateway process across all of its sockets (src/realtime/admission.ts):
// WebSockets open per address and per user, and channel authorizations (each a database
// transaction) per user. Before these, the per-socket limits held but a caller opened as many
// sockets as it liked: 20 sockets x 300 private joins raised the HTTP API's latency from 8-16 to
// 23-101 ms, and every socket may keep up to ~1.7 MB. The limits here are set small.

const base = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const open: WebSocket[] = [];

type Upgrade = { ws: WebSocket } | { status: number; body: any; retryAfter: string | undefined };

/** Opens `path` on `server`; resolves with the socket, or with the refusal's status and JSON body. */
function upgrade(server: Server, path: string, headers: Record<string, string> = {}): Promise<Upgrade> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${path}`, { headers });
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      open.push(ws);
      resolve({ ws });
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(text), retryAfter: res.headers['retry-after'] as string | undefined }));
    });
    ws.once('error', reject);
  });
}

const phoenixPath = (key: string) => `/realtime/v1/websocket?apikey=${key}&vsn=1.0.0`;
const opened = (u: Upgrade): WebSocket => {
  if (!('ws' in u)) throw new Error(`refused: ${u.status} ${JSON.stringify(u.body)}`);
  return u.ws;
};
const closeAndWait = async (ws: WebSocket) => {
  ws.close();
  await until(() => ws.readyState === WebSocket.CLOSED, 5000, 'the socket to close');
};

/** One sample of `name{labels}` from the server's /metrics (loopback: open without a token), 0 when absent. */
async function metric(server: Server, name: string, labels: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name}{${labels}}`));
  return line ? Number(line.split(' ').pop()) : 0;
}

afterAll(async () => {
  for (const ws of open) ws.terminate();
  await db.close();
});

describe('sockets per address', () => {
  let server: Server; // behind a proxy: TRUST_PROXY=1, the client is the first X-Forwarded-For entry
  let direct: Server; // no proxy: X-Forwarded-For is the client's own word and is not believed
  let anon: string;
  beforeAll(async () => {
    server = await startServer({ ...base, trustProxy: true }, { realtime: { limits: { maxSocketsPerAddress: 3 } } });
    direct = await startServer(base, { realtime: { limits: { maxSocketsPerAddress: 2 } } });
    anon = await apiKey(base.auth.jwtSecret, 'anon');
  }, 90_000);
  afterAll(async () => {
    await server?.stop();
    await direct?.stop();
  });

  it('the cap\'s socket is refused 429 rate_limited, other addresses are not, and a closed socket makes room', async () => {
    const a = { 'x-forwarded-for': '203.0.113.7, 10.0.0.1' };
    const first = [];
    for (let i = 0; i < 3; i++) first.push(opened(await upgrade(server, phoenixPath(anon), a)));
    const refused = await upgrade(server, phoenixPath(anon), a);
    expect(refused).toMatchObject({ status: 429, body: { error: { code: 'rate_limited', message: 'too many WebSockets open from this address (at most 3): close one first' } } });
    opened(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': '198.51.100.2' }));
    await closeAndWait(first[0]!);
    await until(async () => 'ws' in (await upgrade(server, phoenixPath(anon), a)), 5000, 'a place for 203.0.113.7 again');
  });

  it('an IPv6 client is one caller per /64 (it may pick any address of it), an IPv4-mapped one is its IPv4 address', async () => {
    // a new address of the same /64 for each socket: counted per address, each had the whole cap
    for (let i = 1; i <= 3; i++) opened(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': `2001:db8:7:9::${i.toString(16)}` }));
    for (const other of ['2001:db8:7:9:ffff:ffff:ffff:ffff', '2001:DB8:7:9:0:0:0:abcd']) {
      expect(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': other }), other)
        .toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } });
    }
    opened(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': '2001:db8:7:a::1' })); // the next /64: another caller
    for (let i = 0; i < 3; i++) opened(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': '198.51.100.77' }));
    expect(await upgrade(server, phoenixPath(anon), { 'x-forwarded-for': '::ffff:198.51.100.77' })).toMatchObject({ status: 429 });
  });

  it('upgrades sent all at once cannot pass the cap together: 20 at once, 3 open', async () => {
    const b = { 'x-forwarded-for': '192.0.2.44' };
    const results = await Promise.all(Array.from({ length: 20 }, () => upgrade(server, phoenixPath(anon), b)));
    expect(results.filter((r) => 'ws' in r)).toHaveLength(3);
    expect(results.filter((r) => !('ws' in r) && r.status === 429)).toHaveLength(17);
  });

  it('an upgrade refused for its URL is 400 invalid_input naming the part at fault, as the HTTP API names a field', async () => {
    const d = { 'x-forwarded-for': '192.0.2.150' };
    const uuid = '00000000-0000-4000-8000-000000000000';
    const cases: [string, string, string][] = [
      ['/ws/canvas/xyz', 'canvas_id', 'canvas_id must be a uuid'],
      [`/ws/canvas/${uuid}?since_canvas_seq=abc`, 'since_canvas_seq', 'since_canvas_seq must be a whole number from 0 to 9007199254740991'],
      [`/ws/canvas/${uuid}?since_seq=-1`, 'since_seq', 'since_seq must be a whole number from 0 to 9007199254740991'],
      // too large: the message says the bound (it said "a number >= 0" of a number that is one)
      [`/ws/canvas/${uuid}?since_canvas_seq=9007199254740992`, 'since_canvas_seq', 'since_canvas_seq must be a whole number from 0 to 9007199254740991'],
      [`/realtime/v1/websocket?apikey=${anon}&vsn=9.9.9`, 'vsn', 'unsupported vsn: use 1.0.0 or 2.0.0'],
      // a parameter read as one value, sent twice: the first was taken, a proxy or log may read the last
      [`/ws/canvas/${uuid}?since_canvas_seq=0&since_canvas_seq=abc`, 'since_canvas_seq', 'since_canvas_seq: sent 2 times: send it once'],
      [`/ws/canvas/${uuid}?since_seq=1&since_seq=1`, 'since_seq', 'since_seq: sent 2 times: send it once'],
      [`/ws/canvas/${uuid}?access_token=${anon}&access_token=x`, 'access_token', 'access_token: sent 2 times: send it once'],
      [`/realtime/v1/websocket?apikey=${anon}&vsn=1.0.0&vsn=9.9.9`, 'vsn', 'vsn: sent 2 times: send it once'],
      [`/realtime/v1/websocket?apikey=${anon}&apikey=x&vsn=1.0.0`, 'apikey', 'apikey: sent 2 times: send it once'],
    ];
    for (const [path, field, message] of cases) {
      expect(await upgrade(server, path, d)).toMatchObject({ status: 400, body: { error: { code: 'invalid_input', field, message } } });
    }
  });

  it('a refused or failed upgrade gives its place back: bad tokens and unknown paths do not use the cap up', async () => {
    const c = { 'x-forwarded-for': '192.0.2.99' };
    for (let i = 0; i < 5; i++) expect(await upgrade(server, phoenixPath('not-a-jwt'), c)).toMatchObject({ status: 401 });
    for (let i = 0; i < 5; i++) expect(await upgrade(server, '/ws/nowhere', c)).toMatchObject({ status: 404 });
    for (let i = 0; i < 3; i++) opened(await upgrade(server, phoenixPath(anon), c));
  });

  it('refusals and open sockets are in /metrics', async () => {
    expect(await metric(server, 'potentia_rate_limit_rejections_total', 'endpoint="realtime:sockets_per_address"')).toBeGreaterThanOrEqual(18);
    const held = open.filter((ws) => ws.readyState === WebSocket.OPEN && ws.url.startsWith(server.url.replace(/^http/, 'ws'))).length;
    await until(async () => (await metric(server, 'potentia_realtime_sockets', 'protocol="phoenix"')) === held, 5000, `the gauge at ${held}`);
  });

  it('without TRUST_PROXY an X-Forwarded-For header is not believed: every socket counts as the peer\'s address', async () => {
    opened(await upgrade(direct, phoenixPath(anon), { 'x-forwarded-for': '198.51.100.10' }));
    opened(await upgrade(direct, phoenixPath(anon), { 'x-forwarded-for': '198.51.100.11' }));
    const refused = await upgrade(direct, phoenixPath(anon), { 'x-forwarded-for': '198.51.100.12' });
    expect(refused).toMatchObject({ status: 429, body: { error: { code: 'rate_limited',
      message: 'too many WebSockets open from this address (at most 2): close one first; behind a proxy, set TRUST_PROXY=1 so each client is told apart' } } });
  });
});

describe('a refused upgrade is closed for good', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer(base, { realtime: { limits: { maxSocketsPerAddress: 1 } } });
  }, 90_000);
  afterAll(async () => {
    await server?.stop();
  });

  // the server runs in this process: its sockets are this process's file descriptors
  const descriptors = () => readdirSync('/proc/self/fd').length;
  /** Sends `request`, reads the answer, and never closes its own side (as a hostile client does). */
  const halfOpen = (port: number, request: string) => new Promise<{ socket: net.Socket; answer: string }>((resolve, reject) => {
    const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }, () => socket.write(request));
    let answer = '';
    socket.on('data', (d) => (answer += d));
    socket.once('end', () => resolve({ socket, answer }));
    socket.once('error', reject);
  });

  it('a client that never closes its side does not keep the server\'s descriptor: 401s, 429s and malformed requests', async () => {
    const port = Number(new URL(server.url).port);
    const anon = await apiKey(base.auth.jwtSecret, 'anon');
    const holder = opened(await upgrade(server, phoenixPath(anon))); // the address's one place: the rest are 429
    const upgradeRequest = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\n\r\n';
    const before = descriptors();
    const clients: net.Socket[] = [];
    for (let i = 0; i < 30; i++) {
      const request = [upgradeRequest(phoenixPath('not-a-jwt')), upgradeRequest(phoenixPath(anon)), 'NOT HTTP AT ALL\r\n\r\n'][i % 3]!;
      const { socket, answer } = await halfOpen(port, request);
      expect(answer).toMatch(/^HTTP\/1\.1 (401|429|400) /);
      clients.push(socket);
    }
    // each half-open client holds one descriptor of its own in this process; the server's side must be gone
    await until(() => descriptors() - before <= 30 + 5, 10_000, 'the server to close its side of every refused socket');
    expect(descriptors() - before).toBeLessThanOrEqual(35);
    for (const c of clients) c.destroy();
    holder.terminate();
  });
});

describe('per user, across sockets', () => {
  // a burst of 3 that refills one authorization every 1000 s: what a case sends past the burst is
  // refused however slowly a loaded machine sends it (at 1 per second, a case slower than a second
  // had one more admitted); each case has users of its own, so no case waits for another's refill
  let server: Server;
  const token = (userId: string) => signAccessToken(base.auth.jwtSecret, { sub: userId });
  beforeAll(async () => {
    server = await startServer(base, { realtime: { limits: { maxSocketsPerUser: 2, authorizationsPerSecond: 0.001, authorizationBurst: 3, joinsPerSecond: 100 } } });
  }, 90_000);
  afterAll(async () => {
    await server?.stop();
  });

  it('a user\'s H1 sockets are capped; another user\'s are not; closing one makes room', async () => {
    const canvas = await createCanvas(db.sql, ['editor', 'viewer']);
    const editor = await token(canvas.users.editor!);
    const h1 = `/ws/canvas/${canvas.canvasId}?access_token=${editor}`;
    const first = opened(await upgrade(server, h1));
    opened(await upgrade(server, h1));
    expect(await upgrade(server, h1)).toMatchObject({ status: 429, body: { error: { code: 'rate_limited', message: 'too many WebSockets open for this user (at most 2): close one first' } } });
    opened(await upgrade(server, `/ws/canvas/${canvas.canvasId}?access_token=${await token(canvas.users.viewer!)}`));
    await closeAndWait(first);
    opened(await upgrade(server, h1)); // the third of the burst: a socket refused by the cap took none
    expect(await upgrade(server, h1)).toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } });
  });

  it('private joins are rate-limited per user across sockets, with Supabase\'s reason; another user on the same socket still joins', async () => {
    const canvas = await createCanvas(db.sql, ['viewer']);
    const owner = await token(canvas.users.owner!);
    const viewer = await token(canvas.users.viewer!);
    const anon = await apiKey(base.auth.jwtSecret, 'anon');
    const sockets = [opened(await upgrade(server, phoenixPath(anon))), opened(await upgrade(server, phoenixPath(anon)))];
    const frames: any[] = [];
    for (const ws of sockets) ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    const reply = async (ref: string) => {
      await until(() => frames.some((f) => f.event === 'phx_reply' && f.ref === ref), 5000, `the reply to ${ref}`);
      const p = frames.find((f) => f.event === 'phx_reply' && f.ref === ref).payload;
      return p.status === 'ok' ? 'ok' : String(p.response?.reason);
    };
    const join = (ws: WebSocket, topic: string, ref: string, accessToken: string) =>
      ws.send(JSON.stringify({ topic: `realtime:${topic}`, event: 'phx_join', ref, join_ref: ref, payload: { access_token: accessToken, config: { private: true } } }));
    // the owner's burst of 3, spread over both sockets (each socket alone is far under its own limit)
    join(sockets[0]!, `canvas:${canvas.canvasId}`, '1', owner);
    join(sockets[1]!, `canvas:${canvas.canvasId}`, '2', owner);
    join(sockets[0]!, 'other-topic-a', '3', owner);
    expect([await reply('1'), await reply('2'), await reply('3')]).toEqual(['ok', 'ok', expect.stringMatching(/^Unauthorized/)]);
    join(sockets[1]!, 'other-topic-b', '4', owner);
    expect(await reply('4')).toMatch(/^ClientJoinRateLimitReached: Too many private channel joins per second for this user \(at most 0.001 across sockets\); retry in \d+ ms$/);
    // the viewer's own bucket, on the same socket (its join replaces the owner's channel of that topic)
    join(sockets[1]!, `canvas:${canvas.canvasId}`, '5', viewer);
    expect(await reply('5')).toBe('ok');
    expect(sockets.every((ws) => ws.readyState === WebSocket.OPEN)).toBe(true);
  });

  it('a token refresh (access_token) on a private channel takes the same authorizations: past the burst it is refused and the channel stays', async () => {
    const canvas = await createCanvas(db.sql, ['editor']);
    const editor = await token(canvas.users.editor!);
    const anon = await apiKey(base.auth.jwtSecret, 'anon');
    const ws = opened(await upgrade(server, phoenixPath(anon)));
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    const topic = `realtime:canvas:${canvas.canvasId}`;
    ws.send(JSON.stringify({ topic, event: 'phx_join', ref: '1', join_ref: '1', payload: { access_token: editor, config: { private: true } } }));
    await until(() => frames.some((f) => f.event === 'phx_reply' && f.ref === '1' && f.payload.status === 'ok'), 5000, 'the join');
    // a refresh per frame, as a hostile client sends them (realtime-js sends one when its token changes)
    for (let i = 2; i <= 6; i++) ws.send(JSON.stringify({ topic, event: 'access_token', ref: String(i), join_ref: '1', payload: { access_token: editor } }));
    await until(() => frames.some((f) => f.event === 'system'), 5000, 'a system message');
    const system = frames.filter((f) => f.event === 'system').map((f) => f.payload);
    expect(system[0]).toMatchObject({ status: 'error', channel: `canvas:${canvas.canvasId}` });
    expect(system[0].message).toMatch(/^ClientJoinRateLimitReached: Too many private channel authorizations per second for this user \(at most 0.001 across sockets\); retry in \d+ ms$/);
    expect(frames.some((f) => f.event === 'phx_close')).toBe(false);
    // still joined: a heartbeat on the channel's socket is answered, and the channel is not closed
    ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', ref: 'hb', join_ref: null, payload: {} }));
    await until(() => frames.some((f) => f.ref === 'hb'), 5000, 'the heartbeat reply');
    expect(frames.some((f) => f.event === 'phx_close')).toBe(false);
  });

  it('refusals of the per-user bounds are in /metrics', async () => {
    expect(await metric(server, 'potentia_rate_limit_rejections_total', 'endpoint="realtime:sockets_per_user"')).toBeGreaterThanOrEqual(1);
    expect(await metric(server, 'potentia_rate_limit_rejections_total', 'endpoint="realtime:authorizations"')).toBeGreaterThanOrEqual(2);
    expect(await metric(server, 'potentia_realtime_sockets', 'protocol="h1"')).toBeGreaterThanOrEqual(1);
  });

  it('H1 connects take the same authorizations: past the burst, 429 with Retry-After', async () => {
    const canvas = await createCanvas(db.sql, ['viewer']);
    const viewer = await token(canvas.users.viewer!);
    const h1 = `/ws/canvas/${canvas.canvasId}?access_token=${viewer}`;
    const results: Upgrade[] = [];
    for (let i = 0; i < 4; i++) {
      const u = await upgrade(server, h1);
      results.push(u);
      if ('ws' in u) await closeAndWait(u.ws); // under the socket cap: only the rate decides
    }
    expect(results.slice(0, 3).every((r) => 'ws' in r)).toBe(true);
    // the next authorization refills in 1000 s, less what refilled since the burst began
    expect(results[3]).toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } });
    const refused = results[3] as { retryAfter: string; body: any };
    expect(refused.retryAfter).toBe(String(refused.body.error.retry_after));
    expect(refused.body.error.retry_after).toBeGreaterThan(900);
    expect(refused.body.error.retry_after).toBeLessThanOrEqual(1000);
    expect(refused.body.error.message).toMatch(/^too many canvas connections per second for this user \(at most 0.001\): retry in \d+ ms$/);
  });
});

describe('client messages per caller, across sockets', () => {
  // each client broadcast and presence track is relayed to the other gateways through Postgres
  // (WAL): one caller's sockets share a budget, so more sockets do not buy more of it
  let server: Server;
  const realtime = realtimeClients();
  beforeAll(async () => {
    // a burst of 4 that refills one message every 1000 s: past it, refused however slowly sent
    server = await startServer(base, { realtime: { limits: { messagesPerSecond: 100, callerMessagesPerSecond: 0.001, callerMessageBurst: 4 } } });
  }, 90_000);
  afterAll(async () => {
    await realtime.disconnectAll();
    await server?.stop();
  });

  /** Joins a public room with ack on each of `count` new realtime-js sockets connected with `key`. */
  async function channels(key: string, count: number, topic: string) {
    const joined = [];
    for (let i = 0; i < count; i++) {
      const channel = realtime.connect(server.url, key, '1.0.0').channel(topic, { config: { broadcast: { ack: true } } });
      expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
      joined.push(channel);
    }
    return joined;
  }

  it('the anon key: one address\'s sockets share one budget; a user\'s sockets theirs; another user is not counted with them', async () => {
    const topic = `room:${randomUUID()}`;
    const anonChannels = await channels(await apiKey(base.auth.jwtSecret, 'anon'), 3, topic);
    const sent: string[] = [];
    for (let round = 0; round < 3; round++) for (const ch of anonChannels) sent.push(await ch.send({ type: 'broadcast', event: 'note', payload: { round } }));
    // 9 sends over 3 sockets (each far under its own 100 per second): the burst of 4
    expect(sent.filter((s) => s === 'ok').length).toBe(4);
    expect(sent.filter((s) => s === 'error').length).toBe(5);

    const [alice, bob] = await Promise.all([createUser(db.sql, 'alice'), createUser(db.sql, 'bob')]);
    const aliceChannels = await channels(await signAccessToken(base.auth.jwtSecret, { sub: alice }), 2, topic);
    const aliceSent: string[] = [];
    for (let round = 0; round < 3; round++) for (const ch of aliceChannels) aliceSent.push(await ch.send({ type: 'broadcast', event: 'note', payload: { round } }));
    expect(aliceSent.filter((s) => s === 'ok').length).toBe(4);
    // presence tracks count in the same budget: drained, a track is refused too
    expect(await aliceChannels[0]!.track({ at: 'after' })).toBe('error');
    // the same address, another user: a budget of its own
    const [bobChannel] = await channels(await signAccessToken(base.auth.jwtSecret, { sub: bob }), 1, topic);
    for (let i = 0; i < 4; i++) expect(await bobChannel!.send({ type: 'broadcast', event: 'note', payload: { i } })).toBe('ok');
    expect(await metric(server, 'potentia_rate_limit_rejections_total', 'endpoint="realtime:messages"')).toBeGreaterThanOrEqual(5);
  });

  it('H1 presence (a realtime.messages row each) takes from the same per-user budget across sockets', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']); // a user of its own: a full budget
    const token = await signAccessToken(base.auth.jwtSecret, { sub: users.editor! });
    const sockets = [await openH1(server.url, canvasId, token), await openH1(server.url, canvasId, token)];
    for (const s of sockets) await s.next((m) => m.type === 'hello');
    for (let i = 0; i < 4; i++) for (const s of sockets) s.send({ type: 'presence', cursor: { x: i }, typing: false });
    const refused = await sockets[1]!.next((m) => m.type === 'error' && (m as { code?: string }).code === 'rate_limited');
    expect((refused as { message: string }).message).toMatch(/per second for this user across sockets/);
    await new Promise((r) => setTimeout(r, 500));
    const [row] = await db.sql`select count(*)::int as n from realtime.messages
                               where topic = ${`canvas:${canvasId}`} and event = 'presence' and payload ->> 'user_id' = ${users.editor!}`;
    const n = row!.n as number;
    expect(n).toBe(4); // 8 sent over 2 sockets (each far under its own 100 per second): the burst
    for (const s of sockets) s.ws.close();
  });

  it('the refusal names the limit and the caller: rate_limited … across sockets (raw frames)', async () => {
    const anon = await apiKey(base.auth.jwtSecret, 'anon');
    const ws = opened(await upgrade(server, phoenixPath(anon)));
    const frames: any[] = [];
    ws.on('message', (d) => frames.push(JSON.parse(String(d))));
    const topic = `realtime:room:${randomUUID()}`;
    ws.send(JSON.stringify({ topic, event: 'phx_join', ref: '1', join_ref: '1', payload: { config: { broadcast: { ack: true } } } }));
    await until(() => frames.some((f) => f.ref === '1'), 5000, 'the join reply');
    for (let i = 2; i < 12; i++) ws.send(JSON.stringify({ topic, event: 'broadcast', ref: String(i), join_ref: '1', payload: { type: 'broadcast', event: 'note', payload: { i } } }));
    await until(() => frames.some((f) => f.ref === '11'), 5000, 'the tenth reply');
    const reasons = frames.filter((f) => f.event === 'phx_reply' && f.payload.status === 'error').map((f) => f.payload.response.reason);
    // the address's budget was drained by the anon sockets of the first case: all 10 refused
    expect(reasons.length).toBe(10);
    expect(reasons[0]).toMatch(/^rate_limited: at most 0.001 messages per second from this address across sockets; retry in \d+ ms$/);
  });
});
