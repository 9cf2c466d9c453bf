import { describe, expect, it } from 'vitest';
import { postgrestBody, routeNotFound } from '../../src/http/not-found.ts';

// supabase-js `.from('blocks').select()` lands on GET /rest/v1/blocks: the 404 said only where to
// mutate blocks, so someone reading found no word of where reads are served locally.
describe('a PostgREST path on the local server', () => {
  it('a read (.from().select()) is pointed at the HTTP API routes that read, and still at mutate and SQL', () => {
    for (const method of ['GET', 'HEAD']) {
      const { message } = routeNotFound(method, '/rest/v1/blocks');
      expect(message).toContain(`no route ${method} /rest/v1/blocks: the local server does not serve PostgREST`);
      expect(message).toContain('GET /api/v1/canvas/{id}/blocks');
      expect(message).toContain('GET /api/v1/workspaces');
      expect(message).toContain('POST /api/v1/canvas/{id}/mutate');
      expect(message).toContain('docs/mutations.md');
      // supabase-js shows the hint beside the message (error.hint): it said "use POST …/mutate" alone
      const { hint } = postgrestBody(routeNotFound(method, '/rest/v1/blocks'));
      expect(hint).toContain('GET /api/v1/canvas/{id}/blocks');
      expect(hint).toContain('POST /api/v1/canvas/{id}/mutate');
    }
  });

  it('a call (.rpc()) of no api function with a route, or a write (.insert(), .update()), is pointed at mutate and SQL, with no read routes', () => {
    for (const [method, path] of [['POST', '/rest/v1/rpc/no_such_function'], ['POST', '/rest/v1/rpc/get_canvas_flags'], ['POST', '/rest/v1/blocks'], ['PATCH', '/rest/v1/blocks'], ['GET', '/rest/v1/rpc/toString']]) {
      const { message } = routeNotFound(method!, path!);
      expect(message).toContain('POST /api/v1/canvas/{id}/mutate');
      expect(message).toContain('docs/mutations.md');
      expect(message).not.toContain('GET /api/v1/workspaces');
    }
  });

  // supabase.schema('api').rpc('get_canvas_snapshot') and ('get_canvas_changes_since', …), which
  // docs/realtime.md sends to the snapshot route locally, were told to mutate blocks
  it('a call (.rpc()) of an api function with an HTTP route names that route, in the message and the hint', () => {
    const cases: [string, string][] = [['get_canvas_snapshot', 'GET /api/v1/canvas/{id}/snapshot'],
      ['get_canvas_changes_since', 'GET /api/v1/canvas/{id}/changes?since_canvas_seq={canvas_seq}'],
      ['create_workspace', 'POST /api/v1/workspaces'], ['upsert_block_atomic', 'POST /api/v1/canvas/{id}/mutate']];
    for (const [name, route] of cases) {
      const err = routeNotFound('POST', `/rest/v1/rpc/${name}`);
      expect(err.message).toContain(`no route POST /rest/v1/rpc/${name}: the local server does not serve PostgREST`);
      expect(err.message).toContain(`api.${name} is served here as ${route}`);
      expect(err.message).toContain(`supabase.functions.invoke('${route.split(' ')[1]!.slice('/api/v1/'.length)}', { method: '${route.split(' ')[0]}'`);
      expect(err.message).toContain('docs/mutations.md');
      expect(postgrestBody(err)).toEqual({ code: 'not_found', message: err.message, details: null,
        hint: `locally, use ${route} or SQL (docs/mutations.md); PostgREST is served on Supabase` });
    }
    expect(routeNotFound('POST', '/rest/v1/rpc/get_canvas_snapshot').message).not.toContain('Mutate blocks');
    expect(postgrestBody(routeNotFound('POST', '/rest/v1/blocks')).hint).toContain('POST /api/v1/canvas/{id}/mutate');
  });
});

