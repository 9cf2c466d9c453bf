import { randomUUID } from 'node:crypto';
import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLOCK_LEEWAY_SECONDS } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { exchange } from '../helpers/http.ts';
import { apiKey, now, signClaims, unsignedToken, userClaims } from '../helpers/tokens.ts';

// One token policy on every surface that takes a token: the HTTP API, the H1 upgrade
// (/ws/canvas/{id}), the realtime connect upgrade (apikey), phx_join (access_token, through the
// real @supabase/realtime-js) and the access_token refresh of a joined channel. Each token gets the
// same decision, for the same reason, everywhere — except the project's API keys, which realtime
// admits and the user-only surfaces (HTTP, H1) refuse.

const ISSUER = 'http://127.0.0.1:54321/auth/v1';
const base = loadConfig();
const config = {
  ...base, databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const,
  auth: { ...base.auth, issuer: ISSUER },
};
const secret = config.auth.jwtSecret;
const db = testDatabase(3);

let server: Server;
let canvasId: string;
let owner: string;
let anonKey: string; // what supabase-js sends as apikey

beforeAll(async () => {
  server = await startServer(config);
  const canvas = await createCanvas(db.sql);
  canvasId = canvas.canvasId;
  owner = canvas.users.owner!;
  anonKey = await apiKey(secret, 'anon');
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

type Surface = 'http' | 'h1' | 'connect' | 'join' | 'refresh';
const SURFACES: Surface[] = ['http', 'h1', 'connect', 'join', 'refresh'];
type Outcome = { accepted: boolean; message: string };

const user = (patch: Record<string, unknown> = {}, drop: string[] = []) => {
  const claims: Record<string, unknown> = { ...userClaims(owner, { issuer: ISSUER }), ...patch };
  for (const key of drop) delete claims[key];
  return claims;
};

type Row = {
  name: string;
  mint: () => Promise<string>;
  /** surfaces that accept it; the others refuse it with `reason` */
  accepts: Surface[];
  reason?: RegExp;
  /** the realtime channel used for join/refresh: a member's private canvas channel, or a public one */
  channel: 'private' | 'public';
};

const INVALID = /not a valid signed JWT/;
const ROWS: Row[] = [
  { name: 'a valid user token', mint: () => signClaims(secret, user()), accepts: SURFACES, channel: 'private' },
  { name: `3 s past exp (within the ${CLOCK_LEEWAY_SECONDS} s leeway)`, mint: () => signClaims(secret, user({ exp: now() - 3 })), accepts: SURFACES, channel: 'private' },
  { name: '10 s past exp', mint: () => signClaims(secret, user({ exp: now() - 10 })), accepts: [], reason: /Token has expired/, channel: 'private' },
  { name: 'no exp', mint: () => signClaims(secret, user({}, ['exp'])), accepts: [], reason: /no exp claim/, channel: 'private' },
  { name: 'nbf a minute ahead', mint: () => signClaims(secret, user({ nbf: now() + 60 })), accepts: [], reason: /not valid yet/, channel: 'private' },
  { name: 'sub not a UUID', mint: () => signClaims(secret, user({ sub: 'not-a-uuid' })), accepts: [], reason: /sub.*not a user id/, channel: 'private' },
  { name: 'authenticated without sub', mint: () => signClaims(secret, user({}, ['sub'])), accepts: [], reason: /needs a sub/, channel: 'private' },
  { name: 'wrong aud', mint: () => signClaims(secret, user({ aud: 'someone-else' })), accepts: [], reason: /audience/, channel: 'private' },
  { name: 'wrong iss', mint: () => signClaims(secret, user({ iss: 'https://elsewhere.example/auth/v1' })), accepts: [], reason: /issuer/, channel: 'private' },
  { name: 'no iss (one is configured)', mint: () => signClaims(secret, user({}, ['iss'])), accepts: [], reason: /issuer/, channel: 'private' },
  { name: 'a role the API never runs as', mint: () => signClaims(secret, user({ role: 'postgres' })), accepts: [], reason: /role must be one of/, channel: 'private' },
  { name: 'wrong signature', mint: () => signClaims('another-secret-that-is-at-least-32-characters', user()), accepts: [], reason: INVALID, channel: 'private' },
  { name: 'alg none', mint: async () => unsignedToken(user()), accepts: [], reason: INVALID, channel: 'private' },
  { name: 'not a JWT', mint: async () => 'not-a-jwt', accepts: [], reason: INVALID, channel: 'private' },
  { name: 'the anon key (no sub)', mint: () => apiKey(secret, 'anon'), accepts: ['connect', 'join', 'refresh'], reason: /signed-in user/, channel: 'public' },
  { name: 'the service_role key (no sub)', mint: () => apiKey(secret, 'service_role'), accepts: ['connect', 'join', 'refresh'], reason: /signed-in user/, channel: 'public' },
  // service_role acts for no user on HTTP and H1, even naming one (the owner) with a valid aud and iss;
  // realtime admits it on any channel, a member-only one included (Supabase: service_role bypasses RLS)
  { name: 'a service_role token naming a user (sub)', mint: () => signClaims(secret, user({ role: 'service_role' })),
    accepts: ['connect', 'join', 'refresh'], reason: /service_role token acts for no user/, channel: 'private' },
  { name: 'an anon token naming a user (sub)', mint: () => signClaims(secret, user({ role: 'anon' })),
    accepts: ['connect', 'join', 'refresh'], reason: /role "anon" is not accepted/, channel: 'public' },
  { name: 'an expired anon key', mint: () => apiKey(secret, 'anon', -10), accepts: [], reason: /Token has expired/, channel: 'public' },
];

const wsBase = () => server.url.replace(/^http/, 'ws');

async function viaHttp(token: string): Promise<Outcome> {
  const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: `Bearer ${token}` } });
  const body = await res.json() as any;
  if (res.status === 200) return { accepted: true, message: '' };
  expect(res.status, JSON.stringify(body)).toBe(401);
  expect(body.error.code).toBe('unauthorized');
  return { accepted: false, message: body.error.message };
}

