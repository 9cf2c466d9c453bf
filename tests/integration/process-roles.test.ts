// Process roles (src/roles.ts) as separate processes on one database, the way docs/self-hosting.md
// deploys them: 1 × `--role api`, 2 × `--role gateway`, 1 × `--role worker` (POTENTIA_ROLE, through
// src/main.ts, the one entry point). The API serves HTTP and refuses WebSockets; a mutation made
// through it reaches an H1 subscriber on one gateway and a realtime-js subscriber on the other;
// the worker process runs its embedding job; /health and /ready of each say what its role needs
// (database; + replication stream for a gateway; + its own heartbeat for a worker), and /ready
// goes 503 when exactly that fails.
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import postgres from 'postgres';
import WebSocket from 'ws';
import { createClient } from '@supabase/supabase-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiKeys } from '../../src/dev.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { assertMigrated } from '../../src/db/migrated.ts';
import { listSql } from '../../src/db/sources.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';
import { discardEmbeddingBacklog } from '../helpers/worker.ts';

const config = loadConfig();
const db = testDatabase(3);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 600, audience: config.auth.audience });
const realtime = realtimeClients({ timeoutMs: 10_000 });
const base = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off' };

let api: PotentiaProcess;
let gateways: [PotentiaProcess, PotentiaProcess];
let worker: PotentiaProcess;
let workerId = '';

const get = async (p: PotentiaProcess, path: string) => {
  const res = await fetch(`${p.url}${path}`);
  const text = await res.text();
  return { status: res.status, text, body: text.startsWith('{') ? JSON.parse(text) : undefined };
};

/** Status of a WebSocket upgrade: 101 when accepted, else the HTTP status the server answered. */
const upgradeStatus = (url: string) => new Promise<number>((resolve, reject) => {
  const ws = new WebSocket(url);
  ws.once('open', () => { ws.close(); resolve(101); });
  ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0); });
  ws.once('error', reject);
});

beforeAll(async () => {
  // the api's banner names the demo canvas and a token for it only where the seed was loaded, as npm
  // start loads it: this file loads it itself (idempotent), where it relied on another file having
  // seeded the test database first (run alone on a database just migrated, the banner test failed)
  await db.sql.file(join(process.cwd(), 'supabase/seed.sql'));
  await discardEmbeddingBacklog(db.sql); // the embedding waited for below is this file's own
  [api, gateways, worker] = await Promise.all([
    startPotentiaProcess({ ...base, POTENTIA_ROLE: 'api' }),
    Promise.all([startPotentiaProcess({ ...base, POTENTIA_ROLE: 'gateway' }), startPotentiaProcess({ ...base, POTENTIA_ROLE: 'gateway' })]),
    // a heartbeat a minute apart (stale after two): only the test's own SQL makes it look stale
    startPotentiaProcess({ ...base, POTENTIA_ROLE: 'worker', WORKER_POLL_INTERVAL_MS: '200', WORKER_CRONTAB: '',
                           WORKER_HEARTBEAT_MS: '60000', WORKER_STALE_MS: '120000', EMBED_DEBOUNCE_MS: '100', EMBED_DRAIN_INTERVAL_MS: '100' }),
  ]);
  workerId = /potentia worker (\S+) running/.exec(worker.output())![1]!;
  // a gateway is ready once its replication stream streams (its temporary slot waits for running transactions)
  for (const g of gateways) await until(async () => (await get(g, '/ready')).status === 200, 60_000, `gateway ${g.url} ready`, 100);
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all([api, ...(gateways ?? []), worker].filter(Boolean).map((p) => p.stop()));
  await db.close();
});

