// tsx scripts/db-push.ts --database-url URL [--seed]
// Builds an empty database the way `supabase db push` (+ seed, as `supabase db reset`) would:
// sql/compat/ for the platform's schemas, then supabase/migrations/*.sql alone — never sql/
// (src/db/push.ts). npm test runs pgTAP on such a database, proving the migrations self-contained.
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import postgres from 'postgres';
import { pushLikeSupabase } from '../src/db/push.ts';

const { values } = parseCommandLine({ options: { 'database-url': { type: 'string' }, seed: { type: 'boolean' } } });
if (!values['database-url']) {
  console.error('usage: tsx scripts/db-push.ts --database-url URL [--seed]   (URL: an empty database)');
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const sql = postgres(values['database-url'], { max: 1, onnotice: () => {} });
try {
  const started = Date.now();
  const result = await pushLikeSupabase(sql, root, { seed: values.seed });
  console.log(`db push ${new URL(values['database-url']).pathname.slice(1)}: compat ${result.compat.join(', ')}, ` +
    `${result.migrations.length} migrations${result.seeded ? ', seed.sql' : ''} (${Date.now() - started} ms)`);
} catch (err) {
  console.error(`db push failed: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
