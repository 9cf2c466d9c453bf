import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';

// README.md, "Migrations": the shell block that runs one pgTAP file without Docker, run as written
// in bash, its database name and server replaced by this test's. Before it, nothing said how, and
// pg_prove of one file on a pushed database failed `schema "tests" does not exist`.
const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const test = new URL(testDatabaseUrl());
const name = `potentia_readme_tap_${process.pid}`;
const admin = (() => { const u = new URL(test); u.pathname = '/postgres'; return postgres(u.toString(), { max: 1, onnotice: () => {} }); })();
afterAll(async () => {
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
});

/** The README's block, for this test's server and database. */
function readmeBlock(): string[] {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const at = readme.indexOf('To run\n  pgTAP files yourself');
  expect(at, 'README.md, Migrations, no longer says "To run pgTAP files yourself"').toBeGreaterThan(0);
  const block = /```sh\n([\s\S]*?)```/.exec(readme.slice(at))![1]!;
  const server = `${test.protocol}//${test.username}:${test.password}@${test.host}`;
  return block.split('\n').map((l) => l.trim()).filter(Boolean).map((l) => l
    .replaceAll('postgres://postgres:postgres@127.0.0.1:5432', server)
    .replaceAll('potentia_tap', name));
}

async function bash(script: string): Promise<{ code: number; out: string }> {
  try {
    const { stdout, stderr } = await run('bash', ['-c', script], { cwd: root, timeout: 240_000 });
    return { code: 0, out: stdout + stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, out: e.stdout + e.stderr };
  }
}

describe('README.md, Migrations: one pgTAP file as written', () => {
  it('builds the database, runs 000_helpers and the file (a file alone fails naming the schema tests), and runs again', async () => {
    const lines = readmeBlock();
    const prove = lines.findIndex((l) => l.startsWith('pg_prove '));
    expect(lines[prove]).toContain('"$TAP" supabase/tests/000_helpers.test.sql supabase/tests/merge.test.sql');
    const setupLines = lines.slice(0, prove).join('\n');
    const built = await bash(`set -e\n${setupLines}`);
    expect(built.out).toMatch(new RegExp(`db push ${name}: compat auth, realtime, \\d+ migrations, seed.sql`));
    expect(built.code).toBe(0);
    // what the README says a file run alone does
    const alone = await bash(`${lines[0]}\npg_prove --dbname "$TAP" supabase/tests/merge.test.sql`);
    expect(alone.code).not.toBe(0);
    expect(alone.out).toContain('schema "tests" does not exist');
    for (const round of [1, 2]) {
      const proved = await bash(`set -e\n${lines[0]}\n${lines[prove]}`);
      expect(proved.out, `round ${round}`).toMatch(/supabase\/tests\/merge\.test\.sql \.+ ok/);
      expect(proved.out, `round ${round}`).toContain('Result: PASS');
      expect(proved.code).toBe(0);
    }
  }, 300_000);
});
