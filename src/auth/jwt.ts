import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { monotonicNow } from '../clock.ts';
import { isUuid } from '../uuid.ts';

/**
 * Access tokens: the one check for every surface that takes a token — the HTTP API (and its edge
 * functions), the H1 canvas socket (`/ws/canvas/{id}`), and realtime-js (connect `apikey`,
 * `phx_join` `access_token`, the `access_token` refresh event). Each surface states which tokens
 * it admits with a TokenPolicy; every other rule is the same everywhere.
 *
 * Claims follow Supabase Auth (GoTrue): a user's access token carries `sub` (the auth.users id, a
 * UUID), `role: 'authenticated'`, `aud: 'authenticated'`, `iss` (`https://<ref>.supabase.co/auth/v1`),
 * `iat`, `exp`, `session_id`, `email`. A project's legacy API keys (the anon and service_role keys)
 * are HS256 JWTs signed with the same secret carrying `role`, `iss: 'supabase'`, `iat` and `exp`,
 * but no `sub` and no `aud`.
 *
 * The rules:
 *  - signature: HS256 with the project's JWT secret (or, during a rotation, its secondary secret:
 *    JWT_SECONDARY_SECRET), or RS256/ES256/EdDSA with a key of the JWKS when one is configured
 *    (Supabase's asymmetric signing keys); `alg: none` and any other algorithm are refused;
 *  - `exp` is required (a token that never expires is refused); `exp` and `nbf` are checked with
 *    CLOCK_LEEWAY_SECONDS of tolerance, on every surface alike;
 *  - `role` is one of anon, authenticated, service_role, and one the surface's policy admits;
 *  - a token with `sub` (a user's token): `sub` is a UUID, `aud` includes the configured audience,
 *    and `iss` equals JWT_ISSUER when that is configured; a UUID in any case is admitted, and the
 *    verified claims carry it lower-cased (the canonical spelling every surface compares);
 *  - `role: 'authenticated'` needs a `sub`;
 *  - a token without `sub` is an API key: HS256 only, role anon or service_role, admitted only
 *    where the policy says `apiKeys: true` (realtime); an `aud`, if it carries one, must match too.
 *    JWT_ISSUER is not applied to it: the platform, not Auth, issues API keys.
 *
 * Which roles each surface admits (the policies below), and why service_role is not a user:
 *  - the HTTP API (H2–H6, A1–A8, search) and the H1 socket act for a signed-in user: `role:
 *    'authenticated'` only. A `service_role` token is refused there (401 `unauthorized`) with or
 *    without a `sub`: it is meant for trusted servers, and on Supabase it bypasses RLS. Running
 *    it as the user its `sub` names would let whoever holds the service key act as any user on
 *    endpoints whose `api` functions act for auth.uid(), and with RLS bypassed underneath. A
 *    trusted server calls Postgres (or PostgREST) itself with the service key instead; an HTTP
 *    endpoint made for servers would declare its own policy admitting service_role.
 *  - `anon` tokens are refused there too: these surfaces need a user.
 *  - realtime admits all three roles, as Supabase Realtime does: anon and authenticated are then
 *    decided by RLS on realtime.messages, service_role may join and send on any channel.
 *  - the local /auth/v1 (src/http/gotrue.ts) takes an API key as `apikey`, and a user's token
 *    (HTTP_USER_POLICY) as the bearer of /user and /logout; the access tokens it issues carry
 *    GoTrue's claims (session_id = the refresh-token family).
 */
/**
 * `jwtSecret` signs and verifies HS256 tokens ('' = none accepted); `secondaryJwtSecret` only
 * verifies: during a rotation it is the secret coming in (before every process signs with it) or
 * going out (until the tokens signed with it have expired). docs/self-hosting.md, "Rotating the
 * JWT secret".
 */
export type AuthConfig = { jwtSecret: string; secondaryJwtSecret?: string; jwksUrl?: string; audience: string; issuer?: string };

/** Seconds of clock skew tolerated on `exp` and `nbf` (jose's clockTolerance), the same on every surface. */
export const CLOCK_LEEWAY_SECONDS = 5;

export type Role = 'anon' | 'authenticated' | 'service_role';
const ROLES: readonly Role[] = ['anon', 'authenticated', 'service_role'];