/** A WebSocket upgrade: open (then closed again), or the refusal's status and JSON error. */
function upgrade(url: string): Promise<Outcome> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => {
      ws.close();
      resolve({ accepted: true, message: '' });
    });
    ws.once('unexpected-response', (_req, res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => { text += chunk.toString('utf8'); });
      res.on('end', () => {
        try {
          expect(res.statusCode, text).toBe(401);
          const body = JSON.parse(text);
          expect(body.error.code).toBe('unauthorized');
          resolve({ accepted: false, message: body.error.message });
        } catch (err) {
          reject(err);
        }
      });
    });
    ws.once('error', (err) => reject(err));
  });
}

const clients: RealtimeClient[] = [];
function realtimeClient(): RealtimeClient {
  // what supabase-js does: the anon key as apikey, the user's token per channel (setAuth);
  // the join timeout is long so that a missing phx_reply shows as TIMED_OUT, never as an error
  const client = new RealtimeClient(`${wsBase()}/realtime/v1`, {
    params: { apikey: anonKey }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  return client;
}

const topicFor = (kind: Row['channel']) => (kind === 'private' ? `canvas:${canvasId}` : `room:${randomUUID()}`);

function subscribe(channel: RealtimeChannel): Promise<{ status: string; err?: Error }> {
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'CLOSED') resolve({ status, err });
    });
  });
}

async function viaJoin(token: string, kind: Row['channel']): Promise<Outcome> {
  const client = realtimeClient();
  try {
    await client.setAuth(token);
    const { status, err } = await subscribe(client.channel(topicFor(kind), { config: { private: kind === 'private' } }));
    if (status === 'SUBSCRIBED') return { accepted: true, message: '' };
    expect(status, 'a refused join gets its phx_reply (CHANNEL_ERROR), not silence (TIMED_OUT)').toBe('CHANNEL_ERROR');
    expect(err?.message).toMatch(/^InvalidJWTToken: /);
    return { accepted: false, message: err!.message };
  } finally {
    await client.disconnect();
  }
}

/** Joins with a good token, then refreshes it to `token` (realtime-js setAuth pushes access_token). */
async function viaRefresh(token: string, kind: Row['channel']): Promise<Outcome> {
  const client = realtimeClient();
  try {
    await client.setAuth(kind === 'private' ? await signClaims(secret, user()) : anonKey);
    let onRefusal!: (message: string) => void;
    const refusal = new Promise<string>((resolve) => { onRefusal = resolve; });
    const channel = client.channel(topicFor(kind), { config: { private: kind === 'private', broadcast: { ack: true } } })
      .on('system', {}, (p: { status: string; message: string }) => { if (p.status === 'error') onRefusal(p.message); });
    expect((await subscribe(channel)).status).toBe('SUBSCRIBED');
    await client.setAuth(token);
    // frames are handled in order: a refusal (system error) arrives before the acked broadcast's
    // reply, so the first of the two to arrive is the decision
    const first = await Promise.race([
      channel.send({ type: 'broadcast', event: 'ping', payload: {} }).then((sent) => ({ sent })),
      refusal.then((message) => ({ message })),
    ]);
    if ('message' in first) return { accepted: false, message: first.message };
    expect(first.sent).toBe('ok');
    return { accepted: true, message: '' };
  } finally {
    await client.disconnect();
  }
}

