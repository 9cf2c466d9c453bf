import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import postgres from 'postgres';
import { poolerLoginRefusal } from './faults.ts';
import { unknownMigrations } from './migration-history.ts';
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
 * A database ahead of the code (the code rolled back) is not refused: that is the deploy's decision
 * (assertMigrated's `ahead` is told, for a warning).
 * `notOwner`: the connecting role and the owner of Potentia's schemas, when the role cannot act as
 * the owner (the processes' login role of docs/self-hosting.md): db:migrate refuses that role.
 */
export class PendingMigrationsError extends Error {
  readonly code = 'migrations_pending';
  constructor(readonly pending: string[], readonly notOwner?: { role: string; owner: string }) {
    super(`the database lacks ${pending.length} of this code's migrations (${pending.length > 1 ? `${pending[0]} to ${pending.at(-1)}` : pending[0]})`);
  }
}

/**
 * The connecting role neither acts as the owner of Potentia's schemas nor is a member of
 * potentia_app (sql/security/app_role.sql), the role the migrations grant what the processes need
 * at run time: requests run as the API roles (`set local role`), but the gateway's access checks
 * call `internal` functions and the worker runs Graphile Worker's queue as the connecting role
 * itself: a worker stopped at start on `permission denied for schema graphile_worker`, and an api
 * or gateway answered /ready 200 while every realtime join failed with `permission denied for function`.
 * `bypassrls` false: a member of potentia_app without BYPASSRLS, whose own reads (the gateway's
 * access check, the worker's jobs) row-level security would empty: every private join refused.
 */
export class SchemasNotOwnedError extends Error {
  readonly code = 'schemas_not_owned';
  constructor(readonly role: string, readonly owners: { owner: string; schemas: string[] }[], readonly bypassrls = true) {
    super(bypassrls
      ? `the role ${role} is not a member of potentia_app and cannot act as ${owners.map((o) => `${o.owner}, which owns schema ${o.schemas.join(', ')}`).join('; ')}`
      : `the role ${role} is a member of potentia_app but lacks BYPASSRLS, which its own reads need (as a superuser: alter role ${role} bypassrls)`);
  }
}

/**
 * The connecting role is a member of potentia_app with BYPASSRLS, but potentia_app lacks in this
 * database what sql/security/app_role.sql grants it: the role was made after the database was
 * migrated by an owner who may not make roles (docs/self-hosting.md: the file is then run once by
 * the owner), and that run was forgotten. Without the check the worker stopped on `permission denied
 * for schema graphile_worker` and a gateway's lanes and H1 checks failed call after call (42501)
 * while /ready said ready. `missing`: what the role cannot do, as the grants name it.
 */
export class AppRoleGrantsMissingError extends Error {
  readonly code = 'app_role_grants_missing';
  constructor(readonly role: string, readonly owner: string, readonly missing: string[]) {
    super(`the role ${role} is a member of potentia_app, but potentia_app lacks its grants in this database (${missing.join('; ')}): ` +
      `as ${owner}, the owner of Potentia's schemas, run sql/security/app_role.sql`);
  }
}

/**
 * What a server that answers says about the URL itself (no such database, role or password): not an
 * outage, never healing by itself. PgBouncer's answers of the same are mapped to these codes
 * (src/db/faults.ts, poolerLoginRefusal), so the start's advice is the same with or without a pooler;
 * its other 08P01 refusals (a server down, a full pool) are outages, as before.
 */
const CONFIGURATION_ERRORS = new Set(['3D000', '28P01', '28000']);

/**
 * This code's migrations (supabase/migrations, by file name) the database has not recorded, and the
 * ones it recorded that this code has no file for (`<version>_<name>`), told apart as db:migrate
 * tells them (src/db/migration-history.ts, unknownMigrations): `newer`, a newer release's;
 * `removed`, older than this code's newest, a file deleted or a branch not merged. None when it keeps no record.
 */
async function migrationsCompared(sql: postgres.Sql): Promise<{ pending: string[]; newer: string[]; removed: string[] }> {
  // by the catalog: to_regclass raises on a schema the role may not use
  const [table] = await sql`select exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'supabase_migrations' and c.relname = 'schema_migrations') as present`;
  if (!table!.present) return { pending: [], newer: [], removed: [] }; // schema put there some other way (a restore without it): nothing to compare
  const applied = (await sql`select version from supabase_migrations.schema_migrations order by version`).map((r) => r.version as string);
  const versions = new Set(applied);
  const files = (await listSql(MIGRATIONS_DIR)).map((file) => file.split('/').pop()!.replace(/\.sql$/, ''));
  const known = new Set(files.map((name) => name.split('_')[0]!));
  const unknown = applied.filter((version) => !known.has(version));
  // their names where the role may read them (potentia_app may read version alone: sql/security/app_role.sql),
  // through to_jsonb (a table made by another tool may lack the column)
  const names = unknown.length === 0 ? new Map<string, string>() : await sql<{ version: string; name: string | null }[]>`
    select version, to_jsonb(s) ->> 'name' as name from supabase_migrations.schema_migrations s where version = any(${unknown})`
    .then((rows) => new Map(rows.filter((r) => r.name).map((r) => [r.version, r.name!] as const)), () => new Map<string, string>());
  return {
    pending: files.filter((name) => !versions.has(name.split('_')[0]!)),
    ...unknownMigrations(unknown.map((version) => ({ version, name: names.get(version) ?? null })), files),
  };
}

/** The connecting role and the owner of schema app, when the role cannot act as it (a superuser and the owner can). */
async function notTheOwner(sql: postgres.Sql): Promise<{ role: string; owner: string } | undefined> {
  const [row] = await sql<{ role: string; owner: string; acts: boolean }[]>`
    select current_user::text as role, n.nspowner::regrole::text as owner, pg_has_role(current_user, n.nspowner, 'USAGE') as acts
    from pg_namespace n where n.nspname = 'app'`;
  return row && !row.acts ? { role: row.role, owner: row.owner } : undefined;
}

/**
 * Owners of Potentia's schemas the connecting role cannot act as, unless it is a member of
 * potentia_app with BYPASSRLS (docs/self-hosting.md, "Database"). A superuser or the owner: none.
 */
async function schemasNotOwned(sql: postgres.Sql): Promise<SchemasNotOwnedError | AppRoleGrantsMissingError | undefined> {
  const rows = await sql<{ role: string; owner: string; schemas: string[] }[]>`
    select current_user::text as role, n.nspowner::regrole::text as owner, array_agg(n.nspname::text order by n.nspname) as schemas
    from pg_namespace n
    where n.nspname in ('api', 'app', 'internal', 'graphile_worker') and not pg_has_role(current_user, n.nspowner, 'USAGE')
    group by n.nspowner order by 2`;
  if (rows.length === 0) return undefined;
  const [app] = await sql<{ member: boolean; bypassrls: boolean }[]>`
    select coalesce(pg_has_role(current_user, 'potentia_app', 'USAGE'), false) as member, r.rolbypassrls as bypassrls
    from pg_roles r where r.rolname = current_user and exists (select from pg_roles where rolname = 'potentia_app')`;
  if (!app?.member || !app.bypassrls) {
    return new SchemasNotOwnedError(rows[0]!.role, rows.map(({ owner, schemas }) => ({ owner, schemas })), !app?.member);
  }
  const missing = await appRoleGrantsMissing(sql);
  return missing.length === 0 ? undefined : new AppRoleGrantsMissingError(rows[0]!.role, rows[0]!.owner, missing);
}

/**
 * What sql/security/app_role.sql grants potentia_app that the connecting role cannot do in this
 * database (none when the file ran here): the schemas' USAGE, the internal functions the processes
 * call as themselves, Graphile Worker's tables. Read by OID from the catalogs, which need no USAGE
 * on the schemas (a lookup by name fails on a schema without it). Keep in step with that file.
 */
async function appRoleGrantsMissing(sql: postgres.Sql): Promise<string[]> {
  const [row] = await sql<{ missing: string[] }[]>`
    select coalesce(array_agg(what order by what), '{}') as missing from (
      select 'usage on schema ' || n.nspname as what from pg_namespace n
      where n.nspname in ('app', 'internal', 'realtime', 'graphile_worker') and not has_schema_privilege(n.oid, 'USAGE')
      union all
      select 'execute on function ' || p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'internal' and p.proname in ('can_write_role', 'rebalance_canvas', 'lock_callers')
        and not has_function_privilege(p.oid, 'EXECUTE')
      union all
      select 'select, insert, update, delete on ' || c.oid::regclass::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'graphile_worker' and c.relname in ('_private_jobs', '_private_job_queues', '_private_tasks', '_private_known_crontabs')
        and not has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')) m`;
  return row?.missing ?? [];
}

/**
 * Checked once before a role starts: on a database never migrated every request would fail with
 * `internal` while /ready said ready (its `select 1` answers). One connection, three short reads
 * (prepare off: the URL may be a transaction pooler), closed at once. A database that does not
 * answer is not this check's business: the role starts as it always did, unready until it answers;
 * one that answers that the database, role or password is wrong stops the start, a pooler's answer too,
 * and so does one that lacks some of this code's migrations (a deploy that skipped `db:migrate`),
 * or a connecting role that can act neither as the owner of its schemas nor as potentia_app (nor
 * holds, as a member of potentia_app, what sql/security/app_role.sql grants it in this database).
 * A database with migrations recorded that this code has no file for (a newer release's, or older
 * ones whose file was deleted) starts, and `unknown` is told which, for a warning
 * (src/start-failure.ts, unknownMigrationsWarnings).
 */
export async function assertMigrated(url: string, { unknown }: {
  /**
   * told of the migrations the database recorded that this code has no file for, when there are any
   * (src/db/migration-history.ts, unknownMigrations: `newer` than this code's newest, or `removed`): it starts anyway
   */
  unknown?: (found: { newer: string[]; removed: string[] }) => void;
} = {}): Promise<void> {
  const sql = postgres(url, { max: 1, prepare: false, connect_timeout: 5, onnotice: () => {}, connection: { application_name: 'potentia-start-check' } });
  try {
    // read from the catalog, which needs no USAGE on the schemas: to_regclass('app.blocks') raised
    // `permission denied for schema app` for a role without it, which was taken for an outage, so
    // the role started (the worker then stopped on `permission denied for schema graphile_worker`)
    const row = await sql`select exists (select from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where n.nspname = 'app' and c.relname = 'blocks') and exists (select from pg_namespace where nspname = 'api') as migrated`
      .then(([r]) => r, (err: { code?: string; message?: string }) => {
        if (CONFIGURATION_ERRORS.has(err.code ?? '')) throw err;
        const pooler = poolerLoginRefusal(err);
        if (pooler) throw Object.assign(new Error(err.message), { code: pooler });
        return undefined;
      });
    if (row && !row.migrated) throw new NotMigratedError();
    if (row) {
      // lost since the first answer: an outage, as above
      const { pending, newer, removed } = await migrationsCompared(sql).catch(() => ({ pending: [], newer: [], removed: [] }));
      if (pending.length > 0) throw new PendingMigrationsError(pending, await notTheOwner(sql).catch(() => undefined));
      const notOwned = await schemasNotOwned(sql).catch(() => undefined); // lost since the first answer: an outage, as above
      if (notOwned) throw notOwned;
      if (newer.length + removed.length > 0) unknown?.({ newer, removed });
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}
