// /ready of a process of role `all` (`npm start`, src/server.ts) whose realtime gateway cannot
// serve: a balancer that sends every path to every `all` process (docs/self-hosting.md, Topology)
// must not send realtime traffic to it. Real processes (tests/helpers/chaos.ts), real causes:
//
// 1. Its replication stream cannot start: the walsender's login role (DIRECT_DATABASE_URL) lacks
//    REPLICATION, as when pg_hba.conf or max_replication_slots refuses it (the stream is retried
//    with backoff, the bus polls meanwhile). /ready is 503 naming `realtime` while /health is 200,
//    and 200 once the role is given REPLICATION. Seen failing before: /ready was 200
//    `{"database":"ok"}` throughout (a `gateway` process said 503, an `all` process did not check).
// 2. The database does not answer when the process starts (its connections go through a TCP
//    proxy that refuses them): the gateway's start fails. /ready is 503 naming `realtime` (not
//    started) besides `database`, and once the database answers the gateway is started again by
//    itself: /ready 200 with `realtime: ok`, and a WebSocket upgrade is accepted. Seen failing
//    before: the failure was logged once and never tried again; /ready said 200 `{"database":"ok"}`
//    after the outage while every WebSocket upgrade got 404.
//
// No timed wait: each state is polled for (until), the replication refusal read in the log first.
import WebSocket from 'ws';
import { afterAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(2);
const started: PotentiaProcess[] = [];
let proxy: TcpProxy | undefined;
let role: string | undefined;

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop()));
  await proxy?.close();
  if (role) await db.sql.unsafe(`drop role if exists ${role}`);
  await db.close();
}, 30_000);

const get = async (p: PotentiaProcess, path: string) => {
  const res = await fetch(`${p.url}${path}`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.json() as unknown };
};

/** Status of a WebSocket upgrade: 101 when accepted, else the HTTP status the server answered. */
const upgradeStatus = (url: string) => new Promise<number>((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.once('open', () => { ws.close(); resolve(101); });
  ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0); });
  ws.once('error', reject);
});

describe('/ready of role all says whether its realtime gateway serves', () => {
  it('503 naming realtime while its replication stream cannot start (a walsender role without REPLICATION), 200 once it can', { timeout: 90_000 }, async () => {
    const [row] = await db.sql`select current_database() as name`;
    role = `${String(row!.name).replace(/\W/g, '_').slice(0, 40)}_no_replication`;
    await db.sql.unsafe(`drop role if exists ${role}`);
    await db.sql.unsafe(`create role ${role} login noreplication`);
    const direct = new URL(testDatabaseUrl());
    direct.username = role;
    direct.password = '';
    const p = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), DIRECT_DATABASE_URL: direct.toString(), WORKER_MODE: 'off',
                                           POTENTIA_ROLE: 'all' });
    started.push(p);
    await until(() => /realtime replication stream ended; reconnecting/.test(p.output()), 30_000, 'the walsender refused', 50);
    expect(p.output()).toMatch(/permission denied to start WAL sender|must be superuser or replication role/);
    const down = await get(p, '/ready');
    expect(down).toEqual({ status: 503, body: { status: 'unavailable',
      checks: { database: 'ok', realtime: 'replication stream down (reconnecting; deltas are polled meanwhile)' },
      message: 'realtime: replication stream down (reconnecting; deltas are polled meanwhile)' } });
    // alive and retrying: liveness is not readiness
    expect(await get(p, '/health')).toEqual({ status: 200, body: { status: 'ok' } });
    await db.sql.unsafe(`alter role ${role} replication`);
    await until(async () => (await get(p, '/ready')).status === 200, 60_000, '/ready 200 once the role may replicate', 100);
    expect(await get(p, '/ready')).toEqual({ status: 200, body: { status: 'ready', checks: { database: 'ok', realtime: 'ok' } } });
    await p.stop();
  });

  it('503 naming realtime while a gateway that could not start is tried again; 200 and WebSockets once it has started', { timeout: 90_000 }, async () => {
    const direct = new URL(testDatabaseUrl());
    proxy = await startTcpProxy(Number(direct.port || 5432));
    proxy.cut({ incoming: 'refuse' });
    const viaProxy = databaseUrlThrough(proxy, direct);
    const p = await startPotentiaProcess({ DATABASE_URL: viaProxy, WORKER_MODE: 'off', POTENTIA_ROLE: 'all', NODE_ENV: 'development' });
    started.push(p);
    expect(p.output()).toMatch(/realtime gateway did not start; retrying/);
    expect(p.output()).toMatch(/realtime\s+not started: tried again in the background/);
    const down = await get(p, '/ready');
    expect(down).toEqual({ status: 503, body: { status: 'unavailable',
      checks: { database: 'error', realtime: expect.stringMatching(/^not started \(\d+ attempts? failed, the server log has the error; retrying\)$/) },
      message: expect.stringMatching(/; realtime: not started \(/) } });
    expect(await get(p, '/health')).toEqual({ status: 200, body: { status: 'ok' } });
    proxy.restore();
    await until(async () => (await get(p, '/ready')).status === 200, 60_000, '/ready 200 once the gateway has started', 100);
    expect(await get(p, '/ready')).toEqual({ status: 200, body: { status: 'ready', checks: { database: 'ok', realtime: 'ok' } } });
    const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.viewer! }, { expiresInSeconds: 600, audience: config.auth.audience });
    expect(await upgradeStatus(`${p.url.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${token}`)).toBe(101);
    await p.stop();
  });
});
