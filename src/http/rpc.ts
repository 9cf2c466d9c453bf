import type { Context } from 'hono';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
import { requestStatement, withRequest, type RequestContext } from '../db/request.ts';
import type { ApiRateLimit } from '../metrics.ts';
import { ApiError, apiErrorFromDatabase, apiErrorFromObject } from './errors.ts';
import type { AppEnv, Deps } from './env.ts';
import { peerAddress } from './middleware.ts';

/**
 * Calls one `api` function for the authenticated caller, PostgREST-style (one transaction with
 * role, claims and headers set locally), after the endpoint's rate limit — both in Postgres, so
 * limits hold across processes. Database errors become ApiErrors with their stable codes.
 * `endpoint` null: no limit here (the handler took it itself, before costlier work).
 */
export function callApi<T = unknown>(deps: Deps, c: Context<AppEnv>, endpoint: ApiRateLimit | null, fn: string, args: unknown[]): Promise<T> {
  return call(deps, c, endpoint, fn, args, false).then((row) => row?.result as T);
}

/**
 * callApi for the mutation RPCs (api.upsert_block_atomic, api.upsert_blocks_atomic): idempotent by
 * client_op_id, so sent down its canvas's lane with its COMMIT pipelined (requestStatement: the
 * canvas lock is released when the last RPC of its lane transaction ends, not a round trip later;
 * a lost connection is answered 503 for the client to resend, run again only by the lane when the
 * connection had answered nothing: dead when drawn). The jsonb
 * object is answered as is: its JSON text as Postgres wrote it (no JSON.parse of the whole object
 * into JS and JSON.stringify back), and its top-level `status`, which is all the caller looks at
 * before answering it.
 */
export function callMutation(deps: Deps, c: Context<AppEnv>, endpoint: ApiRateLimit | null, fn: string, args: unknown[]): Promise<{ status: string | null; json: string }> {
  return call(deps, c, endpoint, fn, args, true).then((row) => ({ status: row?.status ?? null, json: row?.result ?? 'null' }));
}

async function call(deps: Deps, c: Context<AppEnv>, endpoint: ApiRateLimit | null, fn: string, args: unknown[], mutation: boolean): Promise<Record<string, any> | undefined> {
  const started = performance.now();
  let outcome = 'ok';
  deps.metrics.poolInUse.inc();
  try {
    const ctx: RequestContext = {
      claims: c.get('claims'),
      headers: {
        'x-forwarded-for': (deps.config.trustProxy ? c.req.header('x-forwarded-for') : undefined) ?? peerAddress(c) ?? '',
        'user-agent': c.req.header('user-agent') ?? '',
        'x-request-id': c.get('requestId'),
      },
      method: c.req.method,
      path: c.req.path,
    };
    const relaxed = deps.config.profile === 'development';
    if (mutation) return await sendMutation(deps.lanes, ctx, fn, args, endpoint === null ? null : { endpoint, relaxed });
    const text = rpcStatement(fn, args.length, endpoint !== null, false);
    const params = endpoint === null ? args : [...args, endpoint, relaxed];
    return await withRequest(deps.sql, ctx, async (tx) => (await tx.unsafe(text, params as never[], { prepare: true }))[0]);
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

/**
 * A mutation RPC as callMutation sends it: down the lane of its canvas (both mutation RPCs take
 * the canvas first); the row of its status and JSON text. The endpoint's limit, when it has one,
 * is counted before the RPC: alone in its lane's transaction, in the RPC's statement (its FROM);
 * sharing one, as a statement of its own: the lane sends the limits of all the requests
 * that share a transaction before any of their RPCs, so that each transaction takes these rows
 * (the caller's, held to its COMMIT) before its canvas row (src/db/canvas-lanes.ts); in the RPC's
 * statement, a second caller's hit would come after the first caller's RPC had locked the canvas,
 * and deadlock with another process's transaction holding that hit and waiting for the canvas.
 */
export async function sendMutation(lanes: CanvasLanes, ctx: RequestContext, fn: string, args: unknown[],
  limit: { endpoint: string; relaxed: boolean } | null): Promise<Record<string, any> | undefined> {
  const text = rpcStatement(fn, args.length, false, true);
  // alone in its lane's transaction, the limit and the RPC go as one statement (the limit in its FROM)
  const limited = limit === null ? {} : {
    first: { text: ENDPOINT_LIMIT, params: [limit.endpoint, limit.relaxed] },
    single: { text: rpcStatement(fn, args.length, true, true), params: [...args, limit.endpoint, limit.relaxed] },
  };
  return (await requestStatement(lanes, String(args[0]), ctx, text, args, limited))[0];
}

/** The endpoint limit's statement (params: endpoint, relaxed), as a mutation's `first`. */
export const ENDPOINT_LIMIT = 'select api.hit_endpoint_limit($1, $2)';

/**
 * The one statement of a call: the endpoint's limit (when it has one) as the statement's FROM, so
 * it is counted before the RPC runs (a function scan yields its row before the select list is
 * evaluated), and a refused limit raises before the RPC starts (a mutation's limit is a statement
 * of its own when its lane's transaction carries others too, all limits before any RPC:
 * sendMutation). Named and prepared once per connection (`prepare: true`; postgres.js's `unsafe`
 * does not prepare by default, which cost a Parse + Describe round trip before every call), unless
 * the pool runs without prepared
 * statements (a transaction pooler: src/db/pooling.ts). One text per function and arity, so the
 * per-connection statement cache stays small.
 */
const statements = new Map<string, string[]>();
export function rpcStatement(fn: string, arity: number, limited: boolean, asText: boolean): string {
  // by function, then arity and the two flags as an index: no key string built per call
  let texts = statements.get(fn);
  if (texts === undefined) statements.set(fn, texts = []);
  const slot = arity * 4 + (limited ? 2 : 0) + (asText ? 1 : 0);
  let text = texts[slot];
  if (text === undefined) {
    const params = Array.from({ length: arity }, (_, i) => `$${i + 1}`).join(', ');
    const limit = limited ? ` from api.hit_endpoint_limit($${arity + 1}, $${arity + 2})` : '';
    // as text: the call in a subquery evaluated once (OFFSET 0 keeps it from being pulled up,
    // which could copy the call into both columns), then its status and text
    text = asText
      ? `select r->>'status' as status, r::text as result from (select api.${fn}(${params}) as r${limit} offset 0) x`
      : `select api.${fn}(${params}) as result${limit}`;
    texts[slot] = text;
  }
  return text;
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

