import { createRoute } from '@hono/zod-openapi';
import type { Context } from 'hono';
import type { Deps } from '../src/http/env.ts';
import { ApiError } from '../src/http/errors.ts';
import { errorResponse, isInternalCaller } from '../src/http/middleware.ts';
import { checkApiRoles } from '../src/db/api-roles.ts';
import { createRouter, ErrorSchema, z } from '../src/http/openapi.ts';
import { databaseFailure, notReadyMessage, readyQuery, type DatabaseFailure } from '../src/http/readiness.ts';
import { Health, NotReady, Ready } from '../src/http/schemas.ts';


/**
 * Operations endpoints: M1 /health (the process answers), M2 /ready (the database answers a
 * query, when a worker is expected some worker heartbeat is fresh, and where the process runs a
 * realtime gateway (role `all`) that gateway serves: started, its replication stream up), M3 /debug/echo (only when DEBUG_ECHO is on, never in
 * production, internal callers only) and S1 /metrics (internal callers only). All but /debug/echo (a test aid, off by
 * default) are in the OpenAPI document.
 */
const body = <T extends z.ZodTypeAny>(description: string, schema: T) => ({ description, content: { 'application/json': { schema } } });
const local = 'Served by the local server (npm start), not by the Supabase edge functions.';
// the input policy every route passes first (src/http/middleware.ts) refuses a bad URL here too
const badUrl = body('invalid_input: a path segment or query parameter that does not percent-decode to valid UTF-8, or holds NUL (field `path` or `query.<name>`)', ErrorSchema);
const routes = {
  health: createRoute({ method: 'get', path: '/health', operationId: 'getHealth', tags: ['ops'], summary: 'M1: the process answers',
    description: local, responses: { 200: body('alive', Health), 400: badUrl } }),
  ready: createRoute({ method: 'get', path: '/ready', operationId: 'getReady', tags: ['ops'],
    summary: 'M2: the database answers (within 2 s), when a worker is expected a worker heartbeat is fresh, and the process\'s realtime gateway (role all) serves', description: local,
    responses: { 200: body('ready', Ready), 400: badUrl, 503: body('not ready: what failed', NotReady) } }),
  metrics: createRoute({ method: 'get', path: '/metrics', operationId: 'getMetrics', tags: ['ops'],
    summary: 'S1: Prometheus metrics (loopback callers, or Authorization: Bearer INTERNAL_TOKEN)', description: local,
    responses: { 200: { description: 'Prometheus text exposition format', content: { 'text/plain': { schema: z.string() } } },
      400: badUrl, 404: body('not_found: not an internal caller (the endpoint stays invisible)', ErrorSchema) } }),
};

export function opsRoutes(deps: Deps) {
  const app = createRouter();
  app.openapi(routes.health, (c) => c.json({ status: 'ok' as const }, 200));
  app.openapi(routes.ready, async (c) => {
    // role `all`: this process's realtime gateway too (not started, or its replication stream down: 503)
    const realtime = deps.realtimeReadiness?.();
    const answer = (checks: { database: 'ok' | DatabaseFailure; worker?: string; realtime?: string }) => {
      const all = { ...checks, ...(realtime === undefined ? {} : { realtime }) };
      return Object.values(all).every((v) => v === 'ok')
        ? c.json({ status: 'ready' as const, checks: all as { database: 'ok'; worker?: 'ok'; realtime?: 'ok' } }, 200)
        : c.json({ status: 'unavailable' as const, checks: all, message: notReadyMessage(all) }, 503);
    };
    try {
      await readyQuery(deps.sql, checkApiRoles); // answers, and its role can act as the API roles
      if (!deps.config.worker.expected) return answer({ database: 'ok' });
      // a worker is expected (in-process or `npm run worker`): some heartbeat must be fresh
      const [hb] = await readyQuery(deps.sql, (sql) => sql`
        select count(*) filter (where last_seen_at > now() - ${`${deps.config.worker.staleMs} milliseconds`}::interval)::int as live,
               extract(epoch from now() - max(last_seen_at))::float8 as age
        from app.worker_heartbeats`);
      if (!hb || hb.live === 0) {
        const what = hb?.age == null ? 'no worker heartbeat' : `worker heartbeat stale (${Math.round(hb.age)} s old)`;
        return answer({ database: 'ok', worker: `${what}: ${workerHint(deps.config.worker.mode)}` });
      }
      return answer({ database: 'ok', worker: 'ok' });
    } catch (err) {
      return answer({ database: databaseFailure(err, c.get('log') ?? deps.logger, 'database') });
    }
  });
  app.post('/debug/echo', async (c) => {
    if (!deps.config.debugEcho || !isInternalCaller(c, deps)) return notFound(c);
    let body: unknown;
    try { body = await c.req.json(); } catch (err) { throw err instanceof ApiError ? err : new ApiError('invalid_input', 'body must be JSON', { field: 'body' }); }
    return c.json({ echo: body, request_id: c.get('requestId') });
  });
  app.openapi(routes.metrics, async (c) => {
    if (!isInternalCaller(c, deps)) return notFound(c) as never;
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType }) as never;
  });
  return app;
}

/** What /ready tells an operator to do when no worker's heartbeat is fresh, by WORKER_MODE. */
function workerHint(mode: 'inprocess' | 'external' | 'off'): string {
  return mode === 'external'
    ? 'WORKER_MODE=external expects a worker process on this database (npm run worker, or npm run serve -- --role worker); WORKER_MODE=off expects none'
    : 'the worker of this process is starting or failing (its log says why)';
}

// Internal endpoints are invisible to everyone else.
const notFound = (c: Context) => errorResponse(c, new ApiError('not_found', 'no such endpoint'));
