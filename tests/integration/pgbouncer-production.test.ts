// deploy/pgbouncer/pgbouncer.production.ini, run by the real pgbouncer as Debian's unit runs it (in
// the foreground, as postgres, its log on stderr), rendered for this machine: its port, its
// socket directory and auth file in a temporary directory, the test database in [databases], its
// console roles named for this file, and one server connection (default_pool_size 1, no reserve)
// so that every transaction reuses the same one. Every other line is the file's, and the
// pooler's SHOW CONFIG says so. The auth file is what deploy/pgbouncer/userlist.sql writes: the
// roles' SCRAM secrets from pg_authid. Behind it, a real Potentia process (src/main.ts) whose
// DATABASE_URL is the pooler and DIRECT_DATABASE_URL Postgres, both as the processes' login role
// made as docs/self-hosting.md has the superuser make potentia_runtime.
//   - a wrong password, a role not in the auth file, and the console roles' login to the database
//     are refused; the runtime role is admitted as itself
//   - no reset between transactions (server_reset_query_always = 0), yet nothing of one request
//     (its role, claims, headers, any session setting, prepared statement, lock, listen) is on the
//     server connection for the next, another user's: a probe sees the same backend bare
//   - toward a server whose pg_hba.conf asks scram-sha-256 (a private cluster: the test database's
//     trusts 127.0.0.1), the pooler logs in with the client's own proof (SCRAM pass-through)
//   - pg_terminate_backend of the pooler's server connection under concurrent mutations of four
//     users: no acknowledged mutation lost, each applied once after resending (refusals are 503),
//     the process lives
//   - the console: stats_users read it and are refused SHUTDOWN, PAUSE, RELOAD; the runtime role
//     is refused it; admin_users reload it after a password change (the file's rotation steps)
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chownSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateCluster, serverBindir } from '../../scripts/lib/private-cluster.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { sleep, until } from '../helpers/wait.ts';
import { freePort } from '../helpers/free-port.ts';

const root = new URL('../..', import.meta.url).pathname;
const productionIni = readFileSync(join(root, 'deploy/pgbouncer/pgbouncer.production.ini'), 'utf8');
const localIni = readFileSync(join(root, 'deploy/pgbouncer/pgbouncer.ini'), 'utf8');
const config = loadConfig();
const suffix = `${process.pid}`;
/** The processes' login role (potentia_runtime) and the console's two (pgbouncer_admin, pgbouncer_stats): roles are cluster-wide. */
const roles = { runtime: `potentia_test_prodpool_${suffix}`, admin: `potentia_test_prodpool_admin_${suffix}`, stats: `potentia_test_prodpool_stats_${suffix}` };
const passwords = { runtime: 'runtime-secret-1', admin: 'admin-secret', stats: 'stats-secret' };
const server = new URL(testDatabaseUrl());
const dbName = decodeURIComponent(server.pathname.slice(1));

