import { withoutPassword } from './url-redaction.ts';

/**
 * What to do when a role cannot start because of its database: the driver's message alone
 * ("database "x" does not exist", "schema "internal" does not exist", "connect ECONNREFUSED …")
 * names neither the setting nor the next step. Anything else is answered as it is.
 */
export function startFailureAdvice(err: { code?: string; message: string; notOwner?: { role: string; owner: string } }, urls: { databaseUrl: string; directDatabaseUrl?: string }): string {
  const where = `DATABASE_URL=${withoutPassword(urls.databaseUrl)}` + (urls.directDatabaseUrl ? `, DIRECT_DATABASE_URL=${withoutPassword(urls.directDatabaseUrl)}` : '');
  switch (err.code) {
    case 'ECONNREFUSED': case 'ENOTFOUND': case 'EHOSTUNREACH': case 'ETIMEDOUT': case 'EAI_AGAIN': case 'CONNECT_TIMEOUT':
      return `the database server does not answer (${where}): start PostgreSQL or point the URL at one that runs (npm start's setup starts a local one)`;
    case '3D000': // invalid_catalog_name
      return `the database does not exist (${where}): create it (npm start's setup does, or createdb), then npm run db:migrate`;
    case 'not_migrated': case '3F000': case '42P01': case '42883': // src/db/migrated.ts, or a schema, table or function missing
      return `the database is not migrated (${where}): run npm run db:migrate (npm start does), with --database-url for another database`;
    case 'migrations_pending': // src/db/migrated.ts: the code is ahead of the database
      // db:migrate against the processes' login role (the shipped env file's potentia_runtime) is
      // refused: it cannot act as the owner. The owner's URL (OWNER_URL in docs/self-hosting.md) is
      // not in the env file, so it is named, not shown
      if (err.notOwner) {
        return `the database is behind this code (${where}): as ${err.notOwner.owner}, the owner of Potentia's schemas (${err.notOwner.role}, ` +
          'which these URLs name, cannot migrate), run npm run db:migrate -- --database-url "$OWNER_URL", OWNER_URL being the owner\'s ' +
          'direct URL (or supabase db push), then start again (docs/self-hosting.md, "Installing on a host")';
      }
      return `the database is behind this code (${where}): run npm run db:migrate (or supabase db push) against it, then start again`;
    case 'schemas_not_owned': // src/db/migrated.ts: neither the schemas' owner (a superuser is) nor a member of potentia_app with BYPASSRLS
      return `the processes connect as a login role in potentia_app, with REPLICATION and BYPASSRLS, or as the owner of Potentia's schemas (${where}): ` +
        'as a superuser, grant potentia_app to this role and give it those attributes (docs/self-hosting.md, "Database"), or put the owner in the URL';
    case 'app_role_grants_missing': // src/db/migrated.ts: a member of potentia_app, whose grants this database lacks
      // the owner's URL (OWNER_URL in docs/self-hosting.md), not DIRECT_DATABASE_URL: that names the
      // processes' login role (the shipped env file's potentia_runtime), the role lacking the grants
      return `potentia_app's grants are missing in this database (${where}): as the owner of Potentia's schemas, ` +
        'run psql "$OWNER_URL" -f sql/security/app_role.sql once, OWNER_URL being the owner\'s direct URL ' +
        '(every later migration applies them again; docs/self-hosting.md, "Database")';
    case '28P01': case '28000': // invalid_password, invalid_authorization_specification
      return `the database refused the role or password (${where}): check the user and password in the URL`;
    default:
      return '';
  }
}

/**
 * The warnings of a role starting on a database with migrations recorded that this code has no file
 * for (src/db/migrated.ts), as `npm run db:migrate` tells them apart (src/db/migration-history.ts,
 * unknownMigrations): `newer`, a newer release's (the code rolled back) or another branch's;
 * `removed`, older than this code's newest, a file deleted from supabase/migrations or a branch not
 * merged. Not refused: whether this code runs on that schema is the deploy's decision
 * (docs/self-hosting.md), but said, as `npm run db:migrate -- --check` names them. One line each kind.
 */
export function unknownMigrationsWarnings({ newer, removed }: { newer: string[]; removed: string[] }, urls: { databaseUrl: string }): string[] {
  const shown = (list: string[]) => (list.length > 3 ? `${list.slice(0, 3).join(', ')} and ${list.length - 3} more` : list.join(', '));
  const database = `the database (DATABASE_URL=${withoutPassword(urls.databaseUrl)})`;
  return [
    ...(removed.length === 0 ? [] : [`warning: ${database} has ${removed.length} applied migration(s) older than this code's newest that `
      + `supabase/migrations has no file for (${shown(removed)}): deleted, or from a branch this code does not have. Starting anyway: `
      + 'restore the file (git log --diff-filter=D --stat -- supabase/migrations shows a deletion) or merge the branch that has it, '
      + 'then deploy that code (npm run db:migrate -- --check lists them).']),
    ...(newer.length === 0 ? [] : [`warning: ${database} has ${newer.length} migration(s) this code does not have `
      + `(${shown(newer)}): a newer release or another branch migrated it. Starting anyway: a rollback to the previous release is meant to `
      + 'run on its schema (docs/self-hosting.md, "Upgrades"); otherwise deploy the code that has them (npm run db:migrate -- --check lists them).']),
  ];
}

/**
 * What to do when a role cannot listen on HOST:PORT; undefined for any other failure. A HOST that
 * does not resolve failed with `getaddrinfo ENOTFOUND <host>`, which startFailureAdvice, by its
 * code, answered with advice about the database server.
 */
export function listenFailureAdvice(err: { code?: string; syscall?: string; hostname?: string; address?: string }, at: { host: string; port: number }): string | undefined {
  if (err.code === 'EADDRINUSE') return `port ${at.port} on ${at.host} is in use (another npm start?): stop that process or set PORT to a free port`;
  if ((err.syscall === 'getaddrinfo' && err.hostname === at.host) || (err.syscall === 'listen' && err.address === at.host)) {
    return `HOST=${at.host} is not an address of this machine (${err.code}): set HOST to one of its addresses or host names, `
      + '0.0.0.0 (every IPv4 address) or :: (every address)';
  }
  return undefined;
}
