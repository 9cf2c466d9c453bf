// What every benchmark shares: its own scratch database, made fresh and migrated, percentiles, and
// CPU read from /proc.
import { execFile, spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import postgres, { type Sql } from 'postgres';
import { loadConfig } from '../../src/config.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));

/**
 * Database `name` on the server of DATABASE_URL (src/config.ts): every benchmark's default URL, so
 * that `npm run bench` and each benchmark it runs measure the same server.
 */
export function benchDatabaseUrl(name: string): string {
  const url = new URL(loadConfig({ ...process.env, LOG_LEVEL: 'silent' }).databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** The database name of a bench URL; refuses (exit 2) any name without "bench" in it, since it is dropped. */
export function benchDatabaseName(url: string): string {
  const name = new URL(url).pathname.slice(1);
  if (!/^[a-z_][a-z0-9_]*$/.test(name) || !/bench/.test(name)) {
    console.error(`refusing to drop and recreate ${JSON.stringify(name)}: the bench database name must contain "bench"`);
    process.exit(2);
  }
  return name;
}

/**
 * Drops and creates the bench database, then migrates it (npm run db:migrate) with the migrations
 * and migrate script of `tree` (default: this checkout; bench:compare passes another commit's).
 */
export async function recreateBenchDatabase(url: string, log: (line: string) => void, tree: string = root): Promise<void> {
  const name = benchDatabaseName(url);
  const adminUrl = new URL(url);
  adminUrl.pathname = '/postgres';
  const admin = postgres(adminUrl.toString(), { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`drop database if exists "${name}" with (force)`);
    await admin.unsafe(`create database "${name}"`);
  } finally {
    await admin.end();
  }
  log(`database ${name}: created; migrating`);
  const r = spawnSync('npx', ['tsx', 'scripts/migrate.ts', '--database-url', url, '--quiet'],
    { cwd: tree, stdio: ['ignore', 'ignore', 'inherit'], timeout: 180_000 });
  if (r.status !== 0) throw new Error(`migrate failed (exit ${r.status ?? r.signal})`);
}

/**
 * The planner's statistics a production database has by the time it is under load: ANALYZE of the
 * bench database when the server runs without autovacuum (a CI configuration may set
 * `autovacuum = off`, as this project's CI machine does); with autovacuum on, nothing (it analyzes
 * a table once 50 rows + 10 % of it changed, checking every minute: autovacuum_analyze_threshold,
 * autovacuum_analyze_scale_factor, autovacuum_naptime). Without it every table of a fresh bench
 * database stays unanalyzed for the whole run, its plans made on no statistics at all, which no
 * deployment sees for longer than its first minute. Call it after a benchmark's set-up and before
 * each round, outside any measured window, so a table that grew during the run is analyzed again as
 * autovacuum would. Returns the words for a note: `"autovacuum on"` or `"autovacuum off here: ANALYZE
 * before each round"`.
 */
export async function analyzeAsAutovacuumWould(sql: Sql): Promise<string> {
  const [{ on }] = (await sql`select current_setting('autovacuum')::boolean as on`) as unknown as [{ on: boolean }];
  if (on) return 'autovacuum on';
  await sql`analyze`;
  return 'autovacuum off here: ANALYZE before each round';
}

const run = promisify(execFile);

/** The first pgbench that answers --version: $PGBENCH, the server's major version's, pg_config's, PATH's. */
export async function findPgbench(serverMajor: string): Promise<string> {
  const candidates = [process.env.PGBENCH, `/usr/lib/postgresql/${serverMajor}/bin/pgbench`];
  try {
    candidates.push(`${(await run('pg_config', ['--bindir'])).stdout.trim()}/pgbench`);
  } catch { /* no pg_config */ }
  candidates.push('pgbench');
  for (const c of candidates) {
    if (!c) continue;
    try {
      await run(c, ['--version']);
      return c;
    } catch { /* next */ }
  }
  throw new Error(`pgbench not found (tried ${candidates.filter(Boolean).join(', ')}): set PGBENCH`);
}

/**
 * Transactions per second (without connection time) and failed transactions of one pgbench run of
 * the script `file` against `url` for `seconds`, or for `transactions` per client: prepared
 * statements, `clients` connections on up to one thread per CPU, `-D name=value` per define.
 * `pgOptions` goes to the backends as PGOPTIONS (e.g. `-c synchronous_commit=off`). `machine` is the
 * whole machine's CPU while it ran (/proc/stat: every process, pgbench included).
 */
export async function runPgbench(bin: string, o: { url: string; file: string; clients: number;
  defines?: Record<string, number>; pgOptions?: string } & ({ seconds: number } | { transactions: number })): Promise<PgbenchResult> {
  const defines = Object.entries(o.defines ?? {}).flatMap(([k, v]) => ['-D', `${k}=${v}`]);
  const length = 'seconds' in o ? ['-T', String(o.seconds)] : ['-t', String(o.transactions)];
  const before = machineCpuMs();
  const { stdout } = await run(bin, ['-n', '-M', 'prepared', '-c', String(o.clients), '-j', String(Math.min(o.clients, availableParallelism())),
    ...length, ...defines, '-f', o.file, o.url],
  { maxBuffer: 16 << 20, env: o.pgOptions ? { ...process.env, PGOPTIONS: o.pgOptions } : process.env });
  const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1]);
  const failed = Number(/number of failed transactions: (\d+)/.exec(stdout)?.[1] ?? 0);
  const transactions = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1]);
  if (!Number.isFinite(tps)) throw new Error(`pgbench ${o.file}: no tps in its output:\n${stdout}`);
  const after = machineCpuMs();
  return { tps, failed, transactions, machine: { busy: after.busy - before.busy, idle: after.idle - before.idle } };
}

