import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Sql, TransactionSql } from 'postgres';
import { graphileWorkerRevision } from './graphile-schema.ts';
import { SUPERSEDED_MIGRATIONS } from './superseded-migrations.ts';
import { describeDrift, hasDrift, listSql, sha256, sourceFiles, sourcesDrift } from './sources.ts';

/**
 * Applies Potentia's database objects:
 *  1. compatibility schemas (`sql/compat/<schema>.sql`) for `auth` and `realtime`, only where the
 *     schema is absent or was created by us — on Supabase the real ones are left alone;
 *  2. `supabase/migrations/*.sql` in order, one transaction each, recorded in
 *     `supabase_migrations.schema_migrations` (the Supabase CLI's table); an applied migration
 *     whose content changed is refused (unless the recorded text is one src/db/superseded-migrations.ts
 *     lists). The migrations hold everything, functions and policies
 *     included: `npm run db:migration` copies what changed in `sql/` into a new one.
 *  3. only when `sql/` has changes no migration holds yet (the development loop): all of `sql/` is
 *     applied on top, and `drift` says which files, so the caller can tell the developer to run
 *     `npm run db:migration`. With `strict` it refuses instead, before applying anything (deploys).
 *     A database that got `sql/` this way gets it again once the files differ from what it got,
 *     so reverting an experiment reverts the database too.
 */
export type MigrateOptions = {
  root: string;
  log?: (line: string) => void;
  strict?: boolean;
};

export type MigrateResult = { compat: string[]; migrations: string[]; sources: boolean; drift: string[] };

const COMPAT_MARK = 'potentia compatibility schema';
const MIGRATE_LOCK = 7_303_030_001; // advisory lock key: one migrator at a time per database

export class MigrationChangedError extends Error {
  constructor(readonly file: string) {
    super(
      `migration ${file} was already applied but its content has changed. ` +
        'Applied migrations are immutable: restore the file and put the change in a new migration.',
    );
  }
}

export class SourcesDriftError extends Error {
  constructor(readonly drift: string[]) {
    super(
      `sql/ has changes no migration holds (${drift.join('; ')}). ` +
        'Run `npm run db:migration -- <name>`, commit the new migration, then migrate.',
    );
  }
}

