// Potentia through PgBouncer in transaction pool mode, split as on Supabase (src/db/pooling.ts):
// a pooler started for this file by scripts/pgbouncer (deploy/pgbouncer/pgbouncer.ini, which
// resets every server connection after each transaction, so reliance on session state breaks
// at once), a server with its realtime gateway and an in-process worker whose DATABASE_URL is
// the pooler and whose DIRECT_DATABASE_URL is Postgres. Concurrent HTTP mutations, their H1
// deltas and the embedding jobs they cause all work, and the pooler's admin console (SHOW POOLS,
// SHOW CLIENTS, SHOW STATS) shows that the traffic went through it, on fewer server connections
// than clients. Two probes show what breaks without the changes: named prepared statements and
// session settings. A query the driver abandons (answer_timeout) ends on the server within
// seconds here too: the pooler closes its server connection, client_connection_check_interval
// (sql/core/session_defaults.sql) sees the close. The pooler's own sockets, toward the clients and
// toward the server, give a stalled path up as the server does (TCP keepalive, tcp_user_timeout).
// Everything goes through the pooler as deploy/systemd/potentia.env.example's pooler line has it: as the
// processes' login role (a member of potentia_app with REPLICATION and BYPASSRLS and a password,
// potentia_runtime in docs/self-hosting.md), the one role in the auth file scripts/pgbouncer writes.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { assertMigrated } from '../../src/db/migrated.ts';
import { startServer, type Server } from '../../src/server.ts';
import { startFailureAdvice } from '../../src/start-failure.ts';
import { abandonLockingQuery, expectBackendEnded } from '../helpers/abandoned-query.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { tokenFor } from '../helpers/http.ts';
import { processTcpSockets } from '../helpers/sockets.ts';
import { sleep } from '../helpers/wait.ts';
import { discardEmbeddingBacklog, fastWorker, waitFor } from '../helpers/worker.ts';
import { freePort } from '../helpers/free-port.ts';

const run = promisify(execFile);
/** Server connections per database and user: fewer than the clients below, so they share them. */
const POOL_SIZE = 5;
/** The processes' login role, made for this file (roles are cluster-wide). */
const role = `potentia_test_pooled_${process.pid}`;
const password = 'pooled-role-test';
/** The test database, directly, as that role: DIRECT_DATABASE_URL. */
const direct = (() => { const u = new URL(testDatabaseUrl()); u.username = role; u.password = password; return u.toString(); })();
const dbName = decodeURIComponent(new URL(direct).pathname.slice(1));
const root = new URL('../..', import.meta.url).pathname;

let port = 0;
let runDir = '';
let pooled = '';
let pgbouncerEnv: NodeJS.ProcessEnv = {};
let admin: pg.Client;
let db: Database;
let server: Server | undefined;
let started = false;


/** One admin console command (simple query protocol, the only one the console speaks). */
async function show(what: 'pools' | 'clients' | 'stats'): Promise<Record<string, string>[]> {
  const res = await admin.query(`show ${what}`);
  return res.rows.filter((r: Record<string, string>) => r.database === dbName);
}

beforeAll(async () => {
  db = testDatabase(3);
  await db.sql.unsafe(`drop role if exists ${role}`);
  // as docs/self-hosting.md has the superuser make potentia_runtime
  await db.sql.unsafe(`create role ${role} login replication bypassrls password '${password}' in role potentia_app`);
  port = await freePort();
  runDir = mkdtempSync(join(tmpdir(), 'potentia-pgbouncer-test-'));
  pgbouncerEnv = { ...process.env, DIRECT_DATABASE_URL: direct, PGBOUNCER_PORT: String(port), PGBOUNCER_RUN_DIR: runDir,
                   PGBOUNCER_POOL_SIZE: String(POOL_SIZE) };
  try {
    await run('bash', ['scripts/pgbouncer', 'start'], { env: pgbouncerEnv });
  } catch (err) {
    // no pgbouncer is a failure, never a skip: scripts/setup installs it
    throw new Error(`scripts/pgbouncer start failed: ${(err as { stderr?: string }).stderr || (err as Error).message}`);
  }
  started = true;
  const url = new URL(direct);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  pooled = url.toString();
  url.pathname = '/pgbouncer';
  admin = new pg.Client({ connectionString: url.toString(), application_name: 'potentia-test-admin' });
  await admin.connect();
  await discardEmbeddingBacklog(db.sql); // the jobs waited for below are this file's own
});

