import type { JobHelpers, Task } from 'graphile-worker';
import type { Sql } from 'postgres';
import { z } from 'zod';
import { runAgainOnLostConnection, serverAnnounced } from '../db/faults.ts';
import { cleanupFiles } from '../storage/cleanup.ts';
import { fileStorage } from '../storage/index.ts';
import type { CircuitBreaker } from './breaker.ts';
import { blockText, toVectorLiteral, type EmbeddingProvider } from './providers.ts';

/** The jobs Potentia's database enqueues, and their payloads (Graphile Worker's typed task map). */
declare global {
  namespace GraphileWorker {
    interface Tasks {
      /** Enqueued by draining app.embedding_outbox (job key embed_block:<block_id>). */
      embed_block: { block_id: string; canvas_id?: string };
      /** Enqueued by the LexoRank trigger when a key passes 8 characters (job key rebalance_canvas:<id>). */
      rebalance_canvas: { canvas_id: string };
      /** Graphile Worker's crontab, every minute. */
      cleanup: Record<string, unknown>;
      /** Graphile Worker's crontab: removes the objects of files no longer wanted (src/storage/cleanup.ts). */
      cleanup_files: Record<string, unknown>;
    }
  }
}

export type TaskName = keyof GraphileWorker.Tasks;

export type TaskContext = {
  sql: Sql;
  provider: EmbeddingProvider;
  breaker: CircuitBreaker;
};

/** Embeds through the provider behind the circuit breaker. */
export const embedTexts = (ctx: Pick<TaskContext, 'provider' | 'breaker'>, texts: string[]) =>
  ctx.breaker.run(() => ctx.provider.embed(texts));

export type EmbedOutcome = 'embedded' | 'empty' | 'unchanged' | 'missing' | 'stale';

/**
 * embed_block: reads the block; skips it if it is gone or already embedded at its current
 * content hash by this provider's model (after a switch of model, docs/embeddings.md queues
 * every block: vectors of two models are not comparable); embeds its text; stores the vector
 * only where the content hash is still the one embedded (an edit that landed meanwhile has
 * queued its own job: its vector wins).
 */
export async function embedBlock(ctx: TaskContext, blockId: string, helpers?: Pick<JobHelpers, 'logger'>): Promise<EmbedOutcome> {
  const [block] = await ctx.sql`select content, content_hash, embedded_hash, embedding_model from app.blocks where block_id = ${blockId}`;
  if (!block) return 'missing';
  if (block.embedded_hash === block.content_hash && block.embedding_model === ctx.provider.model) return 'unchanged';
  const text = blockText(block.content);
  const vector = text ? toVectorLiteral((await embedTexts(ctx, [text]))[0]!) : null;
  const [row] = await ctx.sql`
    select internal.store_embedding(${blockId}, ${block.content_hash as string}, ${vector}, ${ctx.provider.model}) as stored`;
  if (!row!.stored) {
    helpers?.logger.debug(`block ${blockId} changed while it was embedded; its newer content has its own job`);
    return 'stale';
  }
  return vector ? 'embedded' : 'empty';
}

/**
 * A job that can never succeed as it is (its payload is not one the database enqueues): it has no
 * attempts left once its failure is recorded, instead of Graphile's 25 attempts over about four
 * days. `next` tells the operator what to do with it.
 */
export class PermanentJobError extends Error {
  constructor(message: string, readonly next: string) {
    super(message);
    this.name = 'PermanentJobError';
  }
}

// What the database enqueues (sql/jobs/, sql/lexorank/). Only a job inserted by hand can differ,
// and its payload is untrusted: wrong types, NUL bytes, megabytes, no object at all.
const id = z.guid();
const payloads = {
  embed_block: z.object({ block_id: id, canvas_id: id.optional() }),
  rebalance_canvas: z.object({ canvas_id: id }),
} satisfies Partial<{ [K in TaskName]: z.ZodType<GraphileWorker.Tasks[K]> }>;

/**
 * The payload, checked; a malformed one gives up the job (internal.give_up_job) and throws a
 * PermanentJobError whose message names the field without echoing its value (which Graphile
 * stores as last_error and may be megabytes).
 */