/** `key = value` lines of one section of an ini text (comments and blank lines left out). */
function section(ini: string, name: string): Map<string, string> {
  const values = new Map<string, string>();
  let current = '';
  for (const line of ini.split('\n')) {
    const head = /^\[(\w+)\]\s*$/.exec(line);
    if (head) { current = head[1]!; continue; }
    const kv = /^([A-Za-z_][\w.-]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (kv && current === name) values.set(kv[1]!, kv[2]!);
  }
  return values;
}

/**
 * The production file with `values` in place of its own for those keys, and `database` (a
 * [databases] line) in place of its one database; a key it does not set fails (the file changed shape).
 */
function render(ini: string, values: Record<string, string>, database: string): string {
  const shipped = /^potentia = host=127\.0\.0\.1 port=5432 dbname=potentia$/m;
  if (!shipped.test(ini)) throw new Error('pgbouncer.production.ini has no [databases] line for potentia on 127.0.0.1:5432');
  ini = ini.replace(shipped, database);
  for (const [key, value] of Object.entries(values)) {
    const line = new RegExp(`^${key} = .*$`, 'm');
    if (!line.test(ini)) throw new Error(`pgbouncer.production.ini sets no ${key}`);
    ini = ini.replace(line, `${key} = ${value}`);
  }
  return ini;
}

type Pooler = { child: ChildProcess; log(): string; stop(): Promise<void> };

/** The real pgbouncer on `ini`, as Debian's unit runs it: in the foreground (its log on stderr), as postgres when we are root. */
async function startPooler(ini: string): Promise<Pooler> {
  const binary = ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer'].find((p) => existsSync(p));
  // no pgbouncer is a failure, never a skip: scripts/setup installs it
  if (!binary) throw new Error('pgbouncer is not installed (apt-get install pgbouncer)');
  const child = spawn(binary, [...(asRoot ? ['-u', 'postgres'] : []), ini], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (d) => { log += d; });
  child.stderr!.on('data', (d) => { log += d; });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM'); // immediate shutdown
    await exited;
  };
  await until(() => log.includes('process up') || child.exitCode !== null, 10_000, 'pgbouncer to start').catch(async (err) => { await stop(); throw err; });
  if (child.exitCode !== null) throw new Error(`pgbouncer exited at start:\n${log}`);
  return { child, log: () => log, stop };
}


const asRoot = process.getuid?.() === 0;
let admin: postgres.Sql;
let runDir = '';
let port = 0;
let pooler: Pooler | undefined;
let potentia: PotentiaProcess | undefined;
/** What the pooler renders to: the keys the test changes, and nothing else. */
let rendered: Record<string, string> = {};

/** The test database through the pooler (or `database` there) as `role` with `password`. */
const pooledUrl = (role: string, password: string, database = dbName) => {
  const u = new URL(server.toString());
  u.username = role;
  u.password = password;
  u.hostname = '127.0.0.1';
  u.port = String(port);
  u.pathname = `/${database}`;
  return u.toString();
};
/** Who `url` logs in as (current_user), or the message of its refusal. */
async function loginAs(url: string): Promise<string> {
  const sql = postgres(url, { max: 1, prepare: false, onnotice: () => {} });
  try {
    return (await sql`select current_user as role`)[0]!.role as string;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await sql.end();
  }
}
const directUrl = (() => { const u = new URL(server.toString()); u.username = roles.runtime; u.password = passwords.runtime; return u.toString(); })();

/** The auth file as the production file's "Auth" has the DBA write it: deploy/pgbouncer/userlist.sql as a superuser (of `adminUrl`'s server). */
function writeAuthFile(dir = runDir, adminUrl = testDatabaseUrl()): void {
  const lines = execFileSync('psql', ['-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-v', `runtime=${roles.runtime}`, '-v', `admin=${roles.admin}`,
    '-v', `stats=${roles.stats}`, adminUrl], { input: readFileSync(join(root, 'deploy/pgbouncer/userlist.sql')), encoding: 'utf8' });
  writeFileSync(join(dir, 'userlist.txt'), lines, { mode: 0o600 });
  if (asRoot) chownSync(join(dir, 'userlist.txt'), postgresUid(), postgresUid('-g'));
}
/** The roles as docs/self-hosting.md has the superuser make potentia_runtime (`inRole`: potentia_app), and pgbouncer.production.ini the console's. */
async function createRoles(sql: postgres.Sql, inRole: string | null): Promise<void> {
  for (const r of Object.values(roles)) await sql.unsafe(`drop role if exists ${r}`);
  await sql.unsafe(`create role ${roles.runtime} login replication bypassrls password '${passwords.runtime}'${inRole ? ` in role ${inRole}` : ''}`);
  await sql.unsafe(`create role ${roles.admin} nologin password '${passwords.admin}'`);
  await sql.unsafe(`create role ${roles.stats} nologin password '${passwords.stats}'`);
}
/** A temporary directory PgBouncer (postgres, when we are root) may use. */
function poolerDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'potentia-pgbouncer-production-'));
  if (asRoot) chownSync(dir, postgresUid(), postgresUid('-g')); // PgBouncer refuses to run as root: it runs as postgres, as Debian's unit has it
  return dir;
}
const postgresUid = (flag = '-u') => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());

