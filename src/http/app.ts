import { Hono } from 'hono';
import { OpenAPIHono } from '@hono/zod-openapi';
import { authRoutes } from '../../functions/auth.ts';
import { canvasRoutes } from '../../functions/canvas.ts';
import { opsRoutes } from '../../functions/ops.ts';
import type { AppEnv, Deps } from './env.ts';
import { ApiError } from './errors.ts';
import { errorResponse, limitBody, observe } from './middleware.ts';

/** The edge functions: name → routes. Each is served at /api/v1/<name> and /functions/v1/<name>. */
export const FUNCTIONS = { canvas: canvasRoutes, auth: authRoutes } as const;

/** Shared wrapping of every app: request id, logs, metrics, body limit, one error shape. */
export function withCommonMiddleware(app: Hono<AppEnv>, deps: Deps) {
  app.use('*', observe(deps));
  app.use('*', limitBody(deps));
  app.onError((err, c) => {
    if (err instanceof ApiError) return errorResponse(c, err);
    c.get('log')?.error({ err }, 'unhandled error');
    return errorResponse(c, new ApiError('internal', 'internal error'));
  });
  app.notFound((c) => errorResponse(c, new ApiError('not_found', `no route ${c.req.method} ${c.req.path}`)));
  return app;
}

/** The whole local HTTP surface, runtime-neutral (Node serves it; Deno entry points reuse the parts). */
export function createApp(deps: Deps) {
  const app = withCommonMiddleware(new OpenAPIHono<AppEnv>(), deps) as OpenAPIHono<AppEnv>;
  app.route('/', opsRoutes(deps));
  for (const [name, routes] of Object.entries(FUNCTIONS)) {
    const sub = routes(deps);
    app.route(`/api/v1/${name}`, sub);
    app.route(`/functions/v1/${name}`, sub);
  }
  app.doc31('/api/v1/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'Potentia API', version: '1.0.0', description: 'Real-time collaborative block canvas, Postgres-first.' },
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
  return app;
}
