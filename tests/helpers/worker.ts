// Shared by the worker*.test.ts files: a real Graphile Worker (src/worker) in-process against
// the test database, with fast test timings, and a test double of the EXTERNAL embedding
// provider that can fail or hold requests (our own components are never doubled).
import { pino } from 'pino';
import type { Sql } from 'postgres';
import { loadConfig, testDatabaseUrl, type WorkerConfig } from '../../src/config.ts';
import { localEmbedding, LocalProvider, type EmbeddingProvider } from '../../src/worker/providers.ts';
import { startWorker, type WorkerRuntime } from '../../src/worker/runtime.ts';

export const fastWorker = (over: Partial<WorkerConfig> = {}): WorkerConfig => ({
  ...loadConfig().worker,
  concurrency: 4, pollIntervalMs: 200, heartbeatMs: 300, staleMs: 2000, crontab: '',
  embedDebounceMs: 300, embedMaxWaitMs: 5000, drainIntervalMs: 100, drainBatch: 500,
  ...over,
});

/** The local provider's vectors, plus call records, failure injection and gates (hold matching texts until released). */
export class TestProvider implements EmbeddingProvider {
  readonly model = 'local-hash-v1';
  calls: string[] = [];
  failures = 0;
  failing = false;
  #gates: { match: RegExp; entered: () => void; release: Promise<void> }[] = [];

  /** Holds every call whose text matches until `release()`; `entered` resolves when one arrives. */
  gate(match: RegExp) {
    let entered!: () => void;
    let release!: () => void;
    const enteredP = new Promise<void>((r) => { entered = r; });
    const releaseP = new Promise<void>((r) => { release = r; });
    this.#gates.push({ match, entered, release: releaseP });
    return { entered: enteredP, release };
  }

  async embed(texts: string[]): Promise<number[][]> {
    this.calls.push(...texts);
    if (this.failing) {
      this.failures += 1;
      throw new Error('test provider: 503 service unavailable');
    }
    for (const g of this.#gates) {
      if (texts.some((t) => g.match.test(t))) {
        g.entered();
        await g.release;
      }
    }
    return texts.map(localEmbedding);
  }
}

export async function startTestWorker(provider: EmbeddingProvider, over: Partial<WorkerConfig> = {},
  breaker = { failureThreshold: 3, cooldownMs: 1500 }): Promise<WorkerRuntime> {
  const config = loadConfig();
  return startWorker({
    databaseUrl: testDatabaseUrl(), worker: fastWorker(over), embedding: { ...config.embedding, breaker },
    provider, logger: pino({ level: process.env.LOG_LEVEL === 'silent' ? 'silent' : 'warn' }),
  });
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 15_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** A pgvector text value as numbers. */
export const parseVector = (text: string) => JSON.parse(text) as number[];

export const cosine = (a: number[], b: number[]) => {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i]! * b[i]!; na += a[i]! ** 2; nb += b[i]! ** 2; }
  return dot / Math.sqrt(na * nb);
};

/** Raises the per-user mutation limit for the duration of a test file; returns the restore. */
export async function raiseMutationLimit(sql: Sql): Promise<() => Promise<void>> {
  const [row] = await sql`select value from app.settings where key = 'mutations_per_minute'`;
  await sql`update app.settings set value = '1000000' where key = 'mutations_per_minute'`;
  return async () => { await sql`update app.settings set value = ${row!.value} where key = 'mutations_per_minute'`; };
}

/**
 * Discards the embedding work earlier test files left behind. Files share one database and most
 * start no worker, so their edits pile up in app.embedding_outbox (about 2,000 rows by the middle
 * of `npm test`); the first worker to start drains them oldest first, as production would, and a
 * file waiting for its own few blocks waits behind all of them (a 15 s wait ran out in CI). A
 * file that waits for its own embeddings calls this before it starts its worker.
 */
export async function discardEmbeddingBacklog(sql: Sql) {
  await sql`delete from app.embedding_outbox`;
  // queued, not running: graphile_worker.remove_job leaves a locked job alone
  await sql`select graphile_worker.remove_job(key) from graphile_worker.jobs
            where task_identifier = 'embed_block' and key is not null and locked_at is null`;
}

/**
 * A queue with nothing of earlier files in it, for a file whose workers must take its own jobs and
 * no other: the backlog discarded, then what was already running finished by a worker of its own.
 */
export async function quietQueue(sql: Sql) {
  await discardEmbeddingBacklog(sql);
  const drainer = await startTestWorker(new LocalProvider());
  try {
    await waitQueueIdle(sql);
  } finally {
    await drainer.stop();
  }
}

/** Waits until the outbox is empty and no embed/rebalance job is runnable or running. */
export async function waitQueueIdle(sql: Sql, timeoutMs = 20_000) {
  await waitFor('the job queue to go idle', async () => {
    const [r] = await sql`
      select (select count(*) from app.embedding_outbox)::int as outbox,
             (select count(*) from graphile_worker.jobs
              where task_identifier in ('embed_block', 'rebalance_canvas') and attempts < max_attempts
                and (locked_at is not null or run_at <= now() + interval '3 seconds'))::int as jobs`;
    return r!.outbox === 0 && r!.jobs === 0;
  }, timeoutMs);
}
