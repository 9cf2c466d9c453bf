// PostgreSQL with wal_level = replica (not logical) under a process of role `all` and one of role
// `gateway`: their replication stream can never start (CREATE_REPLICATION_SLOT: "logical decoding
// requires wal_level >= logical") until a DBA changes the setting and restarts PostgreSQL. The
// stream is retried meanwhile; the log says at error, once (then at most once a minute), exactly
// what to do (ALTER SYSTEM SET wal_level = logical, then a restart), and /ready's realtime check
// names that reason. Once the DBA does what it says, both are ready by themselves.
// A private cluster (scripts/lib/private-cluster.ts): the shared server's settings are not ours
// to change. Seen failing before: a warning once, with PostgreSQL's words only, and /ready said
// only "replication stream down (reconnecting; deltas are polled meanwhile)".
// No timed wait: each state is polled for (until).
import { execFileSync } from 'node:child_process';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PrivateCluster, serverBindir } from '../../scripts/lib/private-cluster.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { freePort } from '../helpers/free-port.ts';
import { until } from '../helpers/wait.ts';

let cluster: PrivateCluster;
let admin: postgres.Sql;
const started: PotentiaProcess[] = [];

beforeAll(async () => {
  cluster = PrivateCluster.create(serverBindir(), await freePort(), { settings: ['wal_level = replica'] });
  await cluster.start();
  const bootstrap = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} });
  await bootstrap`create database potentia`;
  await bootstrap.end();
  execFileSync(process.execPath, ['--import', 'tsx', 'scripts/migrate.ts', '--database-url', cluster.url('potentia'), '--quiet'],
    { cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'ignore', 'inherit'] });
  admin = postgres(cluster.url('postgres'), { max: 1, onnotice: () => {} });
}, 180_000);

afterAll(async () => {
  await Promise.all(started.map((p) => p.stop()));
  await admin?.end({ timeout: 1 });
  await cluster?.destroy();
}, 90_000);

const get = async (p: PotentiaProcess, path: string) => {
  const res = await fetch(`${p.url}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.json() as any };
};

/** The process's JSON log lines (pino) that mention wal_level. */
const walLines = (p: PotentiaProcess) => p.output().split('\n').filter((l) => l.startsWith('{') && l.includes('wal_level'))
  .map((l) => JSON.parse(l) as { level: number; msg: string; hint?: string; err?: string });

describe('wal_level is not logical', () => {
  it('the stream is retried, the log says once at error what to do, /ready names it; ready once the DBA did it', { timeout: 180_000 }, async () => {
    expect((await admin`select current_setting('wal_level') as v`)[0]!.v).toBe('replica');
    const env = { DATABASE_URL: cluster.url('potentia'), WORKER_MODE: 'off', NODE_ENV: 'development', LOG_LEVEL: 'debug' };
    const processes = await Promise.all(['all', 'gateway'].map((role) => startPotentiaProcess({ ...env, POTENTIA_ROLE: role })));
    started.push(...processes);
    for (const p of processes) {
      // retried: several attempts refused (each at debug), one line above debug
      await until(() => walLines(p).filter((l) => l.level === 20).length >= 4, 60_000, 'four refused attempts after the first', 50);
      const told = walLines(p).filter((l) => l.level > 20);
      expect(told).toHaveLength(1);
      expect(told[0]!.level).toBe(50); // error
      expect(told[0]!.msg).toMatch(/realtime replication stream refused: PostgreSQL's wal_level is not logical/);
      expect(told[0]!.hint).toContain('ALTER SYSTEM SET wal_level = logical');
      expect(told[0]!.hint).toMatch(/then restart PostgreSQL/);
      expect(told[0]!.err).toMatch(/logical decoding requires wal_level >= logical/);
      // and nothing else above info meanwhile (the cluster's messages, pg_logical_emit_message, need no logical wal_level)
      expect(p.output().split('\n').filter((l) => l.startsWith('{') && (JSON.parse(l) as { level: number }).level > 30)).toHaveLength(1);
      const ready = await get(p, '/ready');
      expect(ready.status).toBe(503);
      expect(ready.body.checks).toEqual({ database: 'ok',
        realtime: "replication stream down: PostgreSQL's wal_level is not logical: run ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL "
          + '(retrying; deltas are polled meanwhile)' });
      expect(ready.body.message).toContain('realtime: replication stream down: PostgreSQL\'s wal_level is not logical');
      expect((await get(p, '/health')).status).toBe(200);
    }
    // what the log says to do
    await admin`alter system set wal_level = logical`;
    await cluster.stop('fast');
    await cluster.start();
    for (const p of processes) {
      await until(async () => (await get(p, '/ready').catch(() => ({ status: 0 }))).status === 200, 90_000, `/ready 200 (${p.url})`, 200);
      expect((await get(p, '/ready')).body).toEqual({ status: 'ready', checks: { database: 'ok', realtime: 'ok' } });
    }
  });
});
