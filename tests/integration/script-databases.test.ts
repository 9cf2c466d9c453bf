// The scripts that make databases of their own take the server from the environment and let the
// caller name what they drop, so two people on one server do not share (and drop) one database.
// bench:join-flood made its checkouts' databases on 127.0.0.1:5432 and bench:jobs its default
// database there, whatever DATABASE_URL said; upgrade:v1:acceptance dropped and made
// potentia_upgrade_acceptance{,_v1} with no way to choose other names.
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';

const repoRoot = new URL('../..', import.meta.url).pathname;
const run = promisify(execFile);
const server = new URL(testDatabaseUrl());
const base = server.pathname.slice(1);
const on = (name: string) => { const u = new URL(server); u.pathname = `/${name}`; return u.toString(); };
const admin = postgres(on('postgres'), { max: 1, onnotice: () => {} });
/** A server where nothing listens: a script that takes DATABASE_URL's server fails to connect. */
const NOWHERE = 'postgres://postgres@127.0.0.1:1/nowhere';

async function script(env: NodeJS.ProcessEnv, file: string, ...args: string[]): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('node_modules/.bin/tsx', [file, ...args], { cwd: repoRoot, env: { ...process.env, ...env }, timeout: 120_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: `${e.stdout}${e.stderr}` };
  }
}
const exists = async (name: string) => (await admin`select 1 from pg_database where datname = ${name}`).length === 1;
const made: string[] = [];
afterAll(async () => {
  for (const name of made) await admin.unsafe(`drop database if exists "${name}" with (force)`);
  await admin.end();
});

describe('scripts that make their own databases', () => {
  it('bench:join-flood makes its checkout database on the server of DATABASE_URL', async () => {
    const db = `${base}_bench_joinflood`;
    made.push(db);
    const r = await script({ DATABASE_URL: NOWHERE }, 'scripts/bench-join-flood.ts', '--checkouts', `this=${repoRoot}@${db}`,
      '--rounds', '1', '--baseline-seconds', '0.2', '--sockets', '1', '--joins', '1', '--rps', '1', '--port', '1');
    expect(r.code, r.out).not.toBe(0);
    expect(r.out).toMatch(/ECONNREFUSED 127\.0\.0\.1:1\b/);
    expect(await exists(db)).toBe(false);
  }, 130_000);

  it('bench:jobs without --database-url uses the server of DATABASE_URL', async () => {
    const r = await script({ DATABASE_URL: NOWHERE }, 'scripts/bench-jobs.ts', '--seconds', '0.1', '--rounds', '1', '--writers', '1', '--jobs', '1', '--concurrency', '1');
    expect(r.code, r.out).not.toBe(0);
    expect(r.out).toMatch(/ECONNREFUSED 127\.0\.0\.1:1\b/);
  }, 130_000);

  it('upgrade:v1:acceptance --database NAME works in NAME and NAME_v1 (kept with --keep), on the server of TEST_DATABASE_URL', async () => {
    const name = `${base}_upgrade_acc`;
    made.push(name, `${name}_v1`);
    // pgTAP on one small file only: the upgrade and its verification are what this is about
    const exclude = readdirSync(`${repoRoot}/supabase/tests`).filter((f) => f.endsWith('.sql') && f !== '000_helpers.test.sql' && f !== 'cleanup_audit_partition_names.test.sql');
    const r = await script({ TEST_DATABASE_URL: testDatabaseUrl() }, 'scripts/upgrade-v1-acceptance.ts', '--database', name,
      '--blocks', '20', '--canvases', '2', '--embedded', '0', '--keep', '--pgtap-exclude', exclude.join(','));
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`target: ${name} built`);
    expect(r.out).toContain('verify: 0 differences');
    expect(await exists(name)).toBe(true);
    expect(await exists(`${name}_v1`)).toBe(true);
    const refused = await script({}, 'scripts/upgrade-v1-acceptance.ts', '--database', 'Bad;Name');
    expect(refused.code).toBe(2);
    expect(refused.out).toContain('--database "Bad;Name": a lower-case database name');
  }, 130_000);
});
