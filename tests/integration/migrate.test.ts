import { writeFileSync, appendFileSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateMigration } from '../../src/db/generate-migration.ts';
import { migrate, MigrationChangedError, SourcesDriftError } from '../../src/db/migrate.ts';
import { migrationStep } from '../../src/db/migration-step.ts';
import { sha256 } from '../../src/db/sources.ts';
import { SUPERSEDED_MIGRATIONS } from '../../src/db/superseded-migrations.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// Each test migrates its own scratch database from a copy of the repository's SQL.
const scratch = migrationScratch('migrate');
const scratchUrl = scratch.url;

describe('npm run db:migrate', () => {
  let root: string;
  let sql: postgres.Sql;

  beforeAll(async () => {
    await scratch.create();
    root = checkoutCopy('migrate');
    // the copy starts with sql/ and the migrations in agreement, whatever the checkout's state
    // (tests/integration/migrations.test.ts is the one that fails on disagreement)
    await generateMigration(root, 'sync');
    sql = postgres(scratchUrl, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await scratch.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('applies compat schemas and every migration on a fresh database; the migrations hold the functions', async () => {
    const result = await migrate(sql, { root });
    expect(result.compat).toEqual(['auth', 'realtime']);
    expect(result.migrations.length).toBeGreaterThan(0);
    expect(result).toMatchObject({ sources: false, drift: [] }); // nothing from sql/ beside the migrations
    const rows = await sql`select version, name from supabase_migrations.schema_migrations order by version`;
    expect(rows.map((r) => r.name)).toContain('foundation');
    const [fn] = await sql`select to_regprocedure('api.upsert_block_atomic(uuid,uuid,text,text,integer,jsonb)')::text as f`;
    expect(fn?.f).toBe('api.upsert_block_atomic(uuid,uuid,text,text,integer,jsonb)');
  });

  it('is a no-op the second time', async () => {
    expect(await migrate(sql, { root })).toEqual({ compat: [], migrations: [], sources: false, drift: [], schemaDrift: [], unknown: [], removed: [] });
  });

  describe('sql/ changed without a new migration', () => {
    const file = () => join(root, 'sql/rpc/errors.sql');
    let original: string;
    const probe = async () => (await sql`select obj_description('internal.migrate_probe()'::regprocedure) as d`)[0]?.d;
    beforeAll(() => { original = readFileSync(file(), 'utf8'); });

    it('--strict refuses before applying anything, naming the file', async () => {
      writeFileSync(file(), `${original}
create or replace function internal.migrate_probe() returns int language sql as $$ select 1 $$;
` +
        `comment on function internal.migrate_probe() is 'first';
`);
      const attempt = migrate(sql, { root, strict: true });
      await expect(attempt).rejects.toBeInstanceOf(SourcesDriftError);
      await expect(attempt).rejects.toThrow(/sql\/rpc\/errors\.sql changed since supabase\/migrations\/\d+_\w+\.sql.*npm run db:migration -- <name>/);
      const [row] = await sql`select to_regprocedure('internal.migrate_probe()') as f`;
      expect(row?.f).toBeNull();
    });

    it('applies sql/ on top for development and names the drift; once only', async () => {
      const result = await migrate(sql, { root });
      expect(result).toMatchObject({ sources: true, migrations: [] });
      expect(result.drift).toEqual([expect.stringMatching(/^sql\/rpc\/errors\.sql changed since supabase\/migrations\/\d+_\w+\.sql$/)]);
      expect(await probe()).toBe('first');
      expect(await migrate(sql, { root })).toMatchObject({ sources: false, drift: result.drift });
    });

    it('applies sql/ again when it changes again, and when the change is reverted', async () => {
      writeFileSync(file(), readFileSync(file(), 'utf8').replace("is 'first'", "is 'second'"));
      expect((await migrate(sql, { root })).sources).toBe(true);
      expect(await probe()).toBe('second');
      writeFileSync(file(), original);
      expect(await migrate(sql, { root })).toMatchObject({ sources: true, drift: [], schemaDrift: [] });
      // reverting the file does not drop what it created (a source must drop what it no longer makes)…
      expect(await probe()).toBe('second');
      // …but everything the sources define is back to the migrations' version, and stays put
      expect(await migrate(sql, { root })).toMatchObject({ sources: false, drift: [], schemaDrift: [] });
      await sql`drop function internal.migrate_probe()`;
    });

    it('a generated migration carries the change; the database then needs nothing from sql/', async () => {
      writeFileSync(file(), `${original}
comment on function internal.lexorank_between(text, text) is 'generated';
`);
      const generated = await generateMigration(root, 'errors_comment');
      // and the files every migration carries (db:migration: always): their grants follow any change
      expect(generated?.included).toEqual(['sql/rpc/errors.sql', 'sql/security/app_role.sql', 'sql/security/public_execute.sql']);
      const result = await migrate(sql, { root, strict: true });
      // the probe the test above dropped by hand is named as what it is: a change made outside migrations
      expect(result).toMatchObject({ migrations: [generated!.file], sources: false, drift: [], schemaDrift: ['function internal.migrate_probe(): removed'] });
      const [row] = await sql`select obj_description('internal.lexorank_between(text,text)'::regprocedure) as d`;
      expect(row?.d).toBe('generated');
    });
  });

  it('applies a new migration once, in its own transaction', async () => {
    writeFileSync(join(root, 'supabase/migrations/29990101000000_probe.sql'), 'create table app.migrate_probe (id int);');
    expect((await migrate(sql, { root })).migrations).toEqual(['supabase/migrations/29990101000000_probe.sql']);
    const [row] = await sql`select to_regclass('app.migrate_probe')::text as t`;
    expect(row?.t).toBe('app.migrate_probe');
  });

  it('runs a step again when PostgreSQL picks it as a deadlock\'s victim (live traffic locking the same tables in another order)', async () => {
    await sql.unsafe('create table if not exists public.deadlock_a (x int); create table if not exists public.deadlock_b (x int)');
    const traffic = postgres(scratchUrl, { max: 1, onnotice: () => {} });
    const logged: string[] = [];
    let attempts = 0;
    try {
      // the traffic holds a; the step takes b, then waits for a; the traffic then wants b: a cycle.
      // The step waited first, so its deadlock check runs first and it is the victim (40P01)
      let release!: () => void;
      const trafficDone = traffic.begin(async (tx) => {
        await tx`lock table public.deadlock_a`;
        await new Promise<void>((resolve) => { release = resolve; });
        await new Promise((resolve) => setTimeout(resolve, 300));
        await tx`lock table public.deadlock_b`;
      });
      await new Promise((resolve) => setTimeout(resolve, 100));
      const step = migrationStep(sql, (line) => logged.push(line), async (tx) => {
        attempts++;
        // a try that waits past the deadlock check (deadlock_timeout, 1 s), as the later tries do:
        // the first ones (0.1 s, 0.2 s …) give up before it, as a lock wait
        await tx`set local lock_timeout = '5s'`;
        await tx`lock table public.deadlock_b`;
        if (attempts === 1) release();
        await tx`lock table public.deadlock_a`;
        return 'done';
      });
      expect(await step).toBe('done');
      await trafficDone;
      expect(attempts).toBe(2);
      expect(logged).toEqual([expect.stringMatching(/^deadlock with live traffic \(deadlock detected\): the step was rolled back, retrying \(attempt 2 of 5\)$/)]);
    } finally {
      await traffic.end();
      await sql.unsafe('drop table if exists public.deadlock_a, public.deadlock_b');
    }
  });

  it('rolls back a failing migration completely and records nothing', async () => {
    const file = join(root, 'supabase/migrations/29990102000000_broken.sql');
    writeFileSync(file, 'create table app.half_done (id int);\nselect no_such_function();');
    await expect(migrate(sql, { root })).rejects.toThrow(/no_such_function/);
    const [row] = await sql`select to_regclass('app.half_done') as t,
      exists (select from supabase_migrations.schema_migrations where version = '29990102000000') as recorded`;
    expect(row).toEqual({ t: null, recorded: false });
    rmSync(file);
  });

  it('takes a superseded text of a migration (src/db/superseded-migrations.ts) as applied, records the current one, refuses any other', async () => {
    const [version, { sha256: [earlier] }] = Object.entries(SUPERSEDED_MIGRATIONS)[0]!;
    const current = (await sql`select checksum from supabase_migrations.schema_migrations where version = ${version}`)[0]!.checksum;
    // a database migrated before the rewrite recorded the earlier text's checksum
    await sql`update supabase_migrations.schema_migrations set checksum = ${earlier!} where version = ${version}`;
    await migrate(sql, { root });
    expect((await sql`select checksum from supabase_migrations.schema_migrations where version = ${version}`)[0]!.checksum).toBe(current);
    await sql`update supabase_migrations.schema_migrations set checksum = ${sha256('some other text')} where version = ${version}`;
    await expect(migrate(sql, { root })).rejects.toBeInstanceOf(MigrationChangedError);
    await sql`update supabase_migrations.schema_migrations set checksum = ${current} where version = ${version}`;
  });

  it('refuses an applied migration whose content changed, naming the file', async () => {
    appendFileSync(join(root, 'supabase/migrations/29990101000000_probe.sql'), '\n-- edited');
    const attempt = migrate(sql, { root });
    await expect(attempt).rejects.toBeInstanceOf(MigrationChangedError);
    await expect(attempt).rejects.toThrow('supabase/migrations/29990101000000_probe.sql');
  });
});
