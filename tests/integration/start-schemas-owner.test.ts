import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { AppRoleGrantsMissingError, assertMigrated, PendingMigrationsError, SchemasNotOwnedError } from '../../src/db/migrated.ts';
import { startFailureAdvice } from '../../src/start-failure.ts';

// A DBA giving the processes a role of their own, apart from the one that ran db:migrate (least
// privilege), found it half works: the API roles are granted to it and the api's /ready said 200,
// but the gateway's access checks call `internal` functions as the connecting role (`permission
// denied for function can_write_role` on every join) and the worker stopped at start on `permission
// denied for schema graphile_worker`, neither saying what to do. The start check now refuses such a
// role, naming the owner to connect as, unless it is a member of potentia_app (what the migrations
// grant the processes; tests/integration/app-role.test.ts runs them on one) with BYPASSRLS.

const role = `potentia_not_owner_${process.pid}`;
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const asRole = (() => { const u = new URL(testDatabaseUrl()); u.username = role; u.password = 'not-owner'; return u.toString(); })();

beforeAll(async () => {
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.unsafe(`create role ${role} login password 'not-owner'`);
  // what docs/self-hosting.md asks of the application's role, short of owning the schemas
  await admin.unsafe(`grant anon, authenticated, service_role to ${role}`);
});
afterAll(async () => {
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.end();
});