async function validPayload<K extends keyof typeof payloads>(ctx: TaskContext, task: K, payload: unknown, helpers: JobHelpers) {
  const parsed = payloads[task].safeParse(payload);
  if (parsed.success) return parsed.data as GraphileWorker.Tasks[K];
  const issue = parsed.error.issues[0]!;
  const job = helpers.job;
  // no attempts left: the failure Graphile records next is final; if this fails too (the database
  // gone), the job is retried and refused again
  await ctx.sql`select internal.give_up_job(${job.id}, ${job.locked_by})`.catch(() => {});
  throw new PermanentJobError(
    `invalid ${task} payload: ${issue.path.join('.') || 'payload'}: ${issue.message}; not retried`,
    `the database enqueues ${task} itself and never with this payload: find what inserted job ${job.id} into graphile_worker.jobs; `
      + `it is kept there with this error for failed_job_retention_days (app.settings), then cleanup deletes it; or delete it now: `
      + `select graphile_worker.complete_jobs(array[${job.id}]::bigint[])`);
}

export function createTaskList(ctx: TaskContext): { [K in TaskName]: Task<K> } {
  const tasks: { [K in TaskName]: Task<K> } = {
    embed_block: async (payload, helpers) => {
      const { block_id } = await validPayload(ctx, 'embed_block', payload, helpers);
      await embedBlock(ctx, block_id, helpers);
    },
    rebalance_canvas: async (payload, helpers) => {
      const { canvas_id } = await validPayload(ctx, 'rebalance_canvas', payload, helpers);
      const [row] = await ctx.sql`select internal.rebalance_canvas(${canvas_id}) as moved`;
      helpers.logger.info(`rebalanced canvas ${canvas_id}: ${row!.moved} block(s) moved`);
    },
    cleanup: async (_payload, helpers) => {
      const [row] = await ctx.sql`select internal.cleanup() as result`;
      const result = row!.result as { unknown_task_jobs_deleted?: number; unknown_tasks?: string[] };
      helpers.logger.info(`cleanup: ${JSON.stringify(result)}`);
      if (result.unknown_task_jobs_deleted) {
        // jobs no worker ever ran, gone without having run: said where the operator looks (warn)
        helpers.logger.warn(`cleanup deleted ${result.unknown_task_jobs_deleted} job(s) of task(s) no worker runs, `
          + `failed_job_retention_days past due and never run: ${result.unknown_tasks!.join(', ')}; `
          + `if they were wanted, run workers of the release that has the task (or fix what enqueued them)`);
      }
    },
    cleanup_files: async (_payload, helpers) => {
      // the bucket of this process's environment (with npm start's local server: the one the routes use)
      const result = await cleanupFiles(ctx.sql, await fileStorage().get((m) => helpers.logger.info(m)), { logger: helpers.logger });
      helpers.logger.info(`cleanup_files: ${JSON.stringify(result)}`);
    },
  };
  // every task, so that none added later is left out
  return Object.fromEntries(Object.entries(tasks).map(([name, task]) => [name, sameAttempt(ctx.sql, task as Task<TaskName>)])) as typeof tasks;
}

/**
 * `task`, run again within its attempt when one of its statements drew a connection that was dead
 * when drawn (lost without a word from the server: serverAnnounced), up to the pool's size of
 * times: a fault that ends every pooled connection at once (a NAT's timeout, a restart whose ends the
 * pool has not read) failed the job, an attempt counted and the job put off by Graphile's backoff,
 * while the database answered. Running it again is what Graphile's retry does (a job runs at least
 * once); a loss the server announced (a backend terminated mid-statement) is still the attempt's
 * failure (retries: 0), as is every other error.
 */
function sameAttempt(sql: Sql, task: Task<TaskName>): Task<TaskName> {
  return (payload, helpers) => runAgainOnLostConnection(() => Promise.resolve(task(payload, helpers)),
    { answered: serverAnnounced, pooled: sql.options.max, retries: 0 });
}
