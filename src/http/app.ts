import { OpenAPIHono } from '@hono/zod-openapi';
import { fileRoutes } from '../../functions/files.ts';
import { opsRoutes } from '../../functions/ops.ts';
import { canvasSearchRoutes } from '../../functions/search.ts';
import { serveApiDocument } from './api-document.ts';
import { asApiError, FUNCTIONS, withCommonMiddleware } from './common.ts';
import type { AppEnv, Deps } from './env.ts';
import { gotrueErrorAnswer, gotrueRoutes } from './gotrue.ts';
import { POSTGREST_PREFIX, postgrestResponse } from './not-found.ts';
import { REALTIME_REST_PREFIX, realtimeRestRoutes, realtimeRestSurface } from './realtime-rest.ts';
import { staticRoutes } from './static.ts';

/** The whole local HTTP surface, served by Node (the edge functions take only common.ts's parts: src/http/edge.ts). */
export function createApp(deps: Deps) {
  const app = withCommonMiddleware(new OpenAPIHono<AppEnv>(), deps,
    {
      '/auth/v1': gotrueErrorAnswer(deps), [POSTGREST_PREFIX]: (err, c) => postgrestResponse(c, asApiError(err, c)),
      ...realtimeRestSurface,
    }) as OpenAPIHono<AppEnv>;
  app.route('/', opsRoutes(deps));
  // the demo app at / and the API reference at /docs/api (src/http/static.ts): fixed paths, none under the API's
  app.route('/', staticRoutes(deps));
  // GoTrue's email + password endpoints for supabase-js `auth` (local only: on Supabase, GoTrue serves /auth/v1)
  app.route('/auth/v1', gotrueRoutes(deps));
  // realtime-js's REST broadcast (channel.httpSend(), send() before the channel is joined), through this process's gateway
  app.route(REALTIME_REST_PREFIX, realtimeRestRoutes(deps));
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
