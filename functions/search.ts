import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { AppEnv, Deps } from '../src/http/env.ts';
import { ApiError } from '../src/http/errors.ts';
import { requireAuth } from '../src/http/middleware.ts';
import { bearerSecurity, createRouter, queryInteger, responses, z } from '../src/http/openapi.ts';
import { callApi } from '../src/http/rpc.ts';
import { SearchResult, Uuid } from '../src/http/schemas.ts';
import { CircuitBreaker, CircuitOpenError } from '../src/worker/breaker.ts';
import { createProvider, toVectorLiteral, type EmbeddingProvider } from '../src/worker/providers.ts';

/**
 * Semantic search over a canvas (S2): embeds `q` with the configured provider (behind its own
 * circuit breaker) and calls api.search_blocks with the provider's model, which checks the
 * caller's access and compares the query only with the blocks that model embedded (exactly, or
 * through the HNSW index on a large canvas). When every embedded block has another model, the
 * answer is 200 with items [] and the count, and a warning is logged: the worker embeds with
 * another provider or model than this process. Served at GET /api/v1/canvas/{id}/search?q= locally, and as the `search`
 * edge function at /functions/v1/search/{id}?q= (also /api/v1/search/{id}).
 */
const Params = z.object({ canvas_id: Uuid });
const Query = z.object({
  q: z.string().trim().min(1).max(2000),
  limit: queryInteger(1, 50).optional(),
});
const route = (path: string, operationId: string, description: string) => createRoute({
  method: 'get', path, operationId, description, tags: ['search'], summary: 'S2: the blocks of a canvas nearest in meaning to q (cosine distance)',
  security: bearerSecurity, request: { params: Params, query: Query },
  responses: responses(200, '{items[], model, other_model_blocks, other_models[]}: only blocks embedded by the query\'s model are compared; '
    + 'items [] with other_model_blocks > 0 means every embedded block has another model (the worker\'s is not this process\'s). '
    + '503 unavailable when the embedding provider fails', SearchResult),
});

type Embedder = { provider: EmbeddingProvider; breaker: CircuitBreaker };
const embedders = new WeakMap<Deps, Embedder>();

function embedderFor(deps: Deps): Embedder {
  let e = embedders.get(deps);
  if (!e) {
    const provider = createProvider(deps.config.embedding);
    e = { provider, breaker: new CircuitBreaker({ name: `embedding provider ${provider.model}`, ...deps.config.embedding.breaker }) };
    embedders.set(deps, e);
  }
  return e;
}

async function search(deps: Deps, c: Context<AppEnv>, canvasId: string, q: string, limit: number | undefined) {
  // The rate limit, then the caller's access (internal.require_canvas_reader: 404 to a stranger,
  // 403 to a token not scoped to the canvas), both before the embedding, which may cost a provider
  // call. The access was checked only by api.search_blocks, after the embedding: a stranger made us
  // embed their query (cost) and got the 404 later than for a canvas that needs none (timing).
  // api.get_canvas_flags is the plain check (it reads the flags table beside it, a few rows);
  // search_blocks checks again, in its own transaction
  await callApi(deps, c, 'S2', 'get_canvas_flags', [canvasId]);
  const { provider, breaker } = embedderFor(deps);
  let vector: number[];
  try {
    [vector] = (await breaker.run(() => provider.embed([q]))) as [number[]];
  } catch (err) {
    c.get('log').warn({ err }, 'query embedding failed');
    // when to retry, as every other 503 says it (retry_after, Retry-After): once the breaker lets
    // a call through again, or at once for a call that failed
    const open = err instanceof CircuitOpenError;
    throw new ApiError('unavailable', open
      ? 'semantic search is unavailable: the embedding provider is failing; retry later'
      : 'semantic search is unavailable: the embedding provider did not answer; retry later',
    { retry_after: open ? Math.max(1, Math.ceil(err.retryInMs / 1000)) : 1 });
  }
  // only the blocks this provider's model embedded are compared (vectors of two models are not
  // comparable); the others are counted and named in the answer
  const result = await callApi<SearchAnswer>(deps, c, null, 'search_blocks', [canvasId, toVectorLiteral(vector), limit ?? 10, provider.model]);
  if (result.items.length === 0 && result.other_model_blocks > 0) {
    // not "no match": every embedded block of the canvas has another model than the query's. A
    // misconfiguration (this process embeds queries with another provider or model than the
    // worker), or a change of model the worker has not yet caught up with
    c.get('log').warn({ canvas_id: canvasId, query_model: provider.model, block_models: result.other_models, other_model_blocks: result.other_model_blocks },
      `search compared no block: the canvas's ${result.other_model_blocks} embedded blocks were embedded by ${result.other_models.join(', ')}, `
      + `queries here by ${provider.model}; set EMBEDDING_PROVIDER and EMBEDDING_MODEL (and OPENAI_API_KEY, OPENAI_BASE_URL) of this process `
      + `(for the search edge function: its secrets) to the worker's, or wait for the worker to re-embed the canvas after a change of model`);
  }
  return { ...result, model: provider.model };
}

type SearchAnswer = { items: unknown[]; model: string | null; other_model_blocks: number; other_models: string[] };

function router(deps: Deps, path: string, operationId: string, description: string) {
  const app = createRouter();
  // only this route: mounted beside the canvas routes, a '*' here would verify their tokens twice
  app.use(path.replace(/\{(\w+)\}/g, ':$1'), requireAuth(deps));
  app.openapi(route(path, operationId, description), async (c) => {
    const { canvas_id } = c.req.valid('param');
    const { q, limit } = c.req.valid('query');
    return c.json(await search(deps, c, canvas_id, q, limit), 200);
  });
  return app;
}

/** The `search` function: GET /{canvas_id}?q= under /api/v1/search and /functions/v1/search. */
export const searchRoutes = (deps: Deps) => router(deps, '/{canvas_id}', 'searchFunction',
  'The `search` edge function (on Supabase: /functions/v1/search/{canvas_id}).');

/** The same search at GET /api/v1/canvas/{canvas_id}/search?q= (mounted beside the canvas routes). */
export const canvasSearchRoutes = (deps: Deps) => router(deps, '/{canvas_id}/search', 'searchCanvas',
  'The same search under the canvas paths, served by the local server only (the `canvas` edge function has no search).');
