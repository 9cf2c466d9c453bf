import type { Sql } from 'postgres';
import type { ObjectStorage } from './s3.ts';

export type FilesCleanup = { removed: number; failed: number; skipped?: 'storage_not_configured' };

/**
 * cleanup_files (Graphile Worker crontab; src/worker/tasks.ts): removes the objects of files that
 * are no longer wanted — deleted blocks' files, uploads never completed, orphans, purged canvases:
 * internal.claim_file_purges (sql/files/cleanup.sql) says which and marks them deleted; each object
 * is deleted from the bucket; internal.mark_files_purged records the ones removed. A failed
 * removal is logged and retried by the next run (its row stays unpurged). At most `maxBatches`
 * batches per run, so one run stays short; the next run continues.
 */
export async function cleanupFiles(sql: Sql, storage: ObjectStorage | null,
  opts: { batch?: number; maxBatches?: number; concurrency?: number; logger?: { warn(msg: string): void } } = {}): Promise<FilesCleanup> {
  // without storage no upload URL was ever handed out, so there is no object to remove
  if (!storage) return { removed: 0, failed: 0, skipped: 'storage_not_configured' };
  const batch = opts.batch ?? 100;
  let removed = 0;
  let failed = 0;
  for (let i = 0; i < (opts.maxBatches ?? 10); i++) {
    const rows = await sql<{ file_id: string; object_key: string }[]>`select file_id, object_key from internal.claim_file_purges(${batch})`;
    const done: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const row = rows[next++]!;
        try {
          await storage.remove(row.object_key);
          done.push(row.file_id);
        } catch (err) {
          failed += 1;
          opts.logger?.warn(`cleanup_files: could not remove ${row.object_key} (file ${row.file_id}), retried next run: ${(err as Error).message}`);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 8, rows.length) }, worker));
    if (done.length) await sql`select internal.mark_files_purged(${done}::uuid[])`;
    removed += done.length;
    // a short batch was the last; a failure means the storage is unwell: stop until the next run
    if (rows.length < batch || done.length < rows.length) break;
  }
  return { removed, failed };
}
