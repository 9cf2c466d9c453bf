import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { listSql } from './sources.ts';

const MIGRATIONS_DIR = join(dirname(fileURLToPath(import.meta.url)), '../../supabase/migrations');

/** The database answers but holds none of Potentia's schema: `npm run db:migrate` was never run on it. */
export class NotMigratedError extends Error {
  readonly code = 'not_migrated';
  constructor() {
    super('the database has no Potentia schema (no app.blocks, no api functions)');
  }
}

/**
 * The database has the schema but not every migration this code ships: the functions and columns
 * the newer ones add would fail request by request (`internal`, 42883) while /ready said ready.
 * A database ahead of the code (the code rolled back) is not refused: that is the deploy's decision.
 */
export class PendingMigrationsError extends Error {
  readonly code = 'migrations_pending';
  constructor(readonly pending: string[]) {
    super(`the database lacks ${pending.length} of this code's migrations (${pending.length > 1 ? `${pending[0]} to ${pending.at(-1)}` : pending[0]})`);
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

/** This code's migrations (supabase/migrations, by file name) the database has not recorded; none when it keeps no record. */
async function pendingMigrations(sql: postgres.Sql): Promise<string[]> {
  const [table] = await sql`select to_regclass('supabase_migrations.schema_migrations') is not null as present`;
  if (!table!.present) return []; // schema put there some other way (a restore without it): nothing to compare
  const applied = new Set((await sql`select version from supabase_migrations.schema_migrations`).map((r) => r.version as string));
  return (await listSql(MIGRATIONS_DIR))
    .map((file) => file.split('/').pop()!.replace(/\.sql$/, ''))
    .filter((name) => !applied.has(name.split('_')[0]!));
}

/**
 * Checked once before a role starts: on a database never migrated every request would fail with
 * `internal` while /ready said ready (its `select 1` answers). One connection, three short reads
 * (prepare off: the URL may be a transaction pooler), closed at once. A database that does not
 * answer is not this check's business: the role starts as it always did, unready until it answers;
 * one that answers that the database, role or password is wrong stops the start, a pooler's answer too,
 * and so does one that lacks some of this code's migrations (a deploy that skipped `db:migrate`).
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
    if (row) {
      const pending = await pendingMigrations(sql).catch(() => []); // lost since the first answer: an outage, as above
      if (pending.length > 0) throw new PendingMigrationsError(pending);
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}
