import type { Context } from 'hono';
import type { AppEnv } from './env.ts';
import { ApiError } from './errors.ts';

/** PostgREST's prefix, which Supabase serves and the local server does not. */
export const POSTGREST_PREFIX = '/rest/v1';

/**
 * Where each client-callable `api` function is served here over HTTP: what supabase-js
 * `supabase.schema('api').rpc(name)` reaches on Supabase (PostgREST). A call of one of them under
 * /rest/v1/rpc is told its route, not only the mutate route: a read (`get_canvas_snapshot`,
 * `get_canvas_changes_since`) was pointed at mutating blocks. The functions without a route
 * (feature flags, the endpoint limit the handlers take) are SQL's. Every function EXECUTE is granted
 * on is in one list or the other (tests/integration/http-api.test.ts).
 */
export const API_FUNCTION_ROUTES: Readonly<Record<string, string>> = {
  upsert_block_atomic: 'POST /api/v1/canvas/{id}/mutate',
  upsert_blocks_atomic: 'POST /api/v1/canvas/{id}/mutate',
  get_canvas_snapshot: 'GET /api/v1/canvas/{id}/snapshot',
  // by server_seq, which every block_op carries too (docs/realtime.md, "canvas_seq")
  get_canvas_changes: 'GET /api/v1/canvas/{id}/snapshot?since_seq={server_seq}',
  get_canvas_changes_since: 'GET /api/v1/canvas/{id}/changes?since_canvas_seq={canvas_seq}',
  list_blocks: 'GET /api/v1/canvas/{id}/blocks',
  get_block: 'GET /api/v1/canvas/{id}/blocks/{block_id}',
  list_my_canvases: 'GET /api/v1/canvas',
  create_canvas: 'POST /api/v1/canvas',
  update_canvas: 'PATCH /api/v1/canvas/{id}',
  delete_canvas: 'DELETE /api/v1/canvas/{id}',
  get_canvas_permissions: 'GET /api/v1/canvas/{id}/permissions',
  update_presence: 'POST /api/v1/canvas/{id}/presence',
  leave_canvas: 'POST /api/v1/canvas/{id}/leave',
  search_blocks: 'GET /api/v1/canvas/{id}/search',
  create_file: 'POST /api/v1/canvas/{id}/files',
  get_file: 'GET /api/v1/canvas/{id}/files/{file_id}',
  list_my_workspaces: 'GET /api/v1/workspaces',
  create_workspace: 'POST /api/v1/workspaces',
  rename_workspace: 'PATCH /api/v1/workspaces/{id}',
  list_workspace_members: 'GET /api/v1/workspaces/{id}/members',
  add_workspace_member: 'POST /api/v1/workspaces/{id}/members',
  update_workspace_member: 'PATCH /api/v1/workspaces/{id}/members/{user_id}',
  remove_workspace_member: 'DELETE /api/v1/workspaces/{id}/members/{user_id}',
  list_workspace_canvases: 'GET /api/v1/workspaces/{id}/canvases',
  list_workspace_invites: 'GET /api/v1/workspaces/{id}/invites',
  revoke_workspace_invite: 'DELETE /api/v1/workspaces/{id}/invites/{invite_id}',
};

/** Client-callable `api` functions with no HTTP route: from SQL only (docs/mutations.md shows how). */
export const SQL_ONLY_API_FUNCTIONS: readonly string[] = ['get_canvas_flags', 'set_feature_flag', 'set_workspace_member', 'hit_endpoint_limit'];

/** `GET /api/v1/canvas/x` → `supabase.functions.invoke('canvas/x', { method: 'GET' })`: the same route under /functions/v1. */
function invokeOf(route: string): string {
  const [method, target] = route.split(' ') as [string, string];
  return `supabase.functions.invoke('${target.replace(/^\/api\/v1\//, '')}', { method: '${method}'${method === 'GET' || method === 'DELETE' ? '' : ', body'} })`;
}

/** The api function a `/rest/v1/rpc/<name>` path calls, when it is one with an HTTP route here. */
function rpcRoute(path: string): { name: string; route: string } | undefined {
  const name = path.startsWith(`${POSTGREST_PREFIX}/rpc/`) ? path.slice(`${POSTGREST_PREFIX}/rpc/`.length) : undefined;
  return name !== undefined && Object.hasOwn(API_FUNCTION_ROUTES, name) ? { name, route: API_FUNCTION_ROUTES[name]! } : undefined;
}

