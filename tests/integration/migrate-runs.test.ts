import { execFile } from 'node:child_process';
import { readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// `npm run db:migrate` as DBAs run it (README, "Applying migrations"): two runs at once on a fresh
// database apply each step once between them (the compat schemas too: their check once ran
// before the lock, so both runs applied them), and a migration that fails names its file and
// leaves nothing of itself behind.

const repoRoot = new URL('../..', import.meta.url).pathname;
// the fresh database; the other databases and roles of the tests are named after it
const scratch = migrationScratch('migrate_runs');
const { urlOf, admin, name: prefix } = scratch;
const names = { fresh: prefix };
let badRoot: string;
let laterRoot: string;

/** `npm run db:migrate -- --database-url url`, as a DBA runs it: stdout and stderr, or the failure (code, stderr). */
const migrateAs = (url: string, ...args: string[]) =>
  promisify(execFile)(join(repoRoot, 'node_modules/.bin/tsx'), ['scripts/migrate.ts', ...args, '--database-url', url], { cwd: repoRoot });

/** A new login role (password pw); its URL to database `db`. */
async function loginRole(role: string, db: string): Promise<string> {
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.unsafe(`create role ${role} login password 'pw'`);
  const url = new URL(urlOf(db));
  url.username = role;
  url.password = 'pw';
  return url.toString();
}

/** A new login role and a new database (the role's own, or the superuser's); the role's URL to it. */
async function roleAndDatabase(role: string, db: string, owner: 'role' | 'superuser'): Promise<string> {
  await admin.unsafe(`drop database if exists ${db} with (force)`);
  const url = await loginRole(role, db);
  await admin.unsafe(`create database ${db}${owner === 'role' ? ` owner ${role}` : ''}`);
  return url;
}

beforeAll(async () => {
  await scratch.create();
  badRoot = checkoutCopy('bad-migration');
  writeFileSync(join(badRoot, 'supabase/migrations/29990101000000_bad.sql'), 'create table public.bad_probe (id int);\nselect 1/0;\n');
  laterRoot = checkoutCopy('later-migration');
  writeFileSync(join(laterRoot, 'supabase/migrations/29990101000000_vector_setting.sql'),
    "create function app.vector_setting_probe() returns int language sql set hnsw.iterative_scan = 'relaxed_order' as 'select 1';\n");
});

afterAll(async () => {
  await scratch.close();
  for (const dir of [badRoot, laterRoot]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('db:migrate runs', () => {
  it('two runs at once on a fresh database apply every step once between them', async () => {
    const a = postgres(urlOf(names.fresh), { max: 1, onnotice: () => {} });
    const b = postgres(urlOf(names.fresh), { max: 1, onnotice: () => {} });
    try {
      const [ra, rb] = await Promise.all([migrate(a, { root: repoRoot, strict: true }), migrate(b, { root: repoRoot, strict: true })]);
      expect([...ra.compat, ...rb.compat].sort()).toEqual(['auth', 'realtime']);
      const migrations = readdirSync(join(repoRoot, 'supabase/migrations')).filter((f) => f.endsWith('.sql')).length;
      expect(ra.migrations.length + rb.migrations.length).toBe(migrations);
      expect(new Set([...ra.migrations, ...rb.migrations]).size).toBe(migrations);
    } finally {
      await Promise.all([a.end(), b.end()]);
    }
  }, 120_000);

  it('a failing migration names its file and leaves nothing of itself; the ones before it stay applied', async () => {
    const sql = postgres(urlOf(names.fresh), { max: 1, onnotice: () => {} });
    try {
      const err = await migrate(sql, { root: badRoot }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toBe('applying supabase/migrations/29990101000000_bad.sql failed: division by zero');
      const [row] = await sql`select to_regclass('public.bad_probe') as probe,
        (select count(*)::int from supabase_migrations.schema_migrations where version = '29990101000000') as recorded,
        (select count(*)::int from supabase_migrations.schema_migrations) as applied`;
      expect(row).toEqual({ probe: null, recorded: 0, applied: readdirSync(join(repoRoot, 'supabase/migrations')).filter((f) => f.endsWith('.sql')).length });
    } finally {
      await sql.end();
    }
  }, 60_000);

  it('npm run db:migrate as a role that may only connect, on a database another role migrated, names the role to run it as', async () => {
    const role = `${prefix}_reader`;
    const url = await loginRole(role, names.fresh);
    try {
      const owner = (await admin`select current_user as owner`)[0]!.owner as string;
      const run = await migrateAs(url).then(() => null, (e: { code?: number; stderr?: string }) => e);
      expect(run?.code).toBe(1);
      expect(run?.stderr).toBe(`migrate refused: the role ${role} lacks what these migrations need, so nothing was changed:\n`
        + `  - it cannot act as ${owner}, which owns schema api, schema app, schema auth, schema graphile_worker, schema internal, schema realtime, `
        + 'schema supabase_migrations, table supabase_migrations.potentia_catalog, table supabase_migrations.potentia_catalog_migrations, '
        + 'table supabase_migrations.potentia_sources, table supabase_migrations.schema_migrations '
        + `(a migration may only change what its role owns): run npm run db:migrate as ${owner} (or another superuser)\n`
        + '  Then run the same command again (docs/self-hosting.md, "Database").\n');
    } finally {
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 60_000);

  it('npm run db:migrate -- --check as a role that may not read the migrations\' records says it changed nothing and to run it as the owner', async () => {
    // the processes' login role of docs/self-hosting.md (a member of potentia_app) is such a role: a
    // DBA who sourced the env file and left out --database-url "$OWNER_URL" (Upgrades, step 3) was
    // told that "the failed step was rolled back" and to run the superuser's one-time setup
    const role = `${prefix}_checker`;
    const url = await loginRole(role, names.fresh);
    try {
      const run = await migrateAs(url, '--check').then(() => null, (e: { code?: number; stderr?: string }) => e);
      expect(run?.code).toBe(1);
      expect(run?.stderr).toBe('migrate failed: permission denied for schema supabase_migrations\n'
        + `  --check changed nothing. The role ${role} may not read what db:migrate recorded: run it as the role db:migrate runs as, `
        + 'the owner of Potentia\'s schemas or a superuser (--database-url "$OWNER_URL": docs/self-hosting.md, "Upgrades").\n');
    } finally {
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 60_000);

  it('npm run db:migrate on a database that does not exist says to create it, and that no step ran', async () => {
    const missing = urlOf(`${prefix}_missing`);
    const run = await migrateAs(missing).then(() => null, (e: { code?: number; stderr?: string }) => e);
    expect(run?.code).toBe(1);
    expect(run?.stderr).toContain(`migrate failed: database "${prefix}_missing" does not exist`);
    expect(run?.stderr).toContain(`No step ran: create the database first (createdb`);
  }, 60_000);

  it('npm run db:migrate on a database that takes no writes (default_transaction_read_only, as a standby) is refused before any step, naming where it is set', async () => {
    const db = `${prefix}_read_only`;
    await admin.unsafe(`drop database if exists ${db} with (force)`);
    await admin.unsafe(`create database ${db}`);
    try {
      await admin.unsafe(`alter database ${db} set default_transaction_read_only = on`);
      const run = await migrateAs(urlOf(db)).then(() => null, (e: { code?: number; stderr?: string }) => e);
      expect(run?.code).toBe(1);
      expect(run?.stderr).toBe(`migrate refused: the database ${db} takes no writes in this session: default_transaction_read_only is on, `
        + 'set for the database, so nothing was changed. If it is a replica or a database frozen on purpose, point --database-url '
        + `(or DIRECT_DATABASE_URL) at the primary; if the setting is to go, run as the database's owner or a superuser: alter database ${db} `
        + 'reset default_transaction_read_only; then run the same command again.\n');
      const after = postgres(urlOf(db), { max: 1, onnotice: () => {} });
      try {
        expect(await after`select nspname from pg_namespace where nspname in ('supabase_migrations', 'auth', 'app')`).toEqual([]);
      } finally {
        await after.end();
      }
    } finally {
      await admin.unsafe(`drop database if exists ${db} with (force)`);
    }
  }, 60_000);

  it('npm run db:migrate as a role of its own that is not a superuser is refused before any step, with what the superuser runs', async () => {
    const role = `${prefix}_owner`;
    const db = `${prefix}_own`;
    const url = await roleAndDatabase(role, db, 'role');
    try {
      const run = await migrateAs(url).then(() => null, (e: { code?: number; stderr?: string }) => e);
      expect(run?.code).toBe(1);
      expect(run?.stderr).toBe(`migrate refused: the role ${role} lacks what these migrations need, so nothing was changed:\n`
        + `  - the vector extension is not installed, and only a superuser may install it: as a superuser, run: `
        + `create schema if not exists extensions authorization ${role}; create extension vector with schema extensions\n`
        + '  Then run the same command again (docs/self-hosting.md, "Database").\n');
      // before, the compat schemas were made and the first migration refused
      const sql = postgres(urlOf(db), { max: 1, onnotice: () => {} });
      try {
        expect((await sql`select nspname from pg_namespace where nspname in ('auth', 'realtime', 'supabase_migrations')`).length).toBe(0);
      } finally {
        await sql.end();
      }
    } finally {
      await admin.unsafe(`drop database if exists ${db} with (force)`);
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 60_000);

  it('npm run db:migrate as a role that does not own the database completes, and shows the command for the owner to run; a later migration setting one of vector\'s parameters applies too', async () => {
    // the one-time setup of docs/self-hosting.md, "Database", but the database belongs to the
    // superuser: the role may create in it, and cannot set the database's settings (client_connection_check_interval,
    // tcp_keepalives_*, tcp_user_timeout)
    const role = `${prefix}_tenant`;
    const db = `${prefix}_tenant`;
    const url = await roleAndDatabase(role, db, 'superuser');
    await admin.unsafe(`grant anon, authenticated, service_role to ${role}`);
    await admin.unsafe(`grant create on database ${db} to ${role}`);
    const setup = postgres(urlOf(db), { max: 1, onnotice: () => {} });
    try {
      await setup.unsafe(`create schema extensions authorization ${role}`);
      await setup.unsafe('create extension vector with schema extensions');
      const run = await migrateAs(url);
      expect(run.stdout).toMatch(new RegExp(`migrate ${db}: \\d+ step\\(s\\) applied`));
      // it was dropped unseen (the notices of the migration's connection were discarded)
      expect(run.stderr).toContain(`warning: the database settings client_connection_check_interval, tcp_keepalives_idle, `
        + `tcp_keepalives_interval, tcp_keepalives_count, tcp_user_timeout are not set: the role ${role} does not own database ${db}`);
      expect(run.stderr).toContain(`as its owner, run: alter database ${db} set client_connection_check_interval = '2s'; `
        + `alter database ${db} set tcp_keepalives_idle = '60'; alter database ${db} set tcp_keepalives_interval = '10'; `
        + `alter database ${db} set tcp_keepalives_count = '6'; alter database ${db} set tcp_user_timeout = '120s' (README, "When Postgres fails")`);
      expect((await setup`select setting from pg_db_role_setting s, unnest(s.setconfig) setting
                          where s.setdatabase = (select oid from pg_database where datname = ${db})`).map((r) => r.setting)).toEqual([]);

      // the next release's migration re-creating a function with `set hnsw.iterative_scan` (as
      // sql/jobs/search.sql does), in a new session where nothing has touched vector yet: a role
      // that is not a superuser was refused it ("permission denied to set parameter") for ever
      const later = postgres(url, { max: 1, onnotice: () => {} });
      try {
        const result = await migrate(later, { root: laterRoot });
        expect(result.migrations).toEqual(['supabase/migrations/29990101000000_vector_setting.sql']);
      } finally {
        await later.end();
      }
    } finally {
      await setup.end();
      await admin.unsafe(`drop database if exists ${db} with (force)`);
      await admin.unsafe(`drop owned by ${role}`).catch(() => {});
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 180_000);
});
