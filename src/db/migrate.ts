import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Sql, TransactionSql } from 'postgres';

/**
 * Applies Potentia's database objects in three layers:
 *  1. compatibility schemas (`sql/compat/<schema>.sql`) for `auth` and `realtime`, only where the
 *     schema is absent or was created by us — on Supabase the real ones are left alone;
 *  2. `supabase/migrations/*.sql` in order, one transaction each, recorded in
 *     `supabase_migrations.schema_migrations` (the Supabase CLI's table); an applied migration
 *     whose content changed is refused;
 *  3. the re-runnable sources in `sql/` (functions, triggers, policies, grants), re-applied only
 *     when their content changed.
 */
export type MigrateOptions = {
  root: string;
  log?: (line: string) => void;
};

export type MigrateResult = { compat: string[]; migrations: string[]; sources: boolean };

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

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex');

async function listSql(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.sql'))
    .map((e) => join(e.parentPath ?? (e as unknown as { path: string }).path, e.name))
    .sort();
}

export async function migrate(sql: Sql, { root, log = () => {} }: MigrateOptions): Promise<MigrateResult> {
  const result: MigrateResult = { compat: [], migrations: [], sources: false };
  await sql.begin(async (tx) => {
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
    const [row] = await sql`select obj_description(oid, 'pg_namespace') as mark from pg_namespace where nspname = ${schema}`;
    if (row && row.mark !== COMPAT_MARK) continue; // the platform's own schema (Supabase)
    const text = await readFile(file, 'utf8');
    const [known] = await sql`select checksum from supabase_migrations.potentia_sources where path = ${relative(root, file)}`;
    if (row && known?.checksum === sha256(text)) continue;
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      await tx.unsafe(text);
      await tx.unsafe(`comment on schema ${schema} is '${COMPAT_MARK}'`);
      await recordSource(tx, relative(root, file), text);
    });
    result.compat.push(schema);
    log(`compat schema ${schema}`);
  }

  // 2. migrations
  for (const file of await listSql(join(root, 'supabase/migrations'))) {
    const base = file.split('/').pop()!.replace(/\.sql$/, '');
    const [version, ...nameParts] = base.split('_');
    const text = await readFile(file, 'utf8');
    const applied = await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      const [row] = await tx`select checksum from supabase_migrations.schema_migrations where version = ${version!}`;
      if (row) {
        if (row.checksum !== null && row.checksum !== sha256(text)) throw new MigrationChangedError(relative(root, file));
        return false;
      }
      await tx.unsafe(text);
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements, checksum)
               values (${version!}, ${nameParts.join('_')}, ${[text]}, ${sha256(text)})`;
      return true;
    });
    if (applied) {
      result.migrations.push(relative(root, file));
      log(`migration ${relative(root, file)}`);
    }
  }

  // 3. re-runnable sources, all together so their order inside sql/ only matters for triggers
  const sources = (await listSql(join(root, 'sql'))).filter((f) => !f.includes('/sql/compat/'));
  const texts = await Promise.all(sources.map(async (f) => [relative(root, f), await readFile(f, 'utf8')] as const));
  const known = new Map(
    (await sql`select path, checksum from supabase_migrations.potentia_sources`).map((r) => [r.path as string, r.checksum as string]),
  );
  if (texts.some(([path, text]) => known.get(path) !== sha256(text))) {
    await sql.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
      await tx`set local check_function_bodies = off`;
      for (const [path, text] of texts) {
        try {
          await tx.unsafe(text);
        } catch (err) {
          throw new Error(`applying ${path} failed: ${(err as Error).message}`, { cause: err });
        }
        await recordSource(tx, path, text);
      }
    });
    result.sources = true;
    log(`sql sources (${texts.length} files)`);
  }
  return result;
}

async function recordSource(tx: TransactionSql, path: string, text: string) {
  await tx`insert into supabase_migrations.potentia_sources (path, checksum) values (${path}, ${sha256(text)})
           on conflict (path) do update set checksum = excluded.checksum`;
}
