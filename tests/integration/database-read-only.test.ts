// The database takes no writes for a while: a primary demoted in a failover that the pooler or DNS
// has not followed yet, a hot standby, a provider's read-only mode when its disk fills (Postgres
// answers SQLSTATE 25006, "cannot execute INSERT in a read-only transaction"). Made here as a
// provider does it: default_transaction_read_only on the database, the process's connections
// ended so that they reconnect under it. Every request that writes was answered 500 internal, as
// a bug of the server; it is the database's state, which passes: 503 unavailable with Retry-After,
// nothing applied, and the same mutation resent once it is writable again is applied once.
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { createDatabase } from '../../src/db/index.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { freePort } from '../helpers/free-port.ts';
import { openH1 } from '../helpers/h1.ts';

const config = loadConfig();
const db = testDatabase(2);
let proc: PotentiaProcess;
// small, so that every connection of the pool is one opened while the database was read-only
const POOL_MAX = 3;

beforeAll(async () => {
  proc = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', DB_POOL_MAX: String(POOL_MAX) });
}, 60_000);
afterAll(async () => {
  await proc?.stop();
  await db.close();
});

describe('a database that is read-only for a while', () => {
  it('answers writes 503 unavailable with Retry-After (not 500 internal), and applies the resent mutation once after', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const op = { action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } };
    const post = () => fetch(`${proc.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(op),
    }).then(async (res) => ({ status: res.status, retryAfter: res.headers.get('retry-after'), code: (await res.json() as any).error?.code }));

    // one connection that stays writable: it turns the mode on and off (and would reset it whatever failed)
    const admin = await db.sql.reserve();
    let answer: Awaited<ReturnType<typeof post>>;
    try {
      await admin`set default_transaction_read_only = off`;
      await admin.unsafe('alter database "' + (await admin`select current_database() as d`)[0]!.d + '" set default_transaction_read_only = on');
      await terminateBackends(admin as never, proc.pid, ['potentia-server']);
      answer = await post();
    } finally {
      await admin.unsafe('alter database "' + (await admin`select current_database() as d`)[0]!.d + '" reset default_transaction_read_only');
      // ended, so that the resend below meets a fresh session (the next test shows they are replaced without this)
      await terminateBackends(admin as never, proc.pid, ['potentia-server']);
      admin.release();
    }
    expect(answer).toEqual({ status: 503, retryAfter: '1', code: 'unavailable' });
    expect((await db.sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`)[0]!.n).toBe(0);

    // writable again: the resend is applied, once (a first attempt may meet a connection ended above: 503 again)
    let again = await post();
    if (again.status === 503) again = await post();
    expect(again.status).toBe(200);
    expect((await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${op.client_op_id} and status = 'success'`)[0]!.n).toBe(1);
  });

  // A session opened while the database was read-only keeps default_transaction_read_only for its
  // whole life: the pool's connections answered every write 25006 until postgres.js recycled them
  // (30-60 minutes), so a short read-only spell was a long outage. A connection that answered
  // 25006 is closed and replaced: once the database is writable again, writes succeed within a
  // bounded number of attempts (one per connection of each pool at most), on each path.
  it('replaces the connections that answered read-only: writes succeed again once the database is writable, HTTP, lanes and H1', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const post = () => fetch(`${proc.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }),
    }).then(async (res) => ({ status: res.status, code: (await res.json() as any).error?.code }));
    // a batch: api.upsert_blocks_atomic, whose handler answers refusals as a row (and re-raises 25006)
    const batch = () => fetch(`${proc.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }] }),
    }).then(async (res) => ({ status: res.status, code: (await res.json() as any).error?.code }));
    // a write outside the canvas lanes: a request transaction (withRequest, sql.begin)
    const rename = () => fetch(`${proc.url}/api/v1/workspaces/${workspaceId}`, {
      method: 'PATCH', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: randomUUID() }),
    }).then(async (res) => ({ status: res.status, code: (await res.json() as any).error?.code }));
    const h1 = await openH1(proc.url, canvasId, token);
    await h1.next((m) => m.type === 'hello');
    const h1Mutate = async () => {
      const op = randomUUID();
      h1.send({ type: 'mutate', client_op_id: op, action: 'create', patch: { type: 'text' } });
      return h1.next((m) => (m.type === 'ack' || m.type === 'rejected' || m.type === 'error') && (m as any).client_op_id === op) as Promise<any>;
    };

    const admin = await db.sql.reserve();
    const name = (await admin`select current_database() as d`)[0]!.d as string;
    try {
      await admin`set default_transaction_read_only = off`;
      await admin.unsafe(`alter database "${name}" set default_transaction_read_only = on`);
      await terminateBackends(admin as never, proc.pid, ['potentia-server']);
      // every connection of the pool in use at once, each opened read-only
      const refused = await Promise.all([...Array(POOL_MAX * 2)].map(() => post()));
      expect(refused.every((r) => r.status === 503 && r.code === 'unavailable')).toBe(true);
      expect(await rename()).toEqual({ status: 503, code: 'unavailable' });
      expect(await batch()).toEqual({ status: 503, code: 'unavailable' });
      const h1Refused = await h1Mutate();
      expect(JSON.stringify(h1Refused)).toContain('unavailable');
    } finally {
      // writable again, and nothing ended here: the process's own connections must notice
      await admin.unsafe(`alter database "${name}" reset default_transaction_read_only`);
      admin.release();
    }

    // each pool connection opened read-only answers at most one more write 25006, then is replaced
    const bound = POOL_MAX + 1;
    const attempts = async (write: () => Promise<boolean>) => {
      for (let n = 1; n <= 20; n++) if (await write()) return n;
      return Infinity;
    };
    // each path in turn (a path that recovers replaces connections the next one would meet too:
    // reordered, each of the three was seen failing alone without the fix)
    expect(await attempts(async () => (await h1Mutate()).type === 'ack')).toBeLessThanOrEqual(bound);
    expect(await attempts(async () => (await rename()).status === 200)).toBeLessThanOrEqual(bound);
    expect(await attempts(async () => (await post()).status === 200)).toBeLessThanOrEqual(bound);
    expect(await attempts(async () => (await batch()).status === 200)).toBeLessThanOrEqual(bound);
    // and stays so: every further write succeeds
    for (let i = 0; i < POOL_MAX * 2; i++) expect((await post()).status).toBe(200);
    h1.ws.close();
  });

  // Behind a transaction pooler the read-only setting is the pooler's server session's: ours
  // closed, the next transaction met the same server session (PgBouncer's DISCARD ALL keeps the
  // setting it started with) and was refused again until server_lifetime (an hour). The refusing
  // session ends itself (patches/postgres+3.4.9.patch). Through scripts/pgbouncer (pool size 2).
  it('behind PgBouncer, writes succeed again once the database is writable (the pooler\'s read-only server sessions are ended too)', async () => {
    const port = await freePort();
    const runDir = mkdtempSync(join(tmpdir(), 'potentia-read-only-pgbouncer-'));
    const env = { ...process.env, DIRECT_DATABASE_URL: testDatabaseUrl(), PGBOUNCER_PORT: String(port), PGBOUNCER_RUN_DIR: runDir, PGBOUNCER_POOL_SIZE: '2' };
    const run = promisify(execFile);
    await run('bash', ['scripts/pgbouncer', 'start'], { env });
    const url = new URL(testDatabaseUrl());
    url.hostname = '127.0.0.1';
    url.port = String(port);
    const pooled = createDatabase(url.toString(), { max: 2, transactionPooler: true, applicationName: 'potentia-read-only-pooled' });
    const admin = await db.sql.reserve();
    const name = (await admin`select current_database() as d`)[0]!.d as string;
    const write = () => pooled.sql`create temp table if not exists read_only_pooled (x int)`.then(() => 'ok', (e) => String(e.code));
    try {
      await admin`set default_transaction_read_only = off`;
      await admin.unsafe(`alter database "${name}" set default_transaction_read_only = on`);
      // the pooler's server sessions, ended: it opens them again read-only
      await admin`select pg_terminate_backend(pid) from pg_stat_activity
                  where datname = current_database() and application_name = 'potentia-read-only-pooled' and pid <> pg_backend_pid()`;
      let refused = 0;
      for (let i = 0; i < 4; i++) if ((await write()) === '25006') refused++;
      expect(refused).toBeGreaterThan(0);
      await admin.unsafe(`alter database "${name}" reset default_transaction_read_only`);
      let n = 1;
      while (n <= 20 && (await write()) !== 'ok') n++;
      // a refusal or two per server session of the pooler (its end is not waited for, so another
      // transaction may reach it first), not every write until server_lifetime
      expect(n).toBeLessThanOrEqual(6);
      for (let i = 0; i < 4; i++) expect(await write()).toBe('ok');
    } finally {
      await admin.unsafe(`alter database "${name}" reset default_transaction_read_only`);
      admin.release();
      await pooled.close();
      await run('bash', ['scripts/pgbouncer', 'stop'], { env });
      rmSync(runDir, { recursive: true, force: true });
    }
  });
});