// README's route table lists search and files among the canvas routes, "every route also at
// /functions/v1/canvas/… except the last row's": supabase.functions.invoke('canvas/{id}/search?q=…')
// was answered a bare `no route GET /functions/v1/canvas/{id}/search`, with nothing of where it is.
describe('a canvas route the canvas edge function does not serve', () => {
  const id = '84d678a3-3183-430f-af1a-1a2f4a169118';
  it('search under /functions/v1/canvas names the search function\'s path', () => {
    const { message } = routeNotFound('GET', `/functions/v1/canvas/${id}/search`);
    expect(message).toContain(`no route GET /functions/v1/canvas/${id}/search`);
    expect(message).toContain(`GET /functions/v1/search/${id}?q=`);
    expect(message).toContain(`supabase.functions.invoke('search/${id}?q=…', { method: 'GET' })`);
  });
  it('files under /functions/v1/canvas name /api/v1 and docs/files.md', () => {
    for (const [method, path] of [['POST', `/functions/v1/canvas/${id}/files`], ['GET', `/functions/v1/canvas/${id}/files/${id}`], ['POST', `/functions/v1/canvas/${id}/files/${id}/complete`]]) {
      const { message } = routeNotFound(method!, path!);
      expect(message).toContain(`no route ${method} ${path}`);
      expect(message).toContain(`/api/v1/canvas/${id}/files`);
      expect(message).toContain('docs/files.md');
    }
  });
});

// Roles split as docs/self-hosting.md shows, each on its own port: supabase-js or curl pointed at
// a gateway for /auth/v1 or /api/v1, or at an API process for a WebSocket path, was answered a bare
// `no route …`, as if the path were mistyped, with no word that another role serves it.
describe('a path another process role serves', () => {
  it('on a process with no HTTP API (gateway, worker), /api/v1, /functions/v1 and /auth/v1 name the api role', () => {
    for (const path of ['/auth/v1/token', '/api/v1/canvas', '/functions/v1/workspaces']) {
      const { message } = routeNotFound('POST', path, { api: true });
      expect(message).toContain(`no route POST ${path}: this process runs no HTTP API`);
      expect(message).toContain('--role api');
      expect(message).toContain('docs/self-hosting.md');
    }
    expect(routeNotFound('GET', '/nothing', { api: true }).message).toBe('no route GET /nothing');
  });
  it('on a process with no HTTP API, the demo app at / and the API reference at /docs/api name the api role too', () => {
    // a browser pointed at a gateway's port got a bare "no route GET /"
    for (const path of ['/', '/docs/api', '/docs/api/swagger-ui.css']) {
      const { message } = routeNotFound('GET', path, { api: true });
      expect(message).toContain(`no route GET ${path}: this process runs no HTTP API`);
      expect(message).toContain('the demo app at / and /docs/api');
      expect(message).toContain('--role api');
    }
    expect(routeNotFound('GET', '/docs/apis', { api: true }).message).toBe('no route GET /docs/apis');
  });
  it('on a process with no realtime gateway (api), the WebSocket paths name the gateway role', () => {
    for (const path of ['/ws/canvas/84d678a3-3183-430f-af1a-1a2f4a169118', '/realtime/v1/websocket']) {
      const { message } = routeNotFound('GET', path, { gateway: true });
      expect(message).toContain(`no route GET ${path}: this process runs no realtime gateway`);
      expect(message).toContain('--role gateway');
    }
    expect(routeNotFound('GET', '/ws/canvas/x').message).toBe('no route GET /ws/canvas/x');
  });
});

// An edge function run by itself (deno run, docs/supabase.md section 4) serves /<name>/…: a request
// with the platform's /functions/v1 prefix was answered a bare `no route …`.
describe('an edge function reached with a path outside its own prefix', () => {
  it('names its prefix and where /functions/v1 is served; a path under its prefix stays the plain 404', () => {
    expect(routeNotFound('POST', '/functions/v1/canvas/x/mutate', { edgeFunction: 'canvas' }).message).toBe(
      'no route POST /functions/v1/canvas/x/mutate: this is the canvas edge function, which serves its routes under /canvas (what the platform '
      + 'passes on after /functions/v1): call /canvas/… on it directly, or /functions/v1/canvas/… through Supabase\'s gateway and '
      + 'supabase.functions.invoke (docs/supabase.md, "4. Deploy the edge functions")');
    expect(routeNotFound('GET', '/search/x/nothing', { edgeFunction: 'search' }).message).toBe('no route GET /search/x/nothing');
    expect(routeNotFound('GET', '/functions/v1/canvas').message).toBe('no route GET /functions/v1/canvas');
  });
});
