import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, mutate } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

// The cleanup_files job (internal.claim_file_purges) deletes a ready file no block refers to, and
// it does not take the canvas lock that orders mutations. A block given that file at the same
// moment must never end up pointing at a deleted file (docs/files.md: a block only points at a
// ready file), whichever of the two transactions comes first: the block's check holds the file's
// row FOR SHARE (the job skips it), and the job re-reads the references once it holds its rows
// (a block's check waiting behind it then sees the file deleted and refuses the block).

const db = testDatabase(4);
afterAll(() => db.close());

/** A ready file of the canvas, completed long before any orphan grace period. */
async function readyFile(canvasId: string, editor: string): Promise<string> {
  const created = await callAs(db.sql, editor, 'create_file', [canvasId, `race-${randomUUID()}.png`, 'image/png', 10, null]);
  const fileId = created.file.file_id as string;
  await db.sql`update app.files set status = 'ready', completed_at = now() - interval '400 days' where file_id = ${fileId}`;
  return fileId;
}

const statusOf = async (fileId: string) => (await db.sql`select status from app.files where file_id = ${fileId}`)[0]!.status as string;
const blocksWith = async (fileId: string) => (await db.sql`select count(*)::int as n from app.blocks where file_ref = ${fileId}`)[0]!.n as number;

describe('a block given a file while the cleanup job runs', () => {
  it('block first (not yet committed): the job leaves the file alone, and the block keeps a ready file', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const fileId = await readyFile(canvasId, users.editor!);
    const writer = await db.sql.reserve();
    try {
      await writer`begin`;
      await writer`select set_config('request.jwt.claims', ${JSON.stringify({ sub: users.editor, role: 'authenticated' })}, true),
                          set_config('role', 'authenticated', true)`;
      const [row] = await writer`select api.upsert_block_atomic(${canvasId}, null, 'create', ${randomUUID()}, null,
                                  ${db.sql.json({ type: 'image', content: { file_id: fileId } })}) as r`;
      expect(row!.r.status).toBe('success');
      // the job runs now, in its own transaction, and commits before the block does
      const purged = await db.sql`select file_id from internal.claim_file_purges(100) where file_id = ${fileId}`;
      expect(purged).toHaveLength(0);
      await writer`commit`;
    } finally {
      writer.release();
    }
    expect(await blocksWith(fileId)).toBe(1);
    expect(await statusOf(fileId)).toBe('ready');
  });

  it('job first (not yet committed): the block waits for it, then is refused, and nothing points at the deleted file', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const fileId = await readyFile(canvasId, users.editor!);
    const job = await db.sql.reserve();
    try {
      await job`begin`;
      const purged = await job`select file_id from internal.claim_file_purges(100) where file_id = ${fileId}`;
      expect(purged).toHaveLength(1);
      const clientOpId = randomUUID();
      const write = mutate(db.sql, users.editor!, canvasId, { action: 'create', clientOpId, patch: { type: 'image', content: { file_id: fileId } } });
      let settled = false;
      void write.finally(() => { settled = true; });
      // the block's check waits on the file's row (a transaction lock) until the job ends
      await until(async () => settled || (await db.sql`select 1 from pg_stat_activity where wait_event_type = 'Lock'
        and query like '%upsert_block_atomic%' and datname = current_database()`).length > 0, 10_000, 'the block to wait for the file');
      await job`commit`;
      const result = await write;
      expect(result).toMatchObject({ status: 'failed', error: { code: 'invalid_input', field: 'patch.content.file_id' } });
    } finally {
      job.release();
    }
    expect(await blocksWith(fileId)).toBe(0);
    expect(await statusOf(fileId)).toBe('deleted');
  });
});
