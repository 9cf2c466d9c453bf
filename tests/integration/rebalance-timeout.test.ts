// An append that finds its canvas's end full rebalances the canvas inline (place_block, up to
// 2,000 blocks): every block rekeyed inside the request. Where that outlasted the request's
// statement_timeout (a slow or loaded machine; here a block row held by another transaction, so
// the timeout is certain), it rolled back with the append, and so did every later append, each
// trying the same rebalance: the canvas took no append any more (HTTP 504 for good). Now the
// timed-out append asks for the rebalance job (internal.rebalance_after_timeout) and, while the job
// is pending, the next append bisects toward the end instead, so the client's retry succeeds.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { withRequest } from '../../src/db/request.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate, type MutationResult } from '../helpers/fixtures.ts';
import { raiseMutationLimit } from '../helpers/worker.ts';

const db = testDatabase(3);
let restore: () => Promise<void>;
beforeAll(async () => { restore = await raiseMutationLimit(db.sql); });
afterAll(async () => {
  await restore?.();
  await db.close();
});

/** An append as `userId` with the request's statement_timeout at `timeoutMs`. */
const append = (userId: string, canvasId: string, timeoutMs: number) =>
  withRequest(db.sql, { claims: { sub: userId, role: 'authenticated' }, statementTimeoutMs: timeoutMs }, async (tx) => {
    const [row] = await tx`select api.upsert_block_atomic(${canvasId}::uuid, null, 'create', ${randomUUID()}, null, '{"type": "text"}'::jsonb) as r`;
    return row!.r as MutationResult;
  });

describe('an append whose inline rebalance runs out of time', () => {
  it('fails once (timeout), asks for the rebalance job, and the retry appends without rebalancing', { timeout: 120_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    // appends step one unit past the end at 2 characters until the end is full: the last key is 'zz'
    let last = '';
    while (last !== 'zz') {
      const r = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text' } });
      expect(r.status, JSON.stringify(r.error)).toBe('success');
      last = String(r.block!.y_order);
    }
    const before = (await db.sql<{ n: number }[]>`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`)[0]!.n;
    expect(before).toBeLessThanOrEqual(2000); // inside place_block's inline limit
    const pending = async () => (await db.sql`select from graphile_worker.jobs where key = ${`rebalance_canvas:${canvasId}`}`).length;
    expect(await pending()).toBe(0);

    // another transaction holds the last block's row: the inline rebalance, which rekeys it, waits
    const holder = await db.sql.reserve();
    try {
      await holder`begin`;
      await holder`select from app.blocks where canvas_id = ${canvasId} and y_order = 'zz' for update`;
      const timedOut = await append(owner, canvasId, 1000);
      expect(timedOut).toMatchObject({ status: 'failed', error: { code: 'timeout' } });
      expect(await pending()).toBe(1);
      // the retry: no inline rebalance while the job is pending, so it does not wait for the row
      const retried = await append(owner, canvasId, 1000);
      expect(retried.status, JSON.stringify(retried.error)).toBe('success');
      expect(String(retried.block!.y_order) > 'zz').toBe(true);
    } finally {
      await holder`rollback`.catch(() => {});
      holder.release();
    }
    const keys = (await db.sql<{ y_order: string }[]>`select y_order from app.blocks where canvas_id = ${canvasId} order by y_order collate "C"`).map((r) => r.y_order);
    expect(keys.length).toBe(before + 1);
    expect(new Set(keys).size).toBe(keys.length);
  });
});
