import { createRoute } from '@hono/zod-openapi';
import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { signSessionToken, type SessionUser } from '../src/auth/session-token.ts';
import { withRequest } from '../src/db/request.ts';
import { ApiError, apiErrorFromDatabase } from '../src/http/errors.ts';
import type { Deps } from '../src/http/env.ts';
import { createRouter, responses, z } from '../src/http/openapi.ts';
import { TokenPair } from '../src/http/schemas.ts';

/**
 * H5 refresh-token rotation, mounted at /api/v1/auth (the `auth` edge function). Rotation and
 * reuse detection happen in SQL (internal.rotate_refresh_token, GoTrue's rule): each use yields a
 * new refresh token. A rotated token presented again while the token its rotation gave is still the
 * sign-in's active one (two tabs refreshing at once, a retry after a lost response) gets that same
 * token, at any age; otherwise, within REFRESH_TOKEN_REUSE_INTERVAL_SECONDS of its rotation, a new
 * token of the sign-in; later, it revokes its whole family. Only hashes are stored, so each new
 * token is also stored sealed under a key derived from the token it replaces: only that token's
 * holder can open it.
 */
export const hashRefreshToken = (token: string) => createHash('sha256').update(token).digest('hex');
export const newRefreshToken = () => randomBytes(32).toString('base64url');

const SEAL_LABEL = 'potentia refresh-token seal v1';
const sealKey = (parentToken: string) => createHmac('sha256', parentToken).update(SEAL_LABEL).digest();

/** `token` sealed (AES-256-GCM) under a key derived from `parentToken`: base64url of iv, tag, ciphertext. */
export function sealRefreshToken(token: string, parentToken: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', sealKey(parentToken), iv);
  const body = Buffer.concat([cipher.update(token, 'utf8'), cipher.final()]);
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url');
}

