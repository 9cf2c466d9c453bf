// SIGTERM to `npm run worker` processes whose jobs cannot finish: one whose task hangs (its
// embedding provider never answers, with a long EMBEDDING_TIMEOUT_MS), one whose path to the
// database stalls mid-job. Each exits within WORKER_SHUTDOWN_TIMEOUT_MS and a few seconds; the
// one that can still reach the database releases its job for another worker at once, the other
// says its jobs come back once its heartbeat is stale; another worker then runs both.
import { randomUUID } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import type { WorkerRuntime } from '../../src/worker/runtime.ts';
import { startWorkerProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { quietQueue, startTestWorker, waitFor } from '../helpers/worker.ts';

const SHUTDOWN_MS = 2000;

describe('a worker stopped while its jobs cannot finish', () => {
  let db: Database;
  let provider: Server;
  let baseUrl: string;
  const seen: string[] = [];
  let proxy: TcpProxy;
  const workers: ScriptProcess[] = [];
  let rescuer: WorkerRuntime | undefined;

  beforeAll(async () => {
    db = testDatabase(3);
    // an OpenAI-compatible embeddings endpoint that never answers
    provider = createServer((req) => {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => { seen.push(...(JSON.parse(body) as { input: string[] }).input); });
    });
    await new Promise<void>((r) => provider.listen(0, '127.0.0.1', r));
    baseUrl = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1`;
    proxy = await startTcpProxy(Number(new URL(testDatabaseUrl()).port || 5432));
    // a quiet queue: each worker takes its own block's job and no other
    await quietQueue(db.sql);
  }, 60_000);
  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL');
    await rescuer?.stop();
    await proxy?.close();
    provider?.closeAllConnections();
    await new Promise((r) => provider?.close(r));
    await db?.close();
  });

  it('exits within its bound and its jobs run elsewhere', async () => {
    const through = databaseUrlThrough(proxy, testDatabaseUrl());
    const env = (databaseUrl: string) => ({
      DATABASE_URL: databaseUrl, LOG_LEVEL: 'info', NODE_ENV: 'test', WORKER_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_MS),
      EMBEDDING_PROVIDER: 'openai', OPENAI_BASE_URL: baseUrl, OPENAI_API_KEY: 'test', EMBEDDING_TIMEOUT_MS: '600000',
      EMBEDDING_BATCH_WINDOW_MS: '0', WORKER_CONCURRENCY: '1', WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '200',
      WORKER_STALE_MS: '3000', WORKER_CRONTAB: '', EMBED_DEBOUNCE_MS: '50', EMBED_DRAIN_INTERVAL_MS: '100',
    });
    const { canvasId, users } = await createCanvas(db.sql);
    const hold = async (w: ScriptProcess) => {
      const text = `shutdown${randomUUID().slice(0, 8)}`;
      const { block_id } = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
      await waitFor('the worker to call the provider', async () => seen.includes(text));
      const [job] = await db.sql`select id, locked_by from graphile_worker.jobs where key = ${`embed_block:${block_id}`}`;
      expect(job!.locked_by).toBe(w.ready[1]);
      return { blockId: block_id!, jobId: job!.id as string };
    };
    // one at a time, so each takes its own block's job
    const hung = await startWorkerProcess(env(testDatabaseUrl()), 30_000);
    workers.push(hung);
    const hungJob = await hold(hung);
    const stalled = await startWorkerProcess(env(through), 30_000);
    workers.push(stalled);
    const stalledJob = await hold(stalled);
    proxy.cut({ existing: 'stall', incoming: 'blackhole' });

    const exits = [hung, stalled].map(async (w) => {
      const started = Date.now();
      const closed = new Promise<number | null>((resolve) => w.child.once('close', (code) => resolve(code)));
      w.child.kill('SIGTERM');
      const code = await Promise.race([closed, new Promise<'still running'>((r) => setTimeout(() => r('still running'), 20_000))]);
      return { code, ms: Date.now() - started };
    });
    // the drain's bound, then at most two steps of 3 s (release, closing the pools), and slack
    for (const exit of await Promise.all(exits)) {
      expect(exit.code).toBe(0);
      expect(exit.ms).toBeLessThan(SHUTDOWN_MS + 6000 + 2000);
    }
    expect(hung.output()).toMatch(/jobs still running after WORKER_SHUTDOWN_TIMEOUT_MS: released for another worker/);
    expect(stalled.output()).toMatch(/could not reach the database to release this worker/);
    // released at once, not after WORKER_STALE_MS: no live worker has recovered anything yet
    const [h] = await db.sql`select locked_by from graphile_worker.jobs where id = ${hungJob.jobId}`;
    expect(h!.locked_by).toBeNull();
    const [gone] = await db.sql`select count(*)::int as n from app.worker_heartbeats where worker_id = ${hung.ready[1]!}`;
    expect(gone!.n).toBe(0);

    proxy.restore();
    rescuer = await startTestWorker(new LocalProvider(), { staleMs: 3000 });
    await waitFor('both blocks embedded by another worker', async () => {
      const [r] = await db.sql`select count(*)::int as n from app.blocks
                               where block_id in (${hungJob.blockId}, ${stalledJob.blockId}) and embedded_hash = content_hash`;
      return r!.n === 2;
    }, 20_000, 200);
  }, 90_000);
});
