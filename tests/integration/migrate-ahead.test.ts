import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, migrationStatus } from '../../src/db/migrate.ts';
import { withoutPassword } from '../../src/url-redaction.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// A database migrated by a newer release than the checkout (a release rolled back, a branch
// switched): `npm run db:migrate -- --check` names each applied migration the checkout has no
// file for and exits 1 saying what to do, as `supabase migration list` shows remote-only ones;
// `npm run db:migrate` warns of them and goes on (nothing undone, only the checkout's own applied),
// and so does a role's start: a database ahead of the code is not refused (src/db/migrated.ts).

const repoRoot = new URL('../..', import.meta.url).pathname;
const scratch = migrationScratch('migrate_ahead');
const { name } = scratch;
const urlOf = scratch.urlOf;
const run = promisify(execFile);
const tsx = join(repoRoot, 'node_modules/.bin/tsx');
const NEWER = '29991231000000_newer_release';
let root: string;
let sql: postgres.Sql;

beforeAll(async () => {
  await scratch.create();
  // the newer release: this checkout's migrations and one more
  root = checkoutCopy('migrate-ahead');
  writeFileSync(join(root, `supabase/migrations/${NEWER}.sql`), "create function internal.newer_release_probe() returns int language sql as 'select 1';");
  sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
  expect((await migrate(sql, { root })).migrations).toContain(`supabase/migrations/${NEWER}.sql`);
}, 120_000);

afterAll(async () => {
  await sql?.end();
  await scratch.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('a database migrated by a newer release than the checkout', () => {
  it('--check names each applied migration the checkout lacks and exits 1 saying what to do', async () => {
    // the newer release itself finds nothing
    expect(await migrationStatus(sql, root)).toMatchObject({ pending: [], changed: [], unknown: [] });
    const check = await run(tsx, ['scripts/migrate.ts', '--check', '--database-url', urlOf(name)], { cwd: repoRoot })
      .then(() => null, (e: { code?: number; stdout?: string }) => e);
    expect(check?.code).toBe(1);
    expect(check?.stdout).toMatch(new RegExp('^  1 applied migration\\(s\\) this checkout does not have \\(a newer release or another branch migrated the database\\):\n'
      + `    ${NEWER}\n`
      + '  What to do: run the release or branch that has them \\(git pull, git checkout\\), then run this again\\. '
      + 'Rolling back to the previous release on purpose needs nothing: .*supabase migration repair --status reverted <version>.*\n'
      + `check ${name}: 1 finding\\(s\\)\n$`));
  }, 30_000);

  it('an applied migration older than the checkout\'s newest, its file gone, is named as removed, not as a newer release\'s', async () => {
    // a file deleted from supabase/migrations (or a branch not merged here), between two the checkout has
    await sql`insert into supabase_migrations.schema_migrations (version, name, checksum) values ('20261121000350', 'deleted_mid', 'abc')`;
    try {
      const check = await run(tsx, ['scripts/migrate.ts', '--check', '--database-url', urlOf(name)], { cwd: repoRoot })
        .then(() => null, (e: { code?: number; stdout?: string }) => e);
      expect(check?.code).toBe(1);
      expect(check?.stdout).toContain('  1 applied migration(s) older than this checkout\'s newest have no file in supabase/migrations '
        + '(deleted, or from a branch this checkout does not have):\n'
        + '    20261121000350_deleted_mid\n'
        + '  What to do: restore the file (git log --diff-filter=D --stat -- supabase/migrations shows a deletion) or merge the branch that has it: '
        + 'an applied migration\'s file is never deleted, its record says what the database holds.\n');
      expect(check?.stdout).toContain(`this checkout does not have (a newer release or another branch migrated the database):\n    ${NEWER}\n  What to do`);
      expect(check?.stdout).not.toMatch(/newer release[^\n]*:\n(    .*\n)*    20261121000350_deleted_mid/);
    } finally {
      await sql`delete from supabase_migrations.schema_migrations where version = '20261121000350'`;
    }
  }, 30_000);

  it('db:migrate warns naming them, undoes nothing and exits 0; a role starts with the same warning', async () => {
    const migrated = await run(tsx, ['scripts/migrate.ts', '--database-url', urlOf(name)], { cwd: repoRoot });
    expect(migrated.stderr).toMatch(new RegExp('^warning: 1 applied migration\\(s\\) this checkout does not have \\(a newer release or another branch migrated the database\\):\n'
      + `    ${NEWER}\n`
      + '  They stay applied, and this run applied only the migrations this checkout has\\. What to do: '));
    expect(migrated.stdout).toMatch(new RegExp(`^migrate ${name}: up to date \\(\\d+ ms\\)\n$`));
    expect(await sql`select version from supabase_migrations.schema_migrations where version = ${NEWER.split('_')[0]!}`).toHaveLength(1);
    expect(await sql`select to_regprocedure('internal.newer_release_probe()') is not null as kept`).toEqual([{ kept: true }]);
    let api: PotentiaProcess | undefined;
    try {
      api = await startPotentiaProcess({ DATABASE_URL: urlOf(name), WORKER_MODE: 'off', POTENTIA_ROLE: 'api' });
      expect(api.output()).toContain(`warning: the database (DATABASE_URL=${withoutPassword(urlOf(name))}) has 1 migration(s) this code does not have (${NEWER}): `
        + 'a newer release or another branch migrated it. Starting anyway');
      expect((await fetch(`${api.url}/ready`)).status).toBe(200);
    } finally {
      await api?.stop();
    }
  }, 60_000);

  it('a role\'s start names an applied migration older than the code\'s newest, its file gone, as removed, not as a newer release\'s', async () => {
    await sql`insert into supabase_migrations.schema_migrations (version, name, checksum) values ('20261121000350', 'deleted_mid', 'abc')`;
    let api: PotentiaProcess | undefined;
    try {
      api = await startPotentiaProcess({ DATABASE_URL: urlOf(name), WORKER_MODE: 'off', POTENTIA_ROLE: 'api' });
      expect(api.output()).toContain(`warning: the database (DATABASE_URL=${withoutPassword(urlOf(name))}) has 1 applied migration(s) `
        + 'older than this code\'s newest that supabase/migrations has no file for (20261121000350_deleted_mid): deleted, or from a branch '
        + 'this code does not have. Starting anyway: restore the file (git log --diff-filter=D --stat -- supabase/migrations shows a deletion) '
        + 'or merge the branch that has it, then deploy that code (npm run db:migrate -- --check lists them).');
      expect(api.output()).toContain(`has 1 migration(s) this code does not have (${NEWER}): a newer release`);
      expect((await fetch(`${api.url}/ready`)).status).toBe(200);
    } finally {
      await api?.stop();
      await sql`delete from supabase_migrations.schema_migrations where version = '20261121000350'`;
    }
  }, 60_000);
});
