// `npm run db:migrate` with DATABASE_URL at a transaction pooler and no DIRECT_DATABASE_URL (the
// README's Connection pooling sets both; a newcomer sets one): postgres.js's named prepared
// statements land on another server connection in the next transaction, and the run failed with
// `prepared statement "…" does not exist` and "fix the cause (a lost connection needs nothing),
// then run the same command again", which fails the same way every time. It now names the pooler
// and the setting, and so does a gateway whose replication stream the pooler refuses. PgBouncer
// from scripts/pgbouncer (README), on a free port, in front of the test database.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess } from '../helpers/chaos.ts';
import { freePort } from '../helpers/free-port.ts';
import { until } from '../helpers/wait.ts';

const run = promisify(execFile);
const direct = testDatabaseUrl();
let pgbouncerEnv: NodeJS.ProcessEnv = {};
let runDir = '';
let started = false;
let pooled = '';

beforeAll(async () => {
  const port = await freePort();
  runDir = mkdtempSync(join(tmpdir(), 'potentia-pgbouncer-migrate-'));
  pgbouncerEnv = { ...process.env, DIRECT_DATABASE_URL: direct, PGBOUNCER_PORT: String(port), PGBOUNCER_RUN_DIR: runDir };
  await run('bash', ['scripts/pgbouncer', 'start'], { env: pgbouncerEnv });
  started = true;
  const url = new URL(direct);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  pooled = url.toString();
});

afterAll(async () => {
  if (started) await run('bash', ['scripts/pgbouncer', 'stop'], { env: pgbouncerEnv });
  if (runDir) rmSync(runDir, { recursive: true, force: true });
});

describe('db:migrate through a transaction pooler', () => {
  it('names the pooler and DIRECT_DATABASE_URL instead of "run the same command again"', async () => {
    const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: pooled };
    delete env.DIRECT_DATABASE_URL;
    const r = await run('node_modules/.bin/tsx', ['scripts/migrate.ts'], { env, timeout: 120_000 })
      .then((o) => ({ code: 0, ...o }), (e: { code: number; stdout: string; stderr: string }) => e);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toMatch(/prepared statement "\w+" does not exist/);
    expect(r.stderr).toContain('a transaction pooler (PgBouncer, Supavisor)');
    expect(r.stderr).toContain('set DIRECT_DATABASE_URL (or --database-url) to PostgreSQL itself');
    expect(r.stderr).not.toContain('run the same command again');
  }, 150_000);

  it('a wrong password the pooler refuses says no step ran and to check the credentials (it said "the failed step was rolled back")', async () => {
    const wrong = new URL(pooled);
    wrong.password = 'not-the-password';
    const r = await run('node_modules/.bin/tsx', ['scripts/migrate.ts', '--database-url', wrong.toString()], { timeout: 120_000 })
      .then((o) => ({ code: 0, ...o }), (e: { code: number; stdout: string; stderr: string }) => e);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.stderr).toBe(`migrate failed: SASL authentication failed\n  No step ran: could not use the database at 127.0.0.1:${wrong.port}. `
      + 'Is PostgreSQL running there, and are DATABASE_URL (or --database-url) and its credentials right? npm run setup starts a local PostgreSQL.\n');
  }, 150_000);

  it("a gateway whose replication stream the pooler refuses says to set DIRECT_DATABASE_URL (the log had only PgBouncer's words)", async () => {
    // the same mistake under npm run serve (npm start migrates first, and stops there with the advice above)
    const gateway = await startPotentiaProcess({ DATABASE_URL: pooled, DIRECT_DATABASE_URL: '', POTENTIA_ROLE: 'gateway', LOG_LEVEL: 'warn' });
    try {
      await until(() => gateway.output().includes('unsupported startup parameter: replication'), 30_000, 'the stream refused');
      const line = gateway.output().split('\n').find((l) => l.includes('unsupported startup parameter: replication'))!;
      expect(line).toContain('DIRECT_DATABASE_URL');
    } finally {
      await gateway.stop();
    }
  }, 90_000);
});
