import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// deploy/nginx/potentia.conf as shipped, run by a real nginx (Debian's, installed by
// scripts/setup) in front of a Potentia process with TRUST_PROXY=1, as docs/self-hosting.md says
// to run it: only the upstream addresses and the listen port are this test's. The WebSocket paths
// once passed a client's own X-Forwarded-For through to the gateways, so a client picked the
// address the per-address socket cap counts it by (src/realtime/admission.ts).

const NGINX = '/usr/sbin/nginx';
const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const, trustProxy: true };
const db = testDatabase(5);
const realtime = realtimeClients();
let server: Server;
let nginx: ChildProcess;
let dir: string;
let proxy: string; // http://127.0.0.1:<nginx's port>

const freePort = () => new Promise<number>((resolve, reject) => {
  const s = createServer().listen(0, '127.0.0.1', () => {
    const { port } = s.address() as { port: number };
    s.close(() => resolve(port));
  });
  s.once('error', reject);
});

beforeAll(async () => {
  server = await startServer(config, { realtime: { limits: { maxSocketsPerAddress: 4 } } });
  await server.gateway!.bus.ready();
  const upstream = new URL(server.url).host;
  const port = await freePort();
  dir = mkdtempSync(join(tmpdir(), 'potentia-nginx-test-'));
  const shipped = readFileSync('deploy/nginx/potentia.conf', 'utf8');
  const site = shipped
    .replace(/^(\s*server )127\.0\.0\.1:\d+( max_fails)/gm, `$1${upstream}$2`)
    .replace(/^(\s*listen )8080;/m, `$1127.0.0.1:${port};`)
    .replace(/(access_log )\/var\/log\/nginx\//g, `$1${dir}/`);
  expect(site).not.toMatch(/127\.0\.0\.1:(8000|8101|8102)|listen 8080/); // every address this test's
  writeFileSync(join(dir, 'nginx.conf'), [
    'daemon off;',
    // as root, nginx's workers would run as nobody, who cannot write this directory
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log;`,
    'events { worker_connections 256; }',
    'http {',
    // as Debian's nginx.conf: every request logged in the combined format, in the http block
    `  access_log ${dir}/access.log;`,
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${dir}/${t};`),
    site,
    '}',
  ].join('\n'));
  nginx = spawn(NGINX, ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  nginx.stderr!.on('data', (d) => (stderr += d));
  proxy = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (nginx.exitCode !== null) throw new Error(`nginx exited ${nginx.exitCode}: ${stderr}`);
    return fetch(`${proxy}/api/v1/openapi.json`).then((r) => r.status === 200, () => false);
  }, 10_000, 'nginx to answer');
}, 90_000);
afterAll(async () => {
  await realtime.disconnectAll();
  nginx?.kill('SIGTERM');
  await server?.stop();
  await db.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

it('realtime-js through the proxy: a private canvas channel gets the delta of a mutation sent through the proxy', async () => {
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const editor = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
  const client = realtime.connect(proxy, editor, '1.0.0');
  const got: any[] = [];
  const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'block_op' }, (m) => got.push(m));
  expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
  const res = await fetch(`${proxy}/api/v1/canvas/${canvasId}/mutate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${editor}`, 'content-type': 'application/json' },
    body: JSON.stringify({ client_op_id: crypto.randomUUID(), action: 'create', patch: { type: 'text', content: { text: 'via nginx' } } }),
  });
  expect(res.status).toBe(200);
  const { server_seq } = await res.json() as { server_seq: number };
  await until(() => got.length > 0, 8000, 'the delta');
  expect(got[0].payload).toMatchObject({ server_seq, block: { content: { text: 'via nginx' } } });
});

it('probes, metrics and debug endpoints stay inside: 404 through the proxy, answered by the process itself', async () => {
  // through nginx every caller is loopback, which the process trusts for /metrics without INTERNAL_TOKEN
  for (const path of ['/metrics', '/ready', '/health', '/debug/echo']) {
    const res = await fetch(`${proxy}${path}`);
    expect({ path, status: res.status }).toEqual({ path, status: 404 });
  }
  expect((await fetch(`${server.url}/metrics`)).status).toBe(200);
  expect((await fetch(`${server.url}/health`)).status).toBe(200);
});

it('H1 through the proxy: the socket opens and says hello', async () => {
  const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
  const h1 = await openH1(proxy, canvasId, await signAccessToken(config.auth.jwtSecret, { sub: users.viewer! }));
  expect(await h1.next((m) => m.type === 'hello')).toMatchObject({ canvas_id: canvasId, can_write: false });
  h1.ws.close();
});

it('no access token reaches nginx\'s logs: an H1 socket sends its token in the query string (?access_token=)', async () => {
  // a browser cannot set headers on a WebSocket, so @potentia/client puts the user's token in the
  // URL; the combined format logs $request, the query included: a token usable for an hour, in a
  // file every operator reads
  const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.viewer! });
  const h1 = await openH1(proxy, canvasId, token);
  await h1.next((m) => m.type === 'hello');
  h1.ws.close();
  const logs = () => ['access.log', 'potentia-access.log', 'error.log']
    .map((f) => { try { return readFileSync(join(dir, f), 'utf8'); } catch { return ''; } }).join('\n');
  // nginx logs a WebSocket request once it has ended
  await until(() => logs().includes(`/ws/canvas/${canvasId}`), 8000, 'the H1 request in the access log');
  expect(logs()).not.toContain(token.split('.')[2]!);
  expect(logs()).not.toContain('access_token=');
});

it('an X-Forwarded-For the client sends is overwritten on the WebSocket paths: the socket cap counts the client, whatever it claims', async () => {
  const anon = await apiKey(config.auth.jwtSecret, 'anon');
  const results: Array<number | 'open'> = [];
  const open: WebSocket[] = [];
  for (let i = 0; i < 8; i++) {
    const ws = new WebSocket(`${proxy.replace(/^http/, 'ws')}/realtime/v1/websocket?apikey=${anon}&vsn=1.0.0`, { headers: { 'x-forwarded-for': `10.9.0.${i}` } });
    results.push(await new Promise<number | 'open'>((resolve, reject) => {
      ws.once('open', () => {
        open.push(ws);
        resolve('open');
      });
      ws.once('unexpected-response', (_req, res) => resolve(res.statusCode!));
      ws.once('error', reject);
    }));
  }
  for (const ws of open) ws.terminate();
  // the cap is 4 for 127.0.0.1 (nginx's client here); the other tests' sockets may hold some of it
  const opened = results.filter((r) => r === 'open').length;
  expect(opened).toBeGreaterThan(0);
  expect(opened).toBeLessThanOrEqual(4);
  expect(results.slice(opened)).toEqual(Array(8 - opened).fill(429));
});
