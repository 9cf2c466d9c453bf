import { createRemoteJWKSet, decodeProtectedHeader, errors, jwtVerify, SignJWT, type JWTPayload } from 'jose';

/**
 * Supabase-style access tokens: HS256 signed with the project's JWT secret, or asymmetric keys
 * published as a JWKS (Supabase's signing keys) when a JWKS URL is configured. `alg: none`,
 * unknown algorithms, bad signatures, expired or not-yet-valid tokens and a wrong audience are
 * all rejected by jose before any claim is read.
 */
export type AuthConfig = { jwtSecret: string; jwksUrl?: string; audience: string; issuer?: string };

export type Claims = JWTPayload & { sub: string; role: string; email?: string; scope?: string | string[]; session_id?: string };

export class AuthError extends Error {
  constructor(message: string) {
    super(message);
  }
}

export function createVerifier(config: AuthConfig) {
  const secret = new TextEncoder().encode(config.jwtSecret);
  const jwks = config.jwksUrl ? createRemoteJWKSet(new URL(config.jwksUrl)) : undefined;
  return async function verify(token: string): Promise<Claims> {
    try {
      const header = decodeProtectedHeader(token);
      const options = { audience: config.audience, issuer: config.issuer, clockTolerance: 5 };
      const { payload } = header.alg === 'HS256' || !jwks
        ? await jwtVerify(token, secret, { ...options, algorithms: ['HS256'] })
        : await jwtVerify(token, jwks, { ...options, algorithms: ['RS256', 'ES256', 'EdDSA'] });
      if (typeof payload.sub !== 'string' || typeof payload.role !== 'string') throw new AuthError('token lacks sub or role');
      return payload as Claims;
    } catch (err) {
      if (err instanceof AuthError) throw err;
      if (err instanceof errors.JWTExpired) throw new AuthError('token expired: refresh it (POST /api/v1/auth/refresh)');
      if (err instanceof errors.JWTClaimValidationFailed) throw new AuthError(`token rejected: ${err.message}`);
      throw new AuthError('token is not a valid signed JWT');
    }
  };
}

/** Mints an HS256 access token (local development, tests, and H5 refresh). */
export async function signAccessToken(
  secret: string,
  claims: { sub: string; role?: string; email?: string; scope?: string | string[]; session_id?: string },
  opts: { expiresInSeconds?: number; audience?: string } = {},
): Promise<string> {
  return new SignJWT({ role: 'authenticated', ...claims })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt()
    .setExpirationTime(Math.floor(Date.now() / 1000) + (opts.expiresInSeconds ?? 3600))
    .setAudience(opts.audience ?? 'authenticated')
    .sign(new TextEncoder().encode(secret));
}
