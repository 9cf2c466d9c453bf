import { mkdtempSync, cpSync, writeFileSync, appendFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { migrate, MigrationChangedError } from '../../src/db/migrate.ts';

// Each test migrates its own scratch database from a copy of the repository's SQL.
const repoRoot = new URL('../..', import.meta.url).pathname;
const adminUrl = (() => { const u = new URL(testDatabaseUrl()); u.pathname = '/postgres'; return u.toString(); })();
const scratchName = `potentia_migrate_${process.pid}`;
const scratchUrl = (() => { const u = new URL(testDatabaseUrl()); u.pathname = `/${scratchName}`; return u.toString(); })();

describe('npm run db:migrate', () => {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  let root: string;
  let sql: postgres.Sql;

  beforeAll(async () => {
    await admin.unsafe(`drop database if exists ${scratchName} with (force)`);
    await admin.unsafe(`create database ${scratchName}`);
    root = mkdtempSync(join(tmpdir(), 'potentia-migrate-'));
    for (const dir of ['sql', 'supabase/migrations']) cpSync(join(repoRoot, dir), join(root, dir), { recursive: true });
    sql = postgres(scratchUrl, { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await sql?.end();
    await admin.unsafe(`drop database if exists ${scratchName} with (force)`);
    await admin.end();
    rmSync(root, { recursive: true, force: true });
  });

  it('applies compat schemas, every migration and the sql/ sources on a fresh database', async () => {
    const result = await migrate(sql, { root });
    expect(result.compat).toEqual(['auth', 'realtime']);
    expect(result.migrations.length).toBeGreaterThan(0);
    expect(result.sources).toBe(true);
    const rows = await sql`select version, name from supabase_migrations.schema_migrations order by version`;
    expect(rows.map((r) => r.name)).toContain('foundation');
  });

  it('is a no-op the second time', async () => {
    expect(await migrate(sql, { root })).toEqual({ compat: [], migrations: [], sources: false });
  });

  it('applies a new migration once, in its own transaction', async () => {
    writeFileSync(join(root, 'supabase/migrations/29990101000000_probe.sql'), 'create table app.migrate_probe (id int);');
    expect((await migrate(sql, { root })).migrations).toEqual(['supabase/migrations/29990101000000_probe.sql']);
    const [row] = await sql`select to_regclass('app.migrate_probe')::text as t`;
    expect(row?.t).toBe('app.migrate_probe');
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

  it('refuses an applied migration whose content changed, naming the file', async () => {
    appendFileSync(join(root, 'supabase/migrations/29990101000000_probe.sql'), '\n-- edited');
    const attempt = migrate(sql, { root });
    await expect(attempt).rejects.toBeInstanceOf(MigrationChangedError);
    await expect(attempt).rejects.toThrow('supabase/migrations/29990101000000_probe.sql');
  });
});