/** What a verified token says: a user's token or an API key (no `sub`). */
export type TokenClaims = JWTPayload & {
  sub?: string; role: Role; exp: number; email?: string; scope?: string | string[]; session_id?: string;
};
/** A verified user's token: `sub` is the user's id. */
export type Claims = TokenClaims & { sub: string };

/** Which tokens a surface admits. */
export type TokenPolicy = { roles: readonly Role[]; apiKeys: boolean };

/** HTTP API endpoints: a signed-in user only (service_role acts for no user here: see the module docstring). */
export const HTTP_USER_POLICY = { roles: ['authenticated'], apiKeys: false } as const satisfies TokenPolicy;
/** H1 canvas socket: a signed-in user. */
export const H1_POLICY = { roles: ['authenticated'], apiKeys: false } as const satisfies TokenPolicy;
/** realtime-js connect, phx_join and access_token: users and API keys; RLS then decides private channels. */
export const REALTIME_POLICY = { roles: ROLES, apiKeys: true } as const satisfies TokenPolicy;
/** The `apikey` of the local /auth/v1 (src/http/gotrue.ts; Supabase's gateway checks it there): an
 *  API key, anon or service_role. The caller also requires that it names no user (no `sub`). */
export const API_KEY_POLICY = { roles: ['anon', 'service_role'], apiKeys: true } as const satisfies TokenPolicy;

export type TokenErrorCode =
  | 'invalid_token' // not a JWT, bad signature, or an algorithm that is not accepted
  | 'expired'
  | 'not_yet_valid'
  | 'missing_exp'
  | 'wrong_audience'
  | 'wrong_issuer'
  | 'invalid_subject'
  | 'invalid_role'
  | 'user_required' // valid, but this surface needs a signed-in user (API key, or a role it does not admit)
  // not a verdict on the token: the JWKS (SUPABASE_JWKS_URL) could not be fetched to check it (a
  // network error, a timeout, an answer other than 200 with a key set); HTTP answers 503, not 401
  | 'keys_unavailable';

/** A refused token: `code` is stable, `message` says what to do. */
export class TokenError extends Error {
  override readonly name = 'TokenError';
  constructor(readonly code: TokenErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
  }

  get expired(): boolean {
    return this.code === 'expired';
  }
}

const INVALID = 'token is not a valid signed JWT (HS256 with the project JWT secret, or a key of the project JWKS): '
  + 'send the access token a sign-in returned (POST /auth/v1/token?grant_type=password; locally also npx tsx scripts/token.ts)';

export interface VerifyToken {
  (token: string, policy: TokenPolicy & { apiKeys: true }): Promise<TokenClaims>;
  (token: string, policy: TokenPolicy & { apiKeys: false }): Promise<Claims>;
  (token: string, policy: TokenPolicy): Promise<TokenClaims>;
}

