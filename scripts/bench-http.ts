// npx tsx scripts/bench-http.ts [--seconds 10] [--rounds 1] [--connections 16] [--database-url URL] [--warmup-seconds 1]
//                               [--process-warmup-seconds 3] [--cpu-prof DIR]
//
// What the HTTP layer costs on H2 (POST /api/v1/canvas/{id}/mutate): mutations/s and p50/p95/p99
// latency through HTTP, beside a direct SQL call of the same RPC in the same run, as a ratio.
//
//   HTTP    the server in-process (startServer, as `npm start` runs it, realtime off); the load
//           generator is wrk (Debian's package, installed by scripts/setup; a C client whose CPU is
//           a fraction of a Node one's, reported apart from the server's). Per request: HTTP parse, JWT check,
//           zod validation, one transaction (claims set, api.hit_endpoint_limit('H2'),
//           api.upsert_block_atomic), JSON response, request log line (info, as in production; to
//           /dev/null), metrics.
//   bare    the ceiling of any Node HTTP layer here: a bare node:http server in-process
//           (scripts/lib/bare-http-server.ts) that reads the body, JSON.parses it and runs exactly
//           the handler's SQL (requestStatement + callMutation's prepared statement: H2 endpoint limit and
//           RPC in one), answering the RPC's JSON text; no Hono, zod, JWT check, logging or metrics.
//           The same load generator drives it. Informational: bare vs direct is what Node's own
//           HTTP costs on this machine, HTTP vs bare what Potentia's layer costs on top.
//   direct  the same RPC the way the handler calls it (src/db/request.ts requestStatement: BEGIN,
//           claims, the parameterised `select api.upsert_block_atomic($1..$6)` and COMMIT in one
//           pipeline), no HTTP, no endpoint limit ("+ limit": with the endpoint limit as the
//           handler sends it, alone in its lane's transaction: in the RPC's statement, its FROM;
//           prepared, as the handler's). With the request context the handler passes (claims, and
//           the x-forwarded-for, user-agent and x-request-id headers the audit row records), so the
//           SQL does the same work as for an HTTP request (until 2026-12-03 it passed no headers).
// Every phase: C connections, each updating its OWN block on its OWN canvas as its own user, always from
// the current version (read back from each result), with a pool of C database connections.
//
// Phase order: HTTP runs first, then bare, then the direct phases, in one process; with --rounds N the
// five phases run N times in that order (each time on users of their own) and each row is over all N. The HTTP phase used to be
// the first code this process ran hot: its measured window still paid for V8 compiling the HTTP
// stack and the postgres.js/requestStatement code the direct phases then ran already optimized (a second
// HTTP pass in the same process measured 0.44 ms less Node CPU per mutation and 18% more mut/s than
// the first, for the same code). So the process first runs every path, untimed, for
// --process-warmup-seconds in all (half HTTP, the rest shared by bare and the direct variants), on users of its own;
// each measured phase still has its own --warmup-seconds. What the direct phases measure is unchanged.
//
// Besides the rates, each phase's CPU per mutation: this process's user and system time, GC, and the
// CPU of the Postgres backends serving its pool (read from /proc when Postgres runs here), over the
// measured window only: from the end of the warm-up (no request in flight) to the end. A phase's
// warm-up is where V8 compiles its hot code, on threads whose CPU is this process's; counted, it
// charged the HTTP phase, which runs first, for compiling the postgres.js code the direct phases
// then use hot. `--cpu-prof DIR` writes a V8 profile of the same window per phase. The phase
// "direct SQL, prepared" sends the RPC as a named prepared statement, as callApi does (src/http/rpc.ts);
// the target row's baseline is the faster of it and "direct SQL" (postgres.js's unsafe() default).
//
// It uses its own database (default potentia_bench_http on the server of DATABASE_URL: dropped, created and migrated here) and
// raises, in that database only, the H2 endpoint limit and mutations_per_minute, so the rate
// limits do not cut the run short.
import { spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { backendPids, benchDatabaseName, benchDatabaseUrl, childrenCpuMs, machineCpuMs, percentile, procCpuMs, recreateBenchDatabase, analyzeAsAutovacuumWould } from './lib/bench.ts';
import { reportRows } from './lib/bench-report.ts';
import { pino } from 'pino';
import postgres, { type Sql } from 'postgres';
import { signAccessToken } from '../src/auth/jwt.ts';
import { loadConfig } from '../src/config.ts';
import { createDatabase, type Database } from '../src/db/index.ts';
import { requestStatement, withRequest } from '../src/db/request.ts';
import { ENDPOINT_LIMIT, rpcStatement } from '../src/http/rpc.ts';
import { startServer } from '../src/server.ts';
import { startBareServer, type BareServer } from './lib/bare-http-server.ts';

/** The issue's target for H2 over HTTP vs the direct call. */
const HTTP_TARGET = 0.8;

const defaultUrl = benchDatabaseUrl('potentia_bench_http');
const { values, number } = parseCommandLine({
  options: {
    seconds: { type: 'string', default: '10' },
    // every phase this many times, interleaved (HTTP, bare, direct, … then again); rates and
    // latencies over all of them, and each round's ratio
    rounds: { type: 'string', default: '1' },
    connections: { type: 'string', default: '16' },
    'database-url': { type: 'string', default: defaultUrl },
    'warmup-seconds': { type: 'string', default: '1' },
    // untimed, once, before the measured phases: both paths, so that no measured phase compiles code another then runs hot
    'process-warmup-seconds': { type: 'string', default: '3' },
    // a V8 CPU profile of this process per phase (http.cpuprofile, bare.cpuprofile, direct.cpuprofile, …) into this directory
    'cpu-prof': { type: 'string' },
  },
});
const SECONDS = number('seconds', decimalNumber(0, undefined, { above: true }));
const CONNECTIONS = number('connections', wholeNumber(1));
const ROUNDS = number('rounds', wholeNumber(1));
const WARMUP = number('warmup-seconds', decimalNumber(0));
const PROCESS_WARMUP = number('process-warmup-seconds', decimalNumber(0));
const url = values['database-url']!;
const dbName = benchDatabaseName(url);
requireWrk();
const root = fileURLToPath(new URL('..', import.meta.url));
const started = Date.now();
const log = (step: string, line: string) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(5)}s] ${step.padEnd(6)} ${line}`);

// ---------------------------------------------------------------------------------- setup
const freshDatabase = () => recreateBenchDatabase(url, (line) => log('setup', line));

/** Only in the bench database: limits high enough that they never reject during the run. */
async function raiseLimits(sql: Sql) {
  const [h2] = await sql`select max_hits, window_seconds from app.endpoint_limits where endpoint = 'H2'`;
  const [mpm] = await sql`select value from app.settings where key = 'mutations_per_minute'`;
  await sql`update app.endpoint_limits set max_hits = 100000000, window_seconds = 1 where endpoint = 'H2'`;
  await sql`update app.settings set value = '100000000'::jsonb where key = 'mutations_per_minute'`;
  log('setup', `raised in ${dbName} ONLY (never in dev or test data): app.endpoint_limits H2 ${h2?.max_hits} per ${h2?.window_seconds} s → 100000000 per 1 s;`);
  log('setup', `  app.settings mutations_per_minute ${JSON.stringify(mpm?.value)} → 100000000`);
}

type Conn = { userId: string; canvasId: string; blockId: string; token?: string };

const asUser = (sql: Sql, userId: string, fn: string, args: unknown[]) =>
  withRequest(sql, { claims: { sub: userId, role: 'authenticated' } }, async (tx) => {
    const [row] = await tx.unsafe(`select api.${fn}(${args.map((_, i) => `$${i + 1}`).join(', ')}) as r`, args as never[]);
    return row!.r as any;
  });

/** n users, each owning a workspace with one canvas holding one block (version 1). */
async function makeConnections(sql: Sql, n: number): Promise<Conn[]> {
  return Promise.all(Array.from({ length: n }, async () => {
    const [user] = await sql`insert into auth.users (email) values (${`bench-${randomUUID()}@bench.local`}) returning id`;
    const userId = user!.id as string;
    const { workspace_id } = await asUser(sql, userId, 'create_workspace', ['bench']);
    const { canvas_id } = await asUser(sql, userId, 'create_canvas', [workspace_id, 'bench', {}]);
    const created = await asUser(sql, userId, 'upsert_block_atomic', [canvas_id, null, 'create', randomUUID(), null, { type: 'text', content: { n: 0 } }]);
    if (created.status !== 'success') throw new Error(`setup: block create ${JSON.stringify(created)}`);
    return { userId, canvasId: canvas_id, blockId: created.block_id };
  }));
}

// ---------------------------------------------------------------------------------- measuring
type Stats = { ok: number; errors: number; errorKinds: Record<string, number>; seconds: number; latencies: Float64Array };

/** Several runs of one phase as one: their mutations, errors, seconds and latencies together. */
function mergeRuns<R extends Stats & { cpuMs?: number }>(runs: R[]): Stats & { cpuMs: number } {
  const errorKinds: Record<string, number> = {};
  for (const r of runs) for (const [k, n] of Object.entries(r.errorKinds)) errorKinds[k] = (errorKinds[k] ?? 0) + n;
  const latencies = new Float64Array(runs.reduce((n, r) => n + r.latencies.length, 0));
  let at = 0;
  for (const r of runs) { latencies.set(r.latencies, at); at += r.latencies.length; }
  const sum = (f: (r: R) => number) => runs.reduce((n, r) => n + f(r), 0);
  return { ok: sum((r) => r.ok), errors: sum((r) => r.errors), errorKinds, seconds: sum((r) => r.seconds), latencies, cpuMs: sum((r) => r.cpuMs ?? 0) };
}

function summarize(s: Stats) {
  const sorted = Float64Array.from(s.latencies).sort();
  const q = (p: number) => percentile(sorted, p * 100);
  return { rate: s.ok / s.seconds, p50: q(0.5), p95: q(0.95), p99: q(0.99), errors: s.errors, errorKinds: s.errorKinds, n: s.ok };
}

/**
 * The HTTP load generator: wrk (Debian's package: C, epoll, LuaJIT; scripts/lib/wrk-mutate.lua),
 * one keep-alive connection per bench connection, one request in flight per block, on wrkThreads()
 * threads. On this 2-core machine a client's CPU is taken from the server and Postgres, and it is
 * not what the HTTP layer costs (clients run elsewhere; the direct phases have no client to pay
 * for): wrk costs a fraction of any Node client (a hand-written one on raw sockets, used before,
 * took 0.14-0.27 ms per request, 4-6 % of the cores). Its CPU is still measured (the children's
 * time of this process, /proc/self/stat) and printed apart. A warm-up run of its own
 * (--warmup-seconds), then the measured run; each run starts from the blocks' versions as stored.
 */
const WRK_SCRIPT = fileURLToPath(new URL('./lib/wrk-mutate.lua', import.meta.url));
let wrkRuns = 0;

/**
 * wrk's threads: as many as cores, at most, and a divisor of the connections (wrk gives each
 * thread connections / threads, rounded down, and opens no others: 16 over 6 threads is 12).
 */
function wrkThreads(connections: number): number {
  let t = Math.min(availableParallelism(), connections);
  while (connections % t !== 0) t--;
  return t;
}

/** Fails at once, before any setup, when wrk is missing, saying how to get it. */
function requireWrk(): void {
  const r = spawnSync('wrk', ['--version'], { stdio: 'ignore' });
  if ((r.error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT') {
    console.error("bench-http: wrk not found (the HTTP load generator): run `bash scripts/setup`, which installs Debian's wrk package, or `apt-get install wrk`");
    process.exit(2);
  }
}

async function runWrk(sql: Sql, base: string, conns: Conn[], seconds: number): Promise<Stats & { cpuMs: number }> {
  const dir = mkdtempSync(join(tmpdir(), 'potentia-wrk-'));
  try {
    const connsFile = join(dir, 'conns.tsv');
    const outFile = join(dir, 'out.json');
    // the versions as stored: an update still in flight when the last run stopped was applied unseen
    const rows = await sql<{ id: string; version: number }[]>`select block_id as id, version from app.blocks where block_id = any(${conns.map((c) => c.blockId)}::uuid[])`;
    const version = new Map(rows.map((r) => [r.id, r.version]));
    writeFileSync(connsFile, conns.map((c) => `${c.canvasId}\t${c.token}\t${c.blockId}\t${version.get(c.blockId)}\n`).join(''));
    const cpu = childrenCpuMs();
    const args = ['-t', String(wrkThreads(conns.length)), '-c', String(conns.length),
      '-d', `${Math.max(1, Math.round(seconds))}s`, '--timeout', '10s', '-s', WRK_SCRIPT, base]; // wrk takes whole seconds
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn('wrk', args, {
        stdio: ['ignore', 'ignore', 'inherit'],
        env: { ...process.env, POTENTIA_WRK_CONNS: connsFile, POTENTIA_WRK_OUT: outFile, POTENTIA_WRK_THREADS: args[1],
          POTENTIA_WRK_PREFIX: `bench-${process.pid}-${++wrkRuns}` },
      });
      child.once('error', reject);
      child.once('exit', resolve);
    });
    const cpuMs = childrenCpuMs() - cpu;
    if (code !== 0) throw new Error(`wrk exited with ${code} (its error is above)`);
    const out = JSON.parse(readFileSync(outFile, 'utf8')) as { ok: number; failed: [string, number][]; socketErrors: number; seconds: number; latency: number[] };
    const errorKinds: Record<string, number> = {};
    for (const [kind, n] of out.failed) errorKinds[kind] = (errorKinds[kind] ?? 0) + n;
    if (out.socketErrors > 0) errorKinds.socket = out.socketErrors;
    const errors = Object.values(errorKinds).reduce((a, b) => a + b, 0);
    return { ok: out.ok, errors, errorKinds, seconds: out.seconds, latencies: Float64Array.from(out.latency, (us) => us / 1000), cpuMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * A warm-up run (WARMUP s), then `mark` once the requests wrk left in flight have ended (the server
 * starts its CPU account), then the measured run. The requests in flight when wrk stops are not
 * counted, and the run's seconds end there too: the same rate as the direct phases, which count
 * their last requests and extend their seconds to them.
 */
async function benchHttp(sql: Sql, base: string, conns: Conn[], mark: () => void, seconds = SECONDS): Promise<Stats & { cpuMs: number }> {
  if (WARMUP > 0) {
    await runWrk(sql, base, conns, WARMUP);
    await new Promise((resolve) => setTimeout(resolve, IN_FLIGHT_MS));
  }
  mark();
  return runWrk(sql, base, conns, seconds);
}
/** Several times the slowest request here (p99 under 100 ms): one still running would leave its block's version stale. */
const IN_FLIGHT_MS = 1000;

/** The same RPC, called as callMutation calls it, minus HTTP: one requestStatement transaction per mutation. */
async function benchDirect(database: Database, conns: Conn[], mark: () => void, withEndpointLimit = false, prepared = false, seconds = SECONDS): Promise<Stats> {
  const lat: number[] = [];
  let errors = 0;
  const errorKinds: Record<string, number> = {};
  const version = new Map(conns.map((c) => [c.blockId, 1]));
  const run = async (c: Conn, until: number, record: boolean) => {
    let n = 0;
    while (performance.now() < until) {
      const t0 = performance.now();
      let result: any;
      try {
        const args = [c.canvasId, c.blockId, 'update', randomUUID(), version.get(c.blockId), { content: { n: ++n } }];
        // the H2 endpoint limit as sendMutation sends it: in the RPC's statement when alone in its
        // lane's transaction (always, here: one connection per canvas), else a statement before it
        const limit = withEndpointLimit ? {
          first: { text: ENDPOINT_LIMIT, params: ['H2', false] },
          single: { text: rpcStatement('upsert_block_atomic', 6, true, false), params: [...args, 'H2', false] },
        } : {};
        // the request context callMutation passes (src/http/rpc.ts): the RPC parses the same headers
        // and writes the same audit row (ip, user agent, request id) as for an HTTP request
        const [row] = await requestStatement<{ result: any }>(database.lanes, c.canvasId, { claims: { sub: c.userId, role: 'authenticated' },
          headers: { 'x-forwarded-for': '127.0.0.1', 'user-agent': '', 'x-request-id': randomUUID() }, method: 'POST',
          path: `/api/v1/canvas/${c.canvasId}/mutate` }, rpcStatement('upsert_block_atomic', 6, false, false), args, { prepare: prepared, ...limit });
        result = row!.result;
      } catch (err) {
        if (record) { errors++; errorKinds[(err as Error).message] = (errorKinds[(err as Error).message] ?? 0) + 1; }
        continue;
      }
      const ms = performance.now() - t0;
      if (result.status === 'success') {
        version.set(c.blockId, result.version);
        if (record) lat.push(ms);
      } else {
        if (result.block?.version) version.set(c.blockId, result.block.version);
        if (record) { errors++; errorKinds[result.status] = (errorKinds[result.status] ?? 0) + 1; }
      }
    }
  };
  const t = performance.now();
  await Promise.all(conns.map((c) => run(c, t + WARMUP * 1000, false)));
  mark();
  const t1 = performance.now();
  await Promise.all(conns.map((c) => run(c, t1 + seconds * 1000, true)));
  return { ok: lat.length, errors, errorKinds, seconds: (performance.now() - t1) / 1000, latencies: Float64Array.from(lat) };
}

/** Every success moved its block's version by exactly one, and nothing else did. */
async function checkVersions(sql: Sql, conns: Conn[], label: string): Promise<number> {
  const ids = conns.map((c) => c.blockId);
  const [row] = await sql`
    select sum(b.version - 1)::int as moved,
           (select count(*)::int from app.block_operations o where o.block_id = any(${ids}::uuid[]) and o.status = 'success' and o.action = 'update') as applied
    from app.blocks b where b.block_id = any(${ids}::uuid[])`;
  const ok = row!.moved === row!.applied;
  log('check', `${label}: ${row!.applied} updates applied, versions moved ${row!.moved} ${ok ? '(consistent)' : '(MISMATCH)'}`);
  if (!ok) process.exitCode = 1;
  return row!.applied as number;
}

// ---------------------------------------------------------------------------------- CPU accounts
/**
 * What one phase cost, besides its mutations: this process's user and system CPU, its GC pauses,
 * the CPU of the Postgres backends serving its pool (/proc/<pid>/stat, where Postgres runs on
 * this machine), the whole machine's CPU, busy and idle (/proc/stat: every process, the load
 * generator and Postgres's other processes included; idle time says a phase left cores unused,
 * that is, it was bound by latency rather than CPU), and with --cpu-prof a V8 profile of this process.
 */
type Cost = { userMs: number; systemMs: number; gcs: number; gcMs: number; pgMs: number | null; machineBusyMs: number; machineIdleMs: number };
/**
 * Runs a phase, accounting from the moment it calls mark() (the end of its warm-up: V8 compiles
 * the hot code during the warm-up, on threads whose CPU is this process's, and the HTTP phase,
 * which comes first, would otherwise pay for compiling postgres.js for the direct phases too) to
 * its end. The profile (--cpu-prof) covers the same window.
 */
async function account<T>(label: string, sql: Sql, applicationName: string, fn: (mark: () => void) => Promise<T>): Promise<{ result: T; cost: Cost }> {
  // every pooled connection is open (openPool below): their backends serve the whole phase
  const pidsBefore = await backendPids(sql, applicationName);
  let gcs = 0, gcMs = 0;
  const gc = new PerformanceObserver((list) => { for (const e of list.getEntries()) { gcs++; gcMs += e.duration; } });
  gc.observe({ entryTypes: ['gc'] });
  let session: Session | undefined;
  if (values['cpu-prof']) {
    session = new Session();
    session.connect();
    await session.post('Profiler.enable');
    await session.post('Profiler.setSamplingInterval', { interval: 100 });
  }
  let marked = false;
  let cpu = process.cpuUsage();
  let pgBefore = procCpuMs(pidsBefore);
  let machineBefore = machineCpuMs();
  const mark = () => {
    marked = true;
    cpu = process.cpuUsage();
    pgBefore = procCpuMs(pidsBefore);
    machineBefore = machineCpuMs();
    gcs = 0;
    gcMs = 0;
    void session?.post('Profiler.start');
  };
  const result = await fn(mark);
  const used = process.cpuUsage(cpu);
  const pgAfter = procCpuMs(pidsBefore);
  const machineAfter = machineCpuMs();
  const pids = await backendPids(sql, applicationName);
  const samePids = pids.length === pidsBefore.length && pids.every((p) => pidsBefore.includes(p));
  gc.disconnect();
  if (session) {
    if (marked) {
      const { profile } = await session.post('Profiler.stop');
      mkdirSync(values['cpu-prof']!, { recursive: true });
      writeFileSync(`${values['cpu-prof']}/${label}.cpuprofile`, JSON.stringify(profile));
    }
    session.disconnect();
  }
  if (!marked) throw new Error(`${label}: the phase never marked the end of its warm-up`);
  return { result, cost: { userMs: used.user / 1000, systemMs: used.system / 1000, gcs, gcMs,
    pgMs: pgBefore !== null && pgAfter !== null && samePids ? pgAfter - pgBefore : null,
    machineBusyMs: machineAfter.busy - machineBefore.busy, machineIdleMs: machineAfter.idle - machineBefore.idle } };
}

/** A phase's costs over its rounds; the backends' CPU only when every round could read it. */
function sumCosts(costs: Cost[]): Cost {
  const sum = (f: (c: Cost) => number) => costs.reduce((n, c) => n + f(c), 0);
  return { userMs: sum((c) => c.userMs), systemMs: sum((c) => c.systemMs), gcs: sum((c) => c.gcs), gcMs: sum((c) => c.gcMs),
    pgMs: costs.some((c) => c.pgMs === null) ? null : sum((c) => c.pgMs!),
    machineBusyMs: sum((c) => c.machineBusyMs), machineIdleMs: sum((c) => c.machineIdleMs) };
}

// ---------------------------------------------------------------------------------- main
const fmt = (n: number, digits = 2) => (Number.isFinite(n) ? n.toFixed(digits) : '-');

log('bench', `H2 through HTTP vs the same RPC over SQL: ${CONNECTIONS} connections, ${SECONDS} s each (+${WARMUP} s warm-up), ` +
  `${availableParallelism()} CPUs, Node ${process.version}`);
await freshDatabase();
const config = { ...loadConfig({ ...process.env, LOG_LEVEL: 'silent' }), databaseUrl: url, port: 0, dbPoolMax: CONNECTIONS, debugEcho: false };
const direct = createDatabase(url, { max: CONNECTIONS, applicationName: 'potentia-bench-direct' });
let server: Awaited<ReturnType<typeof startServer>> | undefined;
// the bare server's own pool, so its backends' CPU is read apart
const bareDatabase = createDatabase(url, { max: CONNECTIONS, applicationName: 'potentia-bench-bare' });
let bare: BareServer | undefined;
try {
  await raiseLimits(direct.sql);
  const sign = (conns: Conn[]) => Promise.all(conns.map(async (c) => {
    c.token = await signAccessToken(config.auth.jwtSecret, { sub: c.userId }, { audience: config.auth.audience, expiresInSeconds: 3600 });
  }));
  log('setup', `per phase and round, ${CONNECTIONS} users of its own, each with its own workspace, canvas and block`);
  // as in production (LOG_LEVEL info): one request log line per request, written the way the
  // server's own logger writes it (src/server.ts and src/roles.ts: pino({ level }), whose
  // destination is a SonicBoom on stdout with pino's default `sync`: false, i.e. lines queued and
  // written asynchronously, several in one write under load, flushed at exit), here to /dev/null
  // instead of stdout. Until 2026-12-07 this was `sync: true`, which production does not use: every
  // line was a write system call of its own on the request's path.
  const productionSync = (pino({ level: 'silent' }) as unknown as Record<symbol, { sync: boolean }>)[pino.symbols.streamSym]!.sync;
  server = await startServer(config, { realtime: false, logger: pino({ level: 'info' }, pino.destination({ dest: '/dev/null', sync: productionSync })) });
  log('setup', `server listening at ${server.url} (in-process, realtime off, worker off, pool ${CONNECTIONS}, request log lines to /dev/null)`);
  // the bare server knows the users by the tokens the bench signed (it checks no JWT)
  const bareUsers = new Map<string, string>();
  bare = await startBareServer(bareDatabase.lanes, bareUsers, config.profile === 'development');
  log('setup', `bare node:http server listening at ${bare.url} (in-process, pool ${CONNECTIONS})`);

  // every pooled connection open before a phase, so its backends' CPU is read from start to end
  const openPool = (sql: Sql) => Promise.all(Array.from({ length: CONNECTIONS }, () => sql`select pg_sleep(0.01)`));
  await openPool(server.database.sql);
  await openPool(bareDatabase.sql);
  await openPool(direct.sql);

  if (PROCESS_WARMUP > 0) {
    // users of their own, so the measured phases start from version 1 as before
    const warmHttp = await makeConnections(direct.sql, CONNECTIONS);
    const warmBare = await makeConnections(direct.sql, CONNECTIONS);
    await sign(warmHttp);
    await sign(warmBare);
    for (const c of warmBare) bareUsers.set(c.token!, c.userId);
    const warmDirect = await makeConnections(direct.sql, CONNECTIONS);
    log('warmup', `untimed: HTTP, bare, then direct (with and without the limit, unprepared and prepared), ${PROCESS_WARMUP} s in all, each after its ${WARMUP} s warm-up ...`);
    await benchHttp(direct.sql, server.url, warmHttp, () => {}, PROCESS_WARMUP / 2);
    const share = PROCESS_WARMUP / 10;
    await benchHttp(direct.sql, bare.url, warmBare, () => {}, share);
    await benchDirect(direct, warmDirect, () => {}, false, false, share);
    await benchDirect(direct, warmDirect, () => {}, true, false, share);
    await benchDirect(direct, warmDirect, () => {}, false, true, share);
    await benchDirect(direct, warmDirect, () => {}, true, true, share);
  }

  // the five phases, in this order in each round; rounds interleave them, so a drift of the machine's
  // speed (10-20 % within minutes here) falls on every phase alike (docs/performance.md)
  type Run = Stats & { cpuMs?: number };
  type Phase = { key: string; label: string; app: string; start: string;
    run: (conns: Conn[], mark: () => void) => Promise<Run>; runs: Run[]; costs: Cost[] };
  const phase = (key: string, label: string, app: string, start: string, run: Phase['run']): Phase =>
    ({ key, label, app, start, run, runs: [], costs: [] });
  const phases = [
    phase('http', 'HTTP', 'potentia-server', 'POST /api/v1/canvas/{id}/mutate, keep-alive, wrk',
      (conns, mark) => benchHttp(direct.sql, server!.url, conns, mark)),
    phase('bare', 'bare', 'potentia-bench-bare', "the same requests to a bare node:http server running the handler's SQL, same load generator",
      (conns, mark) => {
        for (const c of conns) bareUsers.set(c.token!, c.userId);
        return benchHttp(direct.sql, bare!.url, conns, mark);
      }),
    phase('direct', 'direct', 'potentia-bench-direct', `requestStatement + select api.upsert_block_atomic($1..$6), pool ${CONNECTIONS}`,
      (conns, mark) => benchDirect(direct, conns, mark)),
    phase('direct-limit', 'direct + limit', 'potentia-bench-direct',
      "the same with api.hit_endpoint_limit('H2') in the RPC's statement, prepared, as the handler sends it alone in its transaction",
      (conns, mark) => benchDirect(direct, conns, mark, true, true)),
    // not the baseline's only side: the RPC as a named prepared statement, as the handler sends it
    // (callApi prepares its statement, src/http/rpc.ts)
    phase('direct-prepared', 'direct, prepared', 'potentia-bench-direct', "the same as direct, the RPC's statement prepared once per connection",
      (conns, mark) => benchDirect(direct, conns, mark, false, true)),
  ];
  const roundRatios: string[] = [];
  // the planner's statistics as autovacuum keeps them, before each phase (scripts/lib/bench.ts)
  let statistics = '';
  for (let round = 1; round <= ROUNDS; round++) {
    if (ROUNDS > 1) log('round', `${round} of ${ROUNDS}`);
    for (const p of phases) {
      // users of their own in every phase and round: each starts from version 1, as the first did
      const conns = await makeConnections(direct.sql, CONNECTIONS);
      if (p.key === 'http' || p.key === 'bare') await sign(conns);
      statistics = await analyzeAsAutovacuumWould(direct.sql);
      log('run', `${p.label}: ${p.start} ...`);
      // the profile (--cpu-prof) is the last round's
      const { result, cost } = await account(p.key, direct.sql, p.app, (mark) => p.run(conns, mark));
      p.runs.push(result);
      p.costs.push(cost);
      log('run', `${p.label}: ${result.ok} mutations (${(result.ok / result.seconds).toFixed(0)}/s), ${result.errors} errors`);
      await checkVersions(direct.sql, conns, p.label);
    }
    const rate = (p: Phase) => p.runs.at(-1)!.ok / p.runs.at(-1)!.seconds;
    const [h, , d, , dp] = phases as [Phase, Phase, Phase, Phase, Phase];
    roundRatios.push((rate(h) / Math.max(rate(d), rate(dp))).toFixed(2));
  }
  const [httpPhase, barePhase, directPhase, limitPhase, preparedPhase] = phases as [Phase, Phase, Phase, Phase, Phase];
  const httpRun = mergeRuns(httpPhase.runs), httpCost = sumCosts(httpPhase.costs);
  const bareRun = mergeRuns(barePhase.runs), bareCost = sumCosts(barePhase.costs);
  const directCost = sumCosts(directPhase.costs), limitCost = sumCosts(limitPhase.costs), preparedCost = sumCosts(preparedPhase.costs);
  const httpStats = summarize(httpRun);
  const clientCpu = httpRun.cpuMs / (httpStats.n + httpStats.errors);
  const bareStats = summarize(bareRun);
  const bareClientCpu = bareRun.cpuMs / (bareStats.n + bareStats.errors);
  const directStats = summarize(mergeRuns(directPhase.runs));
  const limitStats = summarize(mergeRuns(limitPhase.runs));
  const preparedStats = summarize(mergeRuns(preparedPhase.runs));
  // CPU per mutation: the measured window's CPU (after the warm-up) over the mutations it made
  const attempts = (st: ReturnType<typeof summarize>) => st.n + st.errors;
  const httpCpu = (httpCost.userMs + httpCost.systemMs) / attempts(httpStats);
  const directCpu = (directCost.userMs + directCost.systemMs) / attempts(directStats);
  const bareCpu = (bareCost.userMs + bareCost.systemMs) / attempts(bareStats);

  const rows: [string, ReturnType<typeof summarize>][] = [['HTTP (H2)', httpStats], ['bare node:http + same SQL', bareStats], ['direct SQL', directStats], ['direct SQL + limit, prep.', limitStats], ['direct SQL, prepared', preparedStats]];
  console.log('');
  console.log(`${'H2 update, own block'.padEnd(26)}${'mut/s'.padStart(10)}${'p50 ms'.padStart(10)}${'p95 ms'.padStart(10)}${'p99 ms'.padStart(10)}${'errors'.padStart(8)}`);
  for (const [name, s] of rows) {
    console.log(`${name.padEnd(26)}${fmt(s.rate, 0).padStart(10)}${fmt(s.p50).padStart(10)}${fmt(s.p95).padStart(10)}${fmt(s.p99).padStart(10)}${String(s.errors).padStart(8)}`);
  }
  console.log(`${'ratio HTTP/direct'.padEnd(26)}${(fmt(httpStats.rate / directStats.rate) + 'x').padStart(10)}${(fmt(httpStats.p50 / directStats.p50) + 'x').padStart(10)}` +
    `${(fmt(httpStats.p95 / directStats.p95) + 'x').padStart(10)}${(fmt(httpStats.p99 / directStats.p99) + 'x').padStart(10)}`);
  console.log(`${'ratio HTTP/(direct+limit)'.padEnd(26)}${(fmt(httpStats.rate / limitStats.rate) + 'x').padStart(10)}${(fmt(httpStats.p50 / limitStats.p50) + 'x').padStart(10)}` +
    `${(fmt(httpStats.p95 / limitStats.p95) + 'x').padStart(10)}${(fmt(httpStats.p99 / limitStats.p99) + 'x').padStart(10)}`);
  console.log(`${'ratio HTTP/(direct,prep.)'.padEnd(26)}${(fmt(httpStats.rate / preparedStats.rate) + 'x').padStart(10)}${(fmt(httpStats.p50 / preparedStats.p50) + 'x').padStart(10)}` +
    `${(fmt(httpStats.p95 / preparedStats.p95) + 'x').padStart(10)}${(fmt(httpStats.p99 / preparedStats.p99) + 'x').padStart(10)}`);
  console.log(`${'ratio HTTP/bare'.padEnd(26)}${(fmt(httpStats.rate / bareStats.rate) + 'x').padStart(10)}${(fmt(httpStats.p50 / bareStats.p50) + 'x').padStart(10)}` +
    `${(fmt(httpStats.p95 / bareStats.p95) + 'x').padStart(10)}${(fmt(httpStats.p99 / bareStats.p99) + 'x').padStart(10)}`);
  console.log('');
  console.log(`HTTP/direct: the HTTP layer keeps ${fmt(httpStats.rate / directStats.rate * 100, 0)}% of the direct throughput and adds ` +
    `${fmt(httpStats.p50 - directStats.p50)} ms at p50 (${fmt(httpStats.p99 - directStats.p99)} ms at p99). Of that, the endpoint ` +
    `rate-limit statement alone accounts for ${fmt(limitStats.p50 - directStats.p50)} ms at p50; HTTP, JWT, validation and JSON for the rest.`);
  console.log(`Node CPU per mutation (this process, after the warm-up): HTTP server ${fmt(httpCpu)} ms, direct ${fmt(directCpu)} ms; ` +
    `the HTTP load generator (wrk, its own process) ${fmt(clientCpu)} ms more. With ${availableParallelism()} CPUs shared with Postgres, ` +
    `that CPU is what the HTTP run loses.`);
  const costs: [string, Cost, number, number][] = [['HTTP server', httpCost, attempts(httpStats), clientCpu],
    ['bare node:http', bareCost, attempts(bareStats), bareClientCpu], ['direct', directCost, attempts(directStats), 0],
    ['direct + limit', limitCost, attempts(limitStats), 0], ['direct, prepared', preparedCost, attempts(preparedStats), 0]];
  console.log(`${'CPU ms per mutation'.padEnd(26)}${'node usr'.padStart(10)}${'node sys'.padStart(10)}${'GCs'.padStart(8)}${'GC ms'.padStart(8)}${'postgres'.padStart(10)}${'total'.padStart(10)}${'machine'.padStart(10)}${'idle'.padStart(7)}`);
  for (const [name, c, n, client] of costs) {
    const node = (c.userMs + c.systemMs) / n;
    const pg = c.pgMs === null ? NaN : c.pgMs / n;
    console.log(`${name.padEnd(26)}${fmt(c.userMs / n, 3).padStart(10)}${fmt(c.systemMs / n, 3).padStart(10)}${fmt(c.gcs / n, 3).padStart(8)}` +
      `${fmt(c.gcMs / n, 3).padStart(8)}${fmt(pg, 3).padStart(10)}${fmt(node + pg + client, 3).padStart(10)}` +
      `${fmt(c.machineBusyMs / n, 3).padStart(10)}${`${fmt(100 * c.machineIdleMs / (c.machineBusyMs + c.machineIdleMs), 0)} %`.padStart(7)}`);
  }
  console.log(`(per mutation of the measured window, after the warm-up; GCs = collections per mutation; postgres = the pool's backends; ` +
    `machine = every process on the machine (/proc/stat), idle = the share of the cores left unused; ` +
    `HTTP and bare totals include the load generator's ${fmt(clientCpu, 3)} and ${fmt(bareClientCpu, 3)} ms)`);
  for (const [name, s] of rows) {
    if (s.errors) console.log(`${name} errors: ${JSON.stringify(s.errorKinds)}`);
  }
  if (ROUNDS > 1) console.log(`HTTP vs the faster direct call, per round: ${roundRatios.join(', ')} (the rows below: over all ${ROUNDS} rounds)`);
  const command = `npx tsx scripts/bench-http.ts --seconds ${SECONDS}${ROUNDS > 1 ? ` --rounds ${ROUNDS}` : ''} --connections ${CONNECTIONS} --warmup-seconds ${WARMUP}` +
    (values['database-url'] === defaultUrl ? '' : ` --database-url ${url}`);
  const note = `${CONNECTIONS} connections, each updating its own block; ${ROUNDS > 1 ? `${ROUNDS} rounds interleaved, HTTP vs direct per round ${roundRatios.join(' / ')}; ` : ''}` +
    `HTTP: the production configuration (request log lines at info, to /dev/null; no response validation), ` +
    `Node CPU/mutation server ${fmt(httpCpu)} ms + load generator ${fmt(clientCpu)} ms vs direct ${fmt(directCpu)} ms; ${statistics.replace('each round', 'each phase')}`;
  // the target's baseline is the faster direct call, unprepared or prepared: HTTP sends the RPC prepared, and a
  // baseline handicapped by a Parse per call would flatter it
  const bestDirect = Math.max(directStats.rate, preparedStats.rate);
  // the target compares a server with a client socket per request (its reads and its answer's
  // write) against a call with none; the bare server says what any Node HTTP layer could reach here
  const ceiling = bareStats.rate / bestDirect;
  console.log(`HTTP ceiling on this machine: bare node:http + the same SQL vs direct = ${fmt(ceiling)}; ` +
    `Potentia's HTTP layer vs that bare server = ${fmt(httpStats.rate / bareStats.rate)} ` +
    `(Node CPU per mutation: bare ${fmt(bareCpu, 3)} ms, HTTP ${fmt(httpCpu, 3)} ms, direct ${fmt(directCpu, 3)} ms)`);
  // the bare server runs the handler's SQL, the H2 endpoint limit included: the target keeps the
  // guarantees (limits among them), so an HTTP layer that met it would have to run that SQL too
  const ceilingNote = `; in this run a bare node:http server running the handler's SQL (the H2 endpoint limit included, ` +
    `which the target's guarantees require; the direct call with that limit alone: ${fmt(limitStats.rate / bestDirect)}) reached ${fmt(ceiling)} of the direct call` +
    (ceiling < HTTP_TARGET ? `, below the ${HTTP_TARGET} target: no Node HTTP layer keeping the limit could meet it in this run`
      : `: Potentia's layer (${fmt(httpStats.rate / bareStats.rate)} of that server) is what falls short`);
  reportRows([
    { bench: 'bench:http', workload: 'H2 mutate over HTTP vs the same RPC direct (requestStatement, no endpoint limit; the faster of unprepared and prepared)',
      measured: httpStats.rate, baseline: bestDirect, unit: 'mut/s', ratio: httpStats.rate / bestDirect, target: { op: '>=', value: HTTP_TARGET }, command,
      note: note + (httpStats.rate / bestDirect < HTTP_TARGET ? ceilingNote : '') },
    { bench: 'bench:http', workload: 'H2 mutate over HTTP vs the same RPC direct after the H2 endpoint limit (all the SQL the handler runs)',
      measured: httpStats.rate, baseline: limitStats.rate, unit: 'mut/s', ratio: httpStats.rate / limitStats.rate, target: null, command, note },
    { bench: 'bench:http', workload: 'HTTP ceiling: a bare node:http server running the same SQL as the H2 handler vs the same RPC direct (the faster of unprepared and prepared)',
      measured: bareStats.rate, baseline: bestDirect, unit: 'mut/s', ratio: ceiling, target: null, command,
      note: `no Hono, zod, JWT check, logging or metrics; Node CPU/mutation bare ${fmt(bareCpu)} ms vs direct ${fmt(directCpu)} ms` },
    { bench: 'bench:http', workload: "H2 mutate over Potentia's HTTP layer vs the bare node:http server running the same SQL",
      measured: httpStats.rate, baseline: bareStats.rate, unit: 'mut/s', ratio: httpStats.rate / bareStats.rate, target: null, command,
      note: `Node CPU/mutation HTTP server ${fmt(httpCpu)} ms vs bare ${fmt(bareCpu)} ms` },
  ]);
  if (rows.some(([, stats]) => stats.errors > 0)) process.exitCode = 1;
} finally {
  await server?.stop();
  await bare?.close();
  await bareDatabase.close();
  await direct.close();
}