/** A client of the admin console (simple query protocol, the only one it speaks). */
async function consoleAs(role: 'admin' | 'stats' | 'runtime'): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: pooledUrl(roles[role], passwords[role], 'pgbouncer') });
  await client.connect();
  return client;
}

beforeAll(async () => {
  admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  await createRoles(admin, 'potentia_app');

  port = await freePort();
  runDir = poolerDir();
  writeAuthFile();
  rendered = {
    listen_port: String(port), unix_socket_dir: runDir, auth_file: join(runDir, 'userlist.txt'),
    admin_users: roles.admin, stats_users: roles.stats, default_pool_size: '1', reserve_pool_size: '0',
  };
  writeFileSync(join(runDir, 'pgbouncer.ini'), render(productionIni, rendered, `${dbName} = host=${server.hostname} port=${server.port || 5432} dbname=${dbName}`));
  pooler = await startPooler(join(runDir, 'pgbouncer.ini'));
  potentia = await startPotentiaProcess({
    DATABASE_URL: pooledUrl(roles.runtime, passwords.runtime), DIRECT_DATABASE_URL: directUrl,
    WORKER_MODE: 'off', NODE_ENV: 'development',
  });
});

afterAll(async () => {
  await potentia?.stop();
  await pooler?.stop();
  if (runDir) rmSync(runDir, { recursive: true, force: true });
  for (const r of Object.values(roles)) await admin?.unsafe(`drop role if exists ${r}`).catch(() => {});
  await admin?.end();
});

describe('pgbouncer.production.ini as the pooler runs it', () => {
  it('runs every value of the file but the rendered ones (SHOW CONFIG); its timeouts are the local pooler\'s; no reset per transaction', async () => {
    const client = await consoleAs('stats');
    try {
      const running = new Map((await client.query('show config')).rows.map((r: { key: string; value: string }) => [r.key, r.value]));
      const file = section(productionIni, 'pgbouncer');
      const differ = [...file].filter(([key, value]) => (rendered[key] ?? value) !== running.get(key));
      expect(differ, 'file values the pooler does not run').toEqual([]);
    } finally {
      await client.end();
    }
    const file = section(productionIni, 'pgbouncer');
    expect(Object.fromEntries(['pool_mode', 'auth_type', 'auth_file', 'listen_addr', 'listen_port', 'server_reset_query_always', 'log_connections', 'log_disconnections']
      .map((k) => [k, file.get(k)]))).toEqual({
      pool_mode: 'transaction', auth_type: 'scram-sha-256', auth_file: '/etc/pgbouncer/userlist.txt', listen_addr: '127.0.0.1',
      listen_port: '6432', server_reset_query_always: '0', log_connections: '1', log_disconnections: '1',
    });
    // the reserve opens before a waiting query is refused (Potentia's 503 within 5 s)
    expect(Number(file.get('reserve_pool_timeout'))).toBeLessThan(Number(file.get('query_wait_timeout')));
    const local = section(localIni, 'pgbouncer');
    const shared = ['pool_mode', 'query_wait_timeout', 'server_login_retry', 'tcp_keepalive', 'tcp_keepidle', 'tcp_keepintvl', 'tcp_keepcnt', 'tcp_user_timeout'];
    expect(Object.fromEntries(shared.map((k) => [k, file.get(k)]))).toEqual(Object.fromEntries(shared.map((k) => [k, local.get(k)])));
  });

  it('admits the runtime role by its SCRAM secret, as itself; refuses a wrong password, a role not in the auth file, and the console roles into the database', async () => {
    const runtime = postgres(pooledUrl(roles.runtime, passwords.runtime), { max: 1, prepare: false, onnotice: () => {} });
    try {
      const [who] = await runtime`select current_user as role, pg_has_role(current_user, 'potentia_app', 'member') as app`;
      expect(who).toEqual({ role: roles.runtime, app: true });
    } finally {
      await runtime.end();
    }
    const refusal = async (url: string) => {
      const client = new pg.Client({ connectionString: url });
      const outcome = await client.connect().then(() => 'admitted', (err: Error) => err.message);
      await client.end().catch(() => {});
      return outcome;
    };
    expect(await refusal(pooledUrl(roles.runtime, 'not-the-password'))).toBe('SASL authentication failed');
    // the schemas' owner (here the test database's superuser) is not in the auth file
    expect(await refusal(pooledUrl(decodeURIComponent(server.username) || 'postgres', 'any-password'))).toMatch(/^(SASL|password) authentication failed/);
    expect(await refusal(pooledUrl(roles.stats, passwords.stats))).toBe(`role "${roles.stats}" is not permitted to log in`);
    expect(await refusal(pooledUrl(roles.admin, passwords.admin))).toBe(`role "${roles.admin}" is not permitted to log in`);
    // log_connections, log_disconnections
    expect(pooler!.log()).toContain(`login attempt: db=${dbName} user=${roles.runtime}`);
    expect(pooler!.log()).toMatch(/closing because: SASL authentication failed/);
    expect(pooler!.log()).toMatch(/closing because: client close request/);
  });
});

