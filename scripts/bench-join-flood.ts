// What one user's flood of channel authorizations across 20 realtime-js sockets does to the HTTP
// API's latency: GET /api/v1/canvas p50/p99 with no attack, then while the flood runs, and the
// database transactions the flood cost. --checkouts compares checkouts (alternated per round),
// e.g. before and after src/realtime/admission.ts (docs/realtime.md, Limits):
//
//   npx tsx scripts/bench-join-flood.ts [--rounds 2] [--sockets 20] [--joins 300] [--rps 20]
//        [--checkouts name=<dir>@<database>,…] [--port 56110] [--burst-all] [--public] [--access-token]
//
// Each checkout's database (default: this checkout, potentia_bench_joinflood), on the server of
// DATABASE_URL, is created and migrated with that checkout's scripts/migrate.ts when it does not exist.
//
// Per checkout and round: start `node --import tsx src/main.ts` (cwd = checkout), seed (once per
// database) a user A (attacker, owns a canvas) and a user H (HTTP client), then
//   phase "none":   GET /api/v1/canvas as H at --rps for 15 s (no attack)
//   phase "attack": same, while A's 20 sockets (apikey = anon key, each join carrying A's access_token)
//                   send 300 private phx_join on realtime:canvas:<A's canvas>: 100 at once, then one every
//                   105 ms (the per-socket bucket: 10/s burst 100); --burst-all sends all 300 at once.
// HTTP latency is measured only over the attack's span (first join sent .. last reply received).
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import postgres from 'postgres';
import WebSocket from 'ws';
import { signAccessToken } from '../src/auth/jwt.ts';
import { DEV_JWT_SECRET } from '../src/config.ts';
import { callAs, createUser } from '../tests/helpers/fixtures.ts';
import { apiKey } from '../tests/helpers/tokens.ts';
import { benchDatabaseUrl, percentile } from './lib/bench.ts';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';

const { values: args, number } = parseCommandLine({
  options: {
    rounds: { type: 'string', default: '2' }, sockets: { type: 'string', default: '20' }, joins: { type: 'string', default: '300' },
    rps: { type: 'string', default: '20' }, port: { type: 'string', default: '56110' }, 'baseline-seconds': { type: 'string', default: '15' },
    checkouts: { type: 'string', default: `this=${process.cwd()}@potentia_bench_joinflood` },
    'burst-all': { type: 'boolean' }, public: { type: 'boolean' }, 'access-token': { type: 'boolean' },
  },
}, 'usage: npx tsx scripts/bench-join-flood.ts [--rounds 2] [--sockets 20] [--joins 300] [--rps 20] [--baseline-seconds 15]\n'
  + '       [--checkouts name=<dir>@<database>,…] [--port 56110] [--burst-all] [--public] [--access-token]');
const ROUNDS = number('rounds', wholeNumber(1));
const SOCKETS = number('sockets', wholeNumber(1));
const JOINS = number('joins', wholeNumber(1));
const RPS = number('rps', decimalNumber(0, undefined, { above: true }));
const PORT = number('port', wholeNumber(1, 65535));
const BASELINE_S = number('baseline-seconds', decimalNumber(0, undefined, { above: true }));
const BURST_ALL = args['burst-all'] === true;
/** --public: the same joins with private:false (no RLS probe, no admission): what the frames alone cost the process. */
const PUBLIC = args.public === true;
/** --access-token: one private join per socket, then JOINS access_token frames at once (the refresh re-runs the join's RLS probe). */
const ACCESS_TOKEN = args['access-token'] === true;
const CHECKOUTS = args.checkouts!.split(',').map((s) => {
  const [name, rest] = s.split('=');
  const [dir, db] = rest!.split('@');
  return { name: name!, dir: dir!, db: db! };
});
// each checkout's database on the server of DATABASE_URL (it was 127.0.0.1:5432 whatever DATABASE_URL said)
const dbUrl = (db: string) => benchDatabaseUrl(db);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Creates and migrates `db` with checkout `dir`'s own migrations when it does not exist yet. */
async function ensureDatabase(dir: string, db: string): Promise<void> {
  const sql = postgres(dbUrl('postgres'), { max: 1, onnotice: () => {} });
  try {
    const [exists] = await sql`select 1 from pg_database where datname = ${db}`;
    if (exists) return;
    await sql.unsafe(`create database "${db.replace(/"/g, '""')}"`);
  } finally { await sql.end(); }
  console.log(`migrating ${db} with ${dir}'s migrations`);
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts', '--database-url', dbUrl(db)], { cwd: dir, stdio: 'inherit' });
}

