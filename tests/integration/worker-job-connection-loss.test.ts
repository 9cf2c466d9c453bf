// A job whose database connection Postgres terminates while it works (pg_terminate_backend on the
// backend running its query: a failover, a restart, an operator or a reaper), again and again,
// under a real worker process. Graphile Worker charges an attempt when it takes a job (get_job
// increments attempts) and treats any error its task throws as a failure, retried with its
// backoff (exp(attempts) seconds); it gives an attempt back only for a job it took and never
// started (its local queue's returnJobs). So each loss costs the job one of its 25 attempts, and
// only a fault that outlasts the whole backoff (about four days) exhausts them: the bound that
// also stops a job whose own query kills its backend every time (a backend the OOM killer ends,
// a runaway statement an operator terminates) from running forever. What is asserted: the job
// completes exactly once, the worker lives on, each loss costs one attempt and is retried with
// Graphile's backoff, not given up, and logged as a lost connection the worker retries (warn), never
// as a permanent failure or an error.
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { databaseClientPorts, startWorkerProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { OUTAGE_STARTED } from '../../src/worker/outage.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { quietQueue, waitFor } from '../helpers/worker.ts';

const LOSSES = 3;

describe('a job whose connection is terminated mid-job, again and again', () => {
  let db: Database;
  let admin: postgres.Sql;
  // holds the canvases table in a transaction of its own (never left open: it ends with the callback)
  let holder: postgres.Sql;
  let worker: ScriptProcess | undefined;

  beforeAll(async () => {
    db = testDatabase(4);
    admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    holder = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    await quietQueue(db.sql);
  }, 60_000);
  afterAll(async () => {
    // graceful: its heartbeat row goes, so no later file sees a live worker that is gone
    await worker?.stop();
    await admin?.end();
    await holder?.end();
    await db?.close();
  });

  it('completes exactly once; each loss costs one attempt, retried with backoff; the worker lives on', async () => {
    const w = worker = await startWorkerProcess({
      DATABASE_URL: testDatabaseUrl(), LOG_LEVEL: 'warn', NODE_ENV: 'test', EMBEDDING_PROVIDER: 'local',
      WORKER_CONCURRENCY: '2', WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '200', WORKER_CRONTAB: '',
      WORKER_STALE_MS: '600000',
    }, 30_000);
    const { canvasId, users } = await createCanvas(db.sql);
    for (let i = 0; i < 3; i++) {
      expect((await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).status).toBe('success');
    }
    const runs = async () => {
      const [r] = await db.sql`select count(*)::int as n from app.system_audit where action = 'canvas.rebalance'
                               and entity_id = ${canvasId} and details ->> 'trigger' = 'job'`;
      return r!.n as number;
    };

    // the job the LexoRank trigger enqueues, due now
    let jobId = '';
    for (let loss = 1; loss <= LOSSES; loss++) {
      // the job's query waits on the canvases table, held here (a table lock takes no xid), and
      // its backend is terminated while it waits: the task's own connection, mid-job
      await holder.begin(async (tx) => {
        await tx`set local idle_in_transaction_session_timeout = '30s'`;
        await tx`lock table app.canvases in exclusive mode`;
        if (!jobId) {
          const [job] = await db.sql`select id from graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', ${canvasId}::uuid),
                                                                           job_key => ${`rebalance_canvas:${canvasId}`})`;
          jobId = job!.id as string;
        } else {
          // time passes: the retry Graphile scheduled is due now
          await db.sql`update graphile_worker._private_jobs set run_at = now() where id = ${jobId}`;
        }
        const backend = await waitFor('the job waiting on the canvas lock', async () => {
          const [b] = await admin`select pid from pg_stat_activity
                                  where application_name = 'potentia-worker' and client_port = any(${databaseClientPorts(w.pid)})
                                    and wait_event_type = 'Lock' and query like '%rebalance_canvas%'`;
          return b?.pid as number | undefined;
        }, 4_000, 20);
        const [t] = await admin`select pg_terminate_backend(${backend}) as done`;
        expect(t!.done).toBe(true);
      });
      // the failure is recorded: one attempt per loss, the next one after Graphile's backoff
      const failed = await waitFor(`failure ${loss} recorded`, async () => {
        const [j] = await db.sql`select attempts, max_attempts, last_error, locked_at,
                                        extract(epoch from run_at - now())::float8 as wait_s
                                 from graphile_worker.jobs where id = ${jobId}`;
        return j && j.locked_at === null && j.last_error ? j : undefined;
      }, 10_000, 50);
      expect(failed.attempts).toBe(loss);
      expect(failed.max_attempts).toBe(25);
      expect(failed.last_error).toMatch(/terminat|connection/i);
      expect(failed.wait_s).toBeGreaterThan(Math.exp(loss) - 2);
      expect(failed.wait_s).toBeLessThanOrEqual(Math.exp(loss) + 1);
      await db.sql`update graphile_worker._private_jobs set last_error = null where id = ${jobId}`;
      expect(await runs()).toBe(0);
    }

    // the next try, nothing in its way: done, once
    await db.sql`update graphile_worker._private_jobs set run_at = now() where id = ${jobId}`;
    await waitFor('the job done', async () => {
      const [j] = await db.sql`select count(*)::int as n from graphile_worker.jobs where id = ${jobId}`;
      return j!.n === 0;
    }, 15_000, 100);
    expect(await runs()).toBe(1);
    expect(w.exited()).toBeNull();
    const logs = w.output();
    // each loss a lost connection, logged at warn as the worker's database fault (src/worker/outage.ts),
    // one line per fault at most (a heartbeat between two losses ends the first), with its code
    const faults = logs.split('\n').filter((l) => l.includes(`"msg":"${OUTAGE_STARTED}"`));
    expect(faults.length).toBeGreaterThanOrEqual(1);
    expect(faults.length).toBeLessThanOrEqual(LOSSES);
    for (const l of faults) expect(JSON.parse(l)).toMatchObject({ level: 40, code: '57P01' });
    expect(logs).not.toMatch(/"level":50/);
    expect(logs).not.toMatch(/failed permanently/);
  }, 90_000);
});
