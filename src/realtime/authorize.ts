import type { Sql } from 'postgres';
import { createVerifier, type AuthConfig } from '../auth/jwt.ts';
import { errors, jwtVerify, decodeProtectedHeader, type JWTPayload } from 'jose';

/**
 * Channel authorization the way Supabase Realtime does it: inside a transaction that is always
 * rolled back, set `role`, `request.jwt.claims` and `realtime.topic` locally, then probe
 * realtime.messages under RLS — a SELECT decides whether the caller may join (read) the topic, an
 * INSERT whether it may send (write). The policies in sql/realtime/policies.sql decide; this file
 * only asks.
 */
export type SocketClaims = JWTPayload & { sub?: string; role: string; scope?: string | string[] };

const ROLES = new Set(['anon', 'authenticated', 'service_role']);
const ROLLBACK = Symbol('rollback');

export async function mayAccessTopic(sql: Sql, claims: SocketClaims, topic: string, access: 'read' | 'write', extension: 'broadcast' | 'presence' = 'broadcast'): Promise<boolean> {
  if (claims.role === 'service_role') return true;
  if (!ROLES.has(claims.role)) return false;
  let allowed = false;
  try {
    await sql.begin(async (tx) => {
      await tx`select set_config('request.jwt.claims', ${JSON.stringify(claims)}, true),
                      set_config('realtime.topic', ${topic}, true),
                      set_config('statement_timeout', '5000', true)`;
      if (access === 'read') {
        // a row of this topic, written by the session's login role (no policy applies to it) ...
        await tx`insert into realtime.messages (topic, extension, event, payload, private)
                 values (${topic}, ${extension}, 'authorization_probe', '{}'::jsonb, true)`;
        // ... then read back as the caller: visible only if the select policy admits the caller
        await tx`select set_config('role', ${claims.role}, true)`;
        const rows = await tx`select 1 from realtime.messages
                              where topic = ${topic} and event = 'authorization_probe' limit 1`;
        allowed = rows.length > 0;
      } else {
        await tx`select set_config('role', ${claims.role}, true)`;
        try {
          await tx`insert into realtime.messages (topic, extension, event, payload, private)
                   values (${topic}, ${extension}, 'authorization_probe', '{}'::jsonb, true)`;
          allowed = true;
        } catch (err) {
          if ((err as { code?: string }).code !== '42501') throw err; // RLS / privilege refusal
        }
      }
      throw ROLLBACK; // nothing of the probe survives
    });
  } catch (err) {
    if (err !== ROLLBACK) throw err;
  }
  return allowed;
}

export class TokenError extends Error {
  constructor(message: string, readonly expired = false) {
    super(message);
  }
}

/**
 * Verifies a socket token (the `apikey` of the connection or a channel's `access_token`). Like
 * src/auth/jwt.ts, but an `anon` key without `sub` is accepted (it may join public channels).
 * User tokens go through createVerifier itself.
 */
export function createSocketVerifier(config: AuthConfig) {
  const verifyUser = createVerifier(config);
  const secret = new TextEncoder().encode(config.jwtSecret);
  return async function verifySocketToken(token: string): Promise<SocketClaims> {
    try {
      return (await verifyUser(token)) as SocketClaims;
    } catch (err) {
      const message = (err as Error).message;
      if (message.startsWith('token expired')) throw new TokenError(expiredMessage(token), true);
      if (message !== 'token lacks sub or role') throw new TokenError(message);
    }
    // a key without sub: accept only a signed HS256 `anon` (or service_role) key
    try {
      if (decodeProtectedHeader(token).alg !== 'HS256') throw new TokenError('token lacks sub');
      const { payload } = await jwtVerify(token, secret, { algorithms: ['HS256'], clockTolerance: 5, issuer: config.issuer });
      if (payload.role !== 'anon' && payload.role !== 'service_role') throw new TokenError('token lacks sub or role');
      return payload as SocketClaims;
    } catch (err) {
      if (err instanceof TokenError) throw err;
      if (err instanceof errors.JWTExpired) throw new TokenError(expiredMessage(token), true);
      throw new TokenError('token is not a valid signed JWT');
    }
  };
}

function expiredMessage(token: string): string {
  try {
    const body = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { exp?: number };
    if (typeof body.exp === 'number') return `Token has expired ${Math.max(0, Math.floor(Date.now() / 1000) - body.exp)} seconds ago`;
  } catch {
    /* fall through */
  }
  return 'Token has expired';
}
