import { execFile, spawn } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { LockWaitError, StepConnectionLostError } from '../../src/db/migration-step.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

// npm run db:migrate against a database that is in use (src/db/migration-step.ts): a long
// transaction holding a table the migration alters, statement_timeout/lock_timeout set on the
// database, the step's backend terminated, the process killed. Each migration of the tests is
// added to a copy of supabase/migrations; the database is migrated once beforehand.

const repoRoot = new URL('../..', import.meta.url).pathname;
const scratch = migrationScratch('migrate_live');
const { name, urlOf, admin } = scratch;
let root: string;
let db: postgres.Sql; // the tests' own look at the database
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
/** The steps' session as scripts/migrate.ts opens it (the tests' own pool watches their lock waits). */
const migrator = () => postgres(urlOf(name), { max: 1, onnotice: () => {}, connection: { application_name: 'potentia-migrate' } });
const addMigration = (version: string, text: string) => writeFileSync(join(root, `supabase/migrations/${version}_live.sql`), text);
const recorded = async (version: string) =>
  (await db`select count(*)::int as n from supabase_migrations.schema_migrations where version = ${version}`)[0]!.n;

async function until(what: string, check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end; await sleep(50)) if (await check()) return;
  throw new Error(`timed out waiting for ${what}`);
}

beforeAll(async () => {
  await scratch.create();
  root = checkoutCopy('migrate-live');
  const sql = migrator();
  try { await migrate(sql, { root }); } finally { await sql.end(); }
  db = postgres(urlOf(name), { max: 2, onnotice: () => {} });
}, 60_000);

afterAll(async () => {
  await db?.end();
  await scratch.close();
  if (root) rmSync(root, { recursive: true, force: true });
});

