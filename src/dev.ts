import { SignJWT } from 'jose';
import { signAccessToken } from './auth/jwt.ts';
import type { Config } from './config.ts';

/** The demo rows supabase/seed.sql creates. */
export const DEMO = {
  userId: '00000000-0000-4000-8000-00000000d001',
  email: 'demo@potentia.local',
  workspaceId: '00000000-0000-4000-8000-00000000d002',
  canvasId: '00000000-0000-4000-8000-00000000d003',
} as const;

/** A dev access token (never in production: tokens there come from Supabase Auth). */
export async function devToken(config: Config, user: { sub: string; email?: string; scope?: string }, ttlSeconds = 24 * 3600) {
  if (config.env === 'production') throw new Error('refusing to mint tokens in production');
  return signAccessToken(config.auth.jwtSecret, user, { expiresInSeconds: ttlSeconds, audience: config.auth.audience });
}

/** 2032-11-12: the expiry the Supabase CLI gives its local API keys. */
const API_KEY_EXP = 1983812996;

/**
 * The project's API keys for local use, as the Supabase CLI prints them: HS256 JWTs signed with the
 * JWT secret, `{iss: 'supabase-demo', role, exp}`, no `sub`. With Supabase's local dev secret (the
 * default when JWT_SECRET is unset) they are byte for byte the CLI's well-known demo keys, so
 * `createClient(url, anonKey)` code written against `supabase start` works unchanged. Never in production.
 */
export async function apiKeys(config: Config): Promise<{ anon: string; service_role: string }> {
  if (config.env === 'production') throw new Error('refusing to mint API keys in production: use your project\'s keys');
  const key = new TextEncoder().encode(config.auth.jwtSecret);
  const sign = (role: 'anon' | 'service_role') =>
    new SignJWT({ iss: 'supabase-demo', role, exp: API_KEY_EXP }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' }).sign(key);
  return { anon: await sign('anon'), service_role: await sign('service_role') };
}
