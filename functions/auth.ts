import { createRoute } from '@hono/zod-openapi';
import { createHash, randomBytes } from 'node:crypto';
import { signAccessToken } from '../src/auth/jwt.ts';
import { withRequest } from '../src/db/request.ts';
import { ApiError, apiErrorFromDatabase } from '../src/http/errors.ts';
import type { Deps } from '../src/http/env.ts';
import { createRouter, responses, z } from '../src/http/openapi.ts';

/**
 * H5 refresh-token rotation, mounted at /api/v1/auth (the `auth` edge function). Rotation and
 * reuse detection happen in SQL (internal.rotate_refresh_token): each use yields a new refresh
 * token; presenting a rotated one revokes its whole family.
 */
export const hashRefreshToken = (token: string) => createHash('sha256').update(token).digest('hex');
export const newRefreshToken = () => randomBytes(32).toString('base64url');

const TokenPair = z.object({
  access_token: z.string(), refresh_token: z.string(), token_type: z.literal('bearer'), expires_in: z.number(),
}).openapi('TokenPair');

const refresh = createRoute({
  method: 'post', path: '/refresh', summary: 'H5: exchange a refresh token for a new access token and refresh token',
  request: { body: { content: { 'application/json': { schema: z.object({ refresh_token: z.string().min(20).max(200) }).strict() } }, required: true } },
  responses: responses(200, 'a new token pair', TokenPair),
});

/** Issues a first token pair for a user (sign-in is Supabase Auth's job; this serves dev and tests). */
export async function issueTokenPair(deps: Deps, user: { id: string; email?: string | null }) {
  const refreshToken = newRefreshToken();
  await withRequest(deps.sql, { claims: { role: 'service_role' } }, (tx) =>
    tx`select internal.issue_refresh_token(${user.id}, ${hashRefreshToken(refreshToken)}, ${deps.config.auth.refreshTtl})`);
  return tokenPair(deps, user, refreshToken);
}

async function tokenPair(deps: Deps, user: { id: string; email?: string | null }, refreshToken: string) {
  const access = await signAccessToken(deps.config.auth.jwtSecret, { sub: user.id, email: user.email ?? undefined },
    { expiresInSeconds: deps.config.auth.accessTtl, audience: deps.config.auth.audience });
  return { access_token: access, refresh_token: refreshToken, token_type: 'bearer' as const, expires_in: deps.config.auth.accessTtl };
}

export function authRoutes(deps: Deps) {
  const app = createRouter();
  app.openapi(refresh, async (c) => {
    const { refresh_token } = c.req.valid('json');
    const next = newRefreshToken();
    const oldHash = hashRefreshToken(refresh_token);
    let result: { user_id?: string; email?: string; error?: string };
    try {
      result = await withRequest(deps.sql, { claims: { role: 'service_role' }, headers: { 'x-request-id': c.get('requestId') } },
        async (tx) => {
          const [row] = await tx`select internal.rotate_refresh_token(${oldHash}, ${hashRefreshToken(next)}, ${deps.config.auth.refreshTtl}) as r`;
          // the seed's limit (app.endpoint_limits 'H5', 1 per 30 s) applies per user, like every endpoint limit, and
          // only to a rotation that succeeded: a reused token must always reach rotate_refresh_token (which revokes its
          // family), never a 429 first. A rejection rolls the rotation back: the presented token stays valid for the retry.
          if (!row!.r.error && row!.r.user_id) {
            await tx`select set_config('request.jwt.claims', ${JSON.stringify({ role: 'service_role', sub: row!.r.user_id })}, true)`;
            await tx`select api.hit_endpoint_limit('H5')`;
          }
          return row!.r;
        });
    } catch (err) {
      const apiError = apiErrorFromDatabase(err);
      if (apiError.code === 'rate_limited') deps.metrics.rateLimited.inc({ endpoint: 'H5' });
      throw apiError;
    }
    if (result.error === 'reused') {
      throw new ApiError('unauthorized', 'refresh token was already used: every session of this sign-in is revoked, sign in again');
    }
    if (result.error || !result.user_id) throw new ApiError('unauthorized', 'refresh token is invalid or expired: sign in again');
    return c.json(await tokenPair(deps, { id: result.user_id, email: result.email }, next), 200);
  });
  return app;
}
