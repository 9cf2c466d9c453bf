import type { Context, MiddlewareHandler } from 'hono';
import { Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { decodeJwt } from 'jose';
import type { TransactionSql } from 'postgres';
import { hashRefreshToken, newRefreshToken, openRefreshToken, sealRefreshToken } from '../../functions/auth.ts';
import { API_KEY_POLICY, HTTP_USER_POLICY, TokenError, type Claims } from '../auth/jwt.ts';
import { signSessionToken } from '../auth/session-token.ts';
import { DEV_JWT_SECRET } from '../config.ts';
import { presentValues } from '../env-values.ts';
import { singleQueryValues } from '../input-policy.ts';
import { isUuid } from '../uuid.ts';
import { withRequest } from '../db/request.ts';
import { ApiError, apiErrorFromDatabase, MUTATION_RETRY_NOTE } from './errors.ts';
import type { AppEnv, Deps } from './env.ts';
import { clientAddress, requestAuthorization, type ErrorAnswer } from './middleware.ts';

/**
 * Local Supabase Auth: the GoTrue endpoints supabase-js's `auth` uses for email + password, served
 * by `npm start` at /auth/v1, so `createClient(url, anonKey)` code runs unchanged against Supabase
 * and against the local server. ON SUPABASE, GoTrue ITSELF SERVES /auth/v1: this router is never
 * deployed there (it is not an edge function).
 *
 *   POST /signup                           {email, password, data?} → a session (or, with
 *                                          AUTH_EMAIL_CONFIRM=true, the unconfirmed user: no email is sent)
 *   POST /token?grant_type=password        {email, password} → a session
 *   POST /token?grant_type=refresh_token   {refresh_token} → a session (H5 rotation: the same
 *                                          family, reuse interval and reuse revocation; not H5's
 *                                          per-user limit but GoTrue's per-IP one, auth_refreshes_per_ip)
 *   POST /logout?scope=global|local|others (Bearer access token) → 204, revokes refresh tokens
 *   GET  /user, PUT /user {data?, password?} (Bearer access token) → the user
 *   GET  /settings                         what this server supports
 *
 * A session is GoTrue's AccessTokenResponse: {access_token, token_type: 'bearer', expires_in,
 * expires_at, refresh_token, user}; the access token carries GoTrue's claims (sub, aud, role
 * authenticated, email, phone, app_metadata, user_metadata, aal, amr, session_id, is_anonymous,
 * iss = JWT_ISSUER or <origin>/auth/v1) and is signed by src/auth/jwt.ts with the project's JWT
 * secret. Every rule lives in SQL (sql/auth/password.sql, sql/auth/refresh_tokens.sql); this file
 * reads requests and shapes answers.
 *
 * As on Supabase, every request needs an API key (`apikey` header or query parameter: the anon or
 * service_role key `npm start` prints); without one the answer is the gateway's 401 `{message, hint}`.
 * Errors have GoTrue's shapes, which auth-js turns into AuthApiError (status, code): with
 * `X-Supabase-Api-Version: 2024-01-01` (what supabase-js sends) `{code, message}` and the version
 * echoed, otherwise `{code: <status>, error_code, msg}`; weak passwords add `weak_password.reasons`.
 */

/**
 * What the environment says about local auth. AUTH_EMAIL_CONFIRM (default false): sign-ups must be
 * confirmed before signing in. `chosen`: whether it was set at all, which production requires
 * before it takes sign-ups (gotrueRoutes, signupClosed).
 */
export type GotrueSettings = { autoconfirm: boolean; chosen: boolean };

export function gotrueSettings(env: NodeJS.ProcessEnv = process.env): GotrueSettings {
  // blank (AUTH_EMAIL_CONFIRM= in an env file) is unset, as in loadConfig: the default
  const given = presentValues(env).AUTH_EMAIL_CONFIRM;
  const confirm = (given ?? 'false').toLowerCase();
  if (!['0', '1', 'true', 'false'].includes(confirm)) {
    throw new Error(`invalid environment: AUTH_EMAIL_CONFIRM: expected true or 1 (confirm), false or 0 (do not) (got ${JSON.stringify(given)})`);
  }
  return { autoconfirm: confirm === '0' || confirm === 'false', chosen: given !== undefined };
}

/**
 * Why sign-ups are refused, or undefined when they are taken. The local /auth/v1 sends no email,
 * so with confirmation off (AUTH_EMAIL_CONFIRM's default) a sign-up's address counts as confirmed
 * at once, proven or not: whoever holds the anon key (public: apps ship it) could sign up with an
 * address a workspace invited and join it in the invited role, or with a colleague's address and
 * be added when a workspace adds that address. Production therefore takes sign-ups only once the
 * operator has chosen: true (each address confirmed, `auth.users.email_confirmed_at`) or false
 * (that risk accepted). Development and tests keep the default, as `supabase start` does.
 */
export function signupClosed(env: Deps['config']['env'], settings: GotrueSettings): string | undefined {
  if (env !== 'production' || settings.chosen) return undefined;
  return 'Signups not allowed for this instance: set AUTH_EMAIL_CONFIRM on the server (true: each sign-up waits for '
    + 'its address to be confirmed; false: an address counts as confirmed at sign-up, unproven, and takes the workspace '
    + 'invites to it) (docs/self-hosting.md, "Environment reference")';
}

/** A refusal in GoTrue's terms: HTTP status, GoTrue error code, GoTrue's message. */
export class GotrueError extends Error {
  constructor(readonly status: number, readonly code: string, message: string,
              readonly extra: Record<string, unknown> = {}, readonly retryAfter?: number) {
    super(message);
  }
}

/** The HTTP status of each error code the SQL answers with (GoTrue's). */
const SQL_ERROR_STATUS: Record<string, number> = {
  validation_failed: 400, invalid_credentials: 400, email_not_confirmed: 400,
  weak_password: 422, user_already_exists: 422, same_password: 422,
  user_not_found: 403, session_not_found: 403,
};

const API_VERSION = '2024-01-01';
const NIL_UUID = '00000000-0000-0000-0000-000000000000';

type User = { id: string; email?: string; app_metadata?: unknown; user_metadata?: unknown; [k: string]: unknown };
type SqlResult = { error?: string; message?: string; reasons?: string[]; user?: User; session_id?: string };

export function gotrueRoutes(deps: Deps, settings: GotrueSettings = gotrueSettings()) {
  const app = new Hono<AppEnv>();
  const { auth } = deps.config;
  // the development profile relaxes the sign-in limits as it does the endpoint limits (docs/limits.md):
  // every local client shares one IP
  const relaxed = deps.config.profile === 'development';

  app.onError(gotrueErrorAnswer(deps));

  // Tokens signed with Supabase's published dev secret prove nothing: no sign-in in production without a real one.
  if (deps.config.env === 'production' && (auth.jwtSecret === '' || auth.jwtSecret === DEV_JWT_SECRET)) {
    app.all('*', () => {
      throw new GotrueError(404, 'not_found', 'local auth is off: set JWT_SECRET (it signs the access tokens), or use Supabase Auth');
    });
    return app;
  }

  app.use('*', requireApiKey(deps));

  /** One transaction as service_role (the only role the SQL functions admit), with the caller's IP and user agent. */
  const db = <T>(c: Context<AppEnv>, work: (tx: TransactionSql) => Promise<T>) => withRequest(deps.sql, {
    claims: { role: 'service_role' },
    headers: { 'x-forwarded-for': clientAddress(c, deps) ?? '', 'user-agent': c.req.header('user-agent') ?? '', 'x-request-id': c.get('requestId') },
    method: c.req.method, path: c.req.path,
  }, work);

  /** GoTrue's AccessTokenResponse for `user` in session `sessionId`. */
  async function session(c: Context<AppEnv>, user: User, sessionId: string, refreshToken: string, signedInAt: number) {
    const { token, expiresAt } = await signSessionToken(auth, { user, sessionId, signedInAt }, new URL(c.req.url).origin);
    return {
      access_token: token, token_type: 'bearer' as const, expires_in: expiresAt - Math.floor(Date.now() / 1000), expires_at: expiresAt,
      refresh_token: refreshToken, user,
    };
  }

  const closed = signupClosed(deps.config.env, settings);
  app.get('/settings', (c) => c.json({
    external: { email: true, phone: false, anonymous_users: false },
    disable_signup: closed !== undefined, mailer_autoconfirm: settings.autoconfirm, phone_autoconfirm: false, sms_provider: '', saml_enabled: false,
  }));

  app.post('/signup', async (c) => {
    if (closed !== undefined) throw new GotrueError(422, 'signup_disabled', closed);
    const body = await readBody(c);
    const email = optionalString(body, 'email');
    const password = optionalString(body, 'password');
    if (email && body.phone) throw validation('Only an email address or phone number should be provided on signup.');
    if (!email && body.phone) throw new GotrueError(400, 'phone_provider_disabled', 'Phone signups are disabled');
    // neither: an anonymous sign-up (supabase.auth.signInAnonymously), which /settings says is off
    if (!email) throw new GotrueError(422, 'anonymous_provider_disabled', 'Anonymous sign-ins are disabled');
    if (!password) throw validation('Signup requires a valid password');
    const data = body.data ?? null;
    const refreshToken = newRefreshToken();
    const result = await db(c, async (tx) => {
      const [row] = await tx`select internal.password_sign_up(${email ?? ''}, ${password}, ${data === null ? null : tx.json(data as never)}, ${settings.autoconfirm},
        ${clientAddress(c, deps) ?? ''}, ${hashRefreshToken(refreshToken)}, ${auth.refreshTtl}, ${relaxed}) as r`;
      return row!.r as SqlResult;
    });
    const user = succeeded(result);
    // not confirmed yet: GoTrue answers the user alone (supabase-js: data.session null)
    if (!result.session_id) return c.json(user);
    return c.json(await session(c, user, result.session_id, refreshToken, nowSeconds()));
  });

  app.post('/token', async (c) => {
    const grant = queryValue(c, 'grant_type');
    if (grant === 'password') return passwordGrant(c);
    if (grant === 'refresh_token') return refreshGrant(c);
    throw new GotrueError(400, 'invalid_credentials',
      `unsupported_grant_type: the local auth server supports grant_type=password and grant_type=refresh_token (got ${JSON.stringify(grant ?? '')})`);
  });

  async function passwordGrant(c: Context<AppEnv>) {
    const body = await readBody(c);
    const email = optionalString(body, 'email');
    const password = optionalString(body, 'password');
    if (email && body.phone) throw validation('Only an email address or phone number should be provided on login.');
    if (!email && body.phone) throw new GotrueError(422, 'phone_provider_disabled', 'Phone logins are disabled');
    if (!email) throw validation('missing email or phone');
    const refreshToken = newRefreshToken();
    const result = await db(c, async (tx) => {
      const [row] = await tx`select internal.password_sign_in(${email}, ${password ?? ''}, ${clientAddress(c, deps) ?? ''},
        ${hashRefreshToken(refreshToken)}, ${auth.refreshTtl}, ${relaxed}) as r`;
      return row!.r as SqlResult;
    });
    const user = succeeded(result);
    return c.json(await session(c, user, result.session_id!, refreshToken, nowSeconds()));
  }

  // H5's rotation (internal.rotate_refresh_token, the seal of functions/auth.ts), answered in GoTrue's words
  async function refreshGrant(c: Context<AppEnv>) {
    const body = await readBody(c);
    const presented = optionalString(body, 'refresh_token');
    if (!presented) return c.json({ error: 'invalid_request', error_description: 'refresh_token required' }, 400);
    const next = newRefreshToken();
    const oldHash = hashRefreshToken(presented);
    const { rotated, current } = await db(c, async (tx) => {
      const [row] = await tx`select internal.rotate_refresh_token(${oldHash}, ${hashRefreshToken(next)},
        ${sealRefreshToken(next, presented)}, ${auth.refreshTtl}, ${auth.refreshReuseInterval}) as r`;
      const rotated = row!.r as { user_id?: string; sealed_token?: string | null; swap?: boolean; error?: string };
      const [s] = rotated.error || !rotated.user_id ? [] : await tx`select internal.auth_refresh_session(${oldHash}) as s`;
      // GoTrue's per-IP refresh limit (internal.hit_refresh_limit), counted last in this transaction, once the rotation has
      // decided: a refusal (429) rolls the whole refresh back, so a live token stays live for its retry. Reuse is never
      // counted nor refused: its revocation of the family must commit. A resend answered by GoTrue's rule (the unused
      // successor handed back, or a swap within the reuse interval) is counted but never refused: refused, its retry came
      // later, after the interval or after the successor was used, and was reuse that revoked the sign-in. Everything
      // else, an unknown, revoked or expired token included (as GoTrue's limiter counts every request), can be refused.
      if (rotated.error !== 'reused') {
        const refuse = rotated.sealed_token === undefined && rotated.swap !== true;
        await tx`select internal.hit_refresh_limit(${clientAddress(c, deps) ?? ''}, ${refuse}, ${relaxed})`;
      }
      return { rotated, current: s?.s as { session_id: string; user: User | null; signed_in_at: number } | undefined };
    });
    if (rotated.error === 'reused') throw alreadyUsed();
    if (rotated.error || !current?.user) {
      throw new GotrueError(400, 'refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
    }
    // a resend while the successor its first use got is unused (at any age, as GoTrue): that successor, opened with the presented token
    const refreshToken = rotated.sealed_token === undefined ? next
      : rotated.sealed_token === null ? null : openRefreshToken(rotated.sealed_token, presented);
    if (refreshToken === null) throw alreadyUsed();
    return c.json(await session(c, current.user, current.session_id, refreshToken, Number(current.signed_in_at)));
  }

  app.get('/user', async (c) => {
    const claims = await bearer(c, deps);
    const result = await db(c, async (tx) => {
      const [row] = await tx`select internal.auth_session_user(${claims.sub}, ${sessionOf(claims)}) as r`;
      return row!.r as SqlResult;
    });
    return c.json(succeeded(result));
  });

  app.put('/user', async (c) => {
    const claims = await bearer(c, deps);
    const body = await readBody(c);
    const password = optionalString(body, 'password');
    const email = optionalString(body, 'email');
    if (body.app_metadata !== undefined && body.app_metadata !== null) {
      throw new GotrueError(403, 'not_admin', 'Updating app_metadata requires admin privileges');
    }
    if (email && email.toLowerCase() !== (claims.email ?? '').toLowerCase()) {
      throw validation('changing the email address is not supported by the local auth server (it sends no email); on Supabase, GoTrue does it');
    }
    if (optionalString(body, 'phone')) throw new GotrueError(422, 'phone_provider_disabled', 'Phone logins are disabled');
    const result = await db(c, async (tx) => {
      const [row] = await tx`select internal.auth_update_user(${claims.sub}, ${sessionOf(claims)},
        ${body.data == null ? null : tx.json(body.data as never)}, ${password ?? null}) as r`;
      return row!.r as SqlResult;
    });
    return c.json(succeeded(result));
  });

  app.post('/logout', async (c) => {
    const claims = await bearer(c, deps);
    const scope = queryValue(c, 'scope') || 'global';
    if (!['global', 'local', 'others'].includes(scope)) throw validation(`Unsupported logout scope ${JSON.stringify(scope)}`);
    await db(c, async (tx) => {
      const [row] = await tx`select internal.auth_session_user(${claims.sub}, ${sessionOf(claims)}) as r`;
      succeeded(row!.r as SqlResult);
      await tx`select internal.auth_sign_out(${claims.sub}, ${sessionOf(claims)}, ${scope})`;
    });
    return c.body(null, 204);
  });

  app.all('*', (c) => {
    // supabase.auth.admin (a seed script, a test's setup) gets the local way to make users: the
    // bare refusal left it with none
    const admin = /\/admin(\/|$)/.test(c.req.path)
      ? '. Locally, make a user with POST /auth/v1/signup (supabase.auth.signUp, confirmed unless AUTH_EMAIL_CONFIRM=true) ' +
        "or npx tsx scripts/token.ts --email E --password P, and read users from SQL (select id, email from auth.users)"
      : '';
    throw new GotrueError(404, 'not_found', `${c.req.method} ${c.req.path} is not served by the local auth server (email + password only: ` +
      `signup, token?grant_type=password|refresh_token, logout, user, settings); on Supabase, GoTrue serves it${admin}`);
  });
  return app;
}

/** Supabase's gateway in front of GoTrue: an API key (anon or service_role) in `apikey`, header or query. */
function requireApiKey(deps: Deps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    // the query is checked even when the header is there: a repeat is refused wherever it is sent
    const inQuery = queryValue(c, 'apikey');
    const key = c.req.header('apikey') ?? inQuery;
    if (!key) {
      return c.json({ message: 'No API key found in request',
        hint: 'No `apikey` request header or url param was found: send the anon key `npm start` prints (createClient(url, anonKey) does)' }, 401);
    }
    let ok = false;
    try {
      ok = (await deps.verify(key, API_KEY_POLICY)).sub === undefined;
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
    }
    if (!ok) return c.json({ message: 'Invalid API key', hint: 'Double check your anon or service_role API key (npm start prints them).' }, 401);
    await next();
  };
}

/** The signed-in user's access token (Authorization: Bearer), as GoTrue's requireAuthentication refuses others. */
async function bearer(c: Context<AppEnv>, deps: Deps): Promise<Claims> {
  const match = /^Bearer\s+(\S+)$/i.exec(requestAuthorization(c) ?? '');
  if (!match) throw new GotrueError(401, 'no_authorization', 'This endpoint requires a valid Bearer token');
  let claims: Claims;
  try {
    claims = await deps.verify(match[1]!, HTTP_USER_POLICY);
  } catch (err) {
    if (!(err instanceof TokenError)) throw err;
    if (err.code === 'keys_unavailable') {
      c.get('log')?.warn({ err: err.cause }, 'the JWKS could not be fetched: tokens signed by its keys are answered 503');
      throw new GotrueError(503, 'unexpected_failure', err.message, {}, 1);
    }
    if (err.code === 'user_required' && unverifiedSub(match[1]!) === undefined) {
      throw new GotrueError(403, 'bad_jwt', `invalid claim: missing sub claim (${err.message})`);
    }
    if (err.code === 'user_required' || err.code === 'invalid_subject') throw new GotrueError(403, 'bad_jwt', err.message);
    throw new GotrueError(403, 'bad_jwt', `invalid JWT: unable to parse or verify signature, ${err.message}`);
  }
  if (claims.session_id !== undefined && !(typeof claims.session_id === 'string' && isUuid(claims.session_id))) {
    throw new GotrueError(403, 'bad_jwt', 'invalid claim: session_id claim must be a UUID');
  }
  return claims;
}

/** The `sub` of a token already verified, to word a refusal only. */
function unverifiedSub(token: string): unknown {
  try {
    return decodeJwt(token).sub;
  } catch {
    return undefined;
  }
}

const sessionOf = (claims: Claims) => (claims.session_id && claims.session_id !== NIL_UUID ? claims.session_id : null);

/** The JSON object body (auth-js always sends one); read through the input policy (src/input-policy.ts). */
async function readBody(c: Context<AppEnv>): Promise<Record<string, unknown>> {
  let value: unknown;
  try {
    value = await c.req.json();
  } catch (err) {
    if (err instanceof ApiError && err.code === 'unsupported_media_type') throw err;
    if (err instanceof ApiError && err.details.field && err.details.field !== 'body') throw validation(err.message);
    throw new GotrueError(400, 'bad_json', `Could not parse request body as JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new GotrueError(400, 'bad_json', 'Could not parse request body as JSON: expected an object');
  }
  return value as Record<string, unknown>;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw validation(`${key} must be a string`);
  return value;
}

/** Query parameter `name` as one value; sent more than once, validation_failed naming it (singleQueryValues). */
function queryValue(c: Context, name: string): string | undefined {
  const read = singleQueryValues(new URL(c.req.url).searchParams, [name]);
  if (!('values' in read)) throw validation(read.message);
  return read.values[name] ?? undefined;
}

const validation = (message: string) => new GotrueError(400, 'validation_failed', message);
const alreadyUsed = () => new GotrueError(400, 'refresh_token_already_used', 'Invalid Refresh Token: Already Used');
const nowSeconds = () => Math.floor(Date.now() / 1000);

/** The user of a successful SQL result; a refusal becomes its GoTrueError. */
function succeeded(result: SqlResult): User {
  if (result.error) {
    throw new GotrueError(SQL_ERROR_STATUS[result.error] ?? 400, result.error, result.message ?? result.error,
      result.reasons ? { weak_password: { reasons: result.reasons } } : {});
  }
  return result.user!;
}


/**
 * How any error under /auth/v1 is answered: as GoTrue answers it (toGotrueError), also for what the
 * common middleware refuses before these routes run (createApp's `surfaces`).
 */
export function gotrueErrorAnswer(deps: Deps): ErrorAnswer {
  return (err, c) => errorResponse(c, toGotrueError(err, c, deps));
}

/** Any failure as a GoTrueError: database limits are 429 over_request_rate_limit, lost connections 503 (auth-js retries those). */
function toGotrueError(err: unknown, c: Context<AppEnv>, deps: Deps): GotrueError {
  if (err instanceof GotrueError) return err;
  const apiError = err instanceof ApiError ? err : apiErrorFromDatabase(err);
  if (apiError.code === 'rate_limited') {
    deps.metrics.rateLimited.inc({ endpoint: 'auth' });
    const retryAfter = typeof apiError.details.retry_after === 'number' ? apiError.details.retry_after : undefined;
    return new GotrueError(429, 'over_request_rate_limit', `Request rate limit reached: ${apiError.message}`, {}, retryAfter);
  }
  const mapped = gotrueErrorOf(apiError);
  if (mapped) return mapped;
  c.get('log')?.error({ err }, 'auth request failed');
  return new GotrueError(500, 'unexpected_failure', 'Unexpected failure, please check server logs for more information');
}

/**
 * The GoTrueError of an ApiError that is about the request or the database's state, not a fault
 * of this server (undefined for the others). `status` overrides the code's own: the one Node's
 * parser refusals are answered with (431, 408: src/server.ts).
 */
export function gotrueErrorOf(apiError: ApiError, status?: number): GotrueError | undefined {
  switch (apiError.code) {
    case 'invalid_input': return new GotrueError(status ?? 400, 'validation_failed', apiError.message);
    case 'payload_too_large': return new GotrueError(status ?? 413, 'request_too_large', apiError.message);
    case 'unsupported_media_type': return new GotrueError(status ?? 415, 'unsupported_media_type', apiError.message);
    case 'not_implemented': return new GotrueError(status ?? 501, 'not_implemented', apiError.message);
    // the cause as the API says it, without its note on resending mutations (there are none here)
    case 'unavailable': return new GotrueError(status ?? 503, 'unexpected_failure', apiError.message.replace(MUTATION_RETRY_NOTE, ''), {}, 1);
    case 'timeout': return new GotrueError(status ?? 504, 'request_timeout', apiError.message);
    default: return undefined;
  }
}

/**
 * `err` as GoTrue answers it to a client that sent X-Supabase-Api-Version `asked`: its headers and
 * JSON body (GoTrue's DetermineClosestAPIVersion: a dated version from 2024-01-01 on gets the newer
 * shape, {code, message}; otherwise the legacy {code: status, error_code, msg}).
 */
export function gotrueAnswer(err: GotrueError, asked: string | undefined): { headers: Record<string, string>; body: Record<string, unknown> } {
  const headers: Record<string, string> = { 'x-sb-error-code': err.code };
  if (err.retryAfter !== undefined) headers['Retry-After'] = String(err.retryAfter);
  if (asked && /^\d{4}-\d{2}-\d{2}$/.test(asked) && asked >= API_VERSION) {
    headers['X-Supabase-Api-Version'] = API_VERSION;
    return { headers, body: { code: err.code, message: err.message, ...err.extra } };
  }
  return { headers, body: { code: err.status, error_code: err.code, msg: err.message, ...err.extra } };
}

function errorResponse(c: Context, err: GotrueError) {
  const { headers, body } = gotrueAnswer(err, c.req.header('x-supabase-api-version'));
  for (const [name, value] of Object.entries(headers)) c.header(name, value);
  return c.json(body, err.status as ContentfulStatusCode);
}