describe('toward a Postgres that asks the pooler for scram-sha-256 (pg_hba.conf as docs/self-hosting.md has it)', () => {
  it("logs in to the server with the client's own SCRAM proof: the auth file's secret is the server's", async () => {
    // the test database's server trusts 127.0.0.1, so above the pooler's server login needed no password
    const cluster = PrivateCluster.create(serverBindir(), await freePort(), {
      hba: ['local all postgres trust', 'host all postgres 127.0.0.1/32 trust', 'host all all 127.0.0.1/32 scram-sha-256'],
    });
    const dir = poolerDir();
    let second: Pooler | undefined;
    try {
      await cluster.start();
      const superuser = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} });
      try {
        await createRoles(superuser, null);
      } finally {
        await superuser.end();
      }
      writeAuthFile(dir, cluster.url('postgres'));
      const secondPort = await freePort();
      writeFileSync(join(dir, 'pgbouncer.ini'), render(productionIni, { ...rendered, listen_port: String(secondPort), unix_socket_dir: dir,
        auth_file: join(dir, 'userlist.txt') }, `postgres = host=127.0.0.1 port=${cluster.port} dbname=postgres`));
      second = await startPooler(join(dir, 'pgbouncer.ini'));
      const as = (password: string, p: number) => `postgres://${roles.runtime}:${password}@127.0.0.1:${p}/postgres`;
      // the server asks for the password: a wrong one is refused directly
      expect(await loginAs(as('not-the-password', cluster.port))).toBe(`password authentication failed for user "${roles.runtime}"`);
      expect(await loginAs(as(passwords.runtime, secondPort))).toBe(roles.runtime);
      expect(second.log()).toMatch(new RegExp(`S-\\w+: postgres/${roles.runtime}@127\\.0\\.0\\.1:${cluster.port} new connection to server`));
      expect(second.log()).not.toMatch(/server login failed/);
    } finally {
      await second?.stop();
      rmSync(dir, { recursive: true, force: true });
      await cluster.destroy();
    }
  });
});

