// npm run db:migrate [-- --database-url URL] [--strict] [--lock-wait SECONDS] [--check] [--accept-drift]
// Applies compat schemas and supabase/migrations (which hold every function, policy and grant),
// then Graphile Worker's own installer (a no-op when the migrations installed its current schema).
// When sql/ has changes no migration holds, it applies sql/ on top and says to run
// `npm run db:migration -- <name>`; --strict (deploys, CI) refuses instead (src/db/migrate.ts).
// It warns of objects changed outside migrations since the last run (src/db/schema-drift.ts), and
// of applied migrations this checkout has no file for (a newer release's), and goes on; it refuses an
// applied migration whose file changed or was renamed to another version, and a migration copied under another version;
// --check only reports what is pending, applied but unknown here, or drifted.
import { fileURLToPath } from 'node:url';
import { decimalNumber, parseCommandLine } from './lib/command-line.ts';
import postgres from 'postgres';
import { runMigrations } from 'graphile-worker';
import { loadConfigOrExit } from '../src/config.ts';
import { couldNotConnect, isConnectionFailure } from '../src/db/faults.ts';
import { connectionUrls } from '../src/db/pooling.ts';
import { migrate, MigrationChangedError, MigrationCopiedError, MigrationRenamedError, migrationStatus, SourcesDriftError } from '../src/db/migrate.ts';
import { PrivilegesError } from '../src/db/migrate-privileges.ts';
import { ReadOnlyTargetError } from '../src/db/migrate-writable.ts';
import { DEFAULT_LOCK_WAIT_MS, LockWaitError, StepConnectionLostError } from '../src/db/migration-step.ts';

const usage = `usage: npm run db:migrate [-- [--database-url URL] [--strict] [--lock-wait SECONDS] [--accept-drift] [--quiet] | --check]
  (README, "Applying migrations to an existing database")
  Applies the compat schemas (plain Postgres), then supabase/migrations not yet applied, then Graphile Worker's schema.
  --database-url URL   the database (default: DIRECT_DATABASE_URL, else DATABASE_URL)
  --strict             deploys and CI: refuse, changing nothing, when sql/ has changes no migration holds
                       (without it they are applied on top, with a warning)
  --lock-wait SECONDS  how long a step may keep trying for locks other sessions hold (default ${DEFAULT_LOCK_WAIT_MS / 1000});
                       in tries of 0.1 s growing to 2 s, so the traffic queued behind it is never held longer
  --accept-drift       take the schema as it is, changes made outside migrations included (they are warned of until then)
  --check              change nothing: list the migrations to apply, the applied ones this checkout lacks (a newer
                       release's or another branch's) and what changed outside migrations; exit 1 if any
  --quiet              no summary line when nothing was applied`;
const { values, number } = parseCommandLine({ options: { 'database-url': { type: 'string' }, quiet: { type: 'boolean' }, strict: { type: 'boolean' },
  'lock-wait': { type: 'string' }, check: { type: 'boolean' }, 'accept-drift': { type: 'boolean' } } }, usage);
// seconds, as env numbers are written (0x10 and Infinity were taken: Infinity waited for ever)
const lockWait = number('lock-wait', decimalNumber(0), DEFAULT_LOCK_WAIT_MS / 1000);
if (values.check && values['accept-drift']) {
  console.error(`--check changes nothing: it takes no --accept-drift\n${usage}`);
  process.exit(2);
}
// migrations take a direct connection (DIRECT_DATABASE_URL when DATABASE_URL is a pooler), as on Supabase
const url = values['database-url'] ?? connectionUrls(loadConfigOrExit()).direct;
const root = fileURLToPath(new URL('..', import.meta.url));
// the steps run one after another in one session; a second connection looks at who holds the
// locks a step waits for (src/db/migration-step.ts). The names make a run findable in pg_stat_activity.
// A step's WARNING is for whoever runs this (sql/core/session_defaults.sql: a setting only the
// database's owner may make, and the command to run); NOTICEs ("already exists, skipping") are not
const sql = postgres(url, { max: 1, connection: { application_name: 'potentia-migrate' }, onnotice: (n) => {
  if (n.severity === 'WARNING') console.warn(`warning: ${n.message}${n.hint ? `\n  ${n.hint}` : ''}`);
} });
const watch = postgres(url, { max: 1, connection: { application_name: 'potentia-migrate-watch' }, onnotice: () => {} });
// what was applied, and what a step waited for or retried
const log = (line: string) => console.log(`  ${line}`);
const database = new URL(url).pathname.slice(1);
const list = (lines: string[], most = 20) =>
  lines.slice(0, most).map((l) => `    ${l}\n`).join('') + (lines.length > most ? `    … and ${lines.length - most} more\n` : '');
