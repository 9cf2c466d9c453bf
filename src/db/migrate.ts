import { readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Sql, TransactionSql } from 'postgres';
import { graphileWorkerRevision } from './graphile-schema.ts';
import { checkPrivileges } from './migrate-privileges.ts';
import { checkWritable } from './migrate-writable.ts';
import { migrationStep } from './migration-step.ts';
import {
  describeSchemaDrift, FINGERPRINT_TABLES, fingerprint, fingerprintUnusable, readFingerprint, recordAll, recordChanges, recordMigration,
} from './schema-drift.ts';
import { SUPERSEDED_MIGRATIONS } from './superseded-migrations.ts';
import { type AppliedMigration, sameTextMigrations, type SameText, unknownMigrations, versionOf } from './migration-history.ts';
import { splitStatements } from './split-statements.ts';
import { describeDrift, hasDrift, listSql, sha256, sourceFiles, sourcesDrift } from './sources.ts';

/**
 * Applies Potentia's database objects:
 *  1. compatibility schemas (`sql/compat/<schema>.sql`) for `auth` and `realtime`, only where the
 *     schema is absent or was created by us — on Supabase the real ones are left alone;
 *  2. `supabase/migrations/*.sql` in order, one transaction each (src/db/migration-step.ts: bounded lock waits, a lost connection named), recorded in
 *     `supabase_migrations.schema_migrations` (the Supabase CLI's table); an applied migration
 *     whose content changed is refused (unless the recorded text is one src/db/superseded-migrations.ts
 *     lists), and so is a file renamed to another version after it was applied (MigrationRenamedError)
 *     or a copy of another migration under a new version (MigrationCopiedError), before any step. The migrations hold everything, functions and policies
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
  /** how long each step may spend waiting for locks held by other sessions (src/db/migration-step.ts) */
  lockWaitMs?: number;
  /** a second connection, to name the sessions holding the locks a step waits for */
  watch?: Sql;
  /** take the schema as it is, changes made outside migrations included, as what the migrations left */
  acceptDrift?: boolean;
};

/**
 * drift: sql/ changes no migration holds; schemaDrift: the database's objects changed outside migrations (schema-drift.ts);
 * unknown: applied migrations this checkout has no file for, newer than its newest (src/db/migration-history.ts, unknownMigrations: newer)
 */
export type MigrateResult = {
  compat: string[]; migrations: string[]; sources: boolean; drift: string[]; schemaDrift: string[]; unknown: string[];
  /** applied migrations older than the checkout's newest that have no file here (unknownMigrations: removed) */
  removed: string[];
};

const COMPAT_MARK = 'potentia compatibility schema';

export class MigrationChangedError extends Error {
  constructor(readonly file: string) {
    super(
      `migration ${file} was already applied but its content has changed. ` +
        'Applied migrations are immutable: restore the file and put the change in a new migration.',
    );
  }
}

/**
 * A migration file whose text is that of an applied migration recorded under another version: the
 * file was renamed (a rebase gave it a new timestamp). The records are by version, so the run would
 * take it for a new migration and apply it a second time (a data migration's rows twice).
 */
export class MigrationRenamedError extends Error {
  constructor(readonly file: string, readonly applied: string) {
    super(
      `migration ${file} has the text of migration ${applied}, which is applied: its file was renamed, and run under its new ` +
        'version it would be applied a second time. Nothing was changed. ' +
        `Give the file its old name back (supabase/migrations/${applied}.sql), then run the same command again; ` +
        'a migration meant to run again needs a text of its own (a comment will do).',
    );
  }
}

/**
 * A migration file not applied yet whose text another migration has, that migration's file still
 * here: copied under a new version (by hand, or a branch merge that brought the same migration
 * under two timestamps). Run under its own version it would apply the same work a second time (a
 * data migration's rows twice). `pending`: the other is not applied either (both would run, in turn).
 */
