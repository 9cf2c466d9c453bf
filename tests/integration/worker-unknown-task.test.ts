// Jobs of a task no worker runs (a typo in graphile_worker.add_job, a task a newer release
// enqueued, one a later release dropped), under a real Graphile Worker: it fetches only the tasks
// it has, so they never run and never fail. They showed as a `ready` backlog no worker would take
// and stayed forever (cleanup deleted only jobs out of attempts). Now: the gauge counts them as
// state="unknown", the worker warns once naming the task and what to do (the command it gives
// works), and cleanup deletes them failed_job_retention_days (7) after they were due, with a
// warning; never a job of a task some worker runs, and nothing while no worker heartbeat exists.
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { startWorker, type WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { discardEmbeddingBacklog, fastWorker, waitFor } from '../helpers/worker.ts';

describe('jobs of a task no worker runs', () => {
  let db: Database;
  let worker: WorkerRuntime | undefined;
  const lines: Record<string, any>[] = [];
  const task = `embed_blokc_${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    db = testDatabase(3);
    await discardEmbeddingBacklog(db.sql); // else the cleanup job queues behind earlier files' embeddings
  });
  afterAll(async () => {
    await worker?.stop();
    if (!db) return;
    await db.sql`delete from graphile_worker._private_jobs j using graphile_worker._private_tasks t
                 where t.id = j.task_id and t.identifier = ${task}`;
    await db.close();
  });

  it('are counted and named, then deleted by cleanup after failed_job_retention_days', async () => {
    const sql = db.sql;
    const add = async (dueDaysAgo: number) => {
      const [j] = await sql`select id from graphile_worker.add_job(${task}, '{}'::json)`;
      await sql`update graphile_worker._private_jobs set run_at = now() - make_interval(days => ${dueDaysAgo}),
                  updated_at = now() - make_interval(days => ${dueDaysAgo}) where id = ${j!.id}`;
      return j!.id as string;
    };
    const old = await add(8);
    const lately = await add(6);
    const fresh = await add(0);

    worker = await startWorker({
      databaseUrl: testDatabaseUrl(), worker: fastWorker(), embedding: { ...loadConfig().embedding, breaker: { failureThreshold: 3, cooldownMs: 1500 } },
      provider: new LocalProvider(),
      logger: pino({ level: 'info' }, { write: (line: string) => { lines.push(JSON.parse(line)); } }),
    });
    const w = worker;
    await waitFor('the unknown jobs on the gauge', async () =>
      (await w.metrics.registry.metrics()).includes(`potentia_job_queue_depth{task="${task}",state="unknown"} 3`));
    const warned = lines.filter((l) => l.task === task && l.msg === 'jobs wait for a task no worker runs: they never run');
    expect(warned).toHaveLength(1);
    expect(warned[0]!.level).toBe(40);
    expect(warned[0]!.jobs).toBe(3);
    expect(warned[0]!.next).toMatch(/upgrade the workers/);
    // once only, however many heartbeats read it
    await new Promise((r) => setTimeout(r, 1000));
    expect(lines.filter((l) => l.task === task && l.msg === warned[0]!.msg)).toHaveLength(1);
    // Graphile Worker never took them
    const untouched = await sql`select attempts, locked_at from graphile_worker.jobs where task_identifier = ${task}`;
    expect(untouched.map((j) => [j.attempts, j.locked_at])).toEqual([[0, null], [0, null], [0, null]]);

    // cleanup, run by the worker (the crontab's task): the one due 8 days ago goes, with a warning
    const cleaned = new Promise<void>((resolve) => w.events.on('job:success', ({ job }) => {
      if (job.task_identifier === 'cleanup') resolve();
    }));
    await sql`select graphile_worker.add_job('cleanup', '{}'::json, job_key => 'cleanup')`;
    await cleaned;
    const left = await sql`select id from graphile_worker.jobs where task_identifier = ${task} order by id`;
    expect(left.map((j) => j.id)).toEqual([lately, fresh]);
    expect(old).not.toBe(lately);
    const deleted = lines.find((l) => l.level === 40 && /^cleanup deleted \d+ job\(s\) of task\(s\) no worker runs/.test(l.msg));
    expect(deleted?.msg).toContain(task);
    const [audit] = await sql`select details from app.system_audit where action = 'system.cleanup'
                              and details -> 'unknown_tasks' ? ${task}`;
    expect(audit!.details.unknown_task_jobs_deleted).toBeGreaterThanOrEqual(1);

    // never a job of a task some worker runs, and nothing while no worker heartbeat exists
    // (a cleanup by hand while the workers are down); in a transaction the worker never sees
    await sql.begin(async (tx) => {
      await tx`set local idle_in_transaction_session_timeout = '30s'`;
      const [known] = await tx`select id from graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', gen_random_uuid()))`;
      const age = (id: string) => tx`update graphile_worker._private_jobs set run_at = now() - interval '8 days',
                                       updated_at = now() - interval '8 days' where id = ${id}`;
      await age(known!.id);
      await tx`select internal.cleanup()`;
      const [kept] = await tx`select count(*)::int as n from graphile_worker.jobs where id = ${known!.id}`;
      expect(kept!.n).toBe(1);
      await tx`delete from app.worker_heartbeats`;
      await age(lately);
      const [none] = await tx`select count(*)::int as n from internal.job_queue_depth() where state = 'unknown'`;
      expect(none!.n).toBe(0);
      const [r] = await tx`select internal.cleanup() as result`;
      expect(r!.result.unknown_task_jobs_deleted).toBe(0);
      const still = await tx`select id from graphile_worker.jobs where id in (${known!.id}, ${lately}) order by id`;
      expect(still.map((j) => j.id)).toEqual([lately, known!.id]);
      throw new Rollback();
    }).catch((err: unknown) => { if (!(err instanceof Rollback)) throw err; });

    // what the warning says to do, done: the gauge and the log follow
    const command = /select graphile_worker\.complete_jobs\(.*\)\)/.exec(warned[0]!.next)![0];
    await sql.unsafe(command);
    await waitFor('the unknown task gone from the gauge', async () =>
      !(await w.metrics.registry.metrics()).includes(`task="${task}"`));
    await waitFor('the all-clear', async () => lines.some((l) => l.task === task && l.msg === 'no job waits for the unknown task any more'));
    const [gone] = await sql`select count(*)::int as n from graphile_worker.jobs where task_identifier = ${task}`;
    expect(gone!.n).toBe(0);
  }, 60_000);
});

class Rollback extends Error {}
