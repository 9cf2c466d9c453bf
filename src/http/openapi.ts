import { OpenAPIHono, z } from '@hono/zod-openapi';
import { fieldPath } from '../input-policy.ts';
import { invalidInput } from './errors.ts';
import { errorResponse } from './middleware.ts';
import type { AppEnv } from './env.ts';
import { ErrorSchema } from './schemas.ts';

export { z, ErrorSchema };

const error = (description: string, schema: z.ZodTypeAny = ErrorSchema) => ({ description, content: { 'application/json': { schema } } });

/** What any endpoint may answer besides its success (409 only where a route says so). */
const errorResponses = {
  400: error('invalid_input: names the `field` (and, refusing one op of a batch, the op: `failed_index`)'),
  401: error('unauthorized: missing or invalid token'),
  403: error('forbidden: not allowed (role, token scope)'),
  404: error('not_found: no such resource, or not a member'),
  413: error('payload_too_large'),
  415: error('unsupported_media_type: the body is not uncompressed UTF-8 JSON (`field`: content-type or content-encoding)'),
  429: error('rate_limited: retry_after seconds (also the Retry-After header)'),
  500: error('internal'),
  501: error('not_implemented: the request body has a transfer coding other than chunked (`field`: transfer-encoding)'),
  503: error('unavailable: the database connection was lost (retry_after), or a dependency is failing'),
  504: error('timeout: the database did not finish in time'),
};

type Json = { description: string; content: { 'application/json': { schema: z.ZodTypeAny } } };

/**
 * A success response plus the shared error responses. `conflict`: the route's 409 (the generic
 * Error, or a schema of its own such as the mutation's conflict details).
 */
export function responses<S extends 200 | 201 | 204>(status: S, description: string, schema: S extends 204 ? null : z.ZodTypeAny,
  opts: { conflict?: { description: string; schema?: z.ZodTypeAny } } = {}) {
  const success = schema === null ? { description } : { description, content: { 'application/json': { schema } } };
  const conflict = opts.conflict ? { 409: error(opts.conflict.description, opts.conflict.schema) } : {};
  // typed by the success status only: handlers answer errors by throwing ApiError
  return { ...errorResponses, ...conflict, [status]: success } as unknown as { [K in S]: Json };
}

type Issue = { code?: string; path: PropertyKey[]; message: string; keys?: string[]; errors?: Issue[][]; note?: string; expected?: string };

/** What a value of zod's `expected` type is, for "is required: …". */
const expectedValue: Record<string, string> = { string: 'a string', number: 'a number', int: 'a whole number', boolean: 'true or false',
  object: 'an object', array: 'an array' };

/** The value at `path` in `data`, undefined where any step is missing. */
function valueAt(data: unknown, path: PropertyKey[]): unknown {
  let value = data;
  for (const step of path) {
    if (value === null || typeof value !== 'object' || !Object.hasOwn(value, step)) return undefined;
    value = (value as Record<PropertyKey, unknown>)[step];
  }
  return value;
}

/** Whether an issue says its branch was never entered: an unknown key, or a discriminator that matches no option. */
const notEntered = (i: Issue) => i.code === 'unrecognized_keys' || (i.code === 'invalid_union' && i.note === 'No matching discriminator');

/**
 * The field and message of the first validation issue. A union (a single op or {ops}) that no
 * branch accepts reports the branch that got furthest: the one whose shallowest issue lies
 * deepest (`{action: 'update'}` without base_version is about `base_version`, not `ops`). A branch
 * that was not entered counts as the object itself, so `{ops: <101 ops>}` is about `ops`, not the
 * op's missing `action`. An unknown key names itself (`patch.text` on a create).
 */
export function issueField(issue: Issue | undefined, prefix: PropertyKey[] = [], data?: unknown): { field: string; message: string } {
  if (!issue) return { field: fieldPath(prefix) || 'body', message: 'invalid' };
  const path = [...prefix, ...issue.path];
  if (issue.code === 'invalid_union' && issue.errors?.length) {
    const depth = (branch: Issue[]) => Math.min(...branch.map((i) => i.path.length + (notEntered(i) ? 0 : 1)));
    const best = issue.errors.filter((b) => b.length > 0).reduce<Issue[] | undefined>((a, b) => (!a || depth(b) > depth(a) ? b : a), undefined);
    if (best) return issueField(best[0], path, data);
  }
  // a key left out is not a value of the wrong type: zod says "expected string, received undefined"
  if (data !== undefined && issue.code === 'invalid_type' && path.length > 0 && valueAt(data, path) === undefined
      && valueAt(data, path.slice(0, -1)) !== undefined) {
    return { field: fieldPath(path), message: `is required: ${expectedValue[issue.expected ?? ''] ?? issue.expected}` };
  }
  if (issue.code === 'unrecognized_keys' && issue.keys?.length) path.push(issue.keys[0]!);
  return { field: fieldPath(path) || 'body', message: issue.message };
}

