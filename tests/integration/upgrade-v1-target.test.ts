// npm run upgrade:v1 into a database that is not migrated (docs/upgrade-v1.md, "How to upgrade"
// step 2): the answer said "run npm run db:migrate on it first", and npm run db:migrate alone
// migrates DATABASE_URL (the dev database), not the --to database, so the same run failed again.
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { generateFixture, writeSqliteFixture } from '../../src/upgrade/v1-fixture.ts';

const run = promisify(execFile);
const repoRoot = new URL('../..', import.meta.url).pathname;
const name = `${new URL(testDatabaseUrl()).pathname.slice(1) || 'potentia'}_upgrade_target_${process.pid}`;
const urlOf = (db: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${db}`; return u.toString(); };
const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
const dir = mkdtempSync(join(tmpdir(), 'potentia-upgrade-target-'));

afterAll(async () => {
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
  rmSync(dir, { recursive: true, force: true });
});

describe('npm run upgrade:v1 into a database that is not migrated', () => {
  it('is refused naming the command that migrates that database (--database-url), nothing written', async () => {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.unsafe(`create database ${name}`);
    const v1 = join(dir, 'v1.sqlite');
    await writeSqliteFixture(v1, generateFixture({ blocks: 20, canvases: 2, embedded: 0, seed: 3 }, true));
    const r = await run('node_modules/.bin/tsx', ['scripts/upgrade-v1.ts', '--from', v1, '--to', urlOf(name)], { cwd: repoRoot })
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('the target is not a migrated v2 database (app.upgrade_v1_progress is missing): ' +
      'run npm run db:migrate -- --database-url <the --to URL> first (without it, npm run db:migrate migrates DATABASE_URL)');
    expect(r.stderr).toContain('Nothing was written');
  }, 60_000);
});
