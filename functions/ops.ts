import type { Context } from 'hono';
import { Hono } from 'hono';
import type { AppEnv, Deps } from '../src/http/env.ts';
import { ApiError } from '../src/http/errors.ts';
import { errorResponse, isInternalCaller } from '../src/http/middleware.ts';

const READY_TIMEOUT_MS = 2000;

/**
 * Operations endpoints: M1 /health (the process answers), M2 /ready (the database answers a
 * query and, when a worker is expected, some worker heartbeat is fresh), M3 /debug/echo (only when DEBUG_ECHO is on, never in
 * production, internal callers only) and S1 /metrics (internal callers only).
 */
export function opsRoutes(deps: Deps) {
  const app = new Hono<AppEnv>();
  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      });
      await Promise.race([deps.sql`select 1`, timeout]);
      if (!deps.config.worker.expected) return c.json({ status: 'ready', checks: { database: 'ok' } });
      // a worker is expected (in-process or `npm run worker`): some heartbeat must be fresh
      const [hb] = await Promise.race([deps.sql`
        select count(*) filter (where last_seen_at > now() - ${`${deps.config.worker.staleMs} milliseconds`}::interval)::int as live,
               extract(epoch from now() - max(last_seen_at))::float8 as age
        from app.worker_heartbeats`, timeout]);
      if (!hb || hb.live === 0) {
        const worker = hb?.age == null ? 'no worker heartbeat' : `worker heartbeat stale (${Math.round(hb.age)} s old)`;
        return c.json({ status: 'unavailable', checks: { database: 'ok', worker } }, 503);
      }
      return c.json({ status: 'ready', checks: { database: 'ok', worker: 'ok' } });
    } catch (err) {
      return c.json({ status: 'unavailable', checks: { database: (err as Error).message } }, 503);
    } finally {
      clearTimeout(timer);
    }
  });
  app.post('/debug/echo', async (c) => {
    if (!deps.config.debugEcho || !isInternalCaller(c, deps)) return notFound(c);
    let body: unknown;
    try { body = await c.req.json(); } catch { throw new ApiError('invalid_input', 'body must be JSON', { field: 'body' }); }
    return c.json({ echo: body, request_id: c.get('requestId') });
  });
  app.get('/metrics', async (c) => {
    if (!isInternalCaller(c, deps)) return notFound(c);
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType });
  });
  return app;
}

// Internal endpoints are invisible to everyone else.
const notFound = (c: Context) => errorResponse(c, new ApiError('not_found', 'no such endpoint'));