/** One pgbench run: its rates, and the machine's CPU (ms, busy and idle, all processes) while it ran. */
export type PgbenchResult = { tps: number; failed: number; transactions: number; machine: { busy: number; idle: number } };

/** The machine's CPU over pgbench runs and their transactions, summed (addMachineCpu). */
export type MachineCpuTally = { busy: number; idle: number; transactions: number };

/** Adds one run to `tally` (a new one when absent) and returns it. */
export function addMachineCpu(tally: MachineCpuTally | undefined, run: PgbenchResult): MachineCpuTally {
  const t = tally ?? { busy: 0, idle: 0, transactions: 0 };
  t.busy += run.machine.busy;
  t.idle += run.machine.idle;
  t.transactions += run.transactions;
  return t;
}

/** The machine's CPU per transaction in ms. */
export const cpuPerTransaction = (t: MachineCpuTally): number => t.busy / t.transactions;

/** "0.957 ms (idle 5 %)": CPU per transaction and the idle share of the tally. */
export const formatMachineCpu = (t: MachineCpuTally): string =>
  `${cpuPerTransaction(t).toFixed(3)} ms (idle ${(100 * t.idle / (t.busy + t.idle)).toFixed(0)} %)`;

/**
 * This machine's CPU time so far from /proc/stat's first line, in ms: `busy` (user, nice, system,
 * irq, softirq, steal) and `idle` (idle, iowait), summed over all CPUs. The difference of two
 * readings around a run is what every process took in it (backends, WAL writer, the load
 * generator), which counts what instructions do not: cache misses, context switches, the kernel.
 */
export function machineCpuMs(): { busy: number; idle: number } {
  const [user, nice, system, idle, iowait, irq, softirq, steal] = readFileSync('/proc/stat', 'latin1').split('\n')[0]!
    .trim().split(/\s+/).slice(1).map(Number) as number[];
  return { busy: (user! + nice! + system! + irq! + softirq! + steal!) * CLOCK_TICK_MS, idle: (idle! + iowait!) * CLOCK_TICK_MS };
}

/** Nearest-rank percentile (p in 0..100) of an ascending array; NaN when empty. */
export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** USER_HZ: /proc's clock ticks are 10 ms on Linux whatever the kernel's HZ (proc(5), times(2)). */
const CLOCK_TICK_MS = 10;

/** Fields 3.. of /proc/<pid>/stat (after the command name, which may hold spaces): f[11] utime, f[12] stime, f[13] cutime, f[14] cstime. */
function statFields(pid: number | 'self'): string[] {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** The pids of the backends of `sql`'s database whose application_name is `applicationName`, in order. */
export async function backendPids(sql: Sql, applicationName: string): Promise<number[]> {
  const rows = await sql`select pid from pg_stat_activity where datname = current_database() and application_name = ${applicationName} order by pid`;
  return rows.map((r) => r.pid as number);
}

/**
 * The CPU (user + system) the processes `pids` have used so far, in ms; null when one of them
 * cannot be read (gone, or not this machine's: a Postgres elsewhere).
 */
export function procCpuMs(pids: number[]): number | null {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const f = statFields(pid);
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      return null;
    }
  }
  return ticks * CLOCK_TICK_MS;
}

/** The CPU of this process's children that have ended and been waited for (cutime + cstime), in ms. */
export function childrenCpuMs(): number {
  const f = statFields('self');
  return (Number(f[13]) + Number(f[14])) * CLOCK_TICK_MS;
}
