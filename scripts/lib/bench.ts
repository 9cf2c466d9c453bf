// What every benchmark shares: its own scratch database, made fresh and migrated, percentiles, and
// CPU read from /proc.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
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

/** Drops and creates the bench database, then migrates it (npm run db:migrate). */
export async function recreateBenchDatabase(url: string, log: (line: string) => void): Promise<void> {
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
    { cwd: root, stdio: ['ignore', 'ignore', 'inherit'], timeout: 180_000 });
  if (r.status !== 0) throw new Error(`migrate failed (exit ${r.status ?? r.signal})`);
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
