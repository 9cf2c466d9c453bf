import postgres from 'postgres';

/** The database answers but holds none of Potentia's schema: `npm run db:migrate` was never run on it. */
export class NotMigratedError extends Error {
  readonly code = 'not_migrated';
  constructor() {
    super('the database has no Potentia schema (no app.blocks, no api functions)');
  }
}

/** What a server that answers says about the URL itself (no such database, role or password): not an outage, never healing by itself. */
const CONFIGURATION_ERRORS = new Set(['3D000', '28P01', '28000']);

/**
 * The same answers from PgBouncer, which sends every refusal as 08P01 (protocol violation) and
 * tells them only by their message: the server's 'database "x" does not exist' passed on
 * (deploy/pgbouncer/pgbouncer.ini's * entry), 'no such database: x' (a [databases] list without
 * it), '<method> authentication failed' (a user or password its auth file refuses). Mapped to
 * the server's code so the start's advice is the same with or without a pooler. Its other 08P01
 * refusals (a server down, a full pool: src/db/faults.ts) are outages, as before.
 */
const POOLER_CONFIGURATION_ERRORS: [RegExp, string][] = [
  [/^database ".*" does not exist$|^no such database: /s, '3D000'],
  [/authentication failed$/, '28P01'],
];

/**
 * Checked once before a role starts: on a database never migrated every request would fail with
 * `internal` while /ready said ready (its `select 1` answers). One connection, one statement
 * (prepare off: the URL may be a transaction pooler), closed at once. A database that does not
 * answer is not this check's business: the role starts as it always did, unready until it answers;
 * one that answers that the database, role or password is wrong stops the start, a pooler's answer too.
 */
export async function assertMigrated(url: string): Promise<void> {
  const sql = postgres(url, { max: 1, prepare: false, connect_timeout: 5, onnotice: () => {}, connection: { application_name: 'potentia-start-check' } });
  try {
    const row = await sql`select to_regclass('app.blocks') is not null and to_regnamespace('api') is not null as migrated`
      .then(([r]) => r, (err: { code?: string; message?: string }) => {
        if (CONFIGURATION_ERRORS.has(err.code ?? '')) throw err;
        const pooler = err.code === '08P01' ? POOLER_CONFIGURATION_ERRORS.find(([message]) => message.test(err.message ?? '')) : undefined;
        if (pooler) throw Object.assign(new Error(err.message), { code: pooler[1] });
        return undefined;
      });
    if (row && !row.migrated) throw new NotMigratedError();
  } finally {
    await sql.end({ timeout: 5 });
  }
}
