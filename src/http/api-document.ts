import type { OpenAPIHono } from '@hono/zod-openapi';
import type { AppEnv } from './env.ts';

/**
 * The OpenAPI 3.1 document of the HTTP API, generated from the routes' zod schemas (functions/*.ts,
 * src/http/schemas.ts) and served at API_DOCUMENT_PATH. Every operation has an operationId. The
 * edge functions' paths (/functions/v1/<name>/…, the same routes mounted twice by createApp) are
 * listed once, under /api/v1/<name>/…, so each operationId is unique; `servers` says how they map.
 * packages/client/src/api-types.ts is generated from it (npm run api:types), and the test runs check every
 * response against it (src/http/response-contract.ts).
 */
export const API_DOCUMENT_PATH = '/api/v1/openapi.json';

export type ApiDocument = ReturnType<OpenAPIHono<AppEnv>['getOpenAPI31Document']>;

const SERVER_NOTE = 'Local server (npm start; HOST and PORT). It also answers every /api/v1/<function>/… operation at ' +
  '/functions/v1/<function>/…, the path of Supabase edge functions: deployed to Supabase, the functions canvas, auth, search and ' +
  'workspaces serve these operations at https://<project-ref>.supabase.co/functions/v1/<function>/… (replace /api/v1 with ' +
  '/functions/v1). The operations tagged ops and files, and searchCanvas, are local only (the Node server).';

/** The document of `app`: its registered routes, without the /functions/v1 duplicates. */
export function apiDocument(app: OpenAPIHono<AppEnv>): ApiDocument {
  const doc = app.getOpenAPI31Document({
    openapi: '3.1.0',
    info: {
      title: 'Potentia API', version: '1.0.0',
      description: 'Real-time collaborative block canvas, Postgres-first. Errors have one shape, {"error": {"code", "message", ' +
        '"field"?, …}} (components.schemas.Error); a mutation conflict carries the current block and base/theirs/mine per ' +
        'clashing field (MutationConflict). Realtime (WebSocket) is described in docs/realtime.md, not here.',
    },
    servers: [{ url: 'http://{host}:{port}', description: SERVER_NOTE,
      variables: { host: { default: '127.0.0.1' }, port: { default: '54321' } } }],
  });
  doc.paths = Object.fromEntries(Object.entries(doc.paths ?? {}).filter(([path]) => !path.startsWith('/functions/v1/')));
  return doc;
}

/**
 * The document as served to `requestUrl`: the local server's host and port variables default to
 * the ones the request reached (a server on another PORT, or behind a proxy), so the API
 * reference's "Try it out" (/docs/api) calls this server rather than 127.0.0.1:54321.
 */
export function documentFor(doc: ApiDocument, requestUrl: string): ApiDocument {
  const url = new URL(requestUrl);
  const [server, ...others] = doc.servers ?? [];
  if (!server?.variables || !url.hostname) return doc;
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return { ...doc, servers: [{ ...server, variables: { ...server.variables,
    host: { ...server.variables['host'], default: url.hostname }, port: { ...server.variables['port'], default: port } } }, ...others] };
}

/** GET API_DOCUMENT_PATH, built once (after every route is registered, at the first request). */
export function serveApiDocument(app: OpenAPIHono<AppEnv>) {
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearerAuth', { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
  let doc: ApiDocument | undefined;
  app.get(API_DOCUMENT_PATH, (c) => c.json(documentFor(doc ??= apiDocument(app), c.req.url)));
}