/**
 * Applied migrations this checkout has no file for (src/db/migration-history.ts, unknownMigrations), as
 * `supabase migration list` shows remote-only ones: a newer release or another branch migrated the
 * database. Named by --check (a finding: exit 1) and warned of by a run, which goes on: a role's
 * start does not refuse such a database either (src/db/migrated.ts), a rollback being the deploy's decision.
 */
function aheadOf(unknown: string[]): string {
  return `${unknown.length} applied migration(s) this checkout does not have (a newer release or another branch migrated the database):\n${list(unknown)}`;
}
/** Applied migrations older than the checkout's newest, with no file here (src/db/migration-history.ts, unknownMigrations). */
function removedFrom(removed: string[]): string {
  return `${removed.length} applied migration(s) older than this checkout's newest have no file in supabase/migrations `
    + `(deleted, or from a branch this checkout does not have):\n${list(removed)}`;
}
const REMOVED_ADVICE = 'What to do: restore the file (git log --diff-filter=D --stat -- supabase/migrations shows a deletion) or merge the branch '
  + 'that has it: an applied migration\'s file is never deleted, its record says what the database holds.';
const AHEAD_ADVICE = 'What to do: run the release or branch that has them (git pull, git checkout), then run this again. '
  + 'Rolling back to the previous release on purpose needs nothing: migrations are never undone, and a release\'s migrations work '
  + 'under the previous release\'s code (docs/self-hosting.md, "Upgrades"). If their changes were undone by hand, delete their '
  + 'records (supabase migration repair --status reverted <version>, or delete from supabase_migrations.schema_migrations).';

try {
  if (values.check) {
    process.exitCode = await check();
  } else {
    await run();
  }
} catch (err) {
  if (err instanceof MigrationChangedError || err instanceof MigrationRenamedError || err instanceof MigrationCopiedError || err instanceof SourcesDriftError
    || err instanceof PrivilegesError || err instanceof ReadOnlyTargetError) console.error(`migrate refused: ${err.message}`);
  // these say what happened to the step in flight and what to do
  else if (err instanceof LockWaitError || err instanceof StepConnectionLostError) console.error(`migrate failed: ${err.message}`);
  // each step is its own transaction: the failed one left nothing, the ones before it are kept
  else console.error(`migrate failed: ${(err as Error).message}\n  ${nextStep(err as Error & { code?: string })}`);
  process.exitCode = 1;
} finally {
  await Promise.all([sql.end(), watch.end()]);
}

async function run(): Promise<void> {
  const started = Date.now();
  const result = await migrate(sql, { root, log, strict: values.strict, lockWaitMs: lockWait * 1000, watch, acceptDrift: values['accept-drift'] });
  if (result.schemaDrift.length > 0) {
    console.warn(`warning: ${result.schemaDrift.length} object(s) of the schema changed outside migrations since the last db:migrate:\n` +
      list(result.schemaDrift) +
      '  A migration that replaces one of them drops the change. Put a change you keep in sql/ and a migration ' +
      '(npm run db:migration -- <name>), or undo it; ' +
      (values['accept-drift'] ? 'it was taken as the schema as it is (--accept-drift).' : 'npm run db:migrate -- --accept-drift takes the schema as it is.'));
  }
  if (result.drift.length > 0) {
    console.warn(`warning: sql/ has changes no migration holds:\n${result.drift.map((l) => `  ${l}\n`).join('')}` +
      (result.sources ? '  sql/ was applied on top of the migrations for development.\n' : '') +
      '  Run `npm run db:migration -- <name>` and commit the migration with sql/ (npm test fails until then).');
  }
  if (result.removed.length > 0) console.warn(`warning: ${removedFrom(result.removed)}  They stay applied. ${REMOVED_ADVICE}`);
  if (result.unknown.length > 0) {
    console.warn(`warning: ${aheadOf(result.unknown)}` +
      '  They stay applied, and this run applied only the migrations this checkout has. ' + AHEAD_ADVICE);
  }
  await runMigrations({ connectionString: url, logger: undefined });
  const changed = result.compat.length + result.migrations.length + (result.sources ? 1 : 0);
  if (!values.quiet || changed > 0) {
    console.log(`migrate ${database}: ${changed === 0 ? 'up to date' : `${changed} step(s) applied`} (${Date.now() - started} ms)`);
  }
}

