import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';

// scripts/token.ts as the README has newcomers run it: its --scope is the claim
// internal.scope_allows reads (sql/auth/permissions.sql), so a word the database would never match
// is refused with the forms it takes, and a canvas id is written the way the database compares it.

const repoRoot = new URL('../..', import.meta.url).pathname;
const run = promisify(execFile);
const sql = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const email = `token-script-${process.pid}@example.com`;

afterAll(async () => {
  await sql`delete from auth.users where email = ${email}`;
  await sql.end();
});

async function token(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('node_modules/.bin/tsx', ['scripts/token.ts', '--database-url', testDatabaseUrl(), ...args],
      { cwd: repoRoot, env: { ...process.env, NODE_ENV: 'development' } });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('scripts/token.ts --scope', () => {
  it.each([
    ['canvas:not-a-uuid:write', 'is not canvas:<id>:read, canvas:<id>:write', 1],
    ['canvas:*:admin', 'is not canvas:<id>:read', 1],
    ['write', 'is not canvas:<id>:read', 1],
    // a blank option is a usage error of every script (scripts/lib/command-line.ts): exit 2
    ['   ', '--scope is empty', 2],
  ])('refuses %j, naming the forms it takes, and mints nothing', async (scope, message, code) => {
    const out = await token('--email', email, '--password', 'secret-123', '--scope', scope);
    expect(out.code).toBe(code);
    expect(out.stderr).toContain(message);
    expect(out.stdout).toBe('');
  });

  it('mints a claim the database matches: canvas ids in lower case, words kept in order', async () => {
    const canvas = randomUUID();
    const out = await token('--email', email, '--password', 'secret-123', '--scope', ` canvas:${canvas.toUpperCase()}:write  canvas:*:read `);
    expect(out.code).toBe(0);
    const claims = JSON.parse(Buffer.from(out.stdout.trim().split('.')[1]!, 'base64url').toString());
    expect(claims.scope).toBe(`canvas:${canvas}:write canvas:*:read`);
    const [row] = await sql`select internal.scope_allows(${sql.json(claims.scope)}::jsonb, ${canvas}::uuid, true) as write_here,
      internal.scope_allows(${sql.json(claims.scope)}::jsonb, ${randomUUID()}::uuid, true) as write_elsewhere,
      internal.scope_allows(${sql.json(claims.scope)}::jsonb, ${randomUUID()}::uuid, false) as read_elsewhere`;
    expect(row).toEqual({ write_here: true, write_elsewhere: false, read_elsewhere: true });
  });
});
