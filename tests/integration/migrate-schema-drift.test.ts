import { execFile } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate, migrationStatus } from '../../src/db/migrate.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// Changes made to the schema outside migrations (src/db/schema-drift.ts): npm run db:migrate warns
// of them and --check exits 1 naming them, until a migration changes the object again or
// --accept-drift takes the schema as it is. What is not a change made by hand is not reported:
// the migrations' own work, a dump restored with pg_restore, the daily partitions of
// realtime.messages, objects outside Potentia's schemas, migrations applied by supabase db push.

const repoRoot = new URL('../..', import.meta.url).pathname;
const scratch = migrationScratch('schema_drift');
const { name, urlOf, admin } = scratch;
const restored = `${name}_restored`;
const run = promisify(execFile);
let root: string;
let sql: postgres.Sql;
const addMigration = (version: string, text: string) => writeFileSync(join(root, `supabase/migrations/${version}_drift.sql`), text);

const HAND_CHANGES = [
  'function api.get_canvas_snapshot(uuid,bigint,text): changed (line 6 was: AS $function$; is now: SET work_mem TO \'64MB\')',
  'index app.blocks_by_hand_idx: added',
  expect.stringMatching(/^relation app\.blocks: changed \(line 1 was: r owner \S+ rls true\/false replica d acl authenticated=r\/[^;]*; is now: r owner \S+ rls false\/false replica d acl anon=r\/\S+,authenticated=r\/.*\)$/),
];

beforeAll(async () => {
  await admin.unsafe(`drop database if exists ${restored} with (force)`);
  await scratch.create();
  root = checkoutCopy('schema-drift');
  sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
  expect((await migrate(sql, { root })).schemaDrift).toEqual([]);
}, 60_000);