afterAll(async () => {
  await server?.stop();
  await admin?.end().catch(() => {});
  if (started) await run('bash', ['scripts/pgbouncer', 'stop'], { env: pgbouncerEnv });
  if (runDir) rmSync(runDir, { recursive: true, force: true });
  await db?.sql.unsafe(`drop role if exists ${role}`);
  await db?.close();
});

describe('what transaction pooling breaks (and why Potentia avoids it)', () => {
  it('a named prepared statement is gone in the next transaction: postgres.js prepare:true fails (26000), prepare:false works', async () => {
    const named = postgres(pooled, { max: 1, prepare: true, onnotice: () => {} });
    const unnamed = postgres(pooled, { max: 1, prepare: false, onnotice: () => {} });
    try {
      const once = (sql: postgres.Sql) => sql.begin((tx) => tx`select ${7}::int as n`);
      expect((await once(named))[0]!.n).toBe(7); // prepared on the server connection of this transaction
      await expect(once(named)).rejects.toMatchObject({ code: '26000' }); // … which the next one lacks (reset here; a busy pooler hands it another connection)
      for (let i = 0; i < 3; i++) expect((await once(unnamed))[0]!.n).toBe(7);
    } finally {
      await named.end();
      await unnamed.end();
    }
  });

  it('a session setting is lost after its transaction; a transaction-local one holds within it (src/db/request.ts)', async () => {
    const sql = postgres(pooled, { max: 1, prepare: false, onnotice: () => {} });
    try {
      await sql`select set_config('statement_timeout', '1234', false)`;
      expect((await sql`show statement_timeout`)[0]!.statement_timeout).not.toBe('1234ms');
      const inside = await sql.begin(async (tx) => {
        await tx`select set_config('statement_timeout', '1234', true)`;
        return (await tx`show statement_timeout`)[0]!.statement_timeout;
      });
      expect(inside).toBe('1234ms');
    } finally {
      await sql.end();
    }
  });
});

describe("TCP keepalive and user timeout on the pooler's own sockets (deploy/pgbouncer/pgbouncer.ini)", () => {
  it("are the database's (SHOW CONFIG), on its sockets toward the clients and toward the server (the kernel's timers)", async () => {
    // a stalled path is given up as soon by the pooler as by the server (sql/core/session_defaults.sql);
    // with PgBouncer's defaults its sockets waited for the OS's timers: 2 h before a first probe
    const config = Object.fromEntries((await admin.query('show config')).rows.map((r: { key: string; value: string }) => [r.key, r.value]));
    const server = Object.fromEntries((await db.sql<{ name: string; setting: string }[]>`
      select name, setting from pg_settings where name like 'tcp%'`).map((r) => [r.name, r.setting]));
    expect(server).toMatchObject({ tcp_keepalives_idle: '60', tcp_keepalives_interval: '10', tcp_keepalives_count: '6', tcp_user_timeout: '120000' });
    const keys = ['tcp_keepalive', 'tcp_keepidle', 'tcp_keepintvl', 'tcp_keepcnt', 'tcp_user_timeout'];
    expect(Object.fromEntries(keys.map((k) => [k, config[k]]))).toEqual({
      tcp_keepalive: '1', tcp_keepidle: server.tcp_keepalives_idle, tcp_keepintvl: server.tcp_keepalives_interval,
      tcp_keepcnt: server.tcp_keepalives_count, tcp_user_timeout: server.tcp_user_timeout,
    });

    const client = postgres(pooled, { max: 1, prepare: false, onnotice: () => {} });
    try {
      await client`select 1`; // a client socket and a server connection
      const pid = Number(readFileSync(join(runDir, 'pgbouncer.pid'), 'utf8'));
      const serverPort = Number(new URL(direct).port || 5432);
      const sockets = () => processTcpSockets(pid).map((s) => ({
        side: s.localPort === port ? 'client' : s.remotePort === serverPort ? 'server' : `other ${s.localPort}-${s.remotePort}`,
        timer: s.timer, seconds: s.timerSeconds,
      }));
      // the first probe within 60 s, not the OS's 7200; a socket in the middle of an exchange
      // shows its retransmission timer for a moment: looked at again
      const probes = (s: { timer: string; seconds: number }) => s.timer === 'keepalive' && s.seconds <= 60;
      let seen = sockets();
      for (let i = 0; i < 10 && !seen.every(probes); i++) {
        await sleep(300);
        seen = sockets();
      }
      expect(new Set(seen.map((s) => s.side)), JSON.stringify(seen)).toEqual(new Set(['client', 'server']));
      expect(seen.filter((s) => !probes(s)), JSON.stringify(seen)).toEqual([]);
    } finally {
      await client.end();
    }
  });
});

