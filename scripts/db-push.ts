// tsx scripts/db-push.ts --database-url URL [--seed]
// Builds an empty database the way `supabase db push` (+ seed, as `supabase db reset`) would:
// sql/compat/ for the platform's schemas, then supabase/migrations/*.sql alone — never sql/
// (src/db/push.ts). npm test runs pgTAP on such a database, proving the migrations self-contained.
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import postgres from 'postgres';
import { pushLikeSupabase } from '../src/db/push.ts';

// pgTAP's one-file run: 000_helpers.test.sql makes the schema `tests` every other file calls (as
// `supabase test db` runs it first); a file run alone on a pushed database fails on
// `schema "tests" does not exist`, which says nothing of that
const PGTAP = 'pg_prove --dbname URL supabase/tests/000_helpers.test.sql supabase/tests/<file>.test.sql';
const USAGE = `usage: npx tsx scripts/db-push.ts --database-url URL [--seed]
  Builds URL, an empty database, as supabase db push builds one: sql/compat/ (plain Postgres's stand-in
  for Supabase's auth, realtime and API roles), then supabase/migrations/*.sql, never sql/.
  --seed   then supabase/seed.sql, as supabase db reset does (the demo user and canvas)
  Then the pgTAP files (README, "Migrations"), one file: ${PGTAP}`;
const { values } = parseCommandLine({ options: { 'database-url': { type: 'string' }, seed: { type: 'boolean' } } }, USAGE);
if (!values['database-url']) {
  console.error(USAGE);
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const sql = postgres(values['database-url'], { max: 1, onnotice: () => {} });
try {
  const started = Date.now();
  const result = await pushLikeSupabase(sql, root, { seed: values.seed });
  console.log(`db push ${new URL(values['database-url']).pathname.slice(1)}: compat ${result.compat.join(', ')}, ` +
    `${result.migrations.length} migrations${result.seeded ? ', seed.sql' : ''} (${Date.now() - started} ms)`);
  console.log(`pgTAP, one file (URL: this --database-url): ${PGTAP}`);
} catch (err) {
  console.error(`db push failed: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
