import { Hono, type Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { OpenAPIHono } from '@hono/zod-openapi';
import { authRoutes } from '../../functions/auth.ts';
import { canvasRoutes } from '../../functions/canvas.ts';
import { fileRoutes } from '../../functions/files.ts';
import { opsRoutes } from '../../functions/ops.ts';
import { canvasSearchRoutes, searchRoutes } from '../../functions/search.ts';
import { workspaceRoutes } from '../../functions/workspaces.ts';
import { serveApiDocument } from './api-document.ts';
import type { AppEnv, Deps } from './env.ts';
import { ApiError } from './errors.ts';
import { gotrueErrorAnswer, gotrueRoutes } from './gotrue.ts';
import { isPostgrestPath, POSTGREST_PREFIX, postgrestResponse, routeNotFound } from './not-found.ts';
import { staticRoutes } from './static.ts';
import { bodyInputError, commonMiddleware, errorResponse, type ErrorAnswer } from './middleware.ts';

/** The edge functions: name → routes. Each is served at /api/v1/<name> and /functions/v1/<name>. */
export const FUNCTIONS = { canvas: canvasRoutes, auth: authRoutes, search: searchRoutes, workspaces: workspaceRoutes } as const;

/**
 * Shared wrapping of every app: CORS, request id, logs, metrics, trace, body limit, input policy, one
 * error shape. `surfaces`: path prefix → how an error is answered under it, for a mounted app that
 * speaks another API's error shape (GoTrue's under /auth/v1): what the common middleware refuses
 * before routing (a body too large, an undecodable URL) is answered in that shape too.
 */
export function withCommonMiddleware(app: Hono<AppEnv>, deps: Deps, surfaces: Record<string, ErrorAnswer> = {}) {
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
    const err = routeNotFound(c.req.method, c.req.path);
    return isPostgrestPath(c.req.path) ? postgrestResponse(c, err) : errorResponse(c, err);
  });
  return app;
}

/** Any error thrown while a request is handled, as the ApiError it is answered with (whatever the surface's shape). */
function asApiError(err: Error, c: Context<AppEnv>): ApiError {
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

/** The whole local HTTP surface, runtime-neutral (Node serves it; Deno entry points reuse the parts). */
export function createApp(deps: Deps) {
  const app = withCommonMiddleware(new OpenAPIHono<AppEnv>(), deps,
    { '/auth/v1': gotrueErrorAnswer(deps), [POSTGREST_PREFIX]: (err, c) => postgrestResponse(c, asApiError(err, c)) }) as OpenAPIHono<AppEnv>;
  app.route('/', opsRoutes(deps));
  // the demo app at / and the API reference at /docs/api (src/http/static.ts): fixed paths, none under the API's
  app.route('/', staticRoutes(deps));
  // GoTrue's email + password endpoints for supabase-js `auth` (local only: on Supabase, GoTrue serves /auth/v1)
  app.route('/auth/v1', gotrueRoutes(deps));
  // GET /api/v1/canvas/{id}/search: the search function under the canvas paths (before them, so
  // the canvas routes' own middleware never sees it)
  app.route('/api/v1/canvas', canvasSearchRoutes(deps));
  // files (F1-F3, docs/files.md): /api/v1/canvas/{id}/files…, the local server only (presigning needs the AWS SDK)
  app.route('/api/v1/canvas', fileRoutes(deps));
  for (const [name, routes] of Object.entries(FUNCTIONS)) {
    const sub = routes(deps);
    app.route(`/api/v1/${name}`, sub);
    app.route(`/functions/v1/${name}`, sub);
  }
  serveApiDocument(app); // /api/v1/openapi.json
  return app;
}
