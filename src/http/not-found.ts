import { ApiError } from './errors.ts';

/**
 * The 404 for a path no route serves. `/rest/v1/*` is PostgREST's prefix, which Supabase serves
 * and the local server does not: supabase-js `.rpc()` / `.from()` land there, so the answer says
 * where the same work is served instead (docs/mutations.md).
 */
export function routeNotFound(method: string, path: string): ApiError {
  if (path === '/rest/v1' || path.startsWith('/rest/v1/')) {
    return new ApiError('not_found', `no route ${method} ${path}: the local server does not serve PostgREST (/rest/v1, Supabase only). `
      + 'Mutate blocks with POST /api/v1/canvas/{id}/mutate (or /functions/v1/canvas/{id}/mutate, supabase.functions.invoke), '
      + 'or call the api functions from SQL as in docs/mutations.md');
  }
  return new ApiError('not_found', `no route ${method} ${path}`);
}
