import { readFile } from 'node:fs/promises';
import { basename, join, relative } from 'node:path';
import type { Sql } from 'postgres';
import { listSql } from './sources.ts';

/**
 * Builds a database the way Supabase does, without Docker and without our migrator: the platform's
 * schemas first (on plain Postgres, our sql/compat/ stands in for Supabase's auth, realtime and
 * the API roles), then ONLY supabase/migrations/*.sql in file-name order, each in one transaction
 * and recorded in supabase_migrations.schema_migrations as the Supabase CLI records them
 * (`supabase db push`), then supabase/seed.sql when asked (`supabase db reset`). Nothing from sql/
 * is applied: what this database holds is what the migrations hold.
 */
export type PushResult = { compat: string[]; migrations: string[]; seeded: boolean };

const COMPAT_MARK = 'potentia compatibility schema'; // the mark src/db/migrate.ts recognizes

export async function pushLikeSupabase(sql: Sql, root: string, { seed = false } = {}): Promise<PushResult> {
  const result: PushResult = { compat: [], migrations: [], seeded: false };
  for (const file of await listSql(join(root, 'sql/compat'))) {
    const schema = basename(file, '.sql');
    const text = await readFile(file, 'utf8');
    await sql.begin(async (tx) => {
      await tx.unsafe(text);
      await tx.unsafe(`comment on schema ${schema} is '${COMPAT_MARK}'`);
    });
    result.compat.push(schema);
  }
  await sql.unsafe(`
    create schema if not exists supabase_migrations;
    create table if not exists supabase_migrations.schema_migrations (version text primary key, statements text[], name text);
  `);
  for (const file of await listSql(join(root, 'supabase/migrations'))) {
    const [version, ...name] = basename(file, '.sql').split('_');
    const text = await readFile(file, 'utf8');
    await sql.begin(async (tx) => {
      try {
        await tx.unsafe(text);
      } catch (err) {
        throw new Error(`${relative(root, file)} failed: ${(err as Error).message}`, { cause: err });
      }
      await tx`insert into supabase_migrations.schema_migrations (version, name, statements)
               values (${version!}, ${name.join('_')}, ${[text]})`;
    });
    result.migrations.push(relative(root, file));
  }
  if (seed) {
    const text = await readFile(join(root, 'supabase/seed.sql'), 'utf8');
    await sql.begin((tx) => tx.unsafe(text));
    result.seeded = true;
  }
  return result;
}