/** What a process of a split deployment does not serve (src/roles.ts), for its 404s to name who does. */
export type Unserved = {
  /** no HTTP API: a gateway or worker role */ api?: boolean;
  /** no realtime gateway: the api role */ gateway?: boolean;
  /** an edge function (src/http/edge.ts): it serves `/<name>/…` only, what the platform passes on after /functions/v1 */
  edgeFunction?: string;
};

/** PostgREST's `hint` for an answer under /rest/v1: where the work is served here. */
const POSTGREST_HINT = 'locally, use POST /api/v1/canvas/{id}/mutate or SQL (docs/mutations.md); PostgREST is served on Supabase';

/**
 * The 404 for a path no route serves. `/rest/v1/*` is PostgREST's prefix: supabase-js `.rpc()` /
 * `.from()` land there, so the answer says where the same work is served instead
 * (docs/mutations.md): for `.rpc()` of an `api` function, its own route.
 */
export function routeNotFound(method: string, path: string, unserved: Unserved = {}): ApiError {
  const fn = unserved.edgeFunction;
  if (fn !== undefined && path !== `/${fn}` && !path.startsWith(`/${fn}/`)) {
    // run by itself (deno run, docs/supabase.md section 4) and called with the platform's path
    return new ApiError('not_found', `no route ${method} ${path}: this is the ${fn} edge function, which serves its routes under /${fn} `
      + `(what the platform passes on after /functions/v1): call /${fn}/… on it directly, or /functions/v1/${fn}/… through Supabase's `
      + 'gateway and supabase.functions.invoke (docs/supabase.md, "4. Deploy the edge functions")');
  }
  // the api role's paths (docs/self-hosting.md, "Process roles"): the demo app's page and the API
  // reference too, which a browser pointed at a gateway's port asks for first
  if (unserved.api && /^\/(?:(?:api|functions|auth)\/v1(?:\/|$)|docs\/api(?:\/|$)|$)/.test(path)) {
    return new ApiError('not_found', `no route ${method} ${path}: this process runs no HTTP API (a --role gateway or worker process): `
      + '/api/v1, /functions/v1, /auth/v1, the demo app at / and /docs/api are served by --role api (or all) processes; '
      + 'route them there, or point the client at their URL '
      + '(docs/self-hosting.md, "Topology")');
  }
  if (unserved.gateway && (path.startsWith('/ws/') || path === '/realtime/v1/websocket')) {
    return new ApiError('not_found', `no route ${method} ${path}: this process runs no realtime gateway (--role api): `
      + 'the WebSocket paths /ws/ and /realtime/v1/ are served by --role gateway (or all) processes; route them there '
      + '(docs/self-hosting.md, "Topology")');
  }
  if (isPostgrestPath(path)) {
    const prefix = `no route ${method} ${path}: the local server does not serve PostgREST (/rest/v1, Supabase only). `;
    const rpc = rpcRoute(path);
    if (rpc) {
      const since = rpc.route.includes('since_seq=')
        ? ' (its since.changes: the operations after that server_seq, which every block_op carries beside its canvas_seq; docs/realtime.md, "canvas_seq")'
        : '';
      return new ApiError('not_found', `${prefix}api.${rpc.name} is served here as ${rpc.route}${since}: `
        + `with supabase-js, ${invokeOf(rpc.route)} (schemas: /api/v1/openapi.json); or call it from SQL as in docs/mutations.md`,
      { hint: `locally, use ${rpc.route} or SQL (docs/mutations.md); PostgREST is served on Supabase` });
    }
    // a table read (`.from().select()`) also hears where reads are served: the mutate route alone
    // left it with nowhere to go
    const read = (method === 'GET' || method === 'HEAD') && !path.startsWith(`${POSTGREST_PREFIX}/rpc/`)
      ? 'Read with GET /api/v1/workspaces, GET /api/v1/canvas (yours), GET /api/v1/canvas/{id}/blocks or …/snapshot (README, "Canvases and blocks"); '
      : '';
    return new ApiError('not_found', `${prefix}${read}Mutate blocks with POST /api/v1/canvas/{id}/mutate (or /functions/v1/canvas/{id}/mutate, supabase.functions.invoke), `
      + 'or call the api functions from SQL as in docs/mutations.md',
    // supabase-js shows the hint beside the message: a read was told only where to mutate
    read ? { hint: 'locally, read with GET /api/v1/canvas/{id}/blocks (or …/snapshot), mutate with POST /api/v1/canvas/{id}/mutate, or use SQL (docs/mutations.md); PostgREST is served on Supabase' } : {});
  }
  // other Supabase services a supabase-js client reaches by itself: say what serves that work here
  if (isRealtimeRestPath(path)) {
    return new ApiError('not_found', `no route ${method} ${path}: the realtime gateway's REST API is realtime-js's broadcast, `
      + 'POST /realtime/v1/api/broadcast {messages: [...]} and POST /realtime/v1/api/broadcast/{topic}/events/{event} '
      + '(docs/realtime.md, "Client broadcasts")');
  }
  if (path === '/storage/v1' || path.startsWith('/storage/v1/')) {
    return new ApiError('not_found', `no route ${method} ${path}: the local server does not serve Supabase Storage's API (supabase.storage). `
      + "A canvas's files go through POST /api/v1/canvas/{id}/files and presigned URLs (docs/files.md)");
  }
  // the last row of the README's route table, which the canvas edge function does not serve
  const canvasRoute = /^\/functions\/v1\/canvas\/([^/]+)\/(search|files)(?:\/|$)/.exec(path);
  if (canvasRoute) {
    const [, id, what] = canvasRoute as unknown as [string, string, string];
    return new ApiError('not_found', what === 'search'
      ? `no route ${method} ${path}: search is the search function's, GET /functions/v1/search/${id}?q=… `
        + `(with supabase-js, supabase.functions.invoke('search/${id}?q=…', { method: 'GET' })), also GET /api/v1/canvas/${id}/search?q=… on a Node server`
      : `no route ${method} ${path}: the file routes are the Node server's only, under /api/v1/canvas/${id}/files (README, "Files"; docs/files.md)`);
  }
  return new ApiError('not_found', `no route ${method} ${path}`);
}