/** Opens a sealRefreshToken value with the parent token; null when it does not open (wrong token, damaged). */
export function openRefreshToken(sealed: string, parentToken: string): string | null {
  const raw = Buffer.from(sealed, 'base64url');
  if (raw.length <= 28) return null;
  try {
    const decipher = createDecipheriv('aes-256-gcm', sealKey(parentToken), raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
  } catch {
    return null;
  }
}

const refresh = createRoute({
  method: 'post', path: '/refresh', operationId: 'refreshToken', tags: ['auth'],
  summary: 'H5: exchange a refresh token for a new access token and refresh token',
  request: { body: { content: { 'application/json': { schema: z.object({ refresh_token: z.string().min(20).max(200) }).strict() } }, required: true } },
  responses: responses(200, 'a new token pair', TokenPair),
});

/** The session a refresh token belongs to (internal.auth_refresh_session: its family, user and sign-in time). */
type RefreshSession = { session_id: string; user: SessionUser | null; signed_in_at: number };

/** Issues a first token pair for a user, a new session (sign-in is /auth/v1's job; this serves dev and tests). */
export async function issueTokenPair(deps: Deps, user: { id: string }) {
  const refreshToken = newRefreshToken();
  const hash = hashRefreshToken(refreshToken);
  const session = await withRequest(deps.sql, { claims: { role: 'service_role' } }, async (tx) => {
    await tx`select internal.issue_refresh_token(${user.id}, ${hash}, ${deps.config.auth.refreshTtl})`;
    const [row] = await tx`select internal.auth_refresh_session(${hash}) as s`;
    return row!.s as RefreshSession | null; // null: no such user (issue_refresh_token stored nothing)
  });
  return tokenPair(deps, session, refreshToken);
}

/** H5's answer: the session's access token as /auth/v1 mints it (src/auth/session-token.ts), and the refresh token. */
async function tokenPair(deps: Deps, session: RefreshSession | null, refreshToken: string, origin?: string) {
  if (!session?.user) throw new ApiError('unauthorized', 'refresh token is invalid or expired: sign in again');
  const { token } = await signSessionToken(deps.config.auth,
    { user: session.user, sessionId: session.session_id, signedInAt: Number(session.signed_in_at) }, origin);
  return { access_token: token, refresh_token: refreshToken, token_type: 'bearer' as const, expires_in: deps.config.auth.accessTtl };
}

export function authRoutes(deps: Deps) {
  const app = createRouter();
  // no secret to sign with (production with SUPABASE_JWKS_URL alone): a refresh would rotate the
  // token in SQL and then fail to mint the access token. Refused first, as /auth/v1 is (gotrue.ts)
  if (deps.config.auth.jwtSecret === '') {
    app.all('*', () => {
      throw new ApiError('not_found', 'H5 refresh is off: no JWT_SECRET is configured to sign access tokens (SUPABASE_JWKS_URL only verifies them): '
        + 'set JWT_SECRET, or refresh with Supabase Auth (supabase.auth.refreshSession)');
    });
    return app;
  }
  app.openapi(refresh, async (c) => {
    const { refresh_token } = c.req.valid('json');
    const next = newRefreshToken();
    const oldHash = hashRefreshToken(refresh_token);
    let result: { user_id?: string; email?: string; sealed_token?: string | null; swap?: boolean; error?: string; session?: RefreshSession };
    try {
      result = await withRequest(deps.sql, { claims: { role: 'service_role' }, headers: { 'x-request-id': c.get('requestId') } },
        async (tx) => {
          const { refreshTtl, refreshReuseInterval } = deps.config.auth;
          const [row] = await tx`select internal.rotate_refresh_token(${oldHash}, ${hashRefreshToken(next)},
            ${sealRefreshToken(next, refresh_token)}, ${refreshTtl}, ${refreshReuseInterval}) as r`;
          // the limit (app.endpoint_limits 'H5', 1 per 30 s, a row the migrations make) applies per user, like every endpoint limit, and
          // only to the rotation of a live token that succeeded: a reused token must always reach rotate_refresh_token (which revokes its
          // family), never a 429 first. A rejection rolls the rotation back: the presented token stays live for the retry,
          // which no interval can turn into reuse. A used token resent is answered by GoTrue's rule and is not counted:
          // one whose successor is unused gets that successor (sealed_token), or the second of two concurrent refreshes
          // would be told 429; one within the reuse interval gets another token of the sign-in (swap), which was counted
          // until 2026-12-07: its 429's Retry-After (up to 30 s) outlasted the interval (10 s), so the client's resend
          // was reuse and signed the user out. A swap only answers a token used within the interval, and a loop of them
          // ends in reuse when the interval does; a loop of live rotations is still held to 1 per 30 s.
          if (!row!.r.error && row!.r.user_id && row!.r.sealed_token === undefined && row!.r.swap !== true) {
            await tx`select set_config('request.jwt.claims', ${JSON.stringify({ role: 'service_role', sub: row!.r.user_id })}, true)`;
            await tx`select api.hit_endpoint_limit('H5', ${deps.config.profile === 'development'})`;
          }
          if (row!.r.error || !row!.r.user_id) return row!.r;
          const [s] = await tx`select internal.auth_refresh_session(${oldHash}) as s`;
          return { ...row!.r, session: s!.s as RefreshSession };
        });
    } catch (err) {
      const apiError = apiErrorFromDatabase(err);
      if (apiError.code === 'rate_limited') deps.metrics.rateLimited.inc({ endpoint: 'H5' });
      throw apiError;
    }
    if (result.error === 'reused') {
      throw new ApiError('unauthorized', 'refresh token was already used: every session of this sign-in is revoked, sign in again');
    }
    if (result.error || !result.user_id || !result.session) throw new ApiError('unauthorized', 'refresh token is invalid or expired: sign in again');
    // a retry while the successor its first use got is unused (at any age, as GoTrue): that successor, opened with the presented token
    const refreshToken = result.sealed_token === undefined ? next
      : result.sealed_token === null ? null : openRefreshToken(result.sealed_token, refresh_token);
    if (refreshToken === null) throw new ApiError('unauthorized', 'refresh token was already used: use the newest refresh token, or sign in again');
    return c.json(await tokenPair(deps, result.session, refreshToken, new URL(c.req.url).origin), 200);
  });
  return app;
}