/** --check: what a run would apply and what changed outside migrations; 1 when anything is. */
async function check(): Promise<number> {
  const status = await migrationStatus(sql, root);
  const findings = [
    status.pending.length > 0 ? `${status.pending.length} migration(s) to apply:\n${list(status.pending)}` : '',
    status.changed.length > 0 ? `${status.changed.length} applied migration(s) whose file has changed since (a run refuses them):\n${list(status.changed)}` : '',
    status.renamed.length > 0 ? `${status.renamed.length} migration file(s) renamed after they were applied (a run refuses them: give each its old name back):\n${list(status.renamed)}` : '',
    status.copied.length > 0 ? `${status.copied.length} migration file(s) with the same text as another migration (a run refuses them: delete each copy; `
      + `a migration meant to run again needs a text of its own):\n${list(status.copied)}` : '',
    status.removed.length > 0 ? `${removedFrom(status.removed)}  ${REMOVED_ADVICE}` : '',
    status.unknown.length > 0 ? `${aheadOf(status.unknown)}  ${AHEAD_ADVICE}` : '',
    status.drift.length > 0 ? `sql/ has changes no migration holds (npm run db:migration -- <name>):\n${list(status.drift)}` : '',
    (status.schemaDrift ?? []).length > 0
      ? `${status.schemaDrift!.length} object(s) changed outside migrations since the last db:migrate:\n${list(status.schemaDrift!)}` : '',
  ].filter((f) => f !== '');
  for (const f of findings) console.log(`  ${f.trimEnd()}`);
  if (status.schemaNote !== null) console.log(`  ${status.schemaNote}: changes made by hand cannot be told`);
  console.log(`check ${database}: ${findings.length === 0 ? 'up to date, nothing changed outside migrations' : `${findings.length} finding(s)`}`);
  return findings.length === 0 ? 0 : 1;
}

/** What to do after a failure: reaching the database is a setup problem; a step's failure is rolled back whole. */
function nextStep(err: Error & { code?: string }): string {
  const target = new URL(url);
  const port = target.port || '5432';
  if (err.code === '3D000') {
    return `No step ran: create the database first (createdb -h ${target.hostname} -p ${port} -U ${decodeURIComponent(target.username) || 'postgres'} ${target.pathname.slice(1)}), or point --database-url / DATABASE_URL at an existing one.`;
  }
  // no session at all: refused, unreachable, a login refused by PostgreSQL or by a pooler in front of it (couldNotConnect)
  if (couldNotConnect(err)) {
    return `No step ran: could not use the database at ${target.hostname}:${port}. Is PostgreSQL running there, and are DATABASE_URL (or --database-url) and its credentials right? npm run setup starts a local PostgreSQL.`;
  }
  // a connection lost under a query outside the steps (the checks before them, the reads between
  // them): a step's own loss is a StepConnectionLostError
  if (isConnectionFailure(err)) {
    return values.check ? '--check changed nothing: the connection to the database was lost; run it again.'
      : 'The connection to the database was lost outside any step, while nothing was being applied: run the same command again; what is applied is skipped.';
  }
  // 26000 invalid_sql_statement_name: a statement prepared in one transaction was missing in the
  // next, the mark of a transaction pooler (PgBouncer before 1.21, Supavisor) handing each
  // transaction another server connection; running it again fails the same way
  if (err.code === '26000') {
    return `${target.hostname}:${port} is a transaction pooler (PgBouncer, Supavisor), which passes each transaction to another server connection: `
      + 'the failed step was rolled back and the steps before it are kept, but no run gets through it. Migrations need a session on the database '
      + 'itself: set DIRECT_DATABASE_URL (or --database-url) to PostgreSQL itself (README, "Connection pooling"; on Supabase the direct connection, '
      + 'port 5432), then run it again.';
  }
  // --check only reads: nothing was rolled back, and a role refused there is not the one db:migrate runs as
  if (values.check) {
    return err.code === '42501'
      ? `--check changed nothing. The role ${decodeURIComponent(target.username) || '(of DATABASE_URL)'} may not read what db:migrate recorded: `
        + 'run it as the role db:migrate runs as, the owner of Potentia\'s schemas or a superuser (--database-url "$OWNER_URL": docs/self-hosting.md, "Upgrades").'
      : '--check changed nothing: fix the cause, then run it again.';
  }
  if (err.code === '42501' || /must be superuser|permission denied to create/.test(err.message)) {
    // a role of its own (not a superuser) lacks what a superuser must set up once
    return `The failed step was rolled back whole and the steps before it are kept. The role ${decodeURIComponent(target.username) || '(of DATABASE_URL)'} may not do this: `
      + 'run the superuser\'s one-time setup in docs/self-hosting.md, "Database" (the API roles, their grant, the extensions), then run the same command again.';
  }
  return 'The failed step was rolled back whole and the steps before it are kept: fix the cause (a lost connection needs nothing), '
    + 'then run the same command again; what is applied is skipped.';
}
