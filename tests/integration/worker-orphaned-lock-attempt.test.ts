// A job whose get_job answer was lost with its connection: get_job locked it and charged it an
// attempt (attempts + 1), but the worker never received it, so it never ran. The live worker
// releases the lock (internal.release_orphaned_locks, with its heartbeat) and the job runs again.
// The attempt it never used goes back, as Graphile Worker's returnJobs gives back the attempt of a
// job it took and never started: repeated losses of that answer no longer use up the job's
// attempts. (A job that ran keeps its attempt: worker-job-connection-loss.test.ts.)
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { discardEmbeddingBacklog, startTestWorker, waitFor } from '../helpers/worker.ts';

describe('a job whose get_job answer was lost', () => {
  let db: Database;
  let worker: WorkerRuntime | undefined;

  beforeAll(async () => {
    db = testDatabase(2);
    await discardEmbeddingBacklog(db.sql);
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.close();
  });

  it('is released, gets its attempt back, and runs once', async () => {
    const w = worker = await startTestWorker(new LocalProvider());
    const { canvasId, users } = await createCanvas(db.sql);
    expect((await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).status).toBe('success');
    const starts: number[] = [];
    let jobId = '';
    w.events.on('job:start', ({ job }) => { if (job.id === jobId) starts.push(job.attempts); });
    // what a get_job whose answer never arrived leaves: the job locked in this worker's name a
    // minute ago, one attempt charged (committed at once, so the worker never sees it unlocked)
    const [job] = await db.sql.begin(async (tx) => {
      const rows = await tx`select id from graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', ${canvasId}::uuid),
                                                                   job_key => ${`rebalance_canvas:${canvasId}`})`;
      await tx`update graphile_worker._private_jobs set attempts = attempts + 1, locked_by = ${w.workerId},
                 locked_at = now() - interval '1 minute' where id = ${rows[0]!.id}`;
      return rows;
    });
    jobId = job!.id as string;
    await waitFor('the job done', async () => {
      const [j] = await db.sql`select count(*)::int as n from graphile_worker.jobs where id = ${jobId}`;
      return j!.n === 0;
    });
    // it ran once, as its first attempt
    expect(starts).toEqual([1]);
    const [audit] = await db.sql`select details from app.system_audit where action = 'worker.release_orphaned_locks'
                                 and entity_id = ${w.workerId} and details -> 'job_ids' @> ${db.sql.json([Number(jobId)])}`;
    expect(audit!.details.attempts_returned).toEqual([Number(jobId)]);
    const [ran] = await db.sql`select count(*)::int as n from app.system_audit where action = 'canvas.rebalance'
                               and entity_id = ${canvasId} and details ->> 'trigger' = 'job'`;
    expect(ran!.n).toBe(1);
  }, 30_000);
});
