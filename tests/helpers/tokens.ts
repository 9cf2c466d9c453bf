import { SignJWT } from 'jose';
import { base64url } from './http.ts';

// Tokens with exactly the claims a test names (no defaults added): what Supabase Auth issues,
// what a project's API keys look like, and the broken variants the token policy must refuse.

export const now = () => Math.floor(Date.now() / 1000);

/** HS256-signs `claims` verbatim with `secret`. */
export function signClaims(secret: string, claims: Record<string, unknown>): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(new TextEncoder().encode(secret));
}

/** The claims of a Supabase Auth (GoTrue) access token for `userId`, expiring in an hour. */
export function userClaims(userId: string, opts: { audience?: string; issuer?: string } = {}): Record<string, unknown> {
  const iat = now();
  return {
    sub: userId, role: 'authenticated', aud: opts.audience ?? 'authenticated', iat, exp: iat + 3600,
    ...(opts.issuer !== undefined ? { iss: opts.issuer } : {}),
    session_id: '00000000-0000-4000-8000-000000000000', email: `${userId}@test.local`,
  };
}

/** A project API key (the legacy anon or service_role key): role, iss 'supabase', iat, exp; no sub, no aud. */
export function apiKey(secret: string, role: 'anon' | 'service_role', expiresInSeconds = 3600): Promise<string> {
  const iat = now();
  return signClaims(secret, { iss: 'supabase', ref: 'potentia-test', role, iat, exp: iat + expiresInSeconds });
}

/** `claims` under `alg: none`, with an empty signature. */
export function unsignedToken(claims: Record<string, unknown>): string {
  return `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claims)}.`;
}
