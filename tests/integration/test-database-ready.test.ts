import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { withoutPassword } from '../../src/url-redaction.ts';
import { testDatabaseProblem } from '../helpers/database-ready.ts';

// A vitest run against a TEST_DATABASE_URL nobody migrated failed every test of a file with a raw
// `relation "auth.users" does not exist`, which says nothing of what to run. The setup file
// (tests/helpers/database-ready-setup.ts, vitest.config.ts) now fails such a file at once with the
// migration command. Run for real: a scratch database on the test server, and vitest itself.

const run = promisify(execFile);
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const name = `${new URL(testDatabaseUrl()).pathname.slice(1)}_unmigrated_${process.pid}`;
const scratchUrl = (() => { const u = new URL(testDatabaseUrl()); u.pathname = `/${name}`; return u.toString(); })();
/** As the messages print it: CI's URL has a password. */
const scratchShown = withoutPassword(scratchUrl);

beforeAll(async () => {
  await admin.unsafe(`drop database if exists ${name}`);
  await admin.unsafe(`create database ${name}`);
});
afterAll(async () => {
  await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
});

describe('a test database that is not migrated', () => {
  it('fails a database test file with the command to run, not a raw relation error', async () => {
    let output = '';
    try {
      await run(`${process.cwd()}/node_modules/.bin/vitest`, ['run', 'tests/integration/canvas-seq.test.ts'], {
        env: { ...process.env, TEST_DATABASE_URL: scratchUrl, LOG_LEVEL: 'silent', NO_COLOR: '1' }, timeout: 120_000 });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string };
      output = `${e.stdout ?? ''}${e.stderr ?? ''}`;
    }
    expect(output).toContain(`TEST_DATABASE_URL ${scratchShown} is not migrated`);
    expect(output).toContain('run npm run db:migrate -- --database-url "$TEST_DATABASE_URL"');
    expect(output).not.toContain('does not exist');
  }, 180_000);

  it('names what is missing: the record, or the migrations of the checkout it lacks', async () => {
    expect(await testDatabaseProblem(scratchUrl, {})).toBe(`TEST_DATABASE_URL ${scratchShown} is not migrated (no `
      + `supabase_migrations.schema_migrations): run npm run db:migrate -- --database-url '${scratchShown}' (npm test does it for `
      + 'potentia_test; README, "Other commands"), then the tests again');
    const scratch = postgres(scratchUrl, { max: 1, onnotice: () => {} });
    try {
      await scratch`create schema supabase_migrations`;
      await scratch`create table supabase_migrations.schema_migrations (version text primary key)`;
      await scratch`insert into supabase_migrations.schema_migrations values ('20261121000000')`;
    } finally {
      await scratch.end();
    }
    expect(await testDatabaseProblem(scratchUrl, {})).toMatch(/lacks \d+ migration\(s\) of this checkout \(first: 20261121000100_core_schema\.sql\)/);
    // the migrated test database passes
    expect(await testDatabaseProblem(testDatabaseUrl())).toBeNull();
  });
});
