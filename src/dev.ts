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
