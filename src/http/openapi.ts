import { OpenAPIHono, z } from '@hono/zod-openapi';
import { ApiError } from './errors.ts';
import { errorResponse } from './middleware.ts';
import type { AppEnv } from './env.ts';

export { z };

export const ErrorSchema = z.object({
  error: z.object({
    code: z.enum(['invalid_input', 'unauthorized', 'forbidden', 'not_found', 'conflict', 'rebase_required', 'payload_too_large',
      'rate_limited', 'internal', 'unavailable', 'timeout']),
    message: z.string(),
    field: z.string().optional(),
  }).passthrough(),
}).openapi('Error');

const errorResponses = Object.fromEntries(
  [[400, 'invalid input (names the field)'], [401, 'missing or invalid token'], [403, 'not allowed'],
    [404, 'not found, or not a member'], [409, 'conflict or rebase_required (carries the current block; a conflict also base/theirs/mine per field)'], [413, 'payload too large'],
    [429, 'rate limited (Retry-After)']].map(([status, description]) => [
    status, { description: String(description), content: { 'application/json': { schema: ErrorSchema } } },
  ]),
);

/** A JSON success response plus the shared error responses. */
export function responses<S extends 200 | 201 | 204>(status: S, description: string, schema: z.ZodTypeAny = z.record(z.string(), z.unknown())) {
  const success = status === 204 ? { description } : { description, content: { 'application/json': { schema } } };
  return { ...errorResponses, [status]: success } as { [K in S]: { description: string; content: { 'application/json': { schema: z.ZodTypeAny } } } };
}

/** An OpenAPIHono whose validation failures answer invalid_input naming the field. */
export function createRouter() {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        const issue = result.error.issues[0];
        const field = issue?.path.join('.') || 'body';
        return errorResponse(c, new ApiError('invalid_input', `${field}: ${issue?.message ?? 'invalid'}`, { field }));
      }
      // the body itself passed the input policy when it was read (inputPolicy in middleware.ts)
    },
  });
}

export const bearerSecurity = [{ bearerAuth: [] }];
