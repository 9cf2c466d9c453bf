// rebalance_canvas on a real worker: a client's 9-character y_order right after the anchor, then
// 300 inserts between the two, push keys past 8 characters (inserts at one spot alone step and
// stay short); the LexoRank trigger enqueues a deduplicated job and the worker rewrites the
// canvas's keys evenly: every key ends at most 8 characters long, in the order the inserts made.
// Two workers share the queue (the job key dedupes, the SQL takes the canvas lock).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { discardEmbeddingBacklog, raiseMutationLimit, startTestWorker, waitFor } from '../helpers/worker.ts';

const INSERTS = 300;

describe('rebalance_canvas on real workers', () => {
  let db: Database;
  const workers: WorkerRuntime[] = [];
  let restore: () => Promise<void>;

  beforeAll(async () => {
    db = testDatabase(4);
    restore = await raiseMutationLimit(db.sql);
    await discardEmbeddingBacklog(db.sql); // else the rebalance job queues behind earlier files' embeddings
    // two workers racing for the same jobs
    workers.push(await startTestWorker(new LocalProvider()), await startTestWorker(new LocalProvider()));
  });
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop()));
    await restore?.();
    await db?.close();
  });

  it(`${INSERTS} inserts at one spot are rebalanced: every key <= 8 characters, order preserved`, async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const anchor = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } });
    const tail = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text', y_order: 'V00000001' } });
    expect(anchor.status).toBe('success');
    expect(tail.status).toBe('success');
    const inserted: string[] = [];
    let longest = 0;
    for (let i = 0; i < INSERTS; i++) {
      const r = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text', after_id: anchor.block_id } });
      expect(r.status, JSON.stringify(r.error)).toBe('success');
      inserted.push(r.block_id!);
      longest = Math.max(longest, String(r.block!.y_order).length);
    }
    expect(longest).toBeGreaterThan(8); // the trigger had reason to ask for a rebalance
    const keyOf = `rebalance_canvas:${canvasId}`;
    await waitFor('the rebalance to finish', async () => {
      const [r] = await db.sql`
        select (select count(*) from graphile_worker.jobs where key = ${keyOf})::int as pending,
               (select max(length(y_order)) from app.blocks where canvas_id = ${canvasId})::int as longest`;
      return r!.pending === 0 && r!.longest <= 8;
    }, 25_000, 200);
    const rows = await db.sql`select block_id, y_order from app.blocks where canvas_id = ${canvasId} order by y_order`;
    // each insert went right after the anchor: anchor, newest … oldest, then the tail
    expect(rows.map((r) => r.block_id)).toEqual([anchor.block_id, ...inserted.reverse(), tail.block_id]);
    expect(Math.max(...rows.map((r) => r.y_order.length))).toBeLessThanOrEqual(8);
    const [audit] = await db.sql`select count(*)::int as n from app.system_audit where action = 'canvas.rebalance' and entity_id = ${canvasId}`;
    expect(audit!.n).toBeGreaterThanOrEqual(1); // done by the worker's job
  }, 40_000);
});
