import { readdirSync } from 'node:fs';
import postgres from 'postgres';
import { withoutPassword as shown } from '../../src/url-redaction.ts';

const MIGRATIONS_DIR = new URL('../../supabase/migrations/', import.meta.url);

/**
 * Why the tests cannot use the database at `url`, in words that say what to do, or null when it is
 * migrated as far as this checkout's supabase/migrations. A vitest run against a database nobody
 * migrated (a TEST_DATABASE_URL of one's own, or potentia_test before the first npm test) failed
 * every test with a raw `relation "auth.users" does not exist`.
 */
export async function testDatabaseProblem(url: string, env: NodeJS.ProcessEnv = process.env): Promise<string | null> {
  // the command as it can be pasted: the variable itself when it is set (a URL shown without its password would not connect)
  const target = env.TEST_DATABASE_URL ? '"$TEST_DATABASE_URL"' : `'${shown(url)}'`;
  const migrate = `npm run db:migrate -- --database-url ${target} (npm test does it for potentia_test; README, "Other commands")`;
  const sql = postgres(url, { max: 1, connect_timeout: 5, idle_timeout: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ table: string | null }[]>`select to_regclass('supabase_migrations.schema_migrations')::text as table`;
    if (row!.table === null) return `TEST_DATABASE_URL ${shown(url)} is not migrated (no supabase_migrations.schema_migrations): run ${migrate}, then the tests again`;
    const applied = new Set((await sql<{ version: string }[]>`select version from supabase_migrations.schema_migrations`).map((r) => r.version));
    const missing = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d+_.+\.sql$/.test(f)).sort()
      .filter((f) => !applied.has(f.slice(0, f.indexOf('_'))));
    if (missing.length > 0) {
      return `TEST_DATABASE_URL ${shown(url)} lacks ${missing.length} migration(s) of this checkout (first: ${missing[0]}): run ${migrate}, then the tests again`;
    }
    return null;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === '3D000') return `TEST_DATABASE_URL ${shown(url)}: the database does not exist: create it (createdb), then run ${migrate}`;
    return `TEST_DATABASE_URL ${shown(url)} cannot be used (${e.code ?? ''} ${e.message ?? String(err)}): is PostgreSQL running there? Then run ${migrate}`;
  } finally {
    await sql.end({ timeout: 1 }).catch(() => {});
  }
}
