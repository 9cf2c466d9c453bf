import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';

// The pooler scripts/pgbouncer runs (deploy/pgbouncer/pgbouncer.ini) made the application's role,
// the one in DATABASE_URL, its admin (admin_users): whoever held the application's password could
// SHUTDOWN, PAUSE or KILL the pooler in front of every process. It needs to read the console only
// (scripts/pgbouncer start and status, SHOW POOLS/CLIENTS/STATS): stats_users.
// The role is the processes' login role as deploy/systemd/potentia.env.example names it: a member
// of potentia_app with a password, not the schemas' owner. The auth file scripts/pgbouncer writes
// holds it alone, so the pooler admits it and refuses the owner (migrations go direct).

const run = promisify(execFile);
const role = `potentia_test_pooler_${process.pid}`;
const password = 'pooler-role-test';
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
/** The test database's URL as `user` with `secret`, on `port` (the pooler) and `database` when given. */
const as = (user: string, secret: string, port?: number, database?: string) => {
  const u = new URL(testDatabaseUrl());
  u.username = user;
  u.password = secret;
  u.hostname = '127.0.0.1';
  if (port) u.port = String(port);
  if (database) u.pathname = `/${database}`;
  return u.toString();
};
let env: NodeJS.ProcessEnv = {};
let runDir = '';
let started = false;
let consoleUrl = '';
let pooledUrl = '';
let ownerThroughPooler = '';

beforeAll(async () => {
  const port = await new Promise<number>((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => { const { port: p } = s.address() as { port: number }; s.close(() => resolve(p)); });
  });
  await admin.unsafe(`drop role if exists ${role}`);
  // as docs/self-hosting.md has the superuser make potentia_runtime
  await admin.unsafe(`create role ${role} login replication bypassrls password '${password}' in role potentia_app`);
  runDir = mkdtempSync(join(tmpdir(), 'potentia-pgbouncer-console-'));
  env = { ...process.env, DIRECT_DATABASE_URL: as(role, password), PGBOUNCER_PORT: String(port), PGBOUNCER_RUN_DIR: runDir, PGBOUNCER_POOL_SIZE: '1' };
  await run('bash', ['scripts/pgbouncer', 'start'], { env });
  started = true;
  consoleUrl = as(role, password, port, 'pgbouncer');
  pooledUrl = as(role, password, port);
  const owner = new URL(testDatabaseUrl());
  // with a password (the pooler asks for one): whichever it is, the owner is not in the auth file
  ownerThroughPooler = as(decodeURIComponent(owner.username) || 'postgres', decodeURIComponent(owner.password) || 'any-password', port);
});

afterAll(async () => {
  if (started) await run('bash', ['scripts/pgbouncer', 'stop'], { env });
  if (runDir) rmSync(runDir, { recursive: true, force: true });
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.end();
});

describe("the pooler's auth file, from the processes' login role", () => {
  it('admits that role, which reaches the database as itself (a member of potentia_app, owning nothing), and no other', async () => {
    const pooled = new pg.Client({ connectionString: pooledUrl });
    await pooled.connect();
    try {
      const { rows: [who] } = await pooled.query(`select current_user as role, pg_has_role(current_user, 'potentia_app', 'member') as app,
        (select nspowner::regrole::text from pg_namespace where nspname = 'app') <> current_user as owns_nothing`);
      expect(who).toEqual({ role, app: true, owns_nothing: true });
    } finally {
      await pooled.end().catch(() => {});
    }
    // the schemas' owner (here the test database's superuser) is not in the auth file: the pooler refuses it
    const owner = new pg.Client({ connectionString: ownerThroughPooler });
    const refused = await owner.connect().then(() => 'admitted', (err: Error) => err.message);
    expect(refused).toMatch(/^(SASL|password) authentication failed/);
    await owner.end().catch(() => {});
  });
});

describe("the pooler's admin console, as the application's role", () => {
  it('reads (SHOW, scripts/pgbouncer status) but cannot command the pooler (RELOAD, PAUSE, SHUTDOWN refused)', async () => {
    const { stdout } = await run('bash', ['scripts/pgbouncer', 'status'], { env });
    expect(stdout).toMatch(/pgbouncer runs \(pid \d+/);
    const client = new pg.Client({ connectionString: consoleUrl });
    await client.connect();
    try {
      // what pgbouncer.test.ts and an operator's dashboard read
      for (const show of ['show pools', 'show clients', 'show stats', 'show config']) expect((await client.query(show)).rows.length, show).toBeGreaterThan(0);
      for (const command of ['reload', 'pause', 'shutdown']) {
        await expect(client.query(command), command).rejects.toThrow(/admin access needed/);
      }
    } finally {
      await client.end().catch(() => {});
    }
  });
});
