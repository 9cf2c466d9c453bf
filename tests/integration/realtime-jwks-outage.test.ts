// The realtime gateway configured with asymmetric signing keys (SUPABASE_JWKS_URL) while the JWKS
// endpoint fails (an HTTP server standing in for Supabase's /auth/v1/.well-known/jwks.json answers
// 500, an HTML page, or resets the connection). A token signed by the project's key cannot be
// checked then. The HTTP API answers it 503 unavailable (jwks-outage.test.ts); the gateway refused
// it as an invalid token everywhere: 401 at the upgrade (H1 and realtime-js), `InvalidJWTToken`
// on phx_join, and on a live channel an `access_token` refresh (supabase-js sends one after every
// token refresh) was answered `Invalid JWT` and phx_close: the channel was closed for good, the
// user signed out of realtime by an outage of the key server. Now such a token is a transient
// failure: the upgrade 503 `unavailable` with Retry-After, the join `unavailable: …` (realtime-js
// rejoins on its own), and a live channel keeps its current token, is told `unavailable` and checks
// the new one again until the keys answer; then it takes it, or ends if the keys refuse it. A
// channel whose token expires while its newer one waits errors (phx_error: realtime-js rejoins
// with the newer one) instead of closing. A token the keys refuse is refused as before.
// Real parts: the server with its gateway, @supabase/realtime-js, @potentia/client (CanvasSync),
// and the JWKS served over HTTP by this file.
import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import { SignJWT, type CryptoKey } from 'jose';
import { pino } from 'pino';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { startJwksStandIn, type JwksStandIn } from '../helpers/jwks.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { databaseUrlThrough, startTcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';

const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
let jwks: JwksStandIn;
let server: Server;
let database: Database;
let anonKey: string;
let project: { publicKey: CryptoKey; privateKey: CryptoKey };
let stranger: { publicKey: CryptoKey; privateKey: CryptoKey };
const clients: RealtimeClient[] = [];
const syncs: CanvasSync[] = [];

beforeAll(async () => {
  jwks = await startJwksStandIn('status 500');
  ({ project, stranger } = jwks);
  // the gateway on (opts {}); HS256 tokens (JWT_SECRET: the API keys, legacy user tokens) need no JWKS
  server = await startTestServer({ auth: { ...base.auth, jwksUrl: jwks.url } }, {});
  database = testDatabase(3);
  anonKey = (await apiKeys(server.deps.config)).anon;
}, 90_000);
afterAll(async () => {
  for (const s of syncs) s.close();
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await server?.stop();
  await database?.close();
  await jwks?.close();
});

/** A user's token signed by `key` under `kid` (RS256, as Supabase's asymmetric keys sign them), fresh each call. */
let issued = 0;
const signed = (key: CryptoKey, kid: string, sub: string) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub, role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 600, n: ++issued })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(key);
};
const projectToken = (sub: string) => signed(project.privateKey, 'project-1', sub);
const strangerToken = (sub: string) => signed(stranger.privateKey, 'project-1', sub);

/** The answer to an upgrade that is refused: status, Retry-After and JSON body. */
function refusedUpgrade(path: string): Promise<{ status: number; retryAfter: string | undefined; body: any }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}${path}`);
    ws.once('open', () => { ws.close(); reject(new Error(`the upgrade of ${path} was accepted`)); });
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined,
        body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }));
    });
    ws.once('error', () => {});
  });
}

/**
 * A realtime-js channel on `canvas:{id}` (private) of a new client connected with the anon key, joined with `token`; what it was told, in order.
 * `on`: the server (this file's unless told); `ack`: broadcasts acknowledged.
 */
function channelOf(canvasId: string, token: string, opts: { on?: Server; ack?: boolean } = {}) {
  const client = new RealtimeClient(`${(opts.on ?? server).url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: anonKey }, transport: WebSocket as any, vsn: '2.0.0', heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const statuses: string[] = [];
  const errors: string[] = [];
  const system: { status: string; message: string }[] = [];
  const ops: string[] = [];
  const channel: RealtimeChannel = client.channel(`canvas:${canvasId}`, { config: { private: true, ...(opts.ack ? { broadcast: { ack: true } } : {}) } })
    .on('system', {}, (p: { status: string; message: string }) => system.push({ status: p.status, message: p.message }))
    .on('broadcast', { event: 'block_op' }, ({ payload }) => ops.push(String(payload.block?.content?.text)));
  return {
    client, channel, statuses, errors, system, ops,
    /** Sets the token, then subscribes: the join carries it. */
    async subscribe(): Promise<void> {
      await client.setAuth(token);
      channel.subscribe((status, err) => {
        statuses.push(status);
        if (err) errors.push(err.message);
      });
    },
  };
}
type Watched = ReturnType<typeof channelOf>;

