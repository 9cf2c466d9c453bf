import { readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, MigrationCopiedError, MigrationRenamedError, migrationStatus } from '../../src/db/migrate.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// An applied migration whose file was renamed to another version (a rebase that gave it a new
// timestamp, a file renamed to sort after a late merge): the records are by version, so the run
// took the file for a new migration and applied it a second time (a data migration's rows twice),
// and named the old version only as one "a newer release or another branch" applied. It is now
// refused before any step, naming the file and the migration it was applied as.

const scratch = migrationScratch('migrate_renamed');
const APPLIED = '29990101000000_count_up';
const RENAMED = '29990103000000_count_up';
const OTHER = '29990102000000_other';
let root: string;
let sql: postgres.Sql;
const migrations = (file: string) => join(root, 'supabase/migrations', `${file}.sql`);
const recorded = async () => (await sql<{ version: string }[]>`select version from supabase_migrations.schema_migrations
  where version like '2999%' order by version`).map((r) => r.version);

beforeAll(async () => {
  await scratch.create();
  root = checkoutCopy('migrate-renamed');
  // a hand-written data migration: applied twice, it adds its row twice
  writeFileSync(migrations(APPLIED), 'create table if not exists internal.count_up_probe (n int);\ninsert into internal.count_up_probe values (1);\n');
  sql = postgres(scratch.url, { max: 1, onnotice: () => {} });
  expect((await migrate(sql, { root })).migrations).toContain(`supabase/migrations/${APPLIED}.sql`);
}, 120_000);

afterAll(async () => {
  await sql?.end();
  await scratch.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('an applied migration whose file was renamed to another version', () => {
  it('is refused before any step, naming the file and what it was applied as; --check names it; its old name back, the run goes on', async () => {
    renameSync(migrations(APPLIED), migrations(RENAMED));
    // a new migration sorting before it is not applied either: the run changes nothing
    writeFileSync(migrations(OTHER), 'create table internal.other_probe (n int);\n');

    const attempt = migrate(sql, { root }).then(() => null, (e: unknown) => e);
    const err = await attempt;
    expect(err).toBeInstanceOf(MigrationRenamedError);
    expect((err as Error).message).toBe(`migration supabase/migrations/${RENAMED}.sql has the text of migration ${APPLIED}, which is applied: `
      + 'its file was renamed, and run under its new version it would be applied a second time. Nothing was changed. '
      + `Give the file its old name back (supabase/migrations/${APPLIED}.sql), then run the same command again; `
      + 'a migration meant to run again needs a text of its own (a comment will do).');
    expect(await sql`select count(*)::int as n from internal.count_up_probe`).toEqual([{ n: 1 }]);
    expect(await sql`select to_regclass('internal.other_probe') as t`).toEqual([{ t: null }]);
    expect(await recorded()).toEqual(['29990101000000']);

    const status = await migrationStatus(sql, root);
    expect(status).toMatchObject({ renamed: [`supabase/migrations/${RENAMED}.sql (applied as ${APPLIED})`], unknown: [],
      pending: [`supabase/migrations/${OTHER}.sql`] });

    renameSync(migrations(RENAMED), migrations(APPLIED));
    expect((await migrate(sql, { root })).migrations).toEqual([`supabase/migrations/${OTHER}.sql`]);
    expect(await sql`select count(*)::int as n from internal.count_up_probe`).toEqual([{ n: 1 }]);
    expect(await recorded()).toEqual(['29990101000000', '29990102000000']);
  }, 60_000);
});

// A migration copied under a new version while the original stays (a DBA's copy, a branch merge
// that brought the same migration under two timestamps): the run applied both, so a data
// migration's rows went in twice. A pending file with the text of an applied migration, or of
// another pending one, is now refused before any step, naming both files.
describe('a migration file with the text of another migration, the other file still there', () => {
  const COPY = '29990104000000_count_up_again';
  const FIRST = '29990105000000_seed_once';
  const SECOND = '29990106000000_seed_once_merged';
  const probeCount = async () => (await sql`select count(*)::int as n from internal.count_up_probe`)[0]!.n as number;

  it('a copy of an applied migration is refused before any step, naming both files; --check names it; deleted, the run goes on', async () => {
    writeFileSync(migrations(COPY), readFileSync(migrations(APPLIED), 'utf8'));
    const err = await migrate(sql, { root }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationCopiedError);
    expect((err as Error).message).toBe(`migration supabase/migrations/${COPY}.sql has the same text as supabase/migrations/${APPLIED}.sql, which is applied: `
      + 'run under its own version it would apply the same work a second time (a data migration\'s rows twice). Nothing was changed. '
      + `Delete the copy (git rm supabase/migrations/${COPY}.sql), then run the same command again; `
      + 'a migration meant to run again needs a text of its own (a comment will do).');
    expect(await probeCount()).toBe(1);
    expect(await recorded()).toEqual(['29990101000000', '29990102000000']);
    expect(await migrationStatus(sql, root)).toMatchObject({ pending: [], renamed: [],
      copied: [`supabase/migrations/${COPY}.sql (same text as supabase/migrations/${APPLIED}.sql, applied)`] });

    rmSync(migrations(COPY));
    expect((await migrate(sql, { root })).migrations).toEqual([]);
    expect(await probeCount()).toBe(1);
  }, 60_000);

  it('two pending files with the same text are refused before any step, naming both; given a text of its own, each runs', async () => {
    const text = 'insert into internal.count_up_probe values (5);\n';
    writeFileSync(migrations(FIRST), text);
    writeFileSync(migrations(SECOND), text);
    const err = await migrate(sql, { root }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationCopiedError);
    expect((err as Error).message).toBe(`migration supabase/migrations/${SECOND}.sql has the same text as supabase/migrations/${FIRST}.sql, `
      + 'which is to be applied before it: run in turn they would apply the same work twice (a data migration\'s rows twice). Nothing was changed. '
      + `Delete the copy (git rm supabase/migrations/${SECOND}.sql), then run the same command again; `
      + 'a migration meant to run again needs a text of its own (a comment will do).');
    expect(await probeCount()).toBe(1);
    expect(await recorded()).toEqual(['29990101000000', '29990102000000']);
    expect(await migrationStatus(sql, root)).toMatchObject({ pending: [`supabase/migrations/${FIRST}.sql`],
      copied: [`supabase/migrations/${SECOND}.sql (same text as supabase/migrations/${FIRST}.sql, to be applied)`] });

    writeFileSync(migrations(SECOND), `-- the same row once more, on purpose\n${text}`);
    expect((await migrate(sql, { root })).migrations).toEqual([`supabase/migrations/${FIRST}.sql`, `supabase/migrations/${SECOND}.sql`]);
    expect(await sql`select n from internal.count_up_probe order by n`).toEqual([{ n: 1 }, { n: 5 }, { n: 5 }]);
  }, 60_000);

  it('files without statements (as `supabase migration new` makes them) may repeat: each is applied', async () => {
    const empty = ['29990107000000_placeholder', '29990108000000_placeholder_too'];
    for (const file of empty) writeFileSync(migrations(file), '-- nothing yet\n');
    expect((await migrate(sql, { root })).migrations).toEqual(empty.map((f) => `supabase/migrations/${f}.sql`));
  }, 60_000);
});
