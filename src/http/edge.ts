import { Hono } from 'hono';
import { pino } from 'pino';
import { createTokenVerifier } from '../auth/jwt.ts';
import { EMPTY_IS_A_VALUE, loadConfig } from '../config.ts';
import { createDatabase } from '../db/index.ts';
import { presentValues } from '../env-values.ts';
import { keepRunningOnUnhandledRejection } from '../last-resort.ts';
import { createMetrics } from '../metrics.ts';
import { FUNCTIONS, withCommonMiddleware } from './common.ts';
import type { AppEnv, Deps } from './env.ts';

/**
 * One deployed Supabase edge function: `name`'s routes under base path `/<name>` (what the
 * platform passes after /functions/v1). The database is SUPABASE_DB_URL through the pooler, so
 * prepared statements are off; tokens are checked against JWT_SECRET or the project's JWKS.
 */
export function createEdgeApp(name: keyof typeof FUNCTIONS, given: Record<string, string | undefined>) {
  // blank values are unset here too (as loadConfig reads them): SUPABASE_JWKS_URL= falls back on
  // SUPABASE_URL's, SUPABASE_DB_URL= on DATABASE_URL, instead of winning with ''
  const env = presentValues(given, EMPTY_IS_A_VALUE);
  const jwksUrl = env.SUPABASE_JWKS_URL ?? (env.SUPABASE_URL ? `${env.SUPABASE_URL}/auth/v1/.well-known/jwks.json` : undefined);
  const config = loadConfig({ ...env, NODE_ENV: 'production', DATABASE_URL: env.SUPABASE_DB_URL ?? env.DATABASE_URL, SUPABASE_JWKS_URL: jwksUrl });
  // a rejection nobody handled would end the isolate and every request it serves (src/last-resort.ts).
  // Installed once the environment is accepted: a refused one (JWT_SECRET unset, say) must stop the
  // function at start with loadConfig's message, as a boot error, and not be logged as a bug while
  // the isolate runs on serving nothing (it did: "BUG: unhandled rejection …", then exit 0)
  keepRunningOnUnhandledRejection();
  const logger = pino({ level: config.logLevel });
  const database = createDatabase(config.databaseUrl, { max: 3, transactionPooler: true, applicationName: `potentia-edge-${name}`, logger });
  const deps: Deps = {
    sql: database.sql,
    lanes: database.lanes,
    config,
    verify: createTokenVerifier(config.auth),
    metrics: createMetrics(),
    logger,
  };
  const app = withCommonMiddleware(new Hono<AppEnv>(), deps, {}, { edgeFunction: name });
  app.route(`/${name}`, FUNCTIONS[name](deps));
  return app;
}