/** The token check of this module's docstring, for one project's auth settings; throws TokenError. */
export function createTokenVerifier(config: AuthConfig): VerifyToken {
  const secret = new TextEncoder().encode(config.jwtSecret);
  const secondary = config.secondaryJwtSecret ? new TextEncoder().encode(config.secondaryJwtSecret) : undefined;
  const jwks = config.jwksUrl ? keySetFetch(createRemoteJWKSet(new URL(config.jwksUrl))) : undefined;

  const verified = new VerifiedTokens();

  /** Signature, algorithm and time claims (jose), remembered for the next use of the same token. */
  async function signed(token: string): Promise<{ alg: string | undefined; payload: JWTPayload }> {
    try {
      const alg = decodeProtectedHeader(token).alg;
      if ((alg === 'HS256' || !jwks) && config.jwtSecret === '') {
        throw new TokenError('invalid_token', 'HS256 tokens are not accepted here: no JWT_SECRET is configured (only keys of SUPABASE_JWKS_URL)');
      }
      const options = { clockTolerance: CLOCK_LEEWAY_SECONDS, requiredClaims: ['exp'] };
      const { payload } = alg === 'HS256' || !jwks
        ? await jwtVerify(token, secret, { ...options, algorithms: ['HS256'] }).catch((err: unknown) => {
          // only a signature the current secret does not match is tried with the secondary one
          if (secondary && err instanceof errors.JWSSignatureVerificationFailed) return jwtVerify(token, secondary, { ...options, algorithms: ['HS256'] });
          throw err;
        })
        : await jwtVerify(token, jwks, { ...options, algorithms: ['RS256', 'ES256', 'EdDSA'] }).catch((err: unknown) => {
          throw keysUnavailable(err) ? new TokenError('keys_unavailable', KEYS_UNAVAILABLE, { cause: err }) : err;
        });
      // one user, one spelling: a UUID `sub` in upper or mixed case (an issuer's choice; uuid_in
      // reads it as the same user) is handed on as PostgreSQL prints it. Every surface compares
      // the user by this text: the gateway matched the database's access_changed {user_id}
      // (canonical) against it, and a removed member whose token spelled its id in upper case
      // was never re-checked, and kept receiving the canvas on realtime-js and H1
      if (typeof payload.sub === 'string' && isUuid(payload.sub)) payload.sub = payload.sub.toLowerCase();
      return verified.add(token, alg, payload);
    } catch (err) {
      throw fromJose(err);
    }
  }

  async function verify(token: string, policy: TokenPolicy): Promise<TokenClaims> {
    const { alg, payload } = verified.get(token) ?? await signed(token);
    const role = payload.role;
    if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
      throw new TokenError('invalid_role', `token role must be one of ${ROLES.join(', ')}`);
    }
    const sub = payload.sub;
    if (sub === undefined || sub === '') {
      if (role === 'authenticated') throw new TokenError('invalid_subject', 'an authenticated token needs a sub (the user id)');
      if (!policy.apiKeys) {
        throw new TokenError('user_required', "a signed-in user's token is required here: an API key (anon, service_role) names no user. " +
          'Sign in first (supabase.auth.signInWithPassword, i.e. POST /auth/v1/token?grant_type=password) and send its access_token');
      }
      if (alg !== 'HS256') throw new TokenError('invalid_token', INVALID);
      if (payload.aud !== undefined && !hasAudience(payload.aud, config.audience)) throw wrongAudience(config.audience);
    } else {
      if (typeof sub !== 'string' || !isUuid(sub)) throw new TokenError('invalid_subject', 'token subject (sub) is not a user id (a UUID)');
      if (!hasAudience(payload.aud, config.audience)) throw wrongAudience(config.audience);
      if (config.issuer !== undefined && payload.iss !== config.issuer) {
        throw new TokenError('wrong_issuer', `token issuer (iss) must be ${JSON.stringify(config.issuer)}`);
      }
    }
    if (!policy.roles.includes(role as Role)) {
      throw new TokenError('user_required', role === 'service_role'
        ? "a signed-in user's token is required here: a service_role token acts for no user (trusted servers call the database with it directly)"
        : `a signed-in user's token is required here (role ${JSON.stringify(role)} is not accepted)`);
    }
    return payload as TokenClaims;
  }
  return verify as VerifyToken;
}

/**
 * Tokens whose signature and claims jose accepted, by their exact text (signature included, so
 * no other text can hit an entry): a client sends the same access token with every request, and
 * checking an HS256 signature again costs more than the rest of a small request's
 * authentication. The time claims are checked again on each use, as jose checks them (`exp`,
 * `nbf`, CLOCK_LEEWAY_SECONDS): a token outside its validity is dropped here and verified afresh,
 * which throws jose's error. An entry lives at most MAX_AGE_SECONDS, as long as jose keeps a
 * JWKS's keys, so a key removed from the JWKS stops admitting its tokens no later than before.
 */
class VerifiedTokens {
  static readonly MAX_ENTRIES = 10_000;
  static readonly MAX_AGE_SECONDS = 600;
  /** until: when an entry is verified again, on the monotonic clock (src/clock.ts; exp and nbf are the wall clock's) */
  private readonly entries = new Map<string, { alg: string | undefined; payload: JWTPayload; until: number }>();

  get(token: string): { alg: string | undefined; payload: JWTPayload } | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    const now = Math.floor(Date.now() / 1000); // jose's clock: whole seconds
    const { exp, nbf } = entry.payload;
    if (monotonicNow() < entry.until && typeof exp === 'number' && exp > now - CLOCK_LEEWAY_SECONDS
      && (typeof nbf !== 'number' || nbf <= now + CLOCK_LEEWAY_SECONDS)) return entry;
    this.entries.delete(token);
    return undefined;
  }

  add(token: string, alg: string | undefined, payload: JWTPayload): { alg: string | undefined; payload: JWTPayload } {
    // oldest first out: Map keeps insertion order
    if (this.entries.size >= VerifiedTokens.MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    // shared by every request that sends this token: nobody may change it, nor what it holds
    // (deeply frozen: src/db/request.ts then keeps the claims' JSON text with the object)
    const entry = { alg, payload: deepFreeze(payload), until: monotonicNow() + VerifiedTokens.MAX_AGE_SECONDS * 1000 };
    this.entries.set(token, entry);
    return entry;
  }
}