afterAll(async () => {
  await sql?.end();
  await scratch.close([restored]);
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('db:migrate and changes made to the schema by hand', () => {
  it('a fresh database, its restored dump and new partitions of realtime.messages hold nothing changed by hand', async () => {
    expect(await migrationStatus(sql, root)).toMatchObject({ pending: [], changed: [], schemaDrift: [], schemaNote: null });
    await sql`select realtime.create_partitions(current_date + 30, 2)`;
    await sql.unsafe('create table public.analyst_scratch (id int)'); // not Potentia's schema
    // pg_restore prints some expressions with other parentheses than the migrations wrote
    const dump = join(root, 'drift.dump');
    await run('pg_dump', ['--format=custom', `--file=${dump}`, urlOf(name)]);
    await admin.unsafe(`create database ${restored}`);
    await run('pg_restore', [`--dbname=${urlOf(restored)}`, '--exit-on-error', dump]);
    const copy = postgres(urlOf(restored), { max: 1, onnotice: () => {} });
    try {
      expect((await migrationStatus(copy, root)).schemaDrift).toEqual([]);
    } finally {
      await copy.end();
    }
    expect((await migrationStatus(sql, root)).schemaDrift).toEqual([]);
  }, 30_000);

  it('a function altered, a grant given, RLS disabled and an index made by hand are named until a migration changes them or --accept-drift', async () => {
    await sql.unsafe(`alter function api.get_canvas_snapshot(uuid, bigint, text) set work_mem = '64MB';
                      grant select on app.blocks to anon; alter table app.blocks disable row level security;
                      create index blocks_by_hand_idx on app.blocks (created_at)`);
    expect((await migrationStatus(sql, root)).schemaDrift).toEqual(HAND_CHANGES);
    // a run says so and changes nothing of it; a migration's own changes are not drift
    addMigration('29990101000000', "create function internal.drift_probe() returns int language sql as 'select 1';");
    const first = await migrate(sql, { root });
    expect(first).toMatchObject({ migrations: ['supabase/migrations/29990101000000_drift.sql'], schemaDrift: HAND_CHANGES });
    expect((await migrate(sql, { root })).schemaDrift).toEqual(HAND_CHANGES);
    // a migration that sets the function again takes it back
    addMigration('29990102000000', 'alter function api.get_canvas_snapshot(uuid, bigint, text) reset work_mem;');
    await migrate(sql, { root });
    expect((await migrate(sql, { root })).schemaDrift).toEqual(HAND_CHANGES.slice(1));
    // --accept-drift: the schema as it is
    expect((await migrate(sql, { root, acceptDrift: true })).schemaDrift).toEqual(HAND_CHANGES.slice(1));
    expect((await migrate(sql, { root })).schemaDrift).toEqual([]);
    await sql.unsafe('drop index app.blocks_by_hand_idx; revoke select on app.blocks from anon; alter table app.blocks enable row level security');
    await migrate(sql, { root, acceptDrift: true });
  }, 30_000);

  it('npm run db:migrate warns of a function altered by hand; --check exits 1 naming it; neither changes it', async () => {
    await sql.unsafe(`alter function internal.job_queue_depth() set work_mem = '64MB'`);
    const tsx = join(repoRoot, 'node_modules/.bin/tsx');
    const check = await run(tsx, ['scripts/migrate.ts', '--check', '--database-url', urlOf(name)], { cwd: repoRoot })
      .then(() => null, (e: { code?: number; stdout?: string }) => e);
    expect(check?.code).toBe(1);
    // (the checkout lacks the two migrations the test before applied from its copy: named too, tests/integration/migrate-ahead.test.ts)
    expect(check?.stdout).toMatch(new RegExp('^  2 applied migration\\(s\\) this checkout does not have [^\\n]*:\n    29990101000000_drift\n    29990102000000_drift\n  What to do: [^\\n]*\n'
      + '  1 object\\(s\\) changed outside migrations since the last db:migrate:\n'
      + "    function internal\\.job_queue_depth\\(\\): changed \\(line \\d+ was: [^\\n]*; is now: SET work_mem TO '64MB'\\)\n"
      + `check ${name}: 2 finding\\(s\\)\n$`));
    const migrated = await run(tsx, ['scripts/migrate.ts', '--database-url', urlOf(name)], { cwd: repoRoot });
    expect(migrated.stderr).toMatch(/^warning: 1 object\(s\) of the schema changed outside migrations since the last db:migrate:\n {4}function internal\.job_queue_depth\(\): changed /);
    expect(migrated.stderr).toContain('npm run db:migrate -- --accept-drift takes the schema as it is.');
    expect((await sql`select proconfig from pg_proc where oid = 'internal.job_queue_depth()'::regprocedure`)[0]!.proconfig).toContain('work_mem=64MB');
    await sql.unsafe('alter function internal.job_queue_depth() reset work_mem');
    expect((await migrationStatus(sql, root)).schemaDrift).toEqual([]);
  }, 30_000);

  it('migrations applied without db:migrate (supabase db push) are not taken for drift: the fingerprint is taken anew', async () => {
    // as the Supabase CLI applies one: its SQL, then its row, nothing else
    await sql.begin(async (tx) => {
      await tx.unsafe("create function internal.pushed_probe() returns int language sql as 'select 1'");
      await tx`insert into supabase_migrations.schema_migrations (version, name) values ('29990103000000', 'pushed')`;
    });
    expect(await migrationStatus(sql, root)).toMatchObject({
      schemaDrift: null,
      schemaNote: '1 migration(s) were applied without db:migrate since the fingerprint of the schema was recorded (supabase db push?): db:migrate takes it anew',
    });
    const logged: string[] = [];
    expect((await migrate(sql, { root, log: (l) => logged.push(l) })).schemaDrift).toEqual([]);
    expect(logged).toContain('1 migration(s) were applied without db:migrate since the fingerprint of the schema was recorded (supabase db push?): db:migrate takes it anew');
    expect(await migrationStatus(sql, root)).toMatchObject({ schemaDrift: [], schemaNote: null });
  });
});
