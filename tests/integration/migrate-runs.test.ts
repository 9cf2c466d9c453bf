import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { migrate } from '../../src/db/migrate.ts';

// `npm run db:migrate` as DBAs run it (README, "Applying migrations"): two runs at once on a fresh
// database apply each step once between them (the compat schemas too: their check once ran
// before the lock, so both runs applied them), and a migration that fails names its file and
// leaves nothing of itself behind.

const repoRoot = new URL('../..', import.meta.url).pathname;
const urlOf = (db: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${db}`; return u.toString(); };
const prefix = `potentia_migrate_runs_${process.pid}`;
const names = { fresh: `${prefix}_fresh` };
const admin = postgres(urlOf('postgres'), { max: 1, onnotice: () => {} });
let badRoot: string;

/** `npm run db:migrate -- --database-url url`, as a DBA runs it: stdout and stderr, or the failure (code, stderr). */
const migrateAs = (url: string) => promisify(execFile)(join(repoRoot, 'node_modules/.bin/tsx'), ['scripts/migrate.ts', '--database-url', url], { cwd: repoRoot });

/** A new login role and a new database (the role's own, or the superuser's); the role's URL to it. */
async function roleAndDatabase(role: string, db: string, owner: 'role' | 'superuser'): Promise<string> {
  await admin.unsafe(`drop database if exists ${db} with (force)`);
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.unsafe(`create role ${role} login password 'pw'`);
  await admin.unsafe(`create database ${db}${owner === 'role' ? ` owner ${role}` : ''}`);
  const url = new URL(urlOf(db));
  url.username = role;
  url.password = 'pw';
  return url.toString();
}

beforeAll(async () => {
  await admin.unsafe(`drop database if exists ${names.fresh} with (force)`);
  await admin.unsafe(`create database ${names.fresh}`);
  badRoot = mkdtempSync(join(tmpdir(), 'potentia-bad-migration-'));
  for (const dir of ['sql', 'supabase/migrations']) cpSync(join(repoRoot, dir), join(badRoot, dir), { recursive: true });
  writeFileSync(join(badRoot, 'supabase/migrations/29990101000000_bad.sql'), 'create table public.bad_probe (id int);\nselect 1/0;\n');
});

afterAll(async () => {
  await admin.unsafe(`drop database if exists ${names.fresh} with (force)`);
  await admin.end();
  if (badRoot) rmSync(badRoot, { recursive: true, force: true });
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

  it('npm run db:migrate on a database that does not exist says to create it, and that no step ran', async () => {
    const missing = urlOf(`${prefix}_missing`);
    const run = await migrateAs(missing).then(() => null, (e: { code?: number; stderr?: string }) => e);
    expect(run?.code).toBe(1);
    expect(run?.stderr).toContain(`migrate failed: database "${prefix}_missing" does not exist`);
    expect(run?.stderr).toContain(`No step ran: create the database first (createdb`);
  }, 60_000);

  it('npm run db:migrate as a role of its own that is not a superuser points to the one-time setup', async () => {
    const role = `${prefix}_owner`;
    const db = `${prefix}_own`;
    const url = await roleAndDatabase(role, db, 'role');
    try {
      const run = await migrateAs(url).then(() => null, (e: { code?: number; stderr?: string }) => e);
      expect(run?.code).toBe(1);
      expect(run?.stderr).toMatch(/migrate failed: applying supabase\/migrations\/\S+ failed: (permission denied|must be superuser)/);
      expect(run?.stderr).toContain(`The role ${role} may not do this: run the superuser's one-time setup in docs/self-hosting.md, "Database"`);
    } finally {
      await admin.unsafe(`drop database if exists ${db} with (force)`);
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 60_000);

  it('npm run db:migrate as a role that does not own the database completes, and shows the command for the owner to run', async () => {
    // the one-time setup of docs/self-hosting.md, "Database", but the database belongs to the
    // superuser: the role may create in it, and cannot set the database's client_connection_check_interval
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
      expect(run.stderr).toContain(`warning: client_connection_check_interval is not set: the role ${role} does not own database ${db}`);
      expect(run.stderr).toContain(`as its owner, run: alter database ${db} set client_connection_check_interval = '2s'`);
      expect((await setup`select setting from pg_db_role_setting s, unnest(s.setconfig) setting
                          where s.setdatabase = (select oid from pg_database where datname = ${db})`).map((r) => r.setting)).toEqual([]);
    } finally {
      await setup.end();
      await admin.unsafe(`drop database if exists ${db} with (force)`);
      await admin.unsafe(`drop owned by ${role}`).catch(() => {});
      await admin.unsafe(`drop role if exists ${role}`);
    }
  }, 180_000);
});
