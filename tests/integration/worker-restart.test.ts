// Graphile Worker stops by itself on a NOTIFY "worker:migrate" announcing a breaking schema
// migration (what a newer Graphile Worker sends after migrating; anyone with NOTIFY can send it).
// A worker process (role worker) must not go on heartbeating with nothing running: its /ready
// says why, its heartbeat and locks go so the others take its jobs, and it starts Graphile Worker
// again, which fails while the schema is newer than it supports and succeeds once it is not;
// then it runs jobs again. The process never exits.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { quietQueue, startTestWorker, waitFor } from '../helpers/worker.ts';

// a revision past any this Graphile Worker knows, marked breaking, as a newer one would record it
const REVISION = 999;

let db: Database;
beforeAll(async () => {
  db = testDatabase(3);
  await quietQueue(db.sql);
}, 60_000);
afterAll(async () => { await db?.close(); });

describe('a worker whose Graphile Worker stops on its own', () => {
  let worker: PotentiaProcess | undefined;
  afterAll(async () => {
    // never left behind: no worker could start on this database after it
    if (db) await db.sql`delete from graphile_worker.migrations where id = ${REVISION}`;
    worker?.child.kill('SIGKILL');
  });

  it('says so, gives its jobs back, and starts it again', async () => {
    const w = worker = await startPotentiaProcess({
      DATABASE_URL: testDatabaseUrl(), POTENTIA_ROLE: 'worker', LOG_LEVEL: 'warn', NODE_ENV: 'test', WORKER_CRONTAB: '',
      WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '300', WORKER_STALE_MS: '3000', EMBED_DEBOUNCE_MS: '50', EMBED_DRAIN_INTERVAL_MS: '100',
    });
    const ready = async () => {
      const res = await fetch(`${w.url}/ready`);
      return { status: res.status, worker: ((await res.json()) as { checks: { worker: string } }).checks.worker };
    };
    expect(await ready()).toEqual({ status: 200, worker: 'ok' });
    const firstId = /potentia worker (\S+) running/.exec(w.output())![1]!;

    await db.sql`insert into graphile_worker.migrations (id, breaking) values (${REVISION}, true)`;
    await db.sql`select pg_notify('worker:migrate', ${JSON.stringify({ migrationNumber: REVISION, breaking: true })})`;
    // before: /ready stayed 200 and the heartbeat fresh, with no job running
    const refused = await waitFor('/ready to say Graphile Worker cannot start', async () => {
      const r = await ready();
      return /^Graphile Worker cannot start: Database is using Graphile Worker schema revision 999/.test(r.worker) && r;
    });
    expect(refused.status).toBe(503);
    const [gone] = await db.sql`select count(*)::int as n from app.worker_heartbeats where worker_id = ${firstId}`;
    expect(gone!.n).toBe(0);

    const { canvasId, users } = await createCanvas(db.sql);
    const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: `restart ${randomUUID()}` } } });
    // the schema is one this Graphile Worker supports again (the upgrade rolled back)
    await db.sql`delete from graphile_worker.migrations where id = ${REVISION}`;
    await waitFor('/ready to be ok again', async () => (await ready()).status === 200, 20_000, 200);
    await waitFor('the block embedded by the restarted worker', async () => {
      const [b] = await db.sql`select embedded_hash = content_hash as ok from app.blocks where block_id = ${created.block_id!}`;
      return b!.ok;
    });
    expect(w.output()).toMatch(/Graphile Worker stopped on its own/);
    expect(w.output()).toMatch(/Graphile Worker started again/);
    const [live] = await db.sql`select worker_id from app.worker_heartbeats where pid = ${w.pid} and last_seen_at > now() - interval '3 seconds'`;
    expect(live!.worker_id).not.toBe(firstId);
    expect(w.exited()).toBeNull();
  }, 60_000);
});

// The heartbeat of the pool that stopped must not outlive it: a tick whose heartbeat was on its
// way when Graphile Worker stopped wrote the row again after restart() removed it. Made
// deterministic: the heartbeat row is held uncommitted by another transaction (the tick's upsert
// waits for it, the removal does not see it), and let go once the removal is done.
describe('a heartbeat in flight when Graphile Worker stops', () => {
  let worker: WorkerRuntime | undefined;
  afterAll(async () => { await worker?.stop(); });

  it('leaves no heartbeat row for the stopped pool', async () => {
    // no heartbeat loop of its own in the way: the test ticks
    worker = await startTestWorker(new LocalProvider(), { heartbeatMs: 600_000, staleMs: 600_000 });
    const w = worker;
    const stoppedId = w.workerId;
    const holder = await db.sql.reserve();
    let tick: Promise<unknown> | undefined;
    try {
      await db.sql`delete from app.worker_heartbeats where worker_id = ${stoppedId}`;
      await holder`begin`;
      await holder`set local idle_in_transaction_session_timeout = '20s'`;
      const pid = (await holder<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
      await holder`insert into app.worker_heartbeats (worker_id, hostname, pid, tasks) values (${stoppedId}, 'held', 0, '{}')`;
      tick = w.tick().catch((err: Error) => err);
      await waitFor('the tick\'s heartbeat to wait for the held row', async () =>
        (await db.sql`select from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))`).length > 0);
      await db.sql`select pg_notify('worker:migrate', ${JSON.stringify({ migrationNumber: 999, breaking: true })})`;
      // restart() removed the stopped pool's heartbeat (it saw no committed row), then started
      // Graphile Worker again under a new pool id; the tick's heartbeat still waits
      await waitFor('Graphile Worker started again', async () => w.notRunning() === undefined && w.workerId !== stoppedId);
      await holder`rollback`;
      expect(String(await tick)).toMatch(/Graphile Worker/);
    } finally {
      await holder`rollback`.catch(() => {});
      holder.release();
    }
    const [row] = await db.sql`select count(*)::int as n from app.worker_heartbeats where worker_id = ${stoppedId}`;
    expect(row!.n).toBe(0);
  }, 60_000);
});
