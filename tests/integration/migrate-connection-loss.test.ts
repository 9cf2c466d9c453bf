import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { StepConnectionLostError } from '../../src/db/migration-step.ts';
import { startCommitLossProxy, type CommitLossProxy } from '../helpers/commit-loss-proxy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';

// npm run db:migrate whose connection is lost where no statement of a step had been answered yet:
// under a step's first statement (its backend terminated as the step began, tried: 2 runs of 7
// killed at random moments), or under a query between steps. Both ended `migrate failed: read
// ECONNRESET` and "The failed step was rolled back whole", naming no step, or one that never ran.
// A proxy in front of Postgres resets the connection under one statement, every time.

const repoRoot = new URL('../..', import.meta.url).pathname;
const scratch = migrationScratch('migrate_connection_loss');
let proxy: CommitLossProxy;
let proxied: string;

beforeAll(async () => {
  await scratch.create();
  proxy = await startCommitLossProxy(Number(new URL(scratch.url).port || 5432));
  proxied = databaseUrlThrough(proxy, scratch.url);
});

afterAll(async () => {
  await proxy?.close();
  await scratch.close();
});

describe('db:migrate whose connection is lost before a step\'s first answer', () => {
  it('under a step\'s first statement: names the step as rolled back; the next run applies everything', async () => {
    // the first statement of every step (src/db/migration-step.ts)
    proxy.resetOnMarker('client_connection_check_interval');
    const sql = postgres(proxied, { max: 1, onnotice: () => {} });
    try {
      const err = await migrate(sql, { root: repoRoot, strict: true }).then(() => null, (e: unknown) => e);
      expect(proxy.reset).toBe(1);
      expect(err).toBeInstanceOf(StepConnectionLostError);
      expect((err as Error).message).toMatch(/^the connection to the database was lost while applying the migrations table \(supabase_migrations\) \(.+\): the step was rolled back with its transaction/);
      // nothing of the step was made
      const direct = postgres(scratch.url, { max: 1, onnotice: () => {} });
      try {
        expect(await direct`select to_regnamespace('supabase_migrations') as s`).toEqual([{ s: null }]);
      } finally {
        await direct.end();
      }
      expect((await migrate(sql, { root: repoRoot, strict: true })).migrations.length).toBeGreaterThan(0);
    } finally {
      await sql.end();
    }
  }, 120_000);

  it('npm run db:migrate lost under a query between steps says no step was in flight and to run it again', async () => {
    // a query of the checks before the first step (src/db/migrate-privileges.ts)
    proxy.resetOnMarker('supautils.privileged_extensions');
    const run = await promisify(execFile)(join(repoRoot, 'node_modules/.bin/tsx'), ['scripts/migrate.ts', '--database-url', proxied], { cwd: repoRoot })
      .then(() => null, (e: { code?: number; stderr?: string }) => e);
    expect(proxy.reset).toBe(2);
    expect(run?.code).toBe(1);
    expect(run?.stderr).toMatch(new RegExp('^migrate failed: .+\n  The connection to the database was lost outside any step, while nothing was being applied: '
      + 'run the same command again; what is applied is skipped\\.\n$'));
  }, 60_000);
});