async function startServer(dir: string, db: string): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: dir, stdio: ['ignore', 'ignore', 'inherit'],
    env: { ...process.env, DATABASE_URL: dbUrl(db), PORT: String(PORT), HOST: '127.0.0.1', LOG_LEVEL: 'warn', WORKER_MODE: 'off', POTENTIA_PROFILE: 'development' },
  });
  for (let i = 0; i < 300; i++) {
    await sleep(200);
    try { if ((await fetch(`http://127.0.0.1:${PORT}/ready`)).ok) return child; } catch { /* not yet */ }
  }
  throw new Error('server did not become ready');
}
async function stopServer(child: ChildProcess): Promise<void> {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(10_000)]);
  if (child.exitCode === null) child.kill('SIGKILL');
  await sleep(500);
}

type Seed = { attacker: string; canvasId: string; httpUser: string };
async function seed(db: string): Promise<Seed> {
  const sql = postgres(dbUrl(db), { max: 2, onnotice: () => {} });
  try {
    const attacker = await createUser(sql, 'attacker');
    const { workspace_id } = await callAs(sql, attacker, 'create_workspace', ['atk']);
    const { canvas_id } = await callAs(sql, attacker, 'create_canvas', [workspace_id, 'atk', {}]);
    const httpUser = await createUser(sql, 'http');
    const w2 = await callAs(sql, httpUser, 'create_workspace', ['http']);
    for (let i = 0; i < 5; i++) await callAs(sql, httpUser, 'create_canvas', [w2.workspace_id, `c${i}`, {}]);
    return { attacker, canvasId: canvas_id, httpUser };
  } finally { await sql.end(); }
}

/** Open-loop GETs at RPS until stop(); latencies (ms) with their send times. */
function httpLoad(token: string) {
  const samples: { t: number; ms: number; status: number }[] = [];
  let running = true;
  const inflight: Promise<void>[] = [];
  const loop = (async () => {
    const start = performance.now();
    for (let i = 0; running; i++) {
      const due = start + (i * 1000) / RPS;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      const t = performance.now();
      inflight.push(fetch(`http://127.0.0.1:${PORT}/api/v1/canvas`, { headers: { authorization: `Bearer ${token}` } })
        .then(async (r) => { await r.arrayBuffer(); samples.push({ t, ms: performance.now() - t, status: r.status }); })
        .catch(() => { samples.push({ t, ms: performance.now() - t, status: 0 }); }));
    }
  })();
  return { samples, stop: async () => { running = false; await loop; await Promise.all(inflight); } };
}

function summarize(samples: { t: number; ms: number; status: number }[], from: number, to: number) {
  const w = samples.filter((s) => s.t >= from && s.t <= to);
  const bad = w.filter((s) => s.status !== 200).length;
  const sorted = w.map((s) => s.ms).sort((a, b) => a - b);
  return { n: w.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), non200: bad };
}

function classify(reason: string | undefined, status: string): string {
  if (status === 'ok') return 'ok';
  if (!reason) return 'error(no reason)';
  if (reason.includes('across sockets')) return 'per-user limit';
  if (reason.startsWith('ClientJoinRateLimitReached')) return 'per-socket limit';
  return reason.split(':')[0]!.slice(0, 40);
}