const text = (canvasId: string, ownerId: string, t: string) =>
  mutate(database.sql, ownerId, canvasId, { action: 'create', patch: { type: 'text', content: { text: t } } });
const seen = (c: Watched, what: string) => (f: () => boolean) => until(f, 20_000, `${what}: ${JSON.stringify({ statuses: c.statuses, errors: c.errors, system: c.system })}`);

describe('the JWKS endpoint fails: realtime', () => {
  it('refuses tokens it cannot check as unavailable (retryable), keeps live channels on their token, and takes the new one once the keys answer', async () => {
    const { canvasId, users } = await createCanvas(database.sql, ['editor', 'viewer']);
    const editor = users.editor!;
    const viewer = users.viewer!;
    const owner = users.owner!;

    // the upgrades: 503 unavailable with Retry-After (it was 401 unauthorized), whatever the failure
    for (const failing of ['status 500', 'html page', 'connection reset'] as const) {
      jwks.mode = failing;
      expect({ failing, ...(await refusedUpgrade(`/ws/canvas/${canvasId}?access_token=${await projectToken(editor)}`)) }).toEqual({
        failing, status: 503, retryAfter: '1',
        body: { error: { code: 'unavailable', retry_after: 1, message: expect.stringContaining('SUPABASE_JWKS_URL') } },
      });
    }
    jwks.mode = 'status 500';
    expect(await refusedUpgrade(`/realtime/v1/websocket?vsn=1.0.0&apikey=${await projectToken(editor)}`))
      .toMatchObject({ status: 503, retryAfter: '1', body: { error: { code: 'unavailable' } } });

    // @potentia/client: its upgrades are refused 503 while it lasts, and it keeps trying
    const upgradeErrors: string[] = [];
    class RecordingWebSocket extends WebSocket {
      constructor(url: string) {
        super(url);
        this.on('error', (err) => upgradeErrors.push(err.message));
      }
    }
    const sync = new CanvasSync({ url: server.url, canvasId, token: () => projectToken(editor), WebSocket: RecordingWebSocket as any,
      reconnectDelayMs: () => 500 });
    syncs.push(sync);
    let live = false;
    const joined = sync.join().then(() => { live = true; }, () => {}); // rejects only if closed first (afterAll)
    await until(() => upgradeErrors.length >= 2, 20_000, 'two refused H1 upgrades of the client');

    // a join with such a token: `unavailable: …`, not `InvalidJWTToken`
    const a = channelOf(canvasId, await projectToken(editor));
    await a.subscribe();
    await seen(a, 'the join refused')(() => a.errors.length > 0);
    expect(a.statuses[0]).toBe('CHANNEL_ERROR');
    expect(a.errors[0]).toMatch(/^unavailable: the signing keys \(SUPABASE_JWKS_URL\) could not be fetched/);

    // live channels (joined with HS256 tokens) refreshed to tokens that cannot be checked now
    const b = channelOf(canvasId, await tokenFor(server, editor));
    const c = channelOf(canvasId, await tokenFor(server, viewer));
    const d = channelOf(canvasId, await tokenFor(server, editor, {}, { expiresInSeconds: 2 })); // ends at exp + 5 s
    for (const x of [b, c, d]) {
      await x.subscribe();
      await seen(x, 'joined')(() => x.statuses.includes('SUBSCRIBED'));
    }
    await b.client.setAuth(await projectToken(editor)); // a fresh token of the project's key
    await c.client.setAuth(await strangerToken(viewer)); // not signed by the project's key: the keys will refuse it
    await d.client.setAuth(await projectToken(editor));
    for (const x of [b, c, d]) {
      await seen(x, 'told the refresh could not be checked')(() => x.system.length > 0);
      expect(x.system[0]).toEqual({ status: 'error', message: expect.stringMatching(/^unavailable: the signing keys \(SUPABASE_JWKS_URL\) could not be fetched.*keeps its current token/) });
    }
    // still joined: a block created now reaches them
    await text(canvasId, owner, 'during the outage');
    for (const x of [b, c]) await seen(x, 'the block_op during the outage')(() => x.ops.includes('during the outage'));
    expect([b.channel.state, c.channel.state]).toEqual(['joined', 'joined']);

    // d's token expires while its newer one waits: the channel errors (rejoined by realtime-js with
    // the newer token, refused unavailable while the keys fail), it is not closed
    await seen(d, 'the expiry')(() => d.system.some((m) => /Token has expired/.test(m.message)));
    expect(d.system.at(-1)).toEqual({ status: 'error', message: expect.stringMatching(/^unavailable: Token has expired \d+ seconds ago and the newer one sent \(access_token\) could not be checked yet/) });
    await seen(d, 'the rejoin refused')(() => d.errors.some((e) => e.startsWith('unavailable: the signing keys')));
    expect(d.statuses).not.toContain('CLOSED');
    expect(live).toBe(false);

    // the keys answer again
    jwks.mode = 'ok';
    // b takes its new token, told so; c's is refused by the keys: Invalid JWT, and closed
    await seen(b, 'the new token taken')(() => b.system.length > 1);
    expect(b.system.slice(1)).toEqual([{ status: 'ok', message: expect.stringMatching(/has been checked: the channel now uses it/) }]);
    await seen(c, 'the refused token ending the channel')(() => c.statuses.includes('CLOSED'));
    expect(c.system.slice(1)).toEqual([{ status: 'error', message: expect.stringMatching(/^Invalid JWT: token is not a valid signed JWT/) }]);
    // a and d rejoin by themselves; the H1 client goes live, having only ever been told 503
    for (const x of [a, d]) await seen(x, 'rejoined')(() => x.statuses.at(-1) === 'SUBSCRIBED');
    await Promise.race([joined, sleep(20_000)]); // bounded: a client that never goes live fails the next line
    expect(live).toBe(true);
    expect(new Set(upgradeErrors)).toEqual(new Set(['Unexpected server response: 503']));
    await text(canvasId, owner, 'after the outage');
    for (const x of [a, b, d]) await seen(x, 'the block_op after the outage')(() => x.ops.includes('after the outage'));
    expect(b.statuses).not.toContain('CLOSED');
    const h1 = await openH1(server.url, canvasId, await projectToken(editor));
    try {
      expect(await h1.next((m) => m.type === 'hello')).toMatchObject({ canvas_id: canvasId, user_id: editor });
    } finally {
      h1.ws.close();
    }
  }, 120_000);

  it('a sign-out (access_token null) drops the token waiting for the keys: not taken once they answer, the channel ends when its own token expires', async () => {
    // realtime-js sends access_token null when supabase-js's accessToken callback answers null
    // (signed out). It returned before dropping the token waiting for the keys, so that token was
    // taken once the keys answered: the signed-out client's channel went on as the user.
    jwks.mode = 'status 500';
    const { canvasId, users } = await createCanvas(database.sql, ['editor']);
    const editor = users.editor!;
    // a server of its own: this file's has fetched the keys by now, and uses them for 10 minutes
    const own = await startTestServer({ auth: server.deps.config.auth }, {});
    const x = channelOf(canvasId, await tokenFor(server, editor, {}, { expiresInSeconds: 2 }), { on: own, ack: true }); // ends at exp + 5 s
    try {
      await x.subscribe();
      await seen(x, 'joined')(() => x.statuses.includes('SUBSCRIBED'));
      await x.client.setAuth(await projectToken(editor));
      await seen(x, 'told the refresh could not be checked')(() => x.system.length > 0);
      expect(x.system[0]!.message).toMatch(/^unavailable: the signing keys/);
      x.client.accessToken = async () => null; // signed out: supabase-js's callback answers null
      await x.client.setAuth();
      // answered after the null was handled (a socket's frames are handled in order)
      expect(await x.channel.send({ type: 'broadcast', event: 'ping', payload: {} })).toBe('ok');
      jwks.mode = 'ok';
      await seen(x, 'the next word on its token')(() => x.system.length > 1);
      expect(x.system.slice(1)).toEqual([{ status: 'error', message: expect.stringMatching(/^Token has expired \d+ seconds ago$/) }]);
      await seen(x, 'closed')(() => x.statuses.includes('CLOSED'));
    } finally {
      await x.client.disconnect().catch(() => {});
      await own.stop();
    }
  }, 60_000);

  it('a later check put off by the authorization rate limit keeps the token and checks it again when the limit allows', async () => {
    // the keys answer, but the user's private authorizations are used up: the waiting token was
    // dropped with a `system` error, never sent again by realtime-js, and the channel closed for
    // good when its old token expired
    jwks.mode = 'status 500';
    const { canvasId, users } = await createCanvas(database.sql, ['editor']);
    const editor = users.editor!;
    // two authorizations, then one every 10 s
    const limited = await startTestServer({ auth: server.deps.config.auth }, { realtime: { limits: { authorizationsPerSecond: 0.1, authorizationBurst: 2 } } });
    const b = channelOf(canvasId, await tokenFor(server, editor), { on: limited });
    const e = channelOf(canvasId, await tokenFor(server, editor), { on: limited });
    try {
      await b.subscribe();
      await seen(b, 'joined')(() => b.statuses.includes('SUBSCRIBED')); // the first authorization
      await b.client.setAuth(await projectToken(editor));
      await seen(b, 'told the refresh could not be checked')(() => b.system.length > 0);
      expect(b.system[0]!.message).toMatch(/^unavailable: the signing keys/);
      await e.subscribe();
      await seen(e, 'joined')(() => e.statuses.includes('SUBSCRIBED')); // the second: the next is refused for 10 s
      jwks.mode = 'ok';
      await until(() => b.system.length > 1, 40_000, `the new token taken: ${JSON.stringify(b.system)}`);
      expect(b.system.slice(1)).toEqual([{ status: 'ok', message: expect.stringMatching(/has been checked: the channel now uses it/) }]);
      expect(b.channel.state).toBe('joined');
    } finally {
      await Promise.all([b, e].map((x) => x.client.disconnect().catch(() => {})));
      await limited.stop();
    }
  }, 90_000);

  it('a later check whose database probe meets a connection failure keeps the token and checks it again', async () => {
    jwks.mode = 'status 500';
    const { canvasId, users } = await createCanvas(database.sql, ['editor']);
    const editor = users.editor!;
    const direct = new URL(testDatabaseUrl());
    const proxy = await startTcpProxy(Number(direct.port || 5432));
    const pooled = databaseUrlThrough(proxy, direct);
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => void lines.push(line) });
    // the pool through the proxy, the replication stream not: the channel stays served
    const cut = await startTestServer({ auth: server.deps.config.auth, databaseUrl: pooled, directDatabaseUrl: direct.toString() }, { realtime: {}, logger });
    const b = channelOf(canvasId, await tokenFor(server, editor), { on: cut });
    try {
      await b.subscribe();
      await seen(b, 'joined')(() => b.statuses.includes('SUBSCRIBED'));
      await b.client.setAuth(await projectToken(editor));
      await seen(b, 'told the refresh could not be checked')(() => b.system.length > 0);
      expect(b.system[0]!.message).toMatch(/^unavailable: the signing keys/);
      proxy.cut({ existing: 'destroy', incoming: 'refuse' });
      jwks.mode = 'ok';
      await until(() => lines.some((l) => l.includes('realtime access token check put off by a database connection failure')), 30_000,
        `the check put off: ${JSON.stringify(b.system)}`);
      proxy.restore();
      await until(() => b.system.length > 1, 30_000, `the new token taken: ${JSON.stringify(b.system)}`);
      expect(b.system.slice(1)).toEqual([{ status: 'ok', message: expect.stringMatching(/has been checked: the channel now uses it/) }]);
      expect(b.channel.state).toBe('joined');
    } finally {
      proxy.restore();
      await b.client.disconnect().catch(() => {});
      await cut.stop();
      await proxy.close();
    }
  }, 90_000);

  it('refuses a token the fetched keys refuse as before: 401 at the upgrade, InvalidJWTToken on join, Invalid JWT and closed on refresh', async () => {
    jwks.mode = 'ok';
    const { canvasId, users } = await createCanvas(database.sql, ['editor']);
    const editor = users.editor!;
    expect(await refusedUpgrade(`/ws/canvas/${canvasId}?access_token=${await strangerToken(editor)}`))
      .toMatchObject({ status: 401, body: { error: { code: 'unauthorized' } } });
    const refused = channelOf(canvasId, await strangerToken(editor));
    await refused.subscribe();
    await seen(refused, 'the join refused')(() => refused.errors.length > 0);
    expect(refused.errors[0]).toMatch(/^InvalidJWTToken: token is not a valid signed JWT/);
    const live = channelOf(canvasId, await projectToken(editor));
    await live.subscribe();
    await seen(live, 'joined')(() => live.statuses.includes('SUBSCRIBED'));
    await live.client.setAuth(await strangerToken(editor));
    await seen(live, 'closed')(() => live.statuses.includes('CLOSED'));
    expect(live.system).toEqual([{ status: 'error', message: expect.stringMatching(/^Invalid JWT: token is not a valid signed JWT/) }]);
  }, 60_000);
});
