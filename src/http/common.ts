import { Hono, type Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { authRoutes } from '../../functions/auth.ts';
import { canvasRoutes } from '../../functions/canvas.ts';
import { searchRoutes } from '../../functions/search.ts';
import { workspaceRoutes } from '../../functions/workspaces.ts';
import type { AppEnv, Deps } from './env.ts';
import { ApiError } from './errors.ts';
import { isPostgrestPath, isRealtimeRestPath, postgrestResponse, realtimeRestResponse, routeNotFound, type Unserved } from './not-found.ts';
import { bodyInputError, commonMiddleware, errorResponse, type ErrorAnswer } from './middleware.ts';

// What every app shares, and the edge functions' routes: the whole graph of the Supabase edge
// functions (src/http/edge.ts) goes through here, never through app.ts, whose local surface
// (the demo and Swagger UI read from disk and node_modules, GoTrue, files with the AWS SDK) does
// not run under the Edge Runtime: static.ts resolved swagger-ui-dist at import, which threw there.

/** The edge functions: name → routes. Each is served at /api/v1/<name> and /functions/v1/<name>. */
export const FUNCTIONS = { canvas: canvasRoutes, auth: authRoutes, search: searchRoutes, workspaces: workspaceRoutes } as const;

/**
 * Shared wrapping of every app: CORS, request id, logs, metrics, trace, body limit, input policy, one
 * error shape. `surfaces`: path prefix → how an error is answered under it, for a mounted app that
 * speaks another API's error shape (GoTrue's under /auth/v1): what the common middleware refuses
 * before routing (a body too large, an undecodable URL) is answered in that shape too.
 */
export function withCommonMiddleware(app: Hono<AppEnv>, deps: Deps, surfaces: Record<string, ErrorAnswer> = {}, unserved: Unserved = {}) {
  const apiAnswer: ErrorAnswer = (err, c) => errorResponse(c, asApiError(err, c));
  const prefixes = Object.entries(surfaces);
  const onError: ErrorAnswer = (err, c) => {
    const path = c.req.path;
    const surface = prefixes.find(([prefix]) => path === prefix || path.startsWith(`${prefix}/`));
    return (surface?.[1] ?? apiAnswer)(err, c);
  };
  // browsers call from any origin, as they do Supabase (commonMiddleware in middleware.ts)
  app.use('*', commonMiddleware(deps, onError));
  app.onError(onError);
  app.notFound((c) => {
    // an api process (deps.realtime null: server.ts) serves no WebSocket path; a probe app (gateway, worker) no HTTP API
    const noGateway = (deps as { realtime?: unknown }).realtime === null;
    const err = routeNotFound(c.req.method, c.req.path, noGateway ? { ...unserved, gateway: true } : unserved);
    if (isPostgrestPath(c.req.path)) return postgrestResponse(c, err);
    return isRealtimeRestPath(c.req.path) ? realtimeRestResponse(c, err) : errorResponse(c, err);
  });
  return app;
}

/** Any error thrown while a request is handled, as the ApiError it is answered with (whatever the surface's shape). */
export function asApiError(err: Error, c: Context<AppEnv>): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof HTTPException && err.status < 500) return bodyInputError(c) ?? fromHttpException(err);
  c.get('log')?.error({ err }, 'unhandled error');
  return new ApiError('internal', 'internal error');
}

/** Hono's own 4xx (malformed JSON, a body that is not JSON) in the one error shape, never a 500. */
function fromHttpException(err: HTTPException): ApiError {
  if (err.status === 413) return new ApiError('payload_too_large', err.message || 'request body is too large');
  if (err.status === 415) return new ApiError('unsupported_media_type', 'content-type: the body must be JSON: send Content-Type: application/json', { field: 'content-type' });
  return new ApiError('invalid_input', err.message || 'invalid request', { field: 'body' });
}