describe('process roles on one database', () => {
  it('each announces its role, and /health and /ready say what the role needs', async () => {
    expect(api.output()).toMatch(/Potentia is running \(role api,/);
    expect(api.output()).toMatch(/API\s+http:/);
    expect(api.output()).toMatch(/export TOKEN=\S+/); // seeded in beforeAll: the demo canvas answers
    expect(api.output()).not.toMatch(/realtime\s+ws:/);
    expect(gateways[0].output()).toMatch(/Potentia is running \(role gateway,[\s\S]*realtime\s+ws:\/\//);
    expect(gateways[0].output()).not.toMatch(/API\s+http:/);
    expect(worker.output()).toMatch(/Potentia is running \(role worker,/);

    for (const p of [api, ...gateways, worker]) expect(await get(p, '/health')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect((await get(api, '/ready')).body).toEqual({ status: 'ready', checks: { database: 'ok' } });
    for (const g of gateways) expect((await get(g, '/ready')).body).toEqual({ status: 'ready', checks: { database: 'ok', realtime: 'ok' } });
    expect((await get(worker, '/ready')).body).toEqual({ status: 'ready', checks: { database: 'ok', worker: 'ok' } });
    // metrics everywhere (loopback), each process's own: the worker's show its queue and no API
    // pool, a gateway's its sockets and neither, the API's its pool and no job queue
    for (const p of [api, ...gateways, worker]) expect((await get(p, '/metrics')).status).toBe(200);
    const exposed = async (p: PotentiaProcess) => new Set([...(await get(p, '/metrics')).text.matchAll(/^# TYPE (potentia_\w+)/gm)].map((m) => m[1]));
    const [apiMetrics, gatewayMetrics, workerMetrics] = [await exposed(api), await exposed(gateways[0]), await exposed(worker)];
    expect(workerMetrics).toContain('potentia_job_queue_depth');
    expect(workerMetrics).not.toContain('potentia_db_pool_in_use');
    expect(workerMetrics).not.toContain('potentia_realtime_sockets');
    expect(gatewayMetrics).toContain('potentia_realtime_sockets');
    expect(gatewayMetrics).not.toContain('potentia_db_pool_max');
    expect(gatewayMetrics).not.toContain('potentia_job_queue_depth');
    expect(apiMetrics).toContain('potentia_db_pool_max');
    expect(apiMetrics).not.toContain('potentia_job_queue_depth');
    expect(apiMetrics).not.toContain('potentia_realtime_sockets');
  });

  it('the api serves HTTP and no WebSockets; gateways and the worker serve no API', async () => {
    expect((await get(api, '/api/v1/openapi.json')).status).toBe(200);
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = await token(users.owner!);
    const canvas = await fetch(`${api.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: `Bearer ${owner}` } });
    expect(canvas.status).toBe(200);
    const ws = (p: PotentiaProcess) => p.url.replace(/^http/, 'ws');
    expect(await upgradeStatus(`${ws(api)}/realtime/v1/websocket?vsn=1.0.0&apikey=${owner}`)).toBe(404);
    expect(await upgradeStatus(`${ws(api)}/ws/canvas/${canvasId}?access_token=${owner}`)).toBe(404);
    expect(await upgradeStatus(`${ws(worker)}/ws/canvas/${canvasId}?access_token=${owner}`)).toBe(404);
    expect(await upgradeStatus(`${ws(gateways[0])}/ws/canvas/${canvasId}?access_token=${owner}`)).toBe(101);
    for (const p of [...gateways, worker]) {
      const res = await get(p, `/api/v1/canvas/${canvasId}`);
      expect(res.status).toBe(404);
      expect(res.body.error.code).toBe('not_found');
    }
    // realtime-js's REST broadcast is the gateways' (with their sockets): the api says where it is
    // served (501: realtime-js turns a 404 into "requires Realtime server v2.97.0"), a gateway serves it
    const broadcast = (p: PotentiaProcess) => fetch(`${p.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${owner}` },
      body: JSON.stringify({ messages: [{ topic: `role-test-${canvasId}`, event: 'ping', payload: {}, private: false }] }),
    }).then(async (res) => ({ status: res.status, body: await res.text() }));
    const fromApi = await broadcast(api);
    expect(fromApi.status).toBe(501);
    expect(JSON.parse(fromApi.body)).toMatchObject({ code: 'not_implemented', message: expect.stringContaining('--role api') });
    expect((await broadcast(gateways[0])).status).toBe(202);
    expect((await broadcast(worker)).status).toBe(404);
    // supabase-js pointed at a gateway for auth gets the 404's advice as its error message (auth-js
    // reads the API's {error: {message}} too)
    const { anon } = await apiKeys(config);
    const { error } = await createClient(gateways[0].url, anon, { auth: { persistSession: false }, realtime: { transport: WebSocket as never } })
      .auth.signInWithPassword({ email: 'nobody@potentia.local', password: 'not-a-password' });
    expect(error?.status).toBe(404);
    expect(error?.message).toMatch(/this process runs no HTTP API .*--role api/);
  });

  it('a mutation through the api reaches an H1 subscriber on one gateway and realtime-js on the other; the worker embeds it', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
    const [owner, viewer] = await Promise.all([token(users.owner!), token(users.viewer!)]);
    const h1 = await openH1(gateways[0].url, canvasId, viewer);
    await h1.next((m) => m.type === 'hello');
    h1.send({ type: 'resume', since_canvas_seq: 0 }); // live deltas flow after the resume
    await h1.next((m) => m.type === 'resumed');
    const got: any[] = [];
    const channel = realtime.connect(gateways[1].url, viewer, '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (m) => got.push(m.payload));
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');

    const text = `roles ${randomUUID().slice(0, 8)}`;
    const res = await fetch(`${api.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${owner}`, 'content-type': 'application/json' },
      body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text } } }),
    });
    const result = await res.json() as { status: string; canvas_seq: number; block: { block_id: string } };
    expect(res.status, JSON.stringify(result)).toBe(200);
    expect(result.status).toBe('success');

    const delta = await h1.next((m) => m.type === 'delta') as any;
    expect(delta.canvas_seq).toBe(result.canvas_seq);
    expect(JSON.stringify(delta)).toContain(text);
    await until(() => got.length >= 1, 10_000, 'block_op on the second gateway');
    expect(got[0]).toMatchObject({ action: 'create', canvas_seq: result.canvas_seq, block: { block_id: result.block.block_id, content: { text } } });
    h1.ws.close();

    // only the worker process runs jobs here (the api and gateways run none): the block gets its embedding
    await until(async () => {
      const [r] = await db.sql`select embedded_hash = content_hash as done from app.blocks where block_id = ${result.block.block_id}`;
      return r?.done === true;
    }, 20_000, 'the worker process to embed the block', 100);
    expect((await get(worker, '/metrics')).text).toMatch(/potentia_jobs_total\{task="embed_block",outcome="success"\} [1-9]/);
  });

  it("a gateway's /ready is 503 while its replication stream is down, and 200 again once it is back", { timeout: 60_000 }, async () => {
    const [g] = gateways;
    // a transaction holding an xid keeps the gateway's new temporary slot from being created, so
    // the stream stays down until it ends
    const blocker = await db.sql.reserve();
    try {
      await blocker`begin`;
      await blocker`select pg_current_xact_id()`;
      expect(await terminateBackends(db.sql, g.pid, ['potentia-realtime-bus'])).toBe(1);
      await until(async () => (await get(g, '/ready')).status === 503, 10_000, 'gateway /ready 503', 20);
      const down = await get(g, '/ready');
      expect(down.body).toEqual({ status: 'unavailable', checks: { database: 'ok', realtime: expect.stringMatching(/replication stream down/) },
        message: expect.stringMatching(/^realtime: replication stream down/) });
      // liveness is not readiness: the process still answers, and the other gateway is unaffected
      expect((await get(g, '/health')).status).toBe(200);
      expect((await get(gateways[1], '/ready')).status).toBe(200);
    } finally {
      await blocker`commit`.catch(() => {});
      blocker.release();
    }
    await until(async () => (await get(g, '/ready')).status === 200, 30_000, 'gateway /ready 200 again', 100);
  });

  it("the worker's /ready is 503 while its own heartbeat is stale", async () => {
    await db.sql`update app.worker_heartbeats set last_seen_at = now() - interval '10 minutes' where worker_id = ${workerId}`;
    try {
      const stale = await get(worker, '/ready');
      expect(stale.status).toBe(503);
      expect(stale.body).toEqual({ status: 'unavailable', checks: { database: 'ok', worker: expect.stringMatching(/^heartbeat stale \(6\d\d s old\)$/) },
        message: expect.stringMatching(/^worker: heartbeat stale \(6\d\d s old\)$/) });
      // the other roles do not depend on it (the api runs with WORKER_MODE=off)
      expect((await get(api, '/ready')).status).toBe(200);
    } finally {
      await db.sql`update app.worker_heartbeats set last_seen_at = now() where worker_id = ${workerId}`;
    }
    expect((await get(worker, '/ready')).status).toBe(200);
  });

  it('a database that is missing, not migrated or behind the code is refused, saying what to do (one not answering is waited for: an outage)', async () => {
    const url = (name: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${name}`; return u.toString(); };
    const blank = `potentia_unmigrated_${process.pid}`;
    const admin = postgres(url('postgres'), { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists ${blank}`);
    await admin.unsafe(`create database ${blank}`);
    try {
      await expect(startPotentiaProcess({ ...base, DATABASE_URL: url(`potentia_missing_${process.pid}`) }, 20_000))
        .rejects.toThrow(/does not exist\n  the database does not exist \(DATABASE_URL=.*\): create it .*then npm run db:migrate/);
      await expect(startPotentiaProcess({ ...base, DATABASE_URL: url(blank) }, 20_000))
        .rejects.toThrow(/the database is not migrated \(DATABASE_URL=.*\): run npm run db:migrate/);
      // npm run db:types too: it wrote an empty src/db/types.ts over the committed one, without a word
      const types = spawnSync(join(process.cwd(), 'node_modules/.bin/tsx'), ['scripts/codegen.ts', '--check', '--database-url', url(blank)], { encoding: 'utf8' });
      expect(types.status).toBe(1);
      expect(types.stderr).toMatch(/^npm run db:types: the database has no Potentia schema .*\n  the database is not migrated \(DATABASE_URL=.*\): run npm run db:migrate/);
      // the schema, but not this code's last migration (a deploy that skipped db:migrate)
      const versions = (await listSql(join(process.cwd(), 'supabase/migrations'))).map((f) => f.split('/').pop()!.split('_')[0]!);
      const partial = postgres(url(blank), { max: 1, onnotice: () => {} });
      try {
        await partial.unsafe('create schema app; create table app.blocks (id uuid); create schema api; create schema supabase_migrations; create table supabase_migrations.schema_migrations (version text primary key)');
        await partial`insert into supabase_migrations.schema_migrations ${partial(versions.slice(0, -1).map((version) => ({ version })))}`;
        await expect(startPotentiaProcess({ ...base, DATABASE_URL: url(blank) }, 20_000))
          .rejects.toThrow(new RegExp(`the database lacks 1 of this code's migrations \\(${versions.at(-1)}_\\w+\\)\n  the database is behind this code \\(DATABASE_URL=.*\\): run npm run db:migrate`));
        // every one of them and one this code does not know (the code rolled back): not refused, but named for a warning
        await partial`insert into supabase_migrations.schema_migrations ${partial([{ version: versions.at(-1)! }, { version: '99991231235959' }])}`;
        const told: { newer: string[]; removed: string[] }[] = [];
        await expect(assertMigrated(url(blank), { unknown: (found) => told.push(found) })).resolves.toBeUndefined();
        expect(told).toEqual([{ newer: ['99991231235959'], removed: [] }]); // no name: this table has no such column
      } finally {
        await partial.end();
      }
    } finally {
      await admin.unsafe(`drop database if exists ${blank} with (force)`);
      await admin.end();
    }
  });

  it('an unknown role is refused with the usage, before anything starts', async () => {
    await expect(startPotentiaProcess({ ...base, POTENTIA_ROLE: 'router' }, 20_000)).rejects.toThrow(/unknown role router[\s\S]*--role all\|api\|gateway\|worker/);
  });
});