export const isPostgrestPath = (path: string) => path === POSTGREST_PREFIX || path.startsWith(`${POSTGREST_PREFIX}/`);

/** Supabase Realtime's REST API (`/realtime/v1/api/broadcast`), which realtime-js calls over fetch. */
export const isRealtimeRestPath = (path: string) => path.startsWith('/realtime/v1/api/');

/**
 * An answer under /realtime/v1/api (src/http/realtime-rest.ts), in Supabase Realtime's error shape
 * (`{message}`, with our `code` and the `field` at fault): realtime-js's `httpSend()` rejects with
 * `body.error || body.message`; in our shape (`error` an object) it said `[object Object]`. The
 * routes realtime-js calls never answer 404, which it replaces with its own "requires Realtime
 * server v2.97.0 or newer … Update your Supabase CLI".
 */
export function realtimeRestResponse(c: Context<AppEnv>, err: ApiError): Response {
  c.set('errorCode', err.code);
  if (typeof err.details.retry_after === 'number') c.header('Retry-After', String(err.details.retry_after));
  const field = typeof err.details.field === 'string' ? { field: err.details.field } : {};
  return c.json({ code: err.code, message: err.message, ...field }, err.status);
}

/**
 * An error answered under /rest/v1, in PostgREST's error shape (`{code, message, details, hint}`),
 * which postgrest-js reads into the `error` of `.rpc()` and `.from()`: in our own shape supabase-js
 * reported `error.code` and `error.message` as undefined. The codes are ours (not PGRSTxxx: nothing
 * here is PostgREST), `hint` says where to go.
 */
export function postgrestResponse(c: Context<AppEnv>, err: ApiError): Response {
  c.set('errorCode', err.code);
  return c.json(postgrestBody(err), err.status);
}

/** `err` in PostgREST's error shape. */
export function postgrestBody(err: ApiError): { code: string; message: string; details: null; hint: string } {
  return { code: err.code, message: err.message, details: null,
    hint: typeof err.details.hint === 'string' ? err.details.hint : POSTGREST_HINT };
}

/**
 * The path of the request line at the start of `raw` (what Node's parser had when it refused a
 * request: a header block too large, an unknown method), or null: so that a refusal under
 * /rest/v1 is answered in PostgREST's shape there too.
 */
export function requestLinePath(raw: Buffer | undefined): string | null {
  const line = raw?.subarray(0, 8192).toString('latin1');
  const match = line ? /^[A-Za-z]+ (\/\S*)/.exec(line) : null;
  return match ? match[1]!.split('?')[0]! : null;
}
