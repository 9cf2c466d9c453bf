import { z } from 'zod';

// Supabase's well-known local-development secret: used only when JWT_SECRET is unset outside
// production, so `npm start` works out of the box; production refuses to start without one.
export const DEV_JWT_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';

/** Everything Potentia reads from the environment, validated once at start-up. */
const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  DATABASE_URL: z.string().url().default('postgres://postgres:postgres@127.0.0.1:5432/potentia'),
  TEST_DATABASE_URL: z.string().url().optional(),
  HOST: z.string().default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(54321),
  DB_POOL_MAX: z.coerce.number().int().min(1).default(10),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  JWT_SECRET: z.string().min(32).optional(),
  JWT_AUDIENCE: z.string().default('authenticated'),
  JWT_ISSUER: z.string().optional(),
  SUPABASE_JWKS_URL: z.string().url().optional(),
  ACCESS_TOKEN_TTL_SECONDS: z.coerce.number().int().min(60).default(3600),
  REFRESH_TOKEN_TTL_SECONDS: z.coerce.number().int().min(60).default(30 * 24 * 3600),
  INTERNAL_TOKEN: z.string().min(16).optional(),
  DEBUG_ECHO: z.enum(['0', '1', 'true', 'false']).default('0'),
  MAX_BODY_BYTES: z.coerce.number().int().min(1024).default(256 * 1024),
  TRUST_PROXY: z.enum(['0', '1', 'true', 'false']).default('0'),
});

export type Config = {
  env: 'development' | 'test' | 'production';
  databaseUrl: string;
  host: string;
  port: number;
  dbPoolMax: number;
  logLevel: z.infer<typeof EnvSchema>['LOG_LEVEL'];
  auth: { jwtSecret: string; audience: string; issuer?: string; jwksUrl?: string; accessTtl: number; refreshTtl: number };
  /** Bearer token that opens /metrics (and /debug/echo) to non-loopback callers; unset = loopback only. */
  internalToken?: string;
  debugEcho: boolean;
  maxBodyBytes: number;
  /** Take the client IP from X-Forwarded-For (only behind a proxy that sets it). */
  trustProxy: boolean;
};

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid environment: ${problems}`);
  }
  const e = parsed.data;
  if (e.NODE_ENV === 'production' && !e.JWT_SECRET && !e.SUPABASE_JWKS_URL) {
    throw new Error('JWT_SECRET (or SUPABASE_JWKS_URL) must be set in production: it is your Supabase project JWT secret');
  }
  return {
    env: e.NODE_ENV,
    databaseUrl: e.DATABASE_URL,
    host: e.HOST,
    port: e.PORT,
    dbPoolMax: e.DB_POOL_MAX,
    logLevel: e.LOG_LEVEL,
    auth: {
      jwtSecret: e.JWT_SECRET ?? DEV_JWT_SECRET,
      audience: e.JWT_AUDIENCE,
      issuer: e.JWT_ISSUER,
      jwksUrl: e.SUPABASE_JWKS_URL,
      accessTtl: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTtl: e.REFRESH_TOKEN_TTL_SECONDS,
    },
    internalToken: e.INTERNAL_TOKEN,
    debugEcho: (e.DEBUG_ECHO === '1' || e.DEBUG_ECHO === 'true') && e.NODE_ENV !== 'production',
    maxBodyBytes: e.MAX_BODY_BYTES,
    trustProxy: e.TRUST_PROXY === '1' || e.TRUST_PROXY === 'true',
  };
}

/** The test database: TEST_DATABASE_URL, or DATABASE_URL's server with database `potentia_test`. */
export function testDatabaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TEST_DATABASE_URL) return env.TEST_DATABASE_URL;
  const url = new URL(loadConfig(env).databaseUrl);
  url.pathname = '/potentia_test';
  return url.toString();
}
