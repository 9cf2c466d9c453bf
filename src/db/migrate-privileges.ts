import type { Sql } from 'postgres';

/**
 * What the role running `npm run db:migrate` lacks, checked before its first step, so that a run
 * that cannot finish changes nothing and says what to grant. Before, such a run applied what it
 * could (the compat schemas) and stopped at the first statement it was refused, with Postgres's
 * words for it (`permission denied for database …`, `must be owner of table schema_migrations`)
 * and a pointer to the one-time setup of a new database, which is not what an existing one needs.
 *
 * A superuser lacks nothing. Anyone else needs:
 * - to act as the owner of Potentia's schemas and of the migrations' tables (migrations replace
 *   and alter what is in them, which only the owner may): a database migrated by `postgres` and
 *   then by the application's own role fails here;
 * - CREATE on the database while a schema (or pgcrypto) is still to be made;
 * - the vector extension installed and the API roles made by a superuser (vector is not trusted,
 *   and service_role has BYPASSRLS). On Supabase, supautils lets `postgres` create vector.
 */
export class PrivilegesError extends Error {
  constructor(readonly role: string, readonly missing: string[]) {
    super(`the role ${role} lacks what these migrations need, so nothing was changed:\n${missing.map((m) => `  - ${m}\n`).join('')}` +
      '  Then run the same command again (docs/self-hosting.md, "Database").');
  }
}

/** Schemas the migrations make and change (auth and realtime only where sql/compat made them). */
const SCHEMAS = ['app', 'api', 'internal', 'graphile_worker', 'supabase_migrations', 'extensions'];
const COMPAT_SCHEMAS = ['auth', 'realtime'];
const API_ROLES = ['anon', 'authenticated', 'service_role'];

/** A name as SQL writes it: bare when it may be, else double-quoted. */
const ident = (name: string) => (/^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`);

export async function checkPrivileges(sql: Sql, compatMark: string): Promise<void> {
  const [me] = await sql<{ role: string; superuser: boolean; db: string; dbOwner: string; canCreate: boolean; supautils: string | null; appRole: boolean }[]>`
    select current_user as role, r.rolsuper as superuser, current_database() as db, pg_get_userbyid(d.datdba) as "dbOwner",
           has_database_privilege(current_database(), 'CREATE') as "canCreate",
           current_setting('supautils.privileged_extensions', true) as supautils,
           coalesce((select pg_has_role(current_user, a.oid, 'MEMBER') from pg_roles a where a.rolname = 'potentia_app'), false) as "appRole"
    from pg_roles r, pg_database d where r.rolname = current_user and d.datname = current_database()`;
  if (!me || me.superuser) return;
  const missing: string[] = [];
  const role = ident(me.role);

  const owned = await sql<{ name: string; owner: string; canAct: boolean; ownerSuperuser: boolean }[]>`
    select 'schema ' || n.nspname as name, o.rolname as owner, pg_has_role(n.nspowner, 'USAGE') as "canAct", o.rolsuper as "ownerSuperuser"
    from pg_namespace n join pg_roles o on o.oid = n.nspowner
    where n.nspname = any(${SCHEMAS.filter((s) => s !== 'extensions')})
       or (n.nspname = any(${COMPAT_SCHEMAS}) and obj_description(n.oid, 'pg_namespace') = ${compatMark})
    union all
    select 'table ' || c.oid::regclass::text, o.rolname, pg_has_role(c.relowner, 'USAGE'), o.rolsuper
    from pg_class c join pg_roles o on o.oid = c.relowner
    where c.relnamespace = (select oid from pg_namespace where nspname = 'supabase_migrations') and c.relkind in ('r', 'p')
    order by 1`;
  const byOwner = new Map<string, { things: string[]; superuser: boolean }>();
  for (const o of owned.filter((x) => !x.canAct)) {
    const entry = byOwner.get(o.owner) ?? { things: [], superuser: o.ownerSuperuser };
    entry.things.push(o.name);
    byOwner.set(o.owner, entry);
  }
  for (const [owner, { things, superuser }] of byOwner) {
    missing.push(`it cannot act as ${owner}, which owns ${things.join(', ')} (a migration may only change what its role owns): ` +
      (superuser ? `run npm run db:migrate as ${owner} (or another superuser)`
        // the processes' login role: granting it the owner would undo the least-privilege split
        : me.appRole ? `run npm run db:migrate as ${owner} (--database-url "$OWNER_URL"), not as ${me.role}, a member of potentia_app: ` +
          'the processes\' login role must not act as the owner (docs/self-hosting.md, "Database")'
        : `run npm run db:migrate as ${owner} or a superuser, or let ${me.role} act as it (as a superuser: grant ${ident(owner)} to ${role})`));
  }

  const present = await sql<{ name: string }[]>`
    select nspname as name from pg_namespace where nspname = any(${[...SCHEMAS, ...COMPAT_SCHEMAS]})
    union all select extname from pg_extension where extname in ('vector', 'pgcrypto')
    union all select rolname from pg_roles where rolname = any(${API_ROLES})`;
  const has = new Set(present.map((p) => p.name));
  const toCreate = [...SCHEMAS, ...COMPAT_SCHEMAS].filter((s) => !has.has(s));
  if (!me.canCreate && (toCreate.length > 0 || !has.has('pgcrypto'))) {
    missing.push(`it may not create in database ${me.db} (${toCreate.length > 0 ? `the schemas ${toCreate.join(', ')}` : 'the pgcrypto extension'} are to be made): ` +
      `as ${me.dbOwner} (its owner) or a superuser, run: grant create on database ${ident(me.db)} to ${role}`);
  }
  const supautilsVector = /(^|[\s,])vector([\s,]|$)/.test(me.supautils ?? '');
  if (!has.has('vector') && !supautilsVector) {
    missing.push('the vector extension is not installed, and only a superuser may install it: as a superuser, run: ' +
      `create schema if not exists extensions authorization ${role}; create extension vector with schema extensions`);
  }
  const roles = API_ROLES.filter((r) => !has.has(r));
  if (roles.length > 0) {
    missing.push(`the roles ${roles.join(', ')} do not exist, and only a superuser may make them (service_role bypasses row-level security): ` +
      `as a superuser, run: ${roles.map((r) => `create role ${r} nologin noinherit${r === 'service_role' ? ' bypassrls' : ''}`).join('; ')}; ` +
      `grant ${roles.join(', ')} to ${role}`);
  }
  if (missing.length > 0) throw new PrivilegesError(me.role, missing);
}
