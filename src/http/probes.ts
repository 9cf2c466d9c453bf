import { Hono } from 'hono';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { checkApiRoles } from '../db/api-roles.ts';
import { withCommonMiddleware } from './common.ts';
import type { AppEnv, Deps } from './env.ts';
import { ApiError } from './errors.ts';
import { errorResponse, isInternalCaller } from './middleware.ts';
import { databaseFailure, notReadyMessage, readyQuery } from './readiness.ts';
import { REALTIME_REST_PREFIX, realtimeRestRoutes, realtimeRestSurface } from './realtime-rest.ts';

/** One readiness check of a role: 'ok', or why not (shown in /ready's 503 body; a thrown error shows as its DatabaseFailure code, readiness.ts). */
export type ReadinessCheck = () => Promise<string> | string;

/**
 * The HTTP surface of a process that serves no API — `--role gateway` and `--role worker`
 * (src/roles.ts) — for orchestrators and load balancers:
 *  - GET /health: liveness, `{"status":"ok"}` while the event loop answers. No database query:
 *    a database outage must take processes out of rotation (/ready), not get them all restarted.
 *  - GET /ready: readiness, 200 `{"status":"ready","checks":{"database":"ok",…}}` when the
 *    database answers within 2 s (a gateway's role can also become the API roles, src/db/api-roles.ts)
 *    and every check of the role says ok; otherwise 503
 *    `{"status":"unavailable","checks":{…}}` with the reason in place of each failed `ok`.
 *    The checks object has the same keys as the API's /ready (functions/ops.ts) plus the role's own.
 *  - GET /metrics: Prometheus text, internal callers only (loopback, or Authorization: Bearer
 *    INTERNAL_TOKEN), 404 to anyone else, as on the API.
 *  - with `realtimeRest` (a gateway): realtime-js's REST broadcast under /realtime/v1/api
 *    (realtime-rest.ts), which a split deployment routes to its gateways with their sockets
 *    (deploy/nginx/potentia.conf); deps.realtime is set once the gateway has started.
 * Anything else is 404 in the one error shape. A gateway's WebSocket paths are upgrades: they are
 * answered by the gateway before this app (src/realtime/gateway.ts).
 */
export function createProbeApp(deps: Deps, checks: Record<string, ReadinessCheck>, opts: { apiRoles?: boolean; realtimeRest?: boolean } = {}) {
  // no HTTP API here (a gateway or worker role): its paths' 404s name the api role
  const app = withCommonMiddleware(new Hono<AppEnv>(), deps, opts.realtimeRest ? realtimeRestSurface : {}, { api: true });
  if (opts.realtimeRest) app.route(REALTIME_REST_PREFIX, realtimeRestRoutes(deps));
  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    const log = c.get('log') ?? deps.logger;
    const results: Record<string, string> = { database: await databaseCheck(deps.sql, log, opts) };
    for (const [name, check] of Object.entries(checks)) {
      results[name] = await Promise.resolve().then(check).catch((err: unknown) => databaseFailure(err, log, name));
    }
    const ready = Object.values(results).every((r) => r === 'ok');
    if (ready) return c.json({ status: 'ready', checks: results }, 200);
    return c.json({ status: 'unavailable', checks: results, message: notReadyMessage(results) }, 503);
  });
  app.get('/metrics', async (c) => {
    if (!isInternalCaller(c, deps)) return errorResponse(c, new ApiError('not_found', 'no such endpoint'));
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType });
  });
  return app;
}

/**
 * 'ok' when the database answers within READY_TIMEOUT_MS and (unless `apiRoles: false`: a worker
 * runs as its own role) the connecting role can act as the API roles, else the failure's code
 * (the error logged: readiness.ts).
 */
export async function databaseCheck(sql: Sql, log: Logger, opts: { apiRoles?: boolean } = {}): Promise<string> {
  return readyQuery<unknown>(sql, (sql) => (opts.apiRoles === false ? sql`select 1` : checkApiRoles(sql)))
    .then(() => 'ok', (err: unknown) => databaseFailure(err, log, 'database'));
}