async function attack(anon: string, access: string, canvasId: string) {
  const counts: Record<string, number> = {};
  const topic = `realtime:canvas:${canvasId}`;
  const sockets = await Promise.all(Array.from({ length: SOCKETS }, () => new Promise<WebSocket>((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${PORT}/realtime/v1/websocket?apikey=${anon}&vsn=1.0.0`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
    ws.once('unexpected-response', (_q, res) => reject(new Error(`upgrade refused ${res.statusCode}`)));
  })));
  const started = performance.now();
  let replies = 0;
  const done = new Promise<void>((resolve) => {
    for (const ws of sockets) {
      ws.on('message', (data) => {
        const f = JSON.parse(String(data));
        if (ACCESS_TOKEN) {
          if (f.event === 'system' || (f.event === 'phx_reply' && f.topic !== 'phoenix')) counts[`${f.event}:${f.payload?.status}`] = (counts[`${f.event}:${f.payload?.status}`] ?? 0) + 1;
          if (f.ref === 'end' && ++replies === SOCKETS) resolve();
          return;
        }
        if (f.event !== 'phx_reply' || f.topic === 'phoenix') return;
        const k = classify(f.payload?.response?.reason, f.payload?.status);
        counts[k] = (counts[k] ?? 0) + 1;
        if (++replies === SOCKETS * JOINS) resolve();
      });
    }
  });
  const sends = sockets.map(async (ws, s) => {
    const hb = setInterval(() => ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: `hb${s}` })), 20_000);
    if (ACCESS_TOKEN) {
      ws.send(JSON.stringify({ topic, event: 'phx_join', ref: `j${s}`, join_ref: `j${s}`,
        payload: { config: { broadcast: {}, presence: { key: '' }, private: true }, access_token: access } }));
      for (let i = 0; i < JOINS; i++) ws.send(JSON.stringify({ topic, event: 'access_token', ref: `a${i}`, join_ref: `j${s}`, payload: { access_token: access } }));
      ws.send(JSON.stringify({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: 'end' }));
      return hb;
    }
    for (let i = 0; i < JOINS; i++) {
      if (!BURST_ALL && i >= 100) {
        const wait = started + (i - 99) * 105 - performance.now();
        if (wait > 0) await sleep(wait);
      }
      const ref = `${s}-${i}`;
      ws.send(JSON.stringify({ topic, event: 'phx_join', ref, join_ref: ref,
        payload: { config: { broadcast: { self: false, ack: false }, presence: { key: '' }, private: !PUBLIC }, access_token: access } }));
    }
    return hb;
  });
  const timers = await Promise.all(sends);
  await Promise.race([done, sleep(120_000)]);
  const ended = performance.now();
  timers.forEach(clearInterval);
  for (const ws of sockets) ws.terminate();
  return { started, ended, counts, replies };
}

async function xacts(db: string): Promise<number> {
  const sql = postgres(dbUrl(db), { max: 1, onnotice: () => {} });
  try {
    const [r] = await sql`select xact_commit + xact_rollback as n from pg_stat_database where datname = ${db}`;
    return Number(r!.n);
  } finally { await sql.end(); }
}

const anon = await apiKey(DEV_JWT_SECRET, 'anon', 6 * 3600);
const seeds = new Map<string, Seed>();
const rows: string[] = [];
for (let round = 1; round <= ROUNDS; round++) {
  for (const co of round % 2 === 1 ? CHECKOUTS : [...CHECKOUTS].reverse()) {
    if (!seeds.has(co.db)) {
      await ensureDatabase(co.dir, co.db);
      seeds.set(co.db, await seed(co.db));
    }
    const sd = seeds.get(co.db)!;
    const access = await signAccessToken(DEV_JWT_SECRET, { sub: sd.attacker }, { expiresInSeconds: 6 * 3600 });
    const httpTok = await signAccessToken(DEV_JWT_SECRET, { sub: sd.httpUser }, { expiresInSeconds: 6 * 3600 });
    const server = await startServer(co.dir, co.db);
    try {
      // warm-up
      for (let i = 0; i < 20; i++) await (await fetch(`http://127.0.0.1:${PORT}/api/v1/canvas`, { headers: { authorization: `Bearer ${httpTok}` } })).arrayBuffer();
      const load = httpLoad(httpTok);
      const b0 = performance.now();
      await sleep(BASELINE_S * 1000);
      const b1 = performance.now();
      const x0 = await xacts(co.db);
      const a = await attack(anon, access, sd.canvasId);
      const x1 = await xacts(co.db);
      await load.stop();
      const none = summarize(load.samples, b0, b1);
      const att = summarize(load.samples, a.started, a.ended);
      const burst = summarize(load.samples, a.started, a.started + 3000);
      const steady = summarize(load.samples, a.started + 3000, a.ended);
      const line = `round ${round} ${co.name.padEnd(6)} | none p50 ${none.p50.toFixed(1)} p99 ${none.p99.toFixed(1)} ms (n=${none.n}, non200 ${none.non200})` +
        ` | attack ${((a.ended - a.started) / 1000).toFixed(1)} s p50 ${att.p50.toFixed(1)} p99 ${att.p99.toFixed(1)} ms (n=${att.n}, non200 ${att.non200})` +
        ` [first 3 s p50 ${burst.p50.toFixed(1)} p99 ${burst.p99.toFixed(1)}; after p50 ${steady.p50.toFixed(1)} p99 ${steady.p99.toFixed(1)}]` +
        ` | db xacts during attack ${x1 - x0} | replies ${a.replies}: ${JSON.stringify(a.counts)}`;
      console.log(line);
      rows.push(line);
    } finally {
      await stopServer(server);
    }
  }
}
console.log('\n' + rows.join('\n'));
process.exit(0);