describe('the start check: the connecting role acts as the owner of the schemas', () => {
  it('the role that ran the migrations starts', async () => {
    await expect(assertMigrated(testDatabaseUrl())).resolves.toBeUndefined();
  });

  it('another role is refused, naming the owner, and the advice says to grant potentia_app or connect as the owner', async () => {
    const [row] = await admin<{ owner: string }[]>`select nspowner::regrole::text as owner from pg_namespace where nspname = 'app'`;
    const owner = row!.owner;
    const err = await assertMigrated(asRole).then(() => undefined, (e: unknown) => e);
    expect(err).toBeInstanceOf(SchemasNotOwnedError);
    expect((err as SchemasNotOwnedError).message)
      .toBe(`the role ${role} is not a member of potentia_app and cannot act as ${owner}, which owns schema api, app, graphile_worker, internal`);
    expect(startFailureAdvice(err as SchemasNotOwnedError, { databaseUrl: asRole }))
      .toMatch(/^the processes connect as a login role in potentia_app, with REPLICATION and BYPASSRLS, or as the owner of Potentia's schemas \(DATABASE_URL=postgres:\/\/potentia_not_owner_\d+:\*\*\*@.*\): as a superuser, grant potentia_app to this role/);
  });

  it('a member of potentia_app without BYPASSRLS is refused, naming the attribute; with it, it starts', async () => {
    await admin.unsafe(`grant potentia_app to ${role}`);
    try {
      const err = await assertMigrated(asRole).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(SchemasNotOwnedError);
      expect((err as SchemasNotOwnedError).message)
        .toBe(`the role ${role} is a member of potentia_app but lacks BYPASSRLS, which its own reads need (as a superuser: alter role ${role} bypassrls)`);
      await admin.unsafe(`alter role ${role} bypassrls`);
      await expect(assertMigrated(asRole)).resolves.toBeUndefined();
    } finally {
      await admin.unsafe(`alter role ${role} nobypassrls`);
      await admin.unsafe(`revoke potentia_app from ${role}`);
    }
  });

  it('a member of potentia_app whose grants this database lacks (sql/security/app_role.sql never run here) is refused, naming what and the file', async () => {
    // potentia_app made by a superuser after the database was migrated by an owner who may not make
    // roles: its grants wait for the owner's run of the file (docs/self-hosting.md, "Database")
    const [row] = await admin<{ owner: string }[]>`select nspowner::regrole::text as owner from pg_namespace where nspname = 'graphile_worker'`;
    await admin.unsafe(`grant potentia_app to ${role}`);
    await admin.unsafe(`alter role ${role} bypassrls`);
    await admin.unsafe('revoke usage on schema graphile_worker from potentia_app');
    try {
      const err = await assertMigrated(asRole).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(AppRoleGrantsMissingError);
      expect((err as AppRoleGrantsMissingError).message).toBe(`the role ${role} is a member of potentia_app, but potentia_app lacks its grants `
        + `in this database (usage on schema graphile_worker): as ${row!.owner}, the owner of Potentia's schemas, run sql/security/app_role.sql`);
      expect(startFailureAdvice(err as AppRoleGrantsMissingError, { databaseUrl: asRole }))
        .toMatch(/^potentia_app's grants are missing in this database \(DATABASE_URL=.*\): as the owner of Potentia's schemas, run psql "\$OWNER_URL" -f sql\/security\/app_role.sql once/);
      await admin.unsafe('grant usage on schema graphile_worker to potentia_app'); // the file's grant
      await expect(assertMigrated(asRole)).resolves.toBeUndefined();
    } finally {
      await admin.unsafe('grant usage on schema graphile_worker to potentia_app');
      await admin.unsafe(`alter role ${role} nobypassrls`);
      await admin.unsafe(`revoke potentia_app from ${role}`);
    }
  });
  it('a role that may not use the schemas at all (no API roles, no potentia_app) is refused too, not taken for an outage', async () => {
    // its first read, to_regclass('app.blocks'), raised `permission denied for schema app`, which the
    // check took for a database that does not answer: the role started, and the worker stopped on
    // `permission denied for schema graphile_worker` (a `create role … login` that forgot `in role potentia_app`)
    await admin.unsafe(`revoke anon, authenticated, service_role from ${role}`);
    try {
      const err = await assertMigrated(asRole).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(SchemasNotOwnedError);
      expect((err as SchemasNotOwnedError).message).toMatch(new RegExp(`^the role ${role} is not a member of potentia_app and cannot act as `));
    } finally {
      await admin.unsafe(`grant anon, authenticated, service_role to ${role}`);
    }
  });

  it('a member of potentia_app is refused on a database that lacks one of the migrations, as the owner is', async () => {
    // potentia_app could not read supabase_migrations.schema_migrations: the check took that for a
    // database keeping no record, and the least-privilege role started on one a deploy had not migrated
    await admin.unsafe(`grant potentia_app to ${role}`);
    await admin.unsafe(`alter role ${role} bypassrls`);
    const [latest] = await admin<{ version: string }[]>`select max(version) as version from supabase_migrations.schema_migrations`;
    const stand = `0${latest!.version.slice(1)}`; // sorts first and matches no file: the latest reads as not applied
    await admin`update supabase_migrations.schema_migrations set version = ${stand} where version = ${latest!.version}`;
    try {
      const err = await assertMigrated(asRole).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(PendingMigrationsError);
      expect((err as PendingMigrationsError).pending).toEqual([expect.stringMatching(new RegExp(`^${latest!.version}_`))]);
      // the advice: db:migrate as the owner, not against these URLs (it refuses the processes' role)
      const [row] = await admin<{ owner: string }[]>`select nspowner::regrole::text as owner from pg_namespace where nspname = 'app'`;
      expect(startFailureAdvice(err as PendingMigrationsError, { databaseUrl: asRole, directDatabaseUrl: asRole })).toBe(
        `the database is behind this code (DATABASE_URL=${asRole.replace(':not-owner@', ':***@')}, DIRECT_DATABASE_URL=${asRole.replace(':not-owner@', ':***@')}): `
        + `as ${row!.owner}, the owner of Potentia's schemas (${role}, which these URLs name, cannot migrate), run npm run db:migrate -- --database-url "$OWNER_URL", `
        + 'OWNER_URL being the owner\'s direct URL (or supabase db push), then start again (docs/self-hosting.md, "Installing on a host")');
      // as the owner (a superuser acts as it), the advice stays: db:migrate against the URL it started with
      const asOwner = await assertMigrated(testDatabaseUrl()).then(() => undefined, (e: unknown) => e);
      expect(asOwner).toBeInstanceOf(PendingMigrationsError);
      expect((asOwner as PendingMigrationsError).notOwner).toBeUndefined();
      expect(startFailureAdvice(asOwner as PendingMigrationsError, { databaseUrl: testDatabaseUrl() }))
        .toMatch(/^the database is behind this code \(DATABASE_URL=.*\): run npm run db:migrate \(or supabase db push\) against it, then start again$/);
    } finally {
      await admin`update supabase_migrations.schema_migrations set version = ${latest!.version} where version = ${stand}`;
      await admin.unsafe(`alter role ${role} nobypassrls`);
      await admin.unsafe(`revoke potentia_app from ${role}`);
    }
    await expect(assertMigrated(asRole)).rejects.toBeInstanceOf(SchemasNotOwnedError); // as before: no longer a member
  });
});
