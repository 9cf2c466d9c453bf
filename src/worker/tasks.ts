import type { JobHelpers, Task } from 'graphile-worker';
import type { Sql } from 'postgres';
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

export function createTaskList(ctx: TaskContext): { [K in TaskName]: Task<K> } {
  return {
    embed_block: async (payload, helpers) => {
      await embedBlock(ctx, payload.block_id, helpers);
    },
    rebalance_canvas: async (payload, helpers) => {
      const [row] = await ctx.sql`select internal.rebalance_canvas(${payload.canvas_id}) as moved`;
      helpers.logger.info(`rebalanced canvas ${payload.canvas_id}: ${row!.moved} block(s) moved`);
    },
    cleanup: async (_payload, helpers) => {
      const [row] = await ctx.sql`select internal.cleanup() as result`;
      helpers.logger.info(`cleanup: ${JSON.stringify(row!.result)}`);
    },
    cleanup_files: async (_payload, helpers) => {
      // the bucket of this process's environment (with npm start's local server: the one the routes use)
      const result = await cleanupFiles(ctx.sql, await fileStorage().get((m) => helpers.logger.info(m)), { logger: helpers.logger });
      helpers.logger.info(`cleanup_files: ${JSON.stringify(result)}`);
    },
  };
}
