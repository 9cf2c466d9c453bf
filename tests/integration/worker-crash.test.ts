// Crash recovery: a worker process (`node --import tsx scripts/worker.ts`, its provider an OpenAI-compatible
// test server that holds requests) is killed with SIGKILL in the middle of an embed_block job.
// Its heartbeat goes stale; a live worker force-unlocks its jobs, retries the job and finishes.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { localEmbedding, LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { startWorkerProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { quietQueue, startTestWorker, waitFor } from '../helpers/worker.ts';

describe('a worker killed mid-job', () => {
  let db: Database;
  let fake: Server;
  let baseUrl: string;
  const seen: string[] = [];
  let doomed: ScriptProcess | undefined;
  let rescuer: WorkerRuntime | undefined;

  beforeAll(async () => {
    db = testDatabase(3);
    // an OpenAI-compatible embeddings endpoint that never answers (the job stays in flight)
    fake = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => {
        const { input } = JSON.parse(body) as { input: string[] };
        seen.push(...input);
        void res; // held open: the worker is mid-job until it dies
      });
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    baseUrl = `http://127.0.0.1:${(fake.address() as AddressInfo).port}/v1`;
    // start from a quiet queue, so the doomed worker takes our job and no other
    await quietQueue(db.sql);
  });
  afterAll(async () => {
    doomed?.child.kill('SIGKILL');
    await rescuer?.stop();
    fake?.closeAllConnections();
    await new Promise((r) => fake?.close(r));
    await db?.close();
  });

  it('is retried by another worker and finishes', async () => {
    doomed = await startWorkerProcess({
      DATABASE_URL: testDatabaseUrl(), LOG_LEVEL: 'silent', NODE_ENV: 'test',
      EMBEDDING_PROVIDER: 'openai', OPENAI_BASE_URL: baseUrl, OPENAI_API_KEY: 'test', EMBEDDING_TIMEOUT_MS: '600000',
      EMBEDDING_BATCH_WINDOW_MS: '0', WORKER_CONCURRENCY: '1', WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '200',
      WORKER_CRONTAB: '', EMBED_DEBOUNCE_MS: '100', EMBED_DRAIN_INTERVAL_MS: '100',
    }, 20_000);
    const childId = doomed.ready[1]!;

    const tag = `crash${randomUUID().slice(0, 8)}`;
    const text = `${tag} survives a killed worker`;
    const { canvasId, users } = await createCanvas(db.sql);
    const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
    const blockId = created.block_id!;
    await waitFor('the doomed worker to call the provider', async () => seen.includes(text));
    const [job] = await db.sql`select id, locked_by, attempts from graphile_worker.jobs where key = ${`embed_block:${blockId}`}`;
    expect(job!.locked_by).toBe(childId);
    const [hb] = await db.sql`select count(*)::int as n from app.worker_heartbeats where worker_id = ${childId}`;
    expect(hb!.n).toBe(1);

    // no graceful shutdown: the job stays locked by a dead worker
    doomed.child.kill('SIGKILL');
    expect(await waitFor('the worker process to die', async () => doomed!.exited())).toEqual({ code: null, signal: 'SIGKILL' });

    rescuer = await startTestWorker(new LocalProvider(), { staleMs: 1500 });
    const done = await waitFor('the job to be retried and finish', async () => {
      const [b] = await db.sql`select embedded_hash = content_hash as ok, vector::text as v from app.blocks where block_id = ${blockId}`;
      return b!.ok && b;
    }, 20_000, 200);
    expect(JSON.parse(done.v)[0]).toBeCloseTo(localEmbedding(text)[0]!, 6);
    const [left] = await db.sql`select count(*)::int as n from app.worker_heartbeats where worker_id = ${childId}`;
    expect(left!.n).toBe(0);
    const [audit] = await db.sql`select count(*)::int as n from app.system_audit where action = 'worker.recover' and details -> 'worker_ids' ? ${childId}`;
    expect(audit!.n).toBe(1);
  }, 40_000);
});
