import type { Context } from 'hono';
import { withRequest } from '../db/request.ts';
import { ApiError, apiErrorFromDatabase, apiErrorFromObject } from './errors.ts';
import type { AppEnv, Deps } from './env.ts';

/**
 * Calls one `api` function for the authenticated caller, PostgREST-style (one transaction with
 * role, claims and headers set locally), after the endpoint's rate limit — both in Postgres, so
 * limits hold across processes. Database errors become ApiErrors with their stable codes.
 * `endpoint` null: no limit here (the handler took it itself, before costlier work).
 */
export async function callApi<T = unknown>(deps: Deps, c: Context<AppEnv>, endpoint: string | null, fn: string, args: unknown[]): Promise<T> {
  const claims = c.get('claims');
  const started = performance.now();
  let outcome = 'ok';
  deps.metrics.poolInUse.inc();
  try {
    return await withRequest(deps.sql, {
      claims,
      headers: {
        'x-forwarded-for': (deps.config.trustProxy ? c.req.header('x-forwarded-for') : undefined) ?? remoteAddress(c) ?? '',
        'user-agent': c.req.header('user-agent') ?? '',
        'x-request-id': c.get('requestId'),
      },
      method: c.req.method,
      path: c.req.path,
    }, async (tx) => {
      // both statements in one round trip: they run in order, and a refused limit aborts the
      // transaction, so the RPC never runs after it (Promise.all rejects with the limit's error,
      // the first to arrive)
      const limit = endpoint === null ? null : tx`select api.hit_endpoint_limit(${endpoint}, ${deps.config.profile === 'development'})`;
      const params = args.map((_, i) => `$${i + 1}`).join(', ');
      const [, [row]] = await Promise.all([limit, tx.unsafe(`select api.${fn}(${params}) as result`, args as never[])]);
      return row?.result as T;
    });
  } catch (err) {
    const apiError = err instanceof ApiError ? err : apiErrorFromDatabase(err);
    outcome = apiError.code;
    if (apiError.code === 'rate_limited') deps.metrics.rateLimited.inc({ endpoint: endpoint ?? String(args[0]) });
    if (apiError.code === 'internal') c.get('log').error({ err }, 'rpc failed');
    throw apiError;
  } finally {
    deps.metrics.poolInUse.dec();
    deps.metrics.rpcDuration.observe({ fn, outcome }, (performance.now() - started) / 1000);
  }
}

/** Mutation results report failures as data ({status, error}); answer them as HTTP errors. */
export function mutationOutcome<T extends { status?: string; error?: Record<string, unknown>; block?: unknown; version?: unknown; failed_index?: unknown }>(result: T): T {
  // a failed batch names the op at fault (docs/mutations.md)
  const at = typeof result.failed_index === 'number' ? { failed_index: result.failed_index } : {};
  if (result.status === 'conflict') {
    const { code, message, ...details } = result.error ?? {};
    throw new ApiError(code === 'rebase_required' ? 'rebase_required' : 'conflict', String(message ?? 'conflict'),
      { ...details, block: result.block, version: result.version, ...at });
  }
  if (result.status === 'failed') throw apiErrorFromObject({ ...(result.error ?? {}), ...at });
  return result;
}

function remoteAddress(c: Context): string | undefined {
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  return incoming?.socket?.remoteAddress;
}