export class MigrationCopiedError extends Error {
  constructor(readonly file: string, readonly of: string, readonly pending: boolean) {
    super(
      `migration ${file} has the same text as ${of}, ` +
        (pending ? 'which is to be applied before it: run in turn they would apply the same work twice'
          : 'which is applied: run under its own version it would apply the same work a second time') +
        ' (a data migration\'s rows twice). Nothing was changed. ' +
        `Delete the copy (git rm ${file}), then run the same command again; ` +
        'a migration meant to run again needs a text of its own (a comment will do).',
    );
  }
}

/** The refusal of a file that repeats another migration's text (sameTextMigrations), its paths relative to `root`. */
function sameTextError(root: string, found: SameText): MigrationRenamedError | MigrationCopiedError {
  if (found.kind === 'renamed') return new MigrationRenamedError(relative(root, found.file), found.of);
  return new MigrationCopiedError(relative(root, found.file), relative(root, found.of), found.kind === 'pending');
}

export class SourcesDriftError extends Error {
  constructor(readonly drift: string[]) {
    super(
      `sql/ has changes no migration holds (${drift.join('; ')}). ` +
        'Run `npm run db:migration -- <name>`, commit the new migration, then migrate.',
    );
  }
}

export async function migrate(sql: Sql, { root, log = () => {}, strict = false, lockWaitMs, watch, acceptDrift = false }: MigrateOptions):
  Promise<MigrateResult> {
  const result: MigrateResult = { compat: [], migrations: [], sources: false, drift: [], schemaDrift: [], unknown: [], removed: [] };
  const drift = await sourcesDrift(root, graphileWorkerRevision);
  result.drift = describeDrift(drift);
  if (strict && hasDrift(drift)) throw new SourcesDriftError(result.drift);
  // a database that takes no writes (a standby, default_transaction_read_only) and a role that
  // cannot finish the run are refused before the first step
  await checkWritable(sql);
  await checkPrivileges(sql, COMPAT_MARK);
  // each step is under the migrations' advisory lock (migrationStep); holders of it are named once a run
  const reported = new Set<number>();
  const step = <T>(label: string, work: (tx: TransactionSql) => Promise<T>) => migrationStep(sql, log, work, { label, lockWaitMs, reported, watch });
  await step('the migrations table (supabase_migrations)', async (tx) => {
    await tx.unsafe(`
      create schema if not exists supabase_migrations;
      create table if not exists supabase_migrations.schema_migrations (version text primary key);
      alter table supabase_migrations.schema_migrations add column if not exists statements text[];
      alter table supabase_migrations.schema_migrations add column if not exists name text;
      alter table supabase_migrations.schema_migrations add column if not exists checksum text;
      create table if not exists supabase_migrations.potentia_sources (path text primary key, checksum text not null);
      ${FINGERPRINT_TABLES};
    `);
  });
  // a renamed or copied migration is refused before the first step that changes anything.
  // The records are read once, here, for these checks and for naming the unknown ones at the end: a
  // concurrent run (they take turns step by step) only adds records of files it has, and each step
  // reads its own record again under the migrations' lock, which is what decides whether it applies
  const files = await listSql(join(root, 'supabase/migrations'));
  const records = await appliedMigrations(sql);
  const [repeated] = sameTextMigrations(records, await withChecksums(files));
  if (repeated) throw sameTextError(root, repeated);
  // what changed outside migrations since the last run; each step then records its own changes.
  // A fingerprint that cannot be compared (none yet, or migrations applied by something else) is
  // taken anew at the end
  const tracking = await step('the schema\'s fingerprint (supabase_migrations.potentia_catalog)', async (tx) => {
    const recorded = await readFingerprint(tx);
    const unusable = await fingerprintUnusable(tx, recorded);
    if (unusable !== null) {
      if (recorded.size > 0) log(unusable);
      return false;
    }
    result.schemaDrift = describeSchemaDrift(recorded, await fingerprint(tx, COMPAT_MARK));
    return true;
  });
  /** Runs a step's changes, recording in the fingerprint what they changed. */
  const tracked = async (tx: TransactionSql, work: () => Promise<void>) => {
    if (!tracking) return work();
    const before = await fingerprint(tx, COMPAT_MARK);
    await work();
    await recordChanges(tx, before, await fingerprint(tx, COMPAT_MARK));
  };

  // 1. compatibility schemas
  for (const file of await listSql(join(root, 'sql/compat'))) {
    const schema = file.split('/').pop()!.replace(/\.sql$/, '');
    const path = relative(root, file);
    const text = await readFile(file, 'utf8');
    // decided under the lock: a concurrent run that applied it first is seen, not repeated
    const applied = await step(path, async (tx) => {
      const [row] = await tx`select obj_description(oid, 'pg_namespace') as mark from pg_namespace where nspname = ${schema}`;
      if (row && row.mark !== COMPAT_MARK) return false; // the platform's own schema (Supabase)
      const [known] = await tx`select checksum from supabase_migrations.potentia_sources where path = ${path}`;
      if (row && known?.checksum === sha256(text)) return false;
      await tx.unsafe(`create schema if not exists ${schema}; comment on schema ${schema} is '${COMPAT_MARK}'`);
      await tracked(tx, () => applyFile(tx, path, text));
      await recordSource(tx, path, text);
      return true;
    });
    if (applied) {
      result.compat.push(schema);
      log(`applied  compat schema ${schema}`);
    }
  }

  // 2. migrations
  for (const file of files) {
    const base = file.split('/').pop()!.replace(/\.sql$/, '');
    const [version, ...nameParts] = base.split('_');
    const text = await readFile(file, 'utf8');
    const applied = await step(relative(root, file), async (tx) => {
      const [row] = await tx`select checksum from supabase_migrations.schema_migrations where version = ${version!}`;
      if (row) {
        if (row.checksum === null || row.checksum === sha256(text)) return false;
        if (!SUPERSEDED_MIGRATIONS[version!]?.sha256.includes(row.checksum)) throw new MigrationChangedError(relative(root, file));
        // applied as an earlier text of the same work: record the current one, apply nothing
        await tx`update supabase_migrations.schema_migrations set statements = ${[text]}, checksum = ${sha256(text)}
                 where version = ${version!}`;
        return false;
      }
      await tracked(tx, () => applyFile(tx, relative(root, file), text));
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements, checksum)
               values (${version!}, ${nameParts.join('_')}, ${[text]}, ${sha256(text)})`;
      if (tracking) await recordMigration(tx, version!);
      return true;
    });
    if (applied) {
      result.migrations.push(relative(root, file));
      log(`applied  migration ${relative(root, file)}`);
    }
  }
  // applied migrations this checkout lacks (a newer release or another branch migrated the
  // database): named, not refused, as a role's start does not refuse such a database (migrated.ts)
  ({ newer: result.unknown, removed: result.removed } = unknownMigrations(records, files));

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
    await step(`sql/ on top of the migrations (${sources.length} files)`, async (tx) => {
      await tx`set local check_function_bodies = off`;
      await tracked(tx, async () => {
        for (const { path, text } of sources) {
          await applyFile(tx, path, text);
          await recordSource(tx, path, text);
        }
      });
      await tx`delete from supabase_migrations.potentia_sources
               where path not like 'sql/compat/%' and path <> all(${sources.map((f) => f.path)})`;
    });
    result.sources = true;
    log(`applied  sql sources (${sources.length} files)`);
  }
  if (!tracking || acceptDrift) {
    await step('the schema\'s fingerprint (supabase_migrations.potentia_catalog)', async (tx) => recordAll(tx, await fingerprint(tx, COMPAT_MARK)));
  }
  return result;
}

/**
 * What supabase_migrations.schema_migrations records, in version order; name and checksum null where
 * the table lacks the column (one the Supabase CLI made has no checksum: db:migrate adds it).
 */
export async function appliedMigrations(sql: Sql | TransactionSql): Promise<AppliedMigration[]> {
  const columns = new Set((await sql<{ name: string }[]>`select attname::text as name from pg_attribute
    where attrelid = 'supabase_migrations.schema_migrations'::regclass and attnum > 0 and not attisdropped`).map((c) => c.name));
  const column = (name: string) => (columns.has(name) ? sql(name) : sql`null::text`);
  return sql<AppliedMigration[]>`
    select version, ${column('name')} as name, ${column('checksum')} as checksum from supabase_migrations.schema_migrations order by version`;
}

/** Each file with the sha256 of its text, as schema_migrations records it, and how many statements it has (sameTextMigrations). */
async function withChecksums(files: string[]): Promise<{ file: string; checksum: string; statements: number }[]> {
  return Promise.all(files.map(async (file) => {
    const text = await readFile(file, 'utf8');
    return { file, checksum: sha256(text), statements: splitStatements(text).length };
  }));
}

/** What `npm run db:migrate -- --check` reports, changing nothing. */
export type MigrationStatus = {
  /** migrations not applied yet, and applied ones whose file has changed since */
  pending: string[];
  changed: string[];
  /** files renamed after they were applied, as `<file> (applied as <version>_<name>)` (sameTextMigrations): a run refuses them */
  renamed: string[];
  /**
   * files not applied with the text of another migration whose file is here, as `<file> (same text as <file>, applied|to be applied)`
   * (sameTextMigrations): a run refuses them
   */
  copied: string[];
  /** applied migrations this checkout has no file for, newer than its newest (unknownMigrations), but those renamed */
  unknown: string[];
  /** applied migrations older than the checkout's newest that have no file here (unknownMigrations), but those renamed */
  removed: string[];
  /** sql/ changes no migration holds */
  drift: string[];
  /** objects changed outside migrations since the last run; null: cannot be told, `schemaNote` says why */
  schemaDrift: string[] | null;
  schemaNote: string | null;
};

export async function migrationStatus(sql: Sql, root: string): Promise<MigrationStatus> {
  const status: MigrationStatus = {
    pending: [], changed: [], renamed: [], copied: [], unknown: [], removed: [], drift: describeDrift(await sourcesDrift(root, graphileWorkerRevision)), schemaDrift: null,
    schemaNote: 'no fingerprint of the schema recorded yet (db:migrate records one)',
  };
  const [tables] = await sql<{ migrations: boolean; fingerprint: boolean }[]>`
    select to_regclass('supabase_migrations.schema_migrations') is not null as migrations,
           to_regclass('supabase_migrations.potentia_catalog_migrations') is not null as fingerprint`;
  const records = tables!.migrations ? await appliedMigrations(sql) : [];
  const applied = new Map(records.map((r) => [r.version, r.checksum] as const));
  const files = await listSql(join(root, 'supabase/migrations'));
  const repeated = sameTextMigrations(records, await withChecksums(files));
  for (const r of repeated) {
    if (r.kind === 'renamed') status.renamed.push(`${relative(root, r.file)} (applied as ${r.of})`);
    else status.copied.push(`${relative(root, r.file)} (same text as ${relative(root, r.of)}, ${r.kind === 'pending' ? 'to be applied' : 'applied'})`);
  }
  const renamedFrom = new Set(repeated.filter((r) => r.kind === 'renamed').map((r) => r.of));
  const unknown = unknownMigrations(records, files);
  status.removed = unknown.removed.filter((u) => !renamedFrom.has(u));
  status.unknown = unknown.newer.filter((u) => !renamedFrom.has(u));
  for (const file of files) {
    const version = versionOf(file);
    const path = relative(root, file);
    if (repeated.some((r) => r.file === file)) continue;
    if (!applied.has(version)) { status.pending.push(path); continue; }
    const checksum = applied.get(version);
    const text = await readFile(file, 'utf8');
    if (checksum && checksum !== sha256(text) && !SUPERSEDED_MIGRATIONS[version]?.sha256.includes(checksum)) status.changed.push(path);
  }
  if (tables!.fingerprint) {
    const recorded = await readFingerprint(sql);
    status.schemaNote = await fingerprintUnusable(sql, recorded);
    if (status.schemaNote === null) status.schemaDrift = describeSchemaDrift(recorded, await fingerprint(sql, COMPAT_MARK));
  }
  return status;
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
