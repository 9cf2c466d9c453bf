// A canvas deleted while a mutation waits for its row. The mutation RPC reads the caller's role
// (and finds one: the deletion has not committed), then takes the canvas row's lock, which waits
// for the deleting transaction; once that commits, the lock's recheck reads the deleted row and
// finds no live canvas, and the operation is refused not_found, writing nothing (sql/rpc/mutate.sql,
// internal.apply_block_op step 4: `if not v_usual and not found`, and the usual edit's own canvas
// UPDATE in step 3). The usual edit (a content patch on the client's version) and an update of any
// other shape take different paths to that lock. An update whose patch is {}, of a block the
// canvas does not have (read before the lock: found nothing, so nothing refused it there), made the
// usual edit's test null, not false, in one form of the fiftieth session's change
// (docs/performance.md), which skipped the check and refused it for its block instead. The race is made
// deterministic without a sleep: the deletion is held uncommitted on a connection of its own until
// the mutation's backend waits for it.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate, type MutationResult } from '../helpers/fixtures.ts';

const db = testDatabase(4);
afterAll(async () => {
  await db.close();
});

/** Runs `mutation` while the canvas's soft deletion is uncommitted, and commits it once a backend waits for it. */
async function deletedWhileWaiting(canvasId: string, mutation: () => Promise<MutationResult>): Promise<MutationResult> {
  const deleter = await reservedTransaction(db.sql);
  try {
    await deleter.conn`update app.canvases set deleted_at = now() where canvas_id = ${canvasId}`;
    const running = mutation();
    running.catch(() => {}); // awaited below; a failure must not go unhandled while the wait polls
    await deleter.waitedFor('the mutation waiting for the canvas row the deletion holds');
    await deleter.end('commit');
    return await running;
  } finally {
    await deleter.release();
  }
}

describe('a canvas deleted between the mutation\'s role read and its canvas lock', () => {
  for (const [shape, patch, missingBlock] of [
    ['the usual edit (content on the client\'s version)', { content: { tag: 'after' } }, false],
    ['an update of content and type', { content: { tag: 'after' }, type: 'note' }, false],
    ['an update whose patch is {}, of a block the canvas does not have', {}, true],
  ] as const) {
    it(`${shape}: refused not_found, the block and the canvas's numbers unchanged`, async () => {
      const { canvasId, users } = await createCanvas(db.sql, ['editor']);
      const editor = users.editor!;
      const created = await mutate(db.sql, editor, canvasId, { action: 'create', patch: { type: 'text', content: { tag: 'before' } } });
      expect(created.status).toBe('success');
      const blockId = created.block_id as string;
      const [before] = await db.sql`select last_seq, last_canvas_seq from app.canvases where canvas_id = ${canvasId}`;
      const opId = `canvas-gone-${randomUUID()}`;
      const result = await deletedWhileWaiting(canvasId, () =>
        mutate(db.sql, editor, canvasId, { action: 'update', blockId: missingBlock ? randomUUID() : blockId, clientOpId: opId, baseVersion: 1, patch }));
      expect(result).toMatchObject({ status: 'failed', server_seq: null, canvas_seq: null, error: { code: 'not_found', field: 'canvas_id' } });
      const [block] = await db.sql`select version, type, content from app.blocks where block_id = ${blockId}`;
      expect(block).toEqual({ version: 1, type: 'text', content: { tag: 'before' } });
      expect(await db.sql`select last_seq, last_canvas_seq from app.canvases where canvas_id = ${canvasId}`).toEqual([before]);
      expect(await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${opId} and status = 'success'`)
        .toEqual([{ n: 0 }]);
    }, 30_000);
  }
});
