// embed_block with a real Graphile Worker in-process: the outbox debounces a burst of edits into
// one job; an edit landing mid-job waits for that job and is never overwritten by its stale vector; a failing provider
// opens the circuit breaker (no hammering) and jobs recover through Graphile's retries.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { localEmbedding } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { cosine, discardEmbeddingBacklog, parseVector, raiseMutationLimit, startTestWorker, TestProvider, waitFor } from '../helpers/worker.ts';

describe('embed_block on a real worker', () => {
  let db: Database;
  let worker: WorkerRuntime;
  let restore: () => Promise<void>;
  const provider = new TestProvider();
  let canvas: Awaited<ReturnType<typeof createCanvas>>;

  beforeAll(async () => {
    db = testDatabase(4);
    restore = await raiseMutationLimit(db.sql);
    canvas = await createCanvas(db.sql);
    await discardEmbeddingBacklog(db.sql); // the embeddings waited for below are this file's own
    worker = await startTestWorker(provider);
  });
  afterAll(async () => {
    await worker?.stop();
    await restore?.();
    await db?.close();
  });

  const block = async (id: string) => {
    const [b] = await db.sql`select content_hash, embedded_hash, embedding_model, vector::text as vector from app.blocks where block_id = ${id}`;
    return b!;
  };
  const createBlock = async (text: string) => {
    const r = await mutate(db.sql, canvas.users.owner!, canvas.canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
    expect(r.status).toBe('success');
    return { id: r.block_id ?? r.block!.block_id as string, version: r.version! };
  };
  const edit = async (id: string, version: number, text: string) => {
    const r = await mutate(db.sql, canvas.users.owner!, canvas.canvasId, { blockId: id, action: 'update', baseVersion: version, patch: { content: { text } } });
    expect(r.status).toBe('success');
    return r.version!;
  };

  it('every task\'s outcomes are series of potentia_jobs_total from the start (at 0 until a job of it ends so)', async () => {
    const text = await worker.metrics.registry.metrics();
    for (const task of ['embed_block', 'rebalance_canvas', 'cleanup', 'cleanup_files']) {
      for (const outcome of ['success', 'error', 'failed']) expect(text).toMatch(new RegExp(`^potentia_jobs_total\\{task="${task}",outcome="${outcome}"\\} \\d+$`, 'm'));
    }
    expect(text).toMatch(/^potentia_jobs_total\{task="cleanup",outcome="failed"\} 0$/m);
  });

  it('the write path only touches the outbox: a burst of edits is one row, then one job, then one up-to-date embedding', async () => {
    const tag = `burst${randomUUID().slice(0, 8)}`;
    const successes: string[] = [];
    const onSuccess = ({ job }: { job: { task_identifier: string; payload: unknown } }) => {
      if (job.task_identifier === 'embed_block') successes.push((job.payload as { block_id: string }).block_id);
    };
    worker.events.on('job:success', onSuccess);
    try {
      const b = await createBlock(`${tag} draft 0`);
      let version = b.version;
      for (let i = 1; i <= 20; i++) version = await edit(b.id, version, `${tag} draft ${i}`);
      const final = `${tag} final words about gardening`;
      version = await edit(b.id, version, final);
      // still debouncing: one outbox row, no job yet
      const [o] = await db.sql`select count(*)::int as n from app.embedding_outbox where block_id = ${b.id}`;
      expect(o!.n).toBe(1);
      const done = await waitFor('the embedding', async () => {
        const r = await block(b.id);
        return r.embedded_hash === r.content_hash && r;
      });
      await new Promise((r) => setTimeout(r, 800)); // a second job, if any, would run meanwhile
      expect(provider.calls.filter((t) => t.includes(tag))).toEqual([final]);
      expect(successes.filter((id) => id === b.id)).toHaveLength(1);
      expect(done.embedding_model).toBe('local-hash-v1');
      expect(cosine(parseVector(done.vector), localEmbedding(final))).toBeGreaterThan(0.9999);
    } finally {
      worker.events.off('job:success', onSuccess);
    }
  });

  it('an edit landing while the job runs waits for it in the outbox, is embedded after it, and is not overwritten by its stale vector', async () => {
    const tag = `race${randomUUID().slice(0, 8)}`;
    const gate = provider.gate(new RegExp(`${tag} alpha`));
    const first = `${tag} alpha first version`;
    const b = await createBlock(first);
    const [{ content_hash: alphaHash }] = await db.sql`select content_hash from app.blocks where block_id = ${b.id}` as any;
    await gate.entered; // job 1 is embedding `first` and holds there
    const second = `${tag} beta second version`;
    await edit(b.id, b.version, second);
    // the edit is due; a drain leaves it in the outbox while job 1 runs: add_jobs would give the
    // running job up for good (key cleared, attempts 25 of 25), a row that read as failed
    await waitFor('the edit to be due', async () => (await db.sql`select 1 from app.embedding_outbox
      where block_id = ${b.id} and queued_at <= now() - interval '300 milliseconds'`).length === 1);
    await worker.drainOutbox();
    // by the payload's text: another test's job may carry a payload that ->> cannot read (\u0000)
    const job = async () => (await db.sql`select attempts, max_attempts, key, locked_by is not null as running
                                          from graphile_worker._private_jobs where payload::text like ${`%${b.id}%`} order by id`)
      .map((r) => ({ ...r }));
    expect(await job()).toEqual([{ attempts: 1, max_attempts: 25, key: `embed_block:${b.id}`, running: true }]);
    expect((await db.sql`select 1 from app.embedding_outbox where block_id = ${b.id}`).length).toBe(1);
    const firstDone = new Promise<void>((resolve) => {
      const on = ({ job: j }: { job: { task_identifier: string; payload: unknown } }) => {
        if (j.task_identifier === 'embed_block' && (j.payload as { block_id: string }).block_id === b.id) {
          worker.events.off('job:success', on);
          resolve();
        }
      };
      worker.events.on('job:success', on);
    });
    gate.release();
    await firstDone; // job 1 finished; its stale vector for `first` was not stored
    // job 2, queued by a drain once job 1 was done, embeds `second`
    const after = await waitFor('the newer embedding', async () => {
      const r = await block(b.id);
      return r.embedded_hash === r.content_hash && r;
    });
    expect(after.embedded_hash).not.toBe(alphaHash);
    expect(cosine(parseVector(after.vector), localEmbedding(second))).toBeGreaterThan(0.9999);
    expect(provider.calls.filter((t) => t.includes(tag)).sort()).toEqual([first, second].sort());
    // no job row is left behind for the block (job 2 completed), none reading as failed
    await waitFor('no job left for the block', async () => (await job()).length === 0);
  });

  it('provider failures open the breaker (no calls while open) and jobs recover through retries', async () => {
    const tag = `breaker${randomUUID().slice(0, 8)}`;
    provider.failing = true;
    const failuresBefore = provider.failures;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) ids.push((await createBlock(`${tag} note ${i}`)).id);
    await waitFor('the breaker to open', async () => worker.breaker.state === 'open');
    const failedCalls = provider.failures - failuresBefore;
    // at most the threshold plus the calls already in flight when it tripped (concurrency 4)
    expect(failedCalls).toBeGreaterThanOrEqual(3);
    expect(failedCalls).toBeLessThanOrEqual(3 + 3);
    // the jobs that came after fail fast without calling the provider and wait for a retry; one
    // more edit now (its job runs ~0.4 s later, well inside the 1.5 s cooldown) makes sure one does
    const callsWhenOpen = provider.calls.length;
    ids.push((await createBlock(`${tag} note after opening`)).id);
    const failedJobs = await waitFor('jobs refused by the open breaker', async () => {
      const rows = await db.sql`select last_error from graphile_worker.jobs
                                where key = any(${ids.map((id) => `embed_block:${id}`)}) and attempts >= 1`;
      return rows.length === ids.length && rows;
    });
    expect(failedJobs.some((r) => /circuit open/.test(r.last_error))).toBe(true);
    expect(provider.calls.length).toBe(callsWhenOpen); // nothing called while open
    // the provider recovers: after the cooldown a probe closes the breaker; retries finish the jobs
    provider.failing = false;
    await waitFor('every block embedded after recovery', async () => {
      const [r] = await db.sql`select count(*)::int as n from app.blocks where block_id = any(${ids}) and embedded_hash = content_hash`;
      return r!.n === ids.length;
    }, 30_000, 250);
    expect(worker.breaker.state).toBe('closed');
    // outcomes on /metrics: failed attempts counted as errors (retrying), then successes
    const text = await worker.metrics.registry.metrics();
    expect(text).toMatch(/potentia_jobs_total\{task="embed_block",outcome="error"\} [1-9]/);
    expect(text).toMatch(/potentia_jobs_total\{task="embed_block",outcome="success"\} [1-9]/);
    expect(text).toMatch(/potentia_circuit_breaker_state\{name="embedding"\} 0/);
  }, 40_000);
});
