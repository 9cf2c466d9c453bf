import type { Context } from 'hono';
import type { AppEnv } from './env.ts';
import { ApiError } from './errors.ts';

/** PostgREST's prefix, which Supabase serves and the local server does not. */
export const POSTGREST_PREFIX = '/rest/v1';

/**
 * The 404 for a path no route serves. `/rest/v1/*` is PostgREST's prefix: supabase-js `.rpc()` /
 * `.from()` land there, so the answer says where the same work is served instead
 * (docs/mutations.md).
 */
export function routeNotFound(method: string, path: string): ApiError {
  if (isPostgrestPath(path)) {
    // a table read (`.from().select()`) also hears where reads are served: the mutate route alone
    // left it with nowhere to go
    const read = (method === 'GET' || method === 'HEAD') && !path.startsWith(`${POSTGREST_PREFIX}/rpc/`)
      ? 'Read with GET /api/v1/workspaces, GET /api/v1/canvas (yours), GET /api/v1/canvas/{id}/blocks or …/snapshot (README, "Canvases and blocks"); '
      : '';
    return new ApiError('not_found', `no route ${method} ${path}: the local server does not serve PostgREST (/rest/v1, Supabase only). `
      + `${read}Mutate blocks with POST /api/v1/canvas/{id}/mutate (or /functions/v1/canvas/{id}/mutate, supabase.functions.invoke), `
      + 'or call the api functions from SQL as in docs/mutations.md');
  }
  // other Supabase services a supabase-js client reaches by itself: say what serves that work here
  if (path.startsWith('/realtime/v1/api/')) {
    return new ApiError('not_found', `no route ${method} ${path}: the realtime gateway does not serve realtime-js's REST broadcast `
      + "(channel.send before the channel is SUBSCRIBED falls back to it). Send once subscribe() reported SUBSCRIBED (docs/realtime.md, \"Client broadcasts\")");
  }
  if (path === '/storage/v1' || path.startsWith('/storage/v1/')) {
    return new ApiError('not_found', `no route ${method} ${path}: the local server does not serve Supabase Storage's API (supabase.storage). `
      + "A canvas's files go through POST /api/v1/canvas/{id}/files and presigned URLs (docs/files.md)");
  }
  return new ApiError('not_found', `no route ${method} ${path}`);
}

export const isPostgrestPath = (path: string) => path === POSTGREST_PREFIX || path.startsWith(`${POSTGREST_PREFIX}/`);

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
    hint: 'locally, use POST /api/v1/canvas/{id}/mutate or SQL (docs/mutations.md); PostgREST is served on Supabase' };
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
