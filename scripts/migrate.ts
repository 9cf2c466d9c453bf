// npm run db:migrate [-- --database-url URL] [--strict]
// Applies compat schemas and supabase/migrations (which hold every function, policy and grant),
// then Graphile Worker's own installer (a no-op when the migrations installed its current schema).
// When sql/ has changes no migration holds, it applies sql/ on top and says to run
// `npm run db:migration -- <name>`; --strict (deploys, CI) refuses instead (src/db/migrate.ts).
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import postgres from 'postgres';
import { runMigrations } from 'graphile-worker';
import { loadConfigOrExit } from '../src/config.ts';
import { connectionUrls } from '../src/db/pooling.ts';
import { migrate, MigrationChangedError, SourcesDriftError } from '../src/db/migrate.ts';

const { values } = parseCommandLine({ options: { 'database-url': { type: 'string' }, quiet: { type: 'boolean' }, strict: { type: 'boolean' } } },
  `usage: npm run db:migrate [-- [--database-url URL] [--strict] [--quiet]]   (README, "Applying migrations to an existing database")
  Applies the compat schemas (plain Postgres), then supabase/migrations not yet applied, then Graphile Worker's schema.
  --database-url URL  the database (default: DIRECT_DATABASE_URL, else DATABASE_URL)
  --strict            deploys and CI: refuse, changing nothing, when sql/ has changes no migration holds
                      (without it they are applied on top, with a warning)
  --quiet             no summary line when nothing was applied`);
// migrations take a direct connection (DIRECT_DATABASE_URL when DATABASE_URL is a pooler), as on Supabase
const url = values['database-url'] ?? connectionUrls(loadConfigOrExit()).direct;
const root = fileURLToPath(new URL('..', import.meta.url));
// a step's WARNING is for whoever runs this (sql/core/session_defaults.sql: a setting only the
// database's owner may make, and the command to run); NOTICEs ("already exists, skipping") are not
const sql = postgres(url, { max: 1, onnotice: (n) => {
  if (n.severity === 'WARNING') console.warn(`warning: ${n.message}${n.hint ? `\n  ${n.hint}` : ''}`);
} });
const log = (line: string) => console.log(`  applied  ${line}`);
try {
  const started = Date.now();
  const result = await migrate(sql, { root, log, strict: values.strict });
  if (result.drift.length > 0) {
    console.warn(`warning: sql/ has changes no migration holds:\n${result.drift.map((l) => `  ${l}\n`).join('')}` +
      (result.sources ? '  sql/ was applied on top of the migrations for development.\n' : '') +
      '  Run `npm run db:migration -- <name>` and commit the migration with sql/ (npm test fails until then).');
  }
  await runMigrations({ connectionString: url, logger: undefined });
  const changed = result.compat.length + result.migrations.length + (result.sources ? 1 : 0);
  if (!values.quiet || changed > 0) {
    console.log(`migrate ${new URL(url).pathname.slice(1)}: ${changed === 0 ? 'up to date' : `${changed} step(s) applied`} (${Date.now() - started} ms)`);
  }
} catch (err) {
  if (err instanceof MigrationChangedError || err instanceof SourcesDriftError) console.error(`migrate refused: ${err.message}`);
  // each step is its own transaction: the failed one left nothing, the ones before it are kept
  else console.error(`migrate failed: ${(err as Error).message}\n  ${nextStep(err as Error & { code?: string })}`);
  process.exitCode = 1;
} finally {
  await sql.end();
}

/** What to do after a failure: reaching the database is a setup problem; a step's failure is rolled back whole. */
function nextStep(err: Error & { code?: string }): string {
  const target = new URL(url);
  const port = target.port || '5432';
  if (err.code === '3D000') {
    return `No step ran: create the database first (createdb -h ${target.hostname} -p ${port} -U ${decodeURIComponent(target.username) || 'postgres'} ${target.pathname.slice(1)}), or point --database-url / DATABASE_URL at an existing one.`;
  }
  if (err.code === 'ECONNREFUSED' || err.code === 'ENOTFOUND' || err.code === '28P01' || err.code === '28000') {
    return `No step ran: could not use the database at ${target.hostname}:${port}. Is PostgreSQL running there, and are DATABASE_URL (or --database-url) and its credentials right? npm run setup starts a local PostgreSQL.`;
  }
  if (err.code === '42501' || /must be superuser|permission denied to create/.test(err.message)) {
    // a role of its own (not a superuser) lacks what a superuser must set up once
    return `The failed step was rolled back whole and the steps before it are kept. The role ${decodeURIComponent(target.username) || '(of DATABASE_URL)'} may not do this: `
      + 'run the superuser\'s one-time setup in docs/self-hosting.md, "Database" (the API roles, their grant, the extensions), then run the same command again.';
  }
  return 'The failed step was rolled back whole and the steps before it are kept: fix the cause (a lost connection needs nothing), '
    + 'then run the same command again; what is applied is skipped.';
}
