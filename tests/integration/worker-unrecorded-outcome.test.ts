// A job that ran here and whose outcome could not be recorded stays locked by this live worker;
// its heartbeat releases the lock (internal.release_orphaned_locks) and the job runs again. The
// worker names, as started here (p_started), only its running jobs and those whose outcome was
// lost (src/worker/lock-ledger.ts, told by patches/graphile-worker+0.17.3.patch's "job:complete"
// `recorded`), not every job of the last minutes: so the lost outcome's job must keep the attempt
// it used (else a job whose run kills its connection would run forever), while a job whose
// get_job answer was lost, released by the same heartbeats, gets its unused attempt back.
// The outcome is lost here by a trigger that refuses the first deletion of that job's row (how
// Graphile Worker records a completion): a fault injected in the database, as the chaos tests
// terminate backends.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { discardEmbeddingBacklog, startTestWorker, waitFor } from '../helpers/worker.ts';

describe('a job whose outcome could not be recorded, beside one whose get_job answer was lost', () => {
  let db: Database;
  let worker: WorkerRuntime | undefined;
  const lostKey = `unrecorded:${randomUUID()}`;

  beforeAll(async () => {
    db = testDatabase(2);
    await discardEmbeddingBacklog(db.sql);
    await db.sql`create sequence public.test_lose_outcome_seq`;
    await db.sql.unsafe(`
      create function public.test_lose_outcome() returns trigger language plpgsql as $$
      begin
        if old.key = '${lostKey}' and nextval('public.test_lose_outcome_seq') = 1 then
          raise exception 'test: the outcome of job % is lost', old.id;
        end if;
        return old;
      end $$`);
    await db.sql`create trigger test_lose_outcome before delete on graphile_worker._private_jobs
                 for each row execute function public.test_lose_outcome()`;
  });
  afterAll(async () => {
    await worker?.stop();
    if (!db) return;
    await db.sql`drop trigger if exists test_lose_outcome on graphile_worker._private_jobs`;
    await db.sql`drop function if exists public.test_lose_outcome()`;
    await db.sql`drop sequence if exists public.test_lose_outcome_seq`;
    await db.close();
  });

  it('runs both again: the one that ran keeps its attempt, the one that never started gets it back', async () => {
    const w = worker = await startTestWorker(new LocalProvider());
    const ran = await createCanvas(db.sql);
    const never = await createCanvas(db.sql);
    for (const c of [ran, never]) {
      expect((await mutate(db.sql, c.users.owner!, c.canvasId, { action: 'create', patch: { type: 'text' } })).status).toBe('success');
    }
    // every job's starts (its attempts) and recorded outcomes, by id: the ids are known only once added
    const starts = new Map<string, number[]>();
    const recorded = new Map<string, boolean[]>();
    const push = <T>(m: Map<string, T[]>, id: string, v: T) => { m.set(id, [...(m.get(id) ?? []), v]); };
    w.events.on('job:start', ({ job }) => push(starts, job.id, job.attempts));
    w.events.on('job:complete', (e) => push(recorded, e.job.id, (e as { recorded?: boolean }).recorded));
    const ids = { ran: '', never: '' };

    // runs at once; its completion is refused the first time
    const [r] = await db.sql`select id from graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', ${ran.canvasId}::uuid),
                                                                   job_key => ${lostKey})`;
    ids.ran = r!.id as string;
    // what a get_job whose answer never arrived leaves: the job locked in this worker's name a
    // minute ago, one attempt charged (committed at once, so the worker never sees it unlocked)
    const [n] = await db.sql.begin(async (tx) => {
      const rows = await tx`select id from graphile_worker.add_job('rebalance_canvas', json_build_object('canvas_id', ${never.canvasId}::uuid),
                                                                   job_key => ${`lostanswer:${never.canvasId}`})`;
      await tx`update graphile_worker._private_jobs set attempts = attempts + 1, locked_by = ${w.workerId},
                 locked_at = now() - interval '1 minute' where id = ${rows[0]!.id}`;
      return rows;
    });
    ids.never = n!.id as string;

    await waitFor('both jobs done', async () => {
      const [j] = await db.sql`select count(*)::int as n from graphile_worker.jobs where id = any(${[ids.ran, ids.never]}::bigint[])`;
      return j!.n === 0;
    }, 20_000);

    // the job whose outcome was lost ran again as its second attempt; the other ran once, as its first
    expect(recorded.get(ids.ran)).toEqual([false, true]);
    expect(starts.get(ids.ran)).toEqual([1, 2]);
    expect(starts.get(ids.never)).toEqual([1]);
    const released = async (id: string) => {
      const rows = await db.sql`select details from app.system_audit where action = 'worker.release_orphaned_locks'
                                and entity_id = ${w.workerId} and details -> 'job_ids' @> ${db.sql.json([Number(id)])}`;
      expect(rows).toHaveLength(1);
      return rows[0]!.details.attempts_returned as number[];
    };
    expect(await released(ids.ran)).not.toContain(Number(ids.ran));
    expect(await released(ids.never)).toContain(Number(ids.never));
    const runs = async (canvasId: string) => {
      const [c] = await db.sql`select count(*)::int as n from app.system_audit where action = 'canvas.rebalance'
                               and entity_id = ${canvasId} and details ->> 'trigger' = 'job'`;
      return c!.n as number;
    };
    expect(await runs(ran.canvasId)).toBe(2);
    expect(await runs(never.canvasId)).toBe(1);
  }, 40_000);
});