describe('db:migrate on a database in use', () => {
  it('waits for a table a long transaction holds in tries of 0.1 s growing to 2 s, so queued traffic passes; at --lock-wait it fails naming the session, applying nothing', async () => {
    addMigration('29990101000000', 'alter table app.blocks add column live_probe int;');
    const holder = postgres(urlOf(name), { max: 1, onnotice: () => {}, connection: { application_name: 'forgotten-psql' } });
    const sql = migrator();
    let release!: () => void;
    try {
      let holderPid = 0;
      const held = holder.begin(async (tx) => {
        holderPid = (await tx`select pg_backend_pid() as pid`)[0]!.pid as number;
        await tx`lock table app.blocks in access share mode`;
        await new Promise<void>((resolve) => { release = resolve; });
      });
      await until('the holder', async () => holderPid !== 0);
      const started = Date.now();
      const failed = migrate(sql, { root, lockWaitMs: 4500, watch: db }).then(() => null, (e: unknown) => e);
      // a reader queued behind the migration's pending lock gets through when the step gives up
      await until('the step waiting', async () => (await db`select count(*)::int as n from pg_locks where not granted and relation = 'app.blocks'::regclass`)[0]!.n > 0);
      const queued = Date.now();
      await db`select count(*) from app.blocks`;
      expect(Date.now() - queued).toBeLessThan(3000);

      const err = await failed;
      expect(Date.now() - started).toBeLessThan(15_000); // bounded by --lock-wait (4.5 s), not by the holder
      expect(err).toBeInstanceOf(LockWaitError);
      // the whole of --lock-wait (4.5 s): tries of 0.1, 0.2 and 0.4 s, 1 s apart, then the last waits what is left (0.8 s)
      expect((err as LockWaitError).waitedMs).toBeGreaterThanOrEqual(4000);
      expect((err as Error).message).toMatch(new RegExp('^supabase/migrations/29990101000000_live\\.sql waited \\d+(\\.\\d)? s for locks held by other sessions and was not applied: '
        + `pid ${holderPid} \\(role postgres, application forgotten-psql, idle in transaction in a transaction open for \\d+ s, holding app\\.blocks; last query: lock table app\\.blocks in access share mode\\)\\. `
        + 'The step was rolled back \\(nothing of it is applied; the steps before it are kept\\)\\. End those sessions or let them finish'));
      expect(await recorded('29990101000000')).toBe(0);
      expect((await db`select count(*)::int as n from pg_attribute where attrelid = 'app.blocks'::regclass and attname = 'live_probe'`)[0]!.n).toBe(0);

      // run again while the holder still holds it, and the holder ends: it is applied on a later try
      const logged: string[] = [];
      const again = migrate(sql, { root, log: (l) => logged.push(l), watch: db });
      await until('three tries', async () => logged.length >= 3);
      release();
      await held;
      expect((await again).migrations).toEqual(['supabase/migrations/29990101000000_live.sql']);
      // each try waits twice as long as the one before (up to 2 s): a short wait stalls the traffic queued behind it little
      expect(logged.slice(0, 3).map((l) => /waited ([\d.]+) s for a lock/.exec(l)?.[1])).toEqual(['0.1', '0.2', '0.4']);
      expect(logged[0]).toMatch(new RegExp(`^supabase/migrations/29990101000000_live\\.sql: waited 0\\.1 s for a lock, pid ${holderPid} \\(.*forgotten-psql.*\\): rolled back so the traffic queued behind it runs; trying again \\(\\d+ s left of --lock-wait\\)$`));
    } finally {
      release?.();
      await holder.end();
      await sql.end();
    }
  }, 30_000);

  it('the database\'s statement_timeout and lock_timeout do not cut a step short', async () => {
    await admin.unsafe(`alter database ${name} set statement_timeout = '100ms'`);
    await admin.unsafe(`alter database ${name} set lock_timeout = '1ms'`);
    addMigration('29990102000000', 'select pg_sleep(0.3);\ncreate table app.timeout_probe (id int);');
    const sql = migrator();
    try {
      expect((await migrate(sql, { root })).migrations).toEqual(['supabase/migrations/29990102000000_live.sql']);
    } finally {
      await sql.end();
      await admin.unsafe(`alter database ${name} reset statement_timeout`);
      await admin.unsafe(`alter database ${name} reset lock_timeout`);
    }
  });

  it('a step whose backend is terminated fails naming it as rolled back; the next run applies it', async () => {
    addMigration('29990103000000', 'create table app.terminated_probe (id int);\nselect pg_sleep(2);');
    const sql = migrator();
    try {
      const failed = migrate(sql, { root }).then(() => null, (e: unknown) => e);
      await until('the step', async () => (await db`select pg_terminate_backend(pid) as t from pg_stat_activity
        where datname = ${name} and application_name = 'potentia-migrate' and query like '%terminated_probe%'`).length > 0);
      const err = await failed;
      expect(err).toBeInstanceOf(StepConnectionLostError);
      expect((err as Error).message).toBe('the connection to the database was lost while applying supabase/migrations/29990103000000_live.sql '
        + '(terminating connection due to administrator command): the step was rolled back with its transaction (nothing of it is applied; '
        + 'the steps before it are kept). Run the same command again: it goes on from that step.');
      expect(await recorded('29990103000000')).toBe(0);
      expect((await db`select to_regclass('app.terminated_probe') as t`)[0]!.t).toBeNull();
      expect((await migrate(sql, { root })).migrations).toEqual(['supabase/migrations/29990103000000_live.sql']);
    } finally {
      await sql.end();
    }
  }, 20_000);

  it('a killed migrate (SIGKILL) leaves no backend running its step, even where the database sets no client_connection_check_interval', async () => {
    await admin.unsafe(`alter database ${name} reset client_connection_check_interval`);
    // sleeps only in the run that is killed
    addMigration('29990104000000', "create table app.killed_probe (id int);\nselect pg_sleep(case when current_setting('application_name') = 'migrate-to-kill' then 60 else 0 end);");
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import postgres from 'postgres';
      import { migrate } from './src/db/migrate.ts';
      await migrate(postgres(${JSON.stringify(urlOf(name))}, { max: 1, connection: { application_name: 'migrate-to-kill' } }), { root: ${JSON.stringify(root)} });
    `], { cwd: repoRoot, stdio: 'ignore' });
    try {
      const step = async () => (await db`select pid from pg_stat_activity where datname = ${name} and application_name = 'migrate-to-kill' and query like '%killed_probe%'`);
      await until('the step', async () => (await step()).length > 0, 20_000);
      child.kill('SIGKILL');
      const killed = Date.now();
      await until('the backend to end', async () => (await step()).length === 0, 8000);
      expect(Date.now() - killed).toBeLessThan(5000);
      expect(await recorded('29990104000000')).toBe(0);
      const sql = migrator();
      try {
        expect((await migrate(sql, { root })).migrations).toEqual(['supabase/migrations/29990104000000_live.sql']);
      } finally {
        await sql.end();
      }
    } finally {
      child.kill('SIGKILL');
    }
  }, 40_000);

  it('npm run db:migrate exits 1 naming the session that holds what it waits for (here the migrations table)', async () => {
    const holder = postgres(urlOf(name), { max: 1, onnotice: () => {}, connection: { application_name: 'forgotten-psql' } });
    let release!: () => void;
    try {
      let holding = false;
      const held = holder.begin(async (tx) => {
        await tx`lock table supabase_migrations.schema_migrations in access share mode`;
        holding = true;
        await new Promise<void>((resolve) => { release = resolve; });
      });
      await until('the holder', async () => holding);
      const run = await promisify(execFile)(join(repoRoot, 'node_modules/.bin/tsx'), ['scripts/migrate.ts', '--database-url', urlOf(name), '--lock-wait', '0'],
        { cwd: repoRoot }).then(() => null, (e: { code?: number; stderr?: string }) => e);
      release();
      await held;
      expect(run?.code).toBe(1);
      expect(run?.stderr).toMatch(/^migrate failed: the migrations table \(supabase_migrations\) waited \d+(\.\d)? s for locks held by other sessions and was not applied: pid \d+ \(role postgres, application forgotten-psql, idle in transaction/);
    } finally {
      release?.();
      await holder.end();
    }
  }, 30_000);
});
