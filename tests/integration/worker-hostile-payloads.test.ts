// Jobs inserted by hand with payloads the database never enqueues (wrong types, NUL bytes, no
// object, megabytes, ids of rows that are gone), run by a real Graphile Worker: a malformed one
// fails at its first attempt for good, its error naming the field without echoing the value, and
// is logged once with what to do next; ids of deleted rows are skipped; the worker keeps running
// the jobs that follow.
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { startWorker, type WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { discardEmbeddingBacklog, fastWorker, waitFor } from '../helpers/worker.ts';

const HUGE = 2_000_000;

describe('hostile job payloads', () => {
  let db: Database;
  let worker: WorkerRuntime;
  const lines: string[] = [];

  beforeAll(async () => {
    db = testDatabase(3);
    await discardEmbeddingBacklog(db.sql);
    const sink = new Writable({ write(chunk, _enc, done) { lines.push(...String(chunk).split('\n').filter(Boolean)); done(); } });
    worker = await startWorker({ databaseUrl: testDatabaseUrl(), worker: fastWorker(), embedding: loadConfig().embedding,
      provider: new LocalProvider(), logger: pino({ level: 'warn' }, sink) });
  });
  afterAll(async () => {
    await worker?.stop();
    await db?.close();
  });

  it('fails a malformed job once, for good, and keeps running the others', async () => {
    const gone = randomUUID();
    const malformed: [task: string, payload: string, error: RegExp][] = [
      ['embed_block', '{}', /^invalid embed_block payload: block_id: .*expected string, received undefined; not retried$/],
      ['embed_block', '{"block_id": 123}', /^invalid embed_block payload: block_id: .*received number/],
      ['embed_block', '{"block_id": "\\u0000"}', /^invalid embed_block payload: block_id: Invalid GUID/],
      ['embed_block', 'null', /^invalid embed_block payload: payload: .*received null/],
      ['embed_block', `[{"block_id": "${gone}"}]`, /^invalid embed_block payload: payload: .*received array/],
      ['embed_block', `{"block_id": "${gone}", "canvas_id": 7}`, /^invalid embed_block payload: canvas_id: /],
      ['embed_block', JSON.stringify({ block_id: 'x'.repeat(HUGE) }), /^invalid embed_block payload: block_id: Invalid GUID/],
      ['rebalance_canvas', '{"canvas_id": {"a": 1}}', /^invalid rebalance_canvas payload: canvas_id: .*received object/],
    ];
    const add = async (task: string, payload: string) =>
      (await db.sql`select id from graphile_worker.add_job(${task}, ${payload}::text::json)`)[0]!.id as string;
    const bad: { id: string; error: RegExp }[] = [];
    for (const [task, payload, error] of malformed) bad.push({ id: await add(task, payload), error });
    // well-formed, naming rows that do not exist (deleted meanwhile): nothing to do, done
    const skipped = [await add('embed_block', `{"block_id": "${gone}"}`), await add('rebalance_canvas', `{"canvas_id": "${gone}"}`)];

    // each job as first seen after an attempt (without the fix they are retried, attempts grow,
    // and one with a stray canvas_id runs and is gone)
    const settled = new Map<string, { attempts: number; max_attempts: number; last_error: string } | 'gone'>();
    await waitFor('every malformed job to fail', async () => {
      const r = await db.sql`select b.id, j.id is null as gone, j.attempts, j.max_attempts, j.last_error
                             from unnest(${bad.map((b) => b.id)}::bigint[]) b(id) left join graphile_worker.jobs j on j.id = b.id
                             where j.id is null or (j.attempts > 0 and j.locked_at is null)`;
      for (const row of r) if (!settled.has(String(row.id))) settled.set(String(row.id), row.gone ? 'gone' : row as never);
      return settled.size === bad.length;
    });
    for (const { id, error } of bad) {
      const row = settled.get(id)!;
      expect(row).not.toBe('gone');
      if (row === 'gone') continue;
      // no attempts left after the first: never taken again (Graphile's default is 25, over days)
      expect({ id, attempts: row.attempts, max_attempts: row.max_attempts }).toEqual({ id, attempts: 1, max_attempts: 1 });
      expect(row.last_error).toMatch(error);
    }
    await waitFor('the jobs naming deleted rows to be done', async () => {
      const [r] = await db.sql`select count(*)::int as n from graphile_worker.jobs where id = any(${skipped}::bigint[])`;
      return r!.n === 0;
    });

    // each logged once, with what to do next; no line carries the payload
    for (const { id } of bad) {
      const ours = lines.map((l) => JSON.parse(l)).filter((l) => l.job_id === id);
      expect(ours.map((l) => [l.msg, l.level])).toEqual([['job failed permanently', 50]]);
      expect(ours[0].next).toContain(`graphile_worker.complete_jobs(array[${id}]::bigint[])`);
    }
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(20_000);
    const metrics = await worker.metrics.registry.metrics();
    // counted as failed (out of attempts), not as errors to retry
    const failed = Number(/potentia_jobs_total\{task="embed_block",outcome="failed"\} (\d+)/.exec(metrics)?.[1]);
    expect(failed).toBeGreaterThanOrEqual(bad.length - 1);
    expect(metrics).toMatch(/^potentia_jobs_total\{task="embed_block",outcome="error"\} 0$/m);

    // and the worker runs what comes next
    const { canvasId, users } = await createCanvas(db.sql);
    const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'after the hostile jobs' } } });
    await waitFor('the next block embedded', async () => {
      const [b] = await db.sql`select embedded_hash = content_hash as ok from app.blocks where block_id = ${created.block_id!}`;
      return b!.ok;
    });
  });
});
