import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Hono, type Context } from 'hono';
import { apiKeys } from '../dev.ts';
import type { AppEnv, Deps } from './env.ts';

/**
 * The browser side of `npm start`: the demo app (demo/, built by scripts/build-demo.ts into
 * demo/dist/) at `/`, and the API reference at `/docs/api` (Swagger UI from the swagger-ui-dist
 * package, served from node_modules: no CDN) rendering /api/v1/openapi.json.
 *
 *   GET /                      demo/dist/index.html          Cache-Control: no-cache (always revalidated)
 *   GET /assets/<file>         demo/dist/assets/<file>       names carry a content hash: immutable, 1 year
 *   GET /demo/config.json      {anonKey}: the local anon key (null in production, where the demo is not set up)
 *   GET /docs/api              the reference page            no-cache
 *   GET /docs/api/<file>       Swagger UI's own files        1 day (they change only with the package)
 *
 * Files are read at request time (a rebuilt demo shows without a restart) and answered with an
 * ETag (size + mtime), so a revalidation is a 304. Only file names of a fixed alphabet are looked
 * up, inside their directory: no path from the request reaches the file system.
 */

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../..');
export const DEMO_DIST = join(ROOT, 'demo/dist');
const SWAGGER_DIR = dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
/** What /docs/api needs from swagger-ui-dist, nothing else of the package. */
const SWAGGER_FILES = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'swagger-ui-standalone-preset.js', 'favicon-32x32.png', 'favicon-16x16.png']);
const SAFE_NAME = /^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,127}$/;

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
};

const NO_CACHE = 'no-cache';
const IMMUTABLE = 'public, max-age=31536000, immutable';
const ONE_DAY = 'public, max-age=86400';

/** A file answered with its type, cache policy and ETag; undefined when it does not exist. */
async function sendFile(c: Context<AppEnv>, path: string, cacheControl: string): Promise<Response | undefined> {
  let info;
  try {
    info = await stat(path);
  } catch {
    return undefined;
  }
  if (!info.isFile()) return undefined;
  const etag = `W/"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
  const headers = {
    'Content-Type': TYPES[extname(path)] ?? 'application/octet-stream',
    'Cache-Control': cacheControl,
    ETag: etag,
    'X-Content-Type-Options': 'nosniff',
  };
  if (c.req.header('if-none-match')?.split(/\s*,\s*/).includes(etag)) return c.body(null, 304, headers);
  return c.body(new Uint8Array(await readFile(path)), 200, headers);
}

function notBuilt(c: Context<AppEnv>) {
  return c.text('The demo is not built: run `npm run build:demo` (npm start and npm test build it when its sources change).\n', 503,
    { 'Cache-Control': NO_CACHE });
}

/** The reference page: Swagger UI on the served document, with a link back to the demo. */
const API_PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Potentia API reference</title>
  <link rel="icon" type="image/png" href="/docs/api/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/api/swagger-ui.css">
  <style>
    body { margin: 0; font-family: system-ui, sans-serif; }
    .potentia-bar { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem; background: #1f2330; color: #fff; }
    .potentia-bar a { color: #9ecbff; }
  </style>
</head>
<body>
  <div class="potentia-bar"><strong>Potentia API</strong>
    <a href="/">demo app</a> <a href="/api/v1/openapi.json">openapi.json</a></div>
  <div id="swagger-ui" data-testid="api-reference"></div>
  <script src="/docs/api/swagger-ui-bundle.js"></script>
  <script src="/docs/api/init.js"></script>
</body>
</html>
`;

const API_INIT = `window.ui = SwaggerUIBundle({
  url: '/api/v1/openapi.json',
  dom_id: '#swagger-ui',
  deepLinking: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: 'BaseLayout',
  // the document's server is http://{host}:{port}; "Try it out" should call the server showing the page
  requestInterceptor: (req) => {
    const u = new URL(req.url, location.href);
    if (u.pathname.startsWith('/api/') || u.pathname.startsWith('/functions/')) req.url = location.origin + u.pathname + u.search;
    return req;
  },
});
`;

export function staticRoutes(deps: Deps) {
  const app = new Hono<AppEnv>();
  let anonKey: Promise<string | null> | undefined;

  app.get('/', async (c) => (await sendFile(c, join(DEMO_DIST, 'index.html'), NO_CACHE)) ?? notBuilt(c));
  app.get('/assets/:file', async (c) => {
    const file = c.req.param('file');
    const res = SAFE_NAME.test(file) ? await sendFile(c, join(DEMO_DIST, 'assets', file), IMMUTABLE) : undefined;
    return res ?? c.notFound();
  });
  // the browser needs the project's anon key for createClient; locally it is the CLI's (src/dev.ts)
  app.get('/demo/config.json', async (c) => {
    anonKey ??= deps.config.env === 'production' ? Promise.resolve(null) : apiKeys(deps.config).then((k) => k.anon);
    return c.json({ anonKey: await anonKey }, 200, { 'Cache-Control': NO_CACHE });
  });

  app.get('/docs/api', (c) => c.body(API_PAGE, 200, { 'Content-Type': TYPES['.html']!, 'Cache-Control': NO_CACHE }));
  // init.js within /docs/api/:file, not a route of its own: a fixed path beside a parameter at the
  // same place makes Hono's RegExpRouter refuse the app's routes, and every request would be
  // matched by the slower TrieRouter
  app.get('/docs/api/:file', async (c) => {
    const file = c.req.param('file');
    if (file === 'init.js') return c.body(API_INIT, 200, { 'Content-Type': TYPES['.js']!, 'Cache-Control': NO_CACHE });
    const res = SWAGGER_FILES.has(file) ? await sendFile(c, join(SWAGGER_DIR, file), ONE_DAY) : undefined;
    return res ?? c.notFound();
  });
  return app;
}
