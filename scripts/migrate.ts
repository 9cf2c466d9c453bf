// npm run db:migrate [-- --database-url URL]
// Applies compat schemas, supabase/migrations and sql/ sources, then Graphile Worker's schema.
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import postgres from 'postgres';
import { runMigrations } from 'graphile-worker';
import { loadConfig } from '../src/config.ts';
import { migrate, MigrationChangedError } from '../src/db/migrate.ts';

const { values } = parseArgs({ options: { 'database-url': { type: 'string' }, quiet: { type: 'boolean' } } });
const url = values['database-url'] ?? loadConfig().databaseUrl;
const root = fileURLToPath(new URL('..', import.meta.url));
const sql = postgres(url, { max: 1, onnotice: () => {} });
const log = (line: string) => console.log(`  applied  ${line}`);
try {
  const started = Date.now();
  const result = await migrate(sql, { root, log });
  await runMigrations({ connectionString: url, logger: undefined });
  const changed = result.compat.length + result.migrations.length + (result.sources ? 1 : 0);
  if (!values.quiet || changed > 0) {
    console.log(`migrate ${new URL(url).pathname.slice(1)}: ${changed === 0 ? 'up to date' : `${changed} step(s) applied`} (${Date.now() - started} ms)`);
  }
} catch (err) {
  if (err instanceof MigrationChangedError) console.error(`migrate refused: ${err.message}`);
  else console.error(`migrate failed: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}