async function outcome(surface: Surface, row: Row): Promise<Outcome> {
  const token = await row.mint(); // minted per surface: `exp - 3 s` stays 3 s
  switch (surface) {
    case 'http': return viaHttp(token);
    case 'h1': return upgrade(`${wsBase()}/ws/canvas/${canvasId}?access_token=${encodeURIComponent(token)}`);
    case 'connect': return upgrade(`${wsBase()}/realtime/v1/websocket?apikey=${encodeURIComponent(token)}&vsn=1.0.0`);
    case 'join': return viaJoin(token, row.channel);
    case 'refresh': return viaRefresh(token, row.channel);
  }
}

describe('one token policy on HTTP, H1, realtime connect, phx_join and access_token refresh', () => {
  for (const row of ROWS) {
    it(row.name, async () => {
      const decided: Record<string, boolean> = {};
      const expected: Record<string, boolean> = {};
      for (const surface of SURFACES) {
        const result = await outcome(surface, row);
        decided[surface] = result.accepted;
        expected[surface] = row.accepts.includes(surface);
        if (!result.accepted) expect(result.message, `${surface} refusal`).toMatch(row.reason!);
      }
      expect(decided).toEqual(expected);
    }, 60_000);
  }
});

describe('service_role on HTTP', () => {
  it("a service_role token naming the owner cannot write as the owner; the owner's own token can", async () => {
    const op = { action: 'create', client_op_id: `svc-${randomUUID()}`, patch: { type: 'text', content: { text: 'x' } } };
    const post = async (token: string) => {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(op),
      });
      return { status: res.status, body: await res.json() as any };
    };
    const count = async () => (await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${op.client_op_id}`)[0]!.n;

    const refused = await post(await signClaims(secret, user({ role: 'service_role' })));
    expect(refused.status, JSON.stringify(refused.body)).toBe(401);
    expect(refused.body.error).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/service_role token acts for no user/) });
    expect(await count()).toBe(0);

    const applied = await post(await signClaims(secret, user()));
    expect(applied.status, JSON.stringify(applied.body)).toBe(200);
    expect(applied.body.status).toBe('success');
    expect(await count()).toBe(1);
  });
});

describe("a deleted user's token (valid until it expires: tokens are checked by signature and expiry)", () => {
  it('HTTP: 401 unauthorized naming the missing user, never a 400 with a foreign key\'s message, and nothing is written', async () => {
    const fixture = await createCanvas(db.sql, ['editor']);
    const ghost = fixture.users.editor!;
    const token = await signClaims(secret, { ...userClaims(ghost, { issuer: ISSUER }) });
    const call = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${server.url}${path}`, {
        method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() as any };
    };
    expect((await call('GET', '/api/v1/workspaces')).status).toBe(200); // while the user exists
    await db.sql`delete from auth.users where id = ${ghost}`;
    for (const [method, path, body] of [
      ['POST', '/api/v1/workspaces', { name: 'ghost workspace' }], ['GET', '/api/v1/workspaces', undefined],
      ['GET', '/api/v1/canvas', undefined], ['POST', '/api/v1/canvas', { workspace_id: fixture.workspaceId, title: 'ghost' }],
      // the mutation RPC and replay, which found no role (the memberships went with the user): 401 too, not 404
      ['POST', `/api/v1/canvas/${fixture.canvasId}/mutate`, { action: 'create', client_op_id: 'ghost-op', patch: { type: 'text' } }],
      ['POST', `/api/v1/canvas/${fixture.canvasId}/mutate`, { ops: [{ action: 'create', client_op_id: 'ghost-batch', patch: { type: 'text' } }] }],
      ['GET', `/api/v1/canvas/${fixture.canvasId}/snapshot?since_seq=0`, undefined],
    ] as const) {
      const res = await call(method, path, body);
      expect(res.status, `${method} ${path}: ${JSON.stringify(res.body)}`).toBe(401);
      expect(res.body.error).toMatchObject({ code: 'unauthorized', message: expect.stringMatching(/no longer exists/) });
    }
    expect((await db.sql`select count(*)::int as n from app.workspaces where created_by = ${ghost}`)[0]!.n).toBe(0);
    expect((await db.sql`select count(*)::int as n from app.block_operations where client_op_id like 'ghost-%'`)[0]!.n).toBe(0);
  });

  it('H1: the upgrade is 401 unauthorized naming the missing user, as HTTP answers, not 404 not_found', async () => {
    const fixture = await createCanvas(db.sql, ['editor']);
    const ghost = fixture.users.editor!;
    const token = await signClaims(secret, { ...userClaims(ghost, { issuer: ISSUER }) });
    await db.sql`delete from auth.users where id = ${ghost}`;
    const refused = await new Promise<{ status: number; body: any }>((resolve, reject) => {
      const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/ws/canvas/${fixture.canvasId}?access_token=${token}`);
      ws.once('open', () => { ws.close(); reject(new Error('the upgrade was accepted')); });
      ws.once('unexpected-response', (_req, res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
      });
      ws.once('error', () => {});
    });
    expect(refused).toEqual({ status: 401, body: { error: { code: 'unauthorized', message: 'the user this token was issued to no longer exists' } } });
  });

  it('H1: the socket of a user deleted while it is open gets error unauthorized and closes 4401, as on an expired token (it was forbidden, 4403)', async () => {
    const fixture = await createCanvas(db.sql, ['editor']);
    const ghost = fixture.users.editor!;
    const h1 = await openH1(server.url, fixture.canvasId, await signClaims(secret, { ...userClaims(ghost, { issuer: ISSUER }) }));
    await h1.next((m) => m.type === 'hello');
    await db.sql`delete from auth.users where id = ${ghost}`;
    expect(await h1.next((m) => m.type === 'error')).toEqual({ type: 'error', code: 'unauthorized', message: 'the user this token was issued to no longer exists' });
    expect(await h1.closed).toMatchObject({ code: 4401, reason: 'user_deleted' });
  });

  it('realtime-js: the private canvas channel of a user deleted while joined is closed, and gets nothing after', async () => {
    const fixture = await createCanvas(db.sql, ['editor']);
    const ghost = fixture.users.editor!;
    const client = realtimeClient();
    client.setAuth(await signClaims(secret, { ...userClaims(ghost, { issuer: ISSUER }) }));
    const received: string[] = [];
    const system: string[] = [];
    const channel = client.channel(`canvas:${fixture.canvasId}`, { config: { private: true } })
      .on('broadcast', { event: '*' }, ({ event }) => received.push(event))
      .on('system', {}, (m: { message?: string }) => system.push(String(m.message)));
    expect((await subscribe(channel)).status).toBe('SUBSCRIBED');
    await db.sql`delete from auth.users where id = ${ghost}`;
    const deadline = Date.now() + 5000;
    while (!system.some((m) => /Unauthorized/.test(m)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect(system.join('\n')).toMatch(/Unauthorized: You do not have permissions to read from this Channel topic/);
    await db.sql`select realtime.send('{"after":"deletion"}'::jsonb, 'canvas_updated', ${`canvas:${fixture.canvasId}`}, true)`;
    await new Promise((r) => setTimeout(r, 500));
    expect(received).toEqual([]);
  });
});

describe('two Authorization headers (RFC 6750 §3.1: more than one way of sending a token is an invalid request)', () => {
  const raw = (head: string) => exchange(server.url, `${head}Host: 127.0.0.1\r\nConnection: close\r\n\r\n`);
  const message = /^authorization: more than one Authorization header/;

  it('is a 400 naming the header on every surface that reads it, whichever token comes first (it was "missing bearer token", or the second dropped)', async () => {
    const good = await signClaims(secret, user());
    const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    for (const auth of [`Authorization: Bearer ${good}\r\nAuthorization: Bearer ${good}\r\n`,
      `Authorization: Bearer ${good}\r\nAuthorization: Bearer not-a-token\r\n`,
      `Authorization: Bearer ${good}, Bearer ${good}\r\n`]) {
      for (const [request, shape] of [
        [`GET /api/v1/canvas/${canvasId} HTTP/1.1\r\n`, 'api'],
        [`GET /functions/v1/canvas/${canvasId} HTTP/1.1\r\n`, 'api'],
        [`GET /api/v1/workspaces HTTP/1.1\r\n`, 'api'],
        [`GET /api/v1/canvas/${canvasId}/files HTTP/1.1\r\n`, 'api'],
        [`GET /api/v1/canvas/${canvasId}/search?q=x HTTP/1.1\r\n`, 'api'],
        [`GET /auth/v1/user HTTP/1.1\r\napikey: ${anonKey}\r\n`, 'gotrue'],
        [`GET /ws/canvas/${canvasId} HTTP/1.1\r\n${upgrade}`, 'api'],
        [`GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\n${upgrade}`, 'api'],
      ] as const) {
        const res = await raw(`${request}${auth}`);
        const what = `${request.split(' ')[1]} with ${auth.split('\r\n').length - 1} line(s)`;
        expect(res.status, `${what}: ${res.body}`).toBe(400);
        const body = JSON.parse(res.body);
        if (shape === 'gotrue') expect(body, what).toMatchObject({ code: 400, error_code: 'validation_failed', msg: expect.stringMatching(message) });
        else expect(body, what).toEqual({ error: { code: 'invalid_input', field: 'authorization', message: expect.stringMatching(message) } });
      }
    }
    // one header is served as before
    const one = await raw(`GET /api/v1/canvas/${canvasId} HTTP/1.1\r\nAuthorization: Bearer ${good}\r\n`);
    expect(one.status, one.body).toBe(200);
  });

  it('a WebSocket upgrade whose query token and header token differ is a 400 naming the parameter (the query\'s was used, the header\'s ignored unseen)', async () => {
    const good = await signClaims(secret, user());
    const upgrade = 'Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
    for (const [request, field] of [
      [`GET /ws/canvas/${canvasId}?access_token=${good} HTTP/1.1\r\nAuthorization: Bearer ${anonKey}\r\n`, 'access_token'],
      [`GET /realtime/v1/websocket?vsn=1.0.0&apikey=${good} HTTP/1.1\r\nAuthorization: Bearer ${anonKey}\r\n`, 'apikey'],
      [`GET /realtime/v1/websocket?vsn=1.0.0&apikey=${good} HTTP/1.1\r\napikey: ${anonKey}\r\n`, 'apikey'],
      [`GET /realtime/v1/websocket?vsn=1.0.0 HTTP/1.1\r\napikey: ${anonKey}\r\napikey: ${good}\r\n`, 'apikey'],
    ] as const) {
      const res = await raw(`${request}${upgrade}`);
      expect(res.status, `${request}: ${res.body}`).toBe(400);
      expect(JSON.parse(res.body), request).toEqual({ error: { code: 'invalid_input', field, message: expect.stringMatching(new RegExp(`^${field}: `)) } });
    }
    // the same token in two places is one credential: served
    const ws = server.url.replace(/^http/, 'ws');
    // and Supabase's pair, the project's key as apikey and the user's JWT as Bearer, is served (as the key)
    for (const [url, headers] of [[`${ws}/ws/canvas/${canvasId}?access_token=${good}`, { authorization: `Bearer ${good}` }],
      [`${ws}/realtime/v1/websocket?vsn=1.0.0&apikey=${anonKey}`, { apikey: anonKey }],
      [`${ws}/realtime/v1/websocket?vsn=1.0.0`, { apikey: anonKey, authorization: `Bearer ${good}` }],
      [`${ws}/realtime/v1/websocket?vsn=1.0.0&apikey=${anonKey}`, { authorization: `Bearer ${good}` }]] as const) {
      const socket = new WebSocket(url, { headers });
      await new Promise((resolve, reject) => { socket.once('open', resolve); socket.once('error', reject); });
      socket.terminate();
    }
  });
});

describe('API keys on realtime', () => {
  it('the anon key joins a public channel but not a member-only canvas channel (RLS decides)', async () => {
    const client = realtimeClient();
    const pub = await subscribe(client.channel(`room:${randomUUID()}`));
    expect(pub.status).toBe('SUBSCRIBED');
    const priv = await subscribe(client.channel(`canvas:${canvasId}`, { config: { private: true } }));
    expect(priv.status).toBe('CHANNEL_ERROR');
    expect(priv.err?.message).toMatch(/^Unauthorized: /);
    await client.disconnect();
  });
});

afterAll(async () => {
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
});