/** `value` and every object it holds, frozen (a token's payload: plain JSON data). */
function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

function hasAudience(aud: unknown, audience: string): boolean {
  return aud === audience || (Array.isArray(aud) && aud.includes(audience));
}

function wrongAudience(audience: string): TokenError {
  return new TokenError('wrong_audience', `token audience (aud) must include ${JSON.stringify(audience)}`);
}

/** TokenError keys_unavailable's message (keysUnavailable). */
const KEYS_UNAVAILABLE = 'the signing keys (SUPABASE_JWKS_URL) could not be fetched to verify this token: retry shortly';

/** The key set's fetch failed (DNS, a refused or reset connection): fetch's TypeError, as thrown out of the key set (keySetFetch). */
class KeySetFetchFailed extends Error {}

/**
 * jose's remote key set, its TypeErrors as KeySetFetchFailed: fetch throws a TypeError when the
 * request fails (its message differs by runtime: Node's 'fetch failed', Deno's 'error sending
 * request…'), and jose has TypeErrors of its own for what it judges (a key or token of the wrong
 * shape), so only those out of the key set are its fetch's.
 */
function keySetFetch(remote: ReturnType<typeof createRemoteJWKSet>): JWTVerifyGetKey {
  return async (header, token) => {
    try {
      return await remote(header, token);
    } catch (err) {
      throw err instanceof TypeError ? new KeySetFetchFailed(err.message, { cause: err }) : err;
    }
  };
}

/**
 * Whether jose failed to fetch the JWKS, rather than judged the token: its timeout, an answer
 * other than 200 or not a key set (a proxy's error page), or the fetch itself (DNS, a refused or
 * reset connection: KeySetFetchFailed). The token may be valid; telling its client 401 (as these
 * were) tells it its session is over.
 */
function keysUnavailable(err: unknown): boolean {
  return err instanceof errors.JWKSTimeout || err instanceof errors.JWKSInvalid || err instanceof KeySetFetchFailed
    || (err instanceof errors.JOSEError && err.code === 'ERR_JOSE_GENERIC' && /JSON Web Key Set HTTP response/.test(err.message));
}

/** jose's failure as a TokenError: expiry and time claims by name, anything else is an invalid token. */
function fromJose(err: unknown): TokenError {
  if (err instanceof TokenError) return err;
  if (err instanceof errors.JWTExpired) {
    const exp = (err.payload as { exp?: unknown }).exp;
    const ago = typeof exp === 'number' ? Math.max(0, Math.floor(Date.now() / 1000) - exp) : 0;
    // Supabase Realtime's wording (realtime-js surfaces it as is), plus what to do about it
    return new TokenError('expired', `Token has expired ${ago} seconds ago: refresh it (POST /auth/v1/token?grant_type=refresh_token, or H5 POST /api/v1/auth/refresh)`);
  }
  if (err instanceof errors.JWTClaimValidationFailed) {
    if (err.claim === 'exp' && err.reason === 'missing') return new TokenError('missing_exp', 'token has no exp claim: tokens must expire');
    if (err.claim === 'nbf' && err.reason === 'check_failed') return new TokenError('not_yet_valid', 'token is not valid yet (nbf is in the future)');
  }
  return new TokenError('invalid_token', INVALID);
}

/** Mints an HS256 access token (local development, tests, H5 refresh and the local /auth/v1, which adds GoTrue's other claims). */
export async function signAccessToken(
  secret: string,
  claims: { sub: string; role?: string; email?: string; scope?: string | string[]; session_id?: string; [claim: string]: unknown },
  opts: { expiresInSeconds?: number; audience?: string; issuer?: string } = {},
): Promise<string> {
  const jwt = new SignJWT({ role: 'authenticated', ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (opts.expiresInSeconds ?? 3600))
    .setAudience(opts.audience ?? 'authenticated');
  if (opts.issuer !== undefined) jwt.setIssuer(opts.issuer);
  return jwt.sign(new TextEncoder().encode(secret));
}