/**
 * The route validators (@hono/zod-validator) parse with `safeParseAsync`, where zod v4 never uses
 * its compiled (JIT) object parser: that runs in synchronous parses only, and costs a fraction of
 * the generic walk. No request schema here is asynchronous, so each one's `safeParseAsync` parses
 * synchronously (the same schema, the same result and issues); a schema that does turn out to be
 * asynchronous (zod throws $ZodAsyncError) is parsed asynchronously as before.
 */
const parsedSynchronously = new WeakSet<object>();
function parseSynchronously(schema: unknown) {
  if (!schema || typeof schema !== 'object' || !('safeParse' in schema) || parsedSynchronously.has(schema)) return;
  parsedSynchronously.add(schema);
  const s = schema as z.ZodTypeAny;
  const asynchronously = s.safeParseAsync.bind(s);
  s.safeParseAsync = (async (data: unknown, params?: Parameters<typeof s.safeParse>[1]) => {
    try {
      return s.safeParse(data, params);
    } catch (err) {
      if (err instanceof z.core.$ZodAsyncError) return asynchronously(data, params);
      throw err;
    }
  }) as typeof s.safeParseAsync;
}

type RequestSchemas = { params?: unknown; query?: unknown; headers?: unknown; cookies?: unknown;
  body?: { content?: Record<string, { schema?: unknown } | undefined> } };

/** An OpenAPIHono whose validation failures answer invalid_input naming the field. */
export function createRouter() {
  const app = newRouter();
  const openapi = app.openapi;
  app.openapi = ((route: { request?: RequestSchemas }, ...rest: unknown[]) => {
    const r = route.request;
    if (r) {
      for (const schema of [r.params, r.query, r.headers, r.cookies, ...Object.values(r.body?.content ?? {}).map((c) => c?.schema)]) parseSynchronously(schema);
    }
    return (openapi as (...args: unknown[]) => unknown)(route, ...rest);
  }) as typeof app.openapi;
  return app;
}

function newRouter() {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        // data: the body as validated (@hono/zod-validator hands it and its target to the hook), to
        // tell a key left out; a query or path parameter's schema words its own absence (queryInteger)
        const { data, target } = result as { data?: unknown; target?: string };
        const { field, message } = issueField(result.error.issues[0] as Issue | undefined, [], target === 'json' ? data : undefined);
        return errorResponse(c, invalidInput(field, `${field}: ${message}`));
      }
      // the body itself passed the input policy when it was read (checkInput in middleware.ts)
    },
  });
}

export const bearerSecurity = [{ bearerAuth: [] }];

/**
 * An integer query parameter between `min` and `max`, read as sent: decimal digits only, else
 * 400 invalid_input on the parameter. z.coerce.number() read it through Number(), so `?since_seq=`
 * (empty) and `?since_seq=%20` were 0 (a replay from the start), `0x10` was 16 and `1e1` was 10.
 * Documented as the integer it is.
 */
export function queryInteger(min: number, max: number) {
  // more than 16 digits (leading zeros aside) is past every max here (2^53 - 1 at most), and what
  // Number() would round: said as such (it was "must be … decimal digits", of 18446744073709551616)
  // missing, or sent twice (the validator hands on an array): said so, not zod's "expected string,
  // received undefined / array"; the bounds in one wording whichever check finds them
  const error = (issue: { input?: unknown }) => (issue.input === undefined ? `is required: a whole number from ${min} to ${max}`
    : Array.isArray(issue.input) ? 'was sent more than once: send it once' : 'must be a whole number written in decimal digits');
  return z.string({ error }).regex(/^[0-9]+$/, { message: 'must be a whole number written in decimal digits' })
    .refine((v) => v.replace(/^0+(?=[0-9])/, '').length <= 16, { message: `must be at most ${max}`, abort: true })
    // int() refuses only a number past 2^53 - 1 here (the digits were checked first)
    .transform(Number).pipe(z.number().int({ message: `must be at most ${max}` })
      .min(min, { message: `must be at least ${min}` }).max(max, { message: `must be at most ${max}` }))
    .openapi({ type: 'integer', minimum: min, maximum: max });
}

/**
 * The query of a paged list (A4, W8, W1, W4, W9, A8: sql/core/list_keys.sql): the next_cursor the
 * previous page returned, and the page's size (default 100).
 */
export const ListQuery = z.object({
  cursor: z.string().regex(/^-?[0-9]{1,18}\.[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'a next_cursor this endpoint returned').optional()
    .openapi({ description: 'next_cursor of the previous page' }),
  limit: queryInteger(1, 500).optional(),
});