describe('a server, its realtime gateway and a worker through the pooler', () => {
  it('serves concurrent HTTP mutations, streams their H1 deltas and runs their jobs; the admin console shows the pooling', async () => {
    const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
    server = await startServer({
      ...config, databaseUrl: pooled, directDatabaseUrl: direct, port: 0,
      // a job must start because Graphile Worker's LISTEN (a direct connection) hears it is
      // added: the poll alone would take a minute
      worker: fastWorker({ pollIntervalMs: 60_000 }),
    }, { worker: true });
    expect(server.gateway, 'the realtime gateway started').toBeDefined();
    // the bus's logical replication stream is up (through the pooler it never would be: the bus
    // would fall back to reading the table)
    await Promise.race([server.gateway!.bus.ready(), new Promise((_, reject) =>
      setTimeout(() => reject(new Error('the realtime replication stream did not start within 10 s')), 10_000).unref())]);

    const { canvasId, users } = await createCanvas(db.sql, ['admin', 'editor', 'viewer']);
    const writers = [users.owner!, users.admin!, users.editor!];
    const tokens = await Promise.all(writers.map((u) => tokenFor(server!, u)));
    const reader: H1Conn = await openH1(server.url, canvasId, await tokenFor(server, users.viewer!));
    await reader.next((m) => m.type === 'hello');
    reader.send({ type: 'resume', since_canvas_seq: 0 });
    await reader.next((m) => m.type === 'resumed');
    const [before] = await show('stats');

    // 12 mutations at once from 3 users (the endpoint allows 10/s each) over 5 server connections
    const tag = `pooled${randomUUID().slice(0, 8)}`;
    const results = await Promise.all(Array.from({ length: 12 }, async (_, i) => {
      const res = await fetch(`${server!.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST',
        headers: { authorization: `Bearer ${tokens[i % 3]}`, 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: `${tag} block ${i}` } } }),
      });
      return { status: res.status, body: await res.json() as { status: string; canvas_seq: number; block: { block_id: string } } };
    }));
    for (const r of results) expect(r, JSON.stringify(r.body)).toMatchObject({ status: 200, body: { status: 'success' } });
    const ids = results.map((r) => r.body.block.block_id);

    // H1: one delta per mutation, canvas_seq 1..12 without a gap (the bus streams from the direct URL)
    const seqs: number[] = [];
    for (let i = 0; i < 12; i++) seqs.push(((await reader.next((m) => m.type === 'delta')) as { canvas_seq: number }).canvas_seq);
    expect(seqs).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    expect(server.gateway!.bus.streaming()).toBe(true);
    reader.ws.close();

    // jobs: every block gets its embedding, well before the 60 s poll
    await waitFor('every block embedded', async () => {
      const [r] = await db.sql`select count(*)::int as n from app.blocks
                               where block_id = any(${ids}::uuid[]) and embedded_hash = content_hash`;
      return r!.n === ids.length;
    }, 15_000, 200);

    // SHOW POOLS: one transaction-mode pool for the test database; its clients outnumber its
    // server connections, which never exceed the pool size
    const [pool] = await show('pools');
    if (process.env.SHOW_POOLS) console.log(pool, (await show('clients')).map((c) => `${c.application_name} ${c.state}`));
    expect(pool, 'a pool for the test database').toBeDefined();
    expect(pool!.pool_mode).toBe('transaction');
    const servers = ['sv_active', 'sv_idle', 'sv_used', 'sv_tested', 'sv_login'].reduce((n, k) => n + Number(pool![k]), 0);
    const clients = Number(pool!.cl_active) + Number(pool!.cl_waiting);
    expect(servers).toBeGreaterThan(0);
    expect(servers).toBeLessThanOrEqual(POOL_SIZE);
    expect(clients).toBeGreaterThan(POOL_SIZE);

    // SHOW CLIENTS: the server's pool, the worker's and Graphile Worker's job queries came through
    // the pooler; the replication stream and Graphile Worker's LISTEN client did not
    const names = new Set((await show('clients')).map((c) => c.application_name));
    // … all of them as the processes' login role, the auth file's one user
    expect(new Set((await show('clients')).map((c) => c.user))).toEqual(new Set([role]));
    for (const name of ['potentia-server', 'potentia-worker', 'potentia-worker-queue']) expect(names).toContain(name);
    expect(names).not.toContain('potentia-realtime-bus');
    expect(names).not.toContain('potentia-worker-queue-listen');
    const unpooled = await db.sql<{ application_name: string; backend_type: string }[]>`
      select application_name, backend_type from pg_stat_activity
      where datname = ${dbName} and application_name in ('potentia-realtime-bus', 'potentia-worker-queue-listen')`;
    expect(unpooled.map((r) => `${r.application_name} ${r.backend_type}`).sort())
      .toEqual(['potentia-realtime-bus walsender', 'potentia-worker-queue-listen client backend']);

    // SHOW STATS: the mutations' transactions (and the jobs') were counted by the pooler
    const [after] = await show('stats');
    expect(Number(after!.total_xact_count) - Number(before!.total_xact_count)).toBeGreaterThanOrEqual(12 + ids.length);
  }, 60_000);
});

describe('a query abandoned by the answer timeout through the pooler (tests/integration/abandoned-query-backend.test.ts)', () => {
  it('does not keep running on the server: PgBouncer closes the server connection of a client gone mid-transaction, the backend sees it within seconds', { timeout: 60_000 }, async () => {
    const { canvasId } = await createCanvas(db.sql);
    const pool = createDatabase(pooled, { max: 1, transactionPooler: true, applicationName: 'potentia-test-abandoned', answerTimeoutSeconds: 2 });
    let pid = 0;
    try {
      pid = await abandonLockingQuery(pool, db.sql, canvasId);
      await expectBackendEnded(pool, db.sql, pid, canvasId, 6_000);
    } finally {
      // without client_connection_check_interval the backend still sleeps, holding the canvas row
      if (pid) await db.sql`select pg_terminate_backend(${pid})`;
      await pool.close();
    }
  });
});

describe('the start check through the pooler (src/db/migrated.ts)', () => {
  it("the README's admin console command reaches it: over TCP, as the pooler has no Unix socket", async () => {
    // the README said `psql -p 6543 -U postgres pgbouncer`, which looks for a Unix socket
    // (unix_socket_dir is empty in deploy/pgbouncer/pgbouncer.ini): No such file or directory
    const readme = readFileSync(join(root, 'README.md'), 'utf8');
    const line = readme.split('\n').find((l) => l.startsWith('scripts/pgbouncer status'));
    const command = /\(psql (\S+)\)/.exec(line ?? '');
    expect(command, 'README: scripts/pgbouncer status  # … (psql <url>)').not.toBeNull();
    const documented = new URL(command![1]!);
    expect({ host: documented.hostname, port: documented.port, database: documented.pathname }).toEqual({ host: '127.0.0.1', port: '6543', database: '/pgbouncer' });
    // the same command on this file's pooler: its port, and the test database's user and password
    const url = new URL(direct);
    documented.port = String(port);
    documented.username = url.username;
    documented.password = url.password;
    const { stdout } = await run('psql', [documented.toString(), '-X', '-At', '-c', 'show pools']);
    expect(stdout).toContain(`${dbName}|`);
  });

  it('a database or user the pooler refuses stops the start with the advice the server\'s own refusal gets', async () => {
    // PgBouncer sends both as 08P01 with the message alone: the check took them for an outage and
    // the role started, unready for good, where the same URL without the pooler stopped with advice
    const to = (database: string, user?: string) => {
      const u = new URL(pooled);
      u.pathname = `/${database}`;
      if (user) u.username = user;
      return u.toString();
    };
    await expect(assertMigrated(pooled)).resolves.toBeUndefined();
    const missing = to(`potentia_missing_${process.pid}`);
    const noDatabase = await assertMigrated(missing).then(() => undefined, (e: Error & { code?: string }) => e);
    expect(noDatabase).toMatchObject({ code: '3D000', message: `database "potentia_missing_${process.pid}" does not exist` });
    expect(startFailureAdvice(noDatabase!, { databaseUrl: missing })).toMatch(/^the database does not exist \(DATABASE_URL=/);
    const stranger = to(dbName, 'potentia_nobody');
    const noUser = await assertMigrated(stranger).then(() => undefined, (e: Error & { code?: string }) => e);
    expect(noUser).toMatchObject({ code: '28P01', message: expect.stringMatching(/authentication failed$/) });
    expect(startFailureAdvice(noUser!, { databaseUrl: stranger })).toMatch(/^the database refused the role or password/);
  });
});
