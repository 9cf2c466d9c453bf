// What every benchmark shares: its own scratch database, made fresh and migrated, and percentiles.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';

const root = fileURLToPath(new URL('../..', import.meta.url));

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