export async function migrate(sql: Sql, { root, log = () => {}, strict = false }: MigrateOptions): Promise<MigrateResult> {
  const result: MigrateResult = { compat: [], migrations: [], sources: false, drift: [] };
  const drift = await sourcesDrift(root, graphileWorkerRevision);
  result.drift = describeDrift(drift);
  if (strict && hasDrift(drift)) throw new SourcesDriftError(result.drift);
  await migrationStep(sql, log, async (tx) => {
    await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
    await tx.unsafe(`
      create schema if not exists supabase_migrations;
      create table if not exists supabase_migrations.schema_migrations (version text primary key);
      alter table supabase_migrations.schema_migrations add column if not exists statements text[];
      alter table supabase_migrations.schema_migrations add column if not exists name text;
      alter table supabase_migrations.schema_migrations add column if not exists checksum text;
      create table if not exists supabase_migrations.potentia_sources (path text primary key, checksum text not null);
    `);
  });

  // 1. compatibility schemas
  for (const file of await listSql(join(root, 'sql/compat'))) {
    const schema = file.split('/').pop()!.replace(/\.sql$/, '');
    const path = relative(root, file);
    const text = await readFile(file, 'utf8');
    // decided under the lock: a concurrent run that applied it first is seen, not repeated
    const applied = await migrationStep(sql, log, async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      const [row] = await tx`select obj_description(oid, 'pg_namespace') as mark from pg_namespace where nspname = ${schema}`;
      if (row && row.mark !== COMPAT_MARK) return false; // the platform's own schema (Supabase)
      const [known] = await tx`select checksum from supabase_migrations.potentia_sources where path = ${path}`;
      if (row && known?.checksum === sha256(text)) return false;
      await applyFile(tx, path, text);
      await tx.unsafe(`comment on schema ${schema} is '${COMPAT_MARK}'`);
      await recordSource(tx, path, text);
      return true;
    });
    if (applied) {
      result.compat.push(schema);
      log(`compat schema ${schema}`);
    }
  }

  // 2. migrations
  for (const file of await listSql(join(root, 'supabase/migrations'))) {
    const base = file.split('/').pop()!.replace(/\.sql$/, '');
    const [version, ...nameParts] = base.split('_');
    const text = await readFile(file, 'utf8');
    const applied = await migrationStep(sql, log, async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      const [row] = await tx`select checksum from supabase_migrations.schema_migrations where version = ${version!}`;
      if (row) {
        if (row.checksum === null || row.checksum === sha256(text)) return false;
        if (!SUPERSEDED_MIGRATIONS[version!]?.sha256.includes(row.checksum)) throw new MigrationChangedError(relative(root, file));
        // applied as an earlier text of the same work: record the current one, apply nothing
        await tx`update supabase_migrations.schema_migrations set statements = ${[text]}, checksum = ${sha256(text)}
                 where version = ${version!}`;
        return false;
      }
      await applyFile(tx, relative(root, file), text);
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements, checksum)
               values (${version!}, ${nameParts.join('_')}, ${[text]}, ${sha256(text)})`;
      return true;
    });
    if (applied) {
      result.migrations.push(relative(root, file));
      log(`migration ${relative(root, file)}`);
    }
  }

  // 3. sql/ on top, only while it has changes no migration holds (or the database got an earlier
  //    state of sql/ that way): all files, in the order the generated migrations use
  const sources = await sourceFiles(root);
  const recorded = new Map(
    (await sql`select path, checksum from supabase_migrations.potentia_sources where path not like 'sql/compat/%'`)
      .map((r) => [r.path as string, r.checksum as string]),
  );
  const sourcesDrifted = drift.changed.length + drift.added.length + drift.removed.length > 0;
  const sameAsRecorded = recorded.size === sources.length && sources.every((f) => recorded.get(f.path) === f.sha256);
  if (!strict && (sourcesDrifted || recorded.size > 0) && !sameAsRecorded) {
    await migrationStep(sql, log, async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      await tx`set local check_function_bodies = off`;
      for (const { path, text } of sources) {
        await applyFile(tx, path, text);
        await recordSource(tx, path, text);
      }
      await tx`delete from supabase_migrations.potentia_sources
               where path not like 'sql/compat/%' and path <> all(${sources.map((f) => f.path)})`;
    });
    result.sources = true;
    log(`sql sources (${sources.length} files)`);
  }
  return result;
}

/**
 * One step of the migrator in its own transaction (`sql.begin(work)`), run again when PostgreSQL
 * chose it as a deadlock's victim (40P01): migrations run against live traffic, whose mutations
 * lock the same tables in another order, and the victim's transaction is rolled back whole, so the
 * step is simply retried (up to 5 times, 0.2 s × attempt apart, each logged). Anything else fails
 * the run as before.
 */
export async function migrationStep<T>(sql: Sql, log: (line: string) => void, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await sql.begin(work) as T;
    } catch (err) {
      const code = (err as { code?: string }).code ?? ((err as Error).cause as { code?: string } | undefined)?.code;
      if (code !== '40P01' || attempt >= 5) throw err;
      log(`deadlock with live traffic (${(err as Error).message.split('\n')[0]}): the step was rolled back, retrying (attempt ${attempt + 1} of 5)`);
      await new Promise((resolve) => setTimeout(resolve, 200 * attempt));
    }
  }
}

/** Runs one file's SQL in `tx`; a failure names the file (the step's transaction then rolls it back whole). */
async function applyFile(tx: TransactionSql, path: string, text: string): Promise<void> {
  try {
    await tx.unsafe(text);
  } catch (err) {
    throw new Error(`applying ${path} failed: ${(err as Error).message}`, { cause: err });
  }
}

async function recordSource(tx: TransactionSql, path: string, text: string) {
  await tx`insert into supabase_migrations.potentia_sources (path, checksum) values (${path}, ${sha256(text)})
           on conflict (path) do update set checksum = excluded.checksum`;
}