describe('a Potentia process through it, on one server connection', () => {
  const bearer = async (userId: string) => `Bearer ${await signAccessToken(config.auth.jwtSecret, { sub: userId }, { expiresInSeconds: 600 })}`;
  const mutate = (auth: string, canvasId: string, clientOpId: string) => fetch(`${potentia!.url}/api/v1/canvas/${canvasId}/mutate`, {
    method: 'POST', body: JSON.stringify({ action: 'create', client_op_id: clientOpId, patch: { type: 'text' } }),
    headers: { authorization: auth, 'content-type': 'application/json' }, signal: AbortSignal.timeout(20_000),
  });
  const read = (auth: string, canvasId: string) => fetch(`${potentia!.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: auth }, signal: AbortSignal.timeout(20_000) });

  /** What a server connection carries from one transaction to the next, seen from a new client on it. */
  async function probe() {
    const sql = postgres(pooledUrl(roles.runtime, passwords.runtime), { max: 1, prepare: false, onnotice: () => {} });
    try {
      const [state] = await sql`select pg_backend_pid() as backend, current_user as "user", session_user as session,
          current_setting('role') as role,
          coalesce(current_setting('request.jwt.claims', true), '') as claims,
          coalesce(current_setting('request.headers', true), '') as headers,
          coalesce(current_setting('potentia.lane_tx', true), '') as lane_mark,
          (select coalesce(array_agg(name::text order by name), '{}') from pg_settings where source = 'session') as session_settings,
          (select count(*)::int from pg_prepared_statements) as prepared,
          (select count(*)::int from pg_listening_channels()) as listening,
          (select count(*)::int from pg_locks where pid = pg_backend_pid() and locktype = 'advisory') as advisory_locks,
          (select count(*)::int from pg_class where relnamespace = pg_my_temp_schema()) as temp_tables`;
      return state!;
    } finally {
      await sql.end();
    }
  }

  it("leaves nothing of one user's requests on the server connection for another user's (no reset query)", async () => {
    const a = await createCanvas(admin);
    const b = await createCanvas(admin);
    const [alice, bob] = [await bearer(a.users.owner!), await bearer(b.users.owner!)];
    const before = await probe();
    const bare = {
      user: roles.runtime, session: roles.runtime, role: 'none', claims: '', headers: '', lane_mark: '',
      prepared: 0, listening: 0, advisory_locks: 0, temp_tables: 0,
    };
    expect(before).toMatchObject(bare);
    // what PgBouncer itself sets on a server connection for each client (its tracked parameters)
    const pgbouncerOwn = new Set(['application_name', 'client_encoding', 'DateStyle', 'TimeZone', 'standard_conforming_strings']);
    expect((before.session_settings as string[]).filter((s) => !pgbouncerOwn.has(s))).toEqual([]);

    for (let round = 0; round < 3; round++) {
      expect((await mutate(alice, a.canvasId, randomUUID())).status).toBe(200);
      expect((await read(alice, a.canvasId)).status).toBe(200);
      // Bob's request, next on the same server connection, runs as Bob: Alice's canvas is not his
      expect((await read(bob, a.canvasId)).status, 'bob reads alice\'s canvas').toBe(404);
      expect((await mutate(bob, a.canvasId, randomUUID())).status, 'bob writes to alice\'s canvas').toBe(404);
      expect((await mutate(bob, b.canvasId, randomUUID())).status).toBe(200);
      const after = await probe();
      expect(after, `round ${round}`).toMatchObject({ ...bare, backend: before.backend });
      expect((after.session_settings as string[]).filter((s) => !pgbouncerOwn.has(s))).toEqual([]);
    }
    const stats = await consoleAs('stats');
    try {
      const servers = (await stats.query('show servers')).rows.filter((r: { database: string }) => r.database === dbName);
      expect(servers.map((r: { remote_pid: string }) => Number(r.remote_pid)), 'one server connection, the probed one').toEqual([before.backend]);
    } finally {
      await stats.end();
    }
  });

  /** Mutations each writer sends in a row. */
  const PER_WRITER = 30;
  /** Terminations of the server connection while they write. */
  const KILLS = 6;

  // its own waits add up past the default 30 s: the load (30 writes a writer, 110 ms apart, with
  // 503s), the resends (up to 5 Retry-After waits each) and /ready (30 s: a new replication slot
  // waits for every transaction holding an xid on the server)
  it("loses no acknowledged mutation when the pooler's server connection is terminated under load, and the process lives", { timeout: 120_000 }, async () => {
    // four users (an owner and an editor on each of two canvases), each under its 100 mutations a minute
    const canvases = [await createCanvas(admin, ['editor']), await createCanvas(admin, ['editor'])];
    const writers = await Promise.all(canvases.flatMap((c) => [c.users.owner!, c.users.editor!].map(async (u) => ({ canvasId: c.canvasId, auth: await bearer(u) }))));
    const acked: string[] = [];
    const unacked: { canvasId: string; auth: string; id: string; status: number | string }[] = [];
    const write = async (w: { canvasId: string; auth: string }) => {
      for (let i = 0; i < PER_WRITER; i++) {
        const id = randomUUID();
        const status = await mutate(w.auth, w.canvasId, id).then((r) => r.status, (err: Error) => err.message);
        if (status === 200) acked.push(id);
        else unacked.push({ ...w, id, status });
        await sleep(110); // under the endpoint's 10 mutations a second per user (H2, docs/limits.md)
      }
    };
    // four writers at once on one server connection: the pooler queues them on it
    let done = false;
    const load = Promise.all(writers.map(write)).finally(() => { done = true; });
    let terminated = 0;
    await until(() => acked.length >= 5, 15_000, 'mutations to be served through the pooler');
    // a termination every 300 ms while they write: in a transaction or between two
    for (let i = 0; i < KILLS && !done; i++) {
      terminated += await terminateBackends(admin, pooler!.child.pid!, ['potentia-server']);
      await sleep(300);
    }
    await load;
    expect(terminated, 'server connections terminated').toBeGreaterThan(0);
    // refused ones are answered 503 (the client resends them with their client_op_id), never another error
    expect(unacked.filter((u) => u.status !== 503), JSON.stringify(unacked.map((u) => u.status))).toEqual([]);
    const resent: string[] = [];
    for (const u of unacked) {
      // as @potentia/client resends: after Retry-After when the user's rate is used up
      let res = await mutate(u.auth, u.canvasId, u.id);
      for (let i = 0; i < 5 && res.status === 429; i++) {
        await sleep(1000 * Number(res.headers.get('retry-after') ?? 1));
        res = await mutate(u.auth, u.canvasId, u.id);
      }
      expect(res.status, `${u.id} resent`).toBe(200);
      resent.push(u.id);
    }
    const log = await admin`select client_op_id, count(*)::int as n from app.block_operations
      where canvas_id in ${admin(writers.map((w) => w.canvasId))} and status = 'success' group by client_op_id`;
    expect(log.filter((r) => r.n !== 1), 'applied more than once').toEqual([]);
    expect(log.map((r) => r.client_op_id as string).sort()).toEqual([...acked, ...resent].sort());
    const [blocks] = await admin`select count(*)::int as n from app.blocks where canvas_id in ${admin(writers.map((w) => w.canvasId))}`;
    expect(blocks!.n).toBe(acked.length + resent.length);
    expect(potentia!.exited()).toBeNull();
    // (its realtime gateway's stream included: it may still be reconnecting after the restarts)
    await until(async () => (await fetch(`${potentia!.url}/ready`)).status === 200, 30_000, '/ready 200', 100);
    expect(potentia!.output()).not.toMatch(/unhandled|uncaught|BUG/i);
  });
});

describe("the pooler's admin console", () => {
  it('stats_users read it and may not command it; the runtime role may not enter it', async () => {
    const stats = await consoleAs('stats');
    try {
      for (const show of ['show pools', 'show clients', 'show stats', 'show servers']) expect((await stats.query(show)).rows.length, show).toBeGreaterThan(0);
      for (const command of ['shutdown', 'pause', 'reload', `kill ${dbName}`]) await expect(stats.query(command), command).rejects.toThrow(/admin access needed/);
    } finally {
      await stats.end().catch(() => {});
    }
    await expect(consoleAs('runtime')).rejects.toThrow(/not allowed/);
    expect(pooler!.child.exitCode, 'the pooler still runs').toBeNull();
  });

  it("a password change takes effect as the file's Auth says: ALTER ROLE, userlist.sql again, RELOAD by admin_users", async () => {
    const old = passwords.runtime;
    passwords.runtime = 'runtime-secret-2';
    await admin.unsafe(`alter role ${roles.runtime} password '${passwords.runtime}'`);
    writeAuthFile();
    const operator = await consoleAs('admin');
    try {
      await operator.query('reload');
    } finally {
      await operator.end();
    }
    const login = (password: string) => loginAs(pooledUrl(roles.runtime, password));
    expect(await login(passwords.runtime)).toBe(roles.runtime);
    expect(await login(old)).toBe('SASL authentication failed');
  });
});

describe('deploy/pgbouncer/userlist.sql, as the production file\'s "Auth" runs it', () => {
  it('refuses a role whose password is md5 or that is missing (exit 3, nothing written); a role name with quotes is written as PgBouncer reads it, and admitted', async () => {
    const names = { md5: `potentia_test_prodpool_md5_${suffix}`, missing: `potentia_test_prodpool_none_${suffix}`,
      quoted: `potentia_test_prodpool_"q'_${suffix}` };
    const ident = (r: string) => `"${r.replace(/"/g, '""')}"`;
    const userlist = (runtime: string) => spawnSync('psql', ['-X', '-qAt', '-v', 'ON_ERROR_STOP=1', '-v', `runtime=${runtime}`, '-v', `admin=${roles.admin}`,
      '-v', `stats=${roles.stats}`, testDatabaseUrl()], { input: readFileSync(join(root, 'deploy/pgbouncer/userlist.sql')), encoding: 'utf8' });
    let dir = '';
    let second: Pooler | undefined;
    try {
      await admin.begin(async (tx) => {
        await tx.unsafe(`set local password_encryption = 'md5'`);
        await tx.unsafe(`create role ${ident(names.md5)} login password 'md5-secret'`);
      });
      await admin.unsafe(`create role ${ident(names.quoted)} login password 'quoted-secret'`);
      for (const role of [names.md5, names.missing]) {
        const refused = userlist(role);
        expect({ status: refused.status, stdout: refused.stdout }, role).toEqual({ status: 3, stdout: '' });
        expect(refused.stderr).toContain(`no SCRAM-SHA-256 password for ${role}`);
      }
      const written = userlist(names.quoted);
      expect(written.status, written.stderr).toBe(0);
      // PgBouncer's auth file doubles a double quote inside a quoted name
      expect(written.stdout).toMatch(new RegExp(`^"potentia_test_prodpool_""q'_${suffix}" "SCRAM-SHA-256\\$4096:[^"]+"$`, 'm'));
      expect(written.stdout.trim().split('\n')).toHaveLength(3);
      // a pooler of its own on that file admits the role, as itself
      dir = poolerDir();
      writeFileSync(join(dir, 'userlist.txt'), written.stdout, { mode: 0o600 });
      if (asRoot) chownSync(join(dir, 'userlist.txt'), postgresUid(), postgresUid('-g'));
      const secondPort = await freePort();
      writeFileSync(join(dir, 'pgbouncer.ini'), render(productionIni, { ...rendered, listen_port: String(secondPort), unix_socket_dir: dir,
        auth_file: join(dir, 'userlist.txt') }, `${dbName} = host=${server.hostname} port=${server.port || 5432} dbname=${dbName}`));
      second = await startPooler(join(dir, 'pgbouncer.ini'));
      const client = new pg.Client({ host: '127.0.0.1', port: secondPort, database: dbName, user: names.quoted, password: 'quoted-secret' });
      await client.connect();
      try {
        expect((await client.query('select current_user as role')).rows).toEqual([{ role: names.quoted }]);
      } finally {
        await client.end();
      }
    } finally {
      await second?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
      for (const role of [names.md5, names.quoted]) await admin.unsafe(`drop role if exists ${ident(role)}`);
    }
  });
});
