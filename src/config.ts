import { z } from 'zod';
import { envChoice, envFlag, envInteger, envMilliseconds, envProblems, envSecret, envText, envTrimmed, envUrl, MAX_SQL_INTEGER, presentValues } from './env-values.ts';
import { DEFAULT_ADMISSION_LIMITS } from './realtime/admission.ts';

// Supabase's well-known local-development secret: used only when JWT_SECRET is unset outside
// production, so `npm start` works out of the box; production refuses to start without one.
export const DEV_JWT_SECRET = 'super-secret-jwt-token-with-at-least-32-characters-long';

/** Everything Potentia reads from the environment, validated once at start-up (docs/self-hosting.md lists each). */
export const EnvSchema = z.object({
  NODE_ENV: envChoice(['development', 'test', 'production']).default('development'),
  // `development` relaxes the per-endpoint rate limits (app.endpoint_limits: 100x the hits, windows
  // of at most 60 s) for this process's requests; refused with NODE_ENV=production. `npm start`
  // defaults to it; tests and production use `standard`, the seed's limits.
  POTENTIA_PROFILE: envChoice(['standard', 'development']).default('standard'),
  // what this process runs (src/roles.ts; `--role` on the command line wins): `all` = HTTP API +
  // realtime gateway (+ the worker per WORKER_MODE), `api`, `gateway` or `worker` alone
  POTENTIA_ROLE: envChoice(['all', 'api', 'gateway', 'worker']).default('all'),
  DATABASE_URL: envUrl('postgres').default('postgres://postgres:postgres@127.0.0.1:5432/potentia'),
  TEST_DATABASE_URL: envUrl('postgres').optional(),
  // Supabase's split: DATABASE_URL may be a transaction pooler (PgBouncer, Supavisor :6543);
  // what needs a session of its own (logical replication, LISTEN, migrations) uses this one
  DIRECT_DATABASE_URL: envUrl('postgres').optional(),
  HOST: envTrimmed('a host name or an IP address to listen on (0.0.0.0: every IPv4 address)').default('127.0.0.1'),
  PORT: envInteger(0, 65535).default(54321),
  DB_POOL_MAX: envInteger(1).default(10),
  LOG_LEVEL: envChoice(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  JWT_SECRET: envSecret(32, "your project's JWT secret", '`openssl rand -base64 48`').optional(),
  // the rotation's other secret: HS256 tokens signed with it are accepted, nothing is signed with it
  JWT_SECONDARY_SECRET: envSecret(32, 'the JWT secret being rotated in or out', '`openssl rand -base64 48`').optional(),
  JWT_AUDIENCE: envTrimmed('the audience (aud) tokens are issued for').default('authenticated'),
  JWT_ISSUER: envTrimmed('the issuer (iss) of your tokens').optional(),
  SUPABASE_JWKS_URL: envUrl('http', 'https://<ref>.supabase.co/auth/v1/.well-known/jwks.json').optional(),
  ACCESS_TOKEN_TTL_SECONDS: envInteger(60, MAX_SQL_INTEGER).default(3600),
  REFRESH_TOKEN_TTL_SECONDS: envInteger(60, MAX_SQL_INTEGER).default(30 * 24 * 3600),
  // GoTrue's GOTRUE_SECURITY_REFRESH_TOKEN_REUSE_INTERVAL: a used refresh token sent again within it
  // gets the token it was rotated to (a double submit, a retry); later, its family is revoked
  REFRESH_TOKEN_REUSE_INTERVAL_SECONDS: envInteger(0, 3600).default(10),
  // sent as Authorization: Bearer <token>, where a comma reads as several credentials (400, src/http/authorization.ts)
  INTERNAL_TOKEN: envText(16).refine((v) => !v.includes(','), 'no comma: it is sent as Authorization: Bearer <token>, '
    + 'where a comma reads as several credentials (400 invalid_input on authorization)').optional(),
  DEBUG_ECHO: envFlag().default('0'),
  // test runs: every HTTP response is checked against the OpenAPI document (src/http/response-contract.ts)
  VALIDATE_RESPONSES: envFlag().default('0'),
  MAX_BODY_BYTES: envInteger(1024).default(256 * 1024),
  TRUST_PROXY: envFlag().default('0'),
  // the realtime gateway's caps per caller in one process (src/realtime/admission.ts): WebSockets
  // open at once from one address (TRUST_PROXY: the client's, else the peer's) and per user
  REALTIME_MAX_SOCKETS_PER_ADDRESS: envInteger(1).default(DEFAULT_ADMISSION_LIMITS.maxSocketsPerAddress),
  REALTIME_MAX_SOCKETS_PER_USER: envInteger(1).default(DEFAULT_ADMISSION_LIMITS.maxSocketsPerUser),
  // the key the realtime cluster's messages are authenticated with (src/realtime/cluster-key.ts);
  // unset: one derived from JWT_SECRET (and JWT_SECONDARY_SECRET, accepted too)
  REALTIME_CLUSTER_SECRET: envSecret(32, 'the secret every gateway of a deployment shares to authenticate the realtime cluster\'s messages', '`openssl rand -base64 48`',
    'on every gateway at once: a gateway whose secret differs reads none of the others\' cluster messages').optional(),
  // how far a realtime cluster message's send time may be from the receiving gateway's clock,
  // either way, before it is dropped as `stale` (src/realtime/cluster.ts, Freshness; unset: 5 min)
  REALTIME_CLUSTER_FRESHNESS_MS: envMilliseconds(1000).optional(),
  // background jobs (src/worker): `inprocess` runs the worker inside `npm start`, `external`
  // expects `npm run worker` processes (and /ready checks their heartbeat), `off` runs none
  WORKER_MODE: envChoice(['inprocess', 'external', 'off']).default('inprocess'),
  WORKER_CONCURRENCY: envInteger(1, 100).default(4),
  WORKER_POLL_INTERVAL_MS: envMilliseconds(50).default(2000),
  WORKER_HEARTBEAT_MS: envMilliseconds(100).default(5000),
  WORKER_STALE_MS: envMilliseconds(500).default(30_000),
  // SIGTERM: how long running jobs may take to finish before they are released for another worker
  WORKER_SHUTDOWN_TIMEOUT_MS: envMilliseconds(0).default(15_000),
  // cleanup: every minute (sql/jobs/cleanup.sql); cleanup_files: every 5 minutes, the objects of files no longer wanted (src/storage/cleanup.ts)
  WORKER_CRONTAB: z.string().default('* * * * * cleanup ?max=1&jobKey=cleanup\n*/5 * * * * cleanup_files ?max=1&jobKey=cleanup_files'),
  // `npm run worker` serves GET /metrics on HOST:WORKER_METRICS_PORT only when this is set
  WORKER_METRICS_PORT: envInteger(1, 65535).optional(),
  EMBED_DEBOUNCE_MS: envMilliseconds(0).default(1000),
  EMBED_MAX_WAIT_MS: envMilliseconds(0).default(10_000),
  EMBED_DRAIN_INTERVAL_MS: envMilliseconds(20).default(500),
  EMBED_DRAIN_BATCH: envInteger(1, 10_000).default(500),
  EMBEDDING_PROVIDER: envChoice(['local', 'openai']).default('local'),
  // api.search_blocks refuses a model name over 200 characters (field model)
  EMBEDDING_MODEL: envText(1).max(200, { error: 'expected 200 characters at most (api.search_blocks takes a model name of 1 to 200)' }).optional(),
  EMBEDDING_TIMEOUT_MS: envMilliseconds(100).default(10_000),
  EMBEDDING_BATCH_SIZE: envInteger(1, 2048).default(64),
  EMBEDDING_BATCH_WINDOW_MS: envMilliseconds(0).default(10),
  OPENAI_BASE_URL: envUrl('http', 'https://api.openai.com/v1').default('https://api.openai.com/v1'),
  OPENAI_API_KEY: envText(1).optional(),
  EMBEDDING_BREAKER_FAILURES: envInteger(1).default(5),
  EMBEDDING_BREAKER_COOLDOWN_MS: envMilliseconds(100).default(30_000),
});

export type Config = {
  env: 'development' | 'test' | 'production';
  /** `development`: relaxed endpoint rate limits (see POTENTIA_PROFILE above). */
  profile: 'standard' | 'development';
  databaseUrl: string;
  /**
   * A direct connection to the same database (DIRECT_DATABASE_URL) when `databaseUrl` is a
   * transaction pooler; unset = `databaseUrl` is direct. See src/db/pooling.ts.
   */
  directDatabaseUrl?: string;
  host: string;
  port: number;
  dbPoolMax: number;
  logLevel: z.infer<typeof EnvSchema>['LOG_LEVEL'];
  auth: { jwtSecret: string; secondaryJwtSecret?: string; audience: string; issuer?: string; jwksUrl?: string; accessTtl: number; refreshTtl: number;
    /** Seconds a rotated refresh token may be sent again and get its successor back (0: never). */
    refreshReuseInterval: number };
  /** Bearer token /metrics (and /debug/echo) require once set, from every caller, loopback included (behind a reverse proxy every request is loopback); unset = loopback only. */
  internalToken?: string;
  debugEcho: boolean;
  /** Check each HTTP response against the OpenAPI document, answering 500 contract_violation on a mismatch (never in production). */
  validateResponses?: boolean;
  maxBodyBytes: number;
  /** Take the client IP from X-Forwarded-For (only behind a proxy that sets it). */
  trustProxy: boolean;
  /**
   * The realtime gateway's per-caller socket caps (src/realtime/admission.ts); clusterSecret:
   * REALTIME_CLUSTER_SECRET, the cluster's key (src/realtime/cluster-key.ts; unset: JWT_SECRET's);
   * clusterFreshnessMs: REALTIME_CLUSTER_FRESHNESS_MS (src/realtime/cluster.ts, Freshness; unset: its default, 5 min).
   */
  realtime: { maxSocketsPerAddress: number; maxSocketsPerUser: number; clusterSecret?: string; clusterFreshnessMs?: number };
  worker: WorkerConfig;
  embedding: EmbeddingConfig;
};

export type WorkerConfig = {
  mode: 'inprocess' | 'external' | 'off';
  /** /ready checks for a fresh worker heartbeat (external mode, or once a worker runs in-process). */
  expected: boolean;
  concurrency: number;
  pollIntervalMs: number;
  heartbeatMs: number;
  /** A heartbeat older than this marks a dead worker: its jobs are unlocked for others. */
  staleMs: number;
  /** Graceful stop: running jobs may finish for this long, then they are released for another worker. */
  shutdownTimeoutMs: number;
  /** Graphile Worker crontab ('' for none). */
  crontab: string;
  embedDebounceMs: number;
  embedMaxWaitMs: number;
  drainIntervalMs: number;
  drainBatch: number;
  /** Port of a standalone worker's /metrics (on HOST; INTERNAL_TOKEN required when set); unset = none. */
  metricsPort?: number;
};

export type EmbeddingConfig = {
  provider: 'local' | 'openai';
  model: string;
  dimensions: 1536;
  timeoutMs: number;
  batchSize: number;
  batchWindowMs: number;
  openai: { baseUrl: string; apiKey?: string };
  breaker: { failureThreshold: number; cooldownMs: number };
};

/**
 * loadConfig for a process started from a shell (the server's roles, npm run db:migrate, worker,
 * db:types, upgrade:v1): a bad environment prints what is wrong and exits 2, as self-hosting.md's
 * Environment reference says, instead of ending in a stack trace (exit 1).
 */
export function loadConfigOrExit(env: NodeJS.ProcessEnv = process.env): Config {
  try {
    return loadConfig(env);
  } catch (err) {
    console.error((err as Error).message);
    process.exit(2);
  }
}

/** Variables for which '' is a value of its own, not "unset" (WORKER_CRONTAB='': no crontab at all). */
export const EMPTY_IS_A_VALUE = ['WORKER_CRONTAB'] as const;

/** Variables whose value an error never shows (their length only). */
const SECRETS = ['JWT_SECRET', 'JWT_SECONDARY_SECRET', 'INTERNAL_TOKEN', 'OPENAI_API_KEY', 'REALTIME_CLUSTER_SECRET'];

const REFERENCE = '(what each variable takes: docs/self-hosting.md, "Environment reference")';

/**
 * The configuration `env` gives. A blank value counts as unset (src/env-values.ts), except for
 * EMPTY_IS_A_VALUE; what does not parse, or is missing where required, is thrown as one
 * `invalid environment: NAME: …` message naming each variable and what it takes.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const present = presentValues(env, EMPTY_IS_A_VALUE);
  const parsed = EnvSchema.safeParse(present);
  if (!parsed.success) {
    throw new Error(`invalid environment: ${envProblems(parsed.error.issues, present, SECRETS)} ${REFERENCE}`);
  }
  const e = parsed.data;
  const refuse = (problem: string) => new Error(`invalid environment: ${problem} ${REFERENCE}`);
  if (e.NODE_ENV === 'production' && e.POTENTIA_PROFILE === 'development') {
    throw refuse('POTENTIA_PROFILE: development relaxes rate limits and is refused with NODE_ENV=production: unset POTENTIA_PROFILE');
  }
  if (e.NODE_ENV === 'production' && e.JWT_SECRET === DEV_JWT_SECRET) {
    throw refuse('JWT_SECRET: this is Supabase\'s published development secret, with which anyone can sign tokens: set your project\'s JWT secret');
  }
  if (e.JWT_SECONDARY_SECRET !== undefined && e.JWT_SECRET === undefined) {
    throw refuse('JWT_SECONDARY_SECRET: set without JWT_SECRET: the secondary secret is only accepted beside the one tokens are signed with. '
      + 'Set JWT_SECRET too (docs/self-hosting.md, "Rotating the JWT secret")');
  }
  if (e.NODE_ENV === 'production' && e.JWT_SECONDARY_SECRET === DEV_JWT_SECRET) {
    throw refuse('JWT_SECONDARY_SECRET: this is Supabase\'s published development secret, with which anyone can sign tokens: unset it');
  }
  // the cluster's key from a secret anyone can read lets any database role write client broadcasts
  // and presence into every room again (src/realtime/cluster-key.ts)
  if (e.NODE_ENV === 'production' && e.REALTIME_CLUSTER_SECRET === DEV_JWT_SECRET) {
    throw refuse('REALTIME_CLUSTER_SECRET: this is Supabase\'s published development secret, with which anyone can sign the realtime cluster\'s messages: '
      + 'set one of your own, the same on every gateway (`openssl rand -base64 48`)');
  }
  if (e.NODE_ENV === 'production' && !e.JWT_SECRET && !e.SUPABASE_JWKS_URL) {
    throw refuse(`JWT_SECRET: must be set in production (it is ${env.JWT_SECRET === undefined ? 'unset' : 'empty'}): your Supabase project's JWT secret, `
      + '32 characters at least (or SUPABASE_JWKS_URL, for asymmetric signing keys)');
  }
  if (e.EMBEDDING_PROVIDER === 'openai' && !e.OPENAI_API_KEY && e.OPENAI_BASE_URL.startsWith('https://api.openai.com')) {
    throw refuse('OPENAI_API_KEY: needed with EMBEDDING_PROVIDER=openai (or an OPENAI_BASE_URL of a compatible server)');
  }
  return {
    env: e.NODE_ENV,
    profile: e.POTENTIA_PROFILE,
    databaseUrl: e.DATABASE_URL,
    directDatabaseUrl: e.DIRECT_DATABASE_URL,
    host: e.HOST,
    port: e.PORT,
    dbPoolMax: e.DB_POOL_MAX,
    logLevel: e.LOG_LEVEL,
    auth: {
      // production without JWT_SECRET (JWKS only): no secret at all, so no HS256 token is accepted —
      // never the published development secret, with which anyone could mint one
      jwtSecret: e.JWT_SECRET ?? (e.NODE_ENV === 'production' ? '' : DEV_JWT_SECRET),
      secondaryJwtSecret: e.JWT_SECONDARY_SECRET,
      audience: e.JWT_AUDIENCE,
      issuer: e.JWT_ISSUER,
      jwksUrl: e.SUPABASE_JWKS_URL,
      accessTtl: e.ACCESS_TOKEN_TTL_SECONDS,
      refreshTtl: e.REFRESH_TOKEN_TTL_SECONDS,
      refreshReuseInterval: e.REFRESH_TOKEN_REUSE_INTERVAL_SECONDS,
    },
    internalToken: e.INTERNAL_TOKEN,
    debugEcho: (e.DEBUG_ECHO === '1' || e.DEBUG_ECHO === 'true') && e.NODE_ENV !== 'production',
    validateResponses: (e.VALIDATE_RESPONSES === '1' || e.VALIDATE_RESPONSES === 'true') && e.NODE_ENV !== 'production',
    maxBodyBytes: e.MAX_BODY_BYTES,
    trustProxy: e.TRUST_PROXY === '1' || e.TRUST_PROXY === 'true',
    realtime: { maxSocketsPerAddress: e.REALTIME_MAX_SOCKETS_PER_ADDRESS, maxSocketsPerUser: e.REALTIME_MAX_SOCKETS_PER_USER, clusterSecret: e.REALTIME_CLUSTER_SECRET,
      clusterFreshnessMs: e.REALTIME_CLUSTER_FRESHNESS_MS },
    worker: {
      mode: e.WORKER_MODE,
      expected: e.WORKER_MODE === 'external',
      concurrency: e.WORKER_CONCURRENCY,
      pollIntervalMs: e.WORKER_POLL_INTERVAL_MS,
      heartbeatMs: e.WORKER_HEARTBEAT_MS,
      staleMs: e.WORKER_STALE_MS,
      shutdownTimeoutMs: e.WORKER_SHUTDOWN_TIMEOUT_MS,
      crontab: e.WORKER_CRONTAB,
      embedDebounceMs: e.EMBED_DEBOUNCE_MS,
      embedMaxWaitMs: e.EMBED_MAX_WAIT_MS,
      drainIntervalMs: e.EMBED_DRAIN_INTERVAL_MS,
      drainBatch: e.EMBED_DRAIN_BATCH,
      metricsPort: e.WORKER_METRICS_PORT,
    },
    embedding: {
      provider: e.EMBEDDING_PROVIDER,
      model: e.EMBEDDING_MODEL ?? (e.EMBEDDING_PROVIDER === 'openai' ? 'text-embedding-3-small' : 'local-hash-v1'),
      dimensions: 1536,
      timeoutMs: e.EMBEDDING_TIMEOUT_MS,
      batchSize: e.EMBEDDING_BATCH_SIZE,
      batchWindowMs: e.EMBEDDING_BATCH_WINDOW_MS,
      openai: { baseUrl: e.OPENAI_BASE_URL.replace(/\/+$/, ''), apiKey: e.OPENAI_API_KEY },
      breaker: { failureThreshold: e.EMBEDDING_BREAKER_FAILURES, cooldownMs: e.EMBEDDING_BREAKER_COOLDOWN_MS },
    },
  };
}

/** The realtime gateway's per-caller socket caps (config.realtime without its secret, which goes to the gateway on its own). */
export function socketCaps(config: Config): { maxSocketsPerAddress: number; maxSocketsPerUser: number } {
  return { maxSocketsPerAddress: config.realtime.maxSocketsPerAddress, maxSocketsPerUser: config.realtime.maxSocketsPerUser };
}

/**
 * Why a process that runs the realtime gateway (roles all and gateway) cannot start with `config`,
 * as loadConfig words a bad environment; undefined when it can. Its cluster's messages are
 * authenticated with a key every gateway shares (src/realtime/cluster-key.ts): REALTIME_CLUSTER_SECRET,
 * else one derived from JWT_SECRET. Production with asymmetric keys only (SUPABASE_JWKS_URL, no
 * JWT_SECRET) has neither.
 */
export function realtimeConfigProblem(config: Config): string | undefined {
  if (config.realtime.clusterSecret || config.auth.jwtSecret) return undefined;
  return 'invalid environment: REALTIME_CLUSTER_SECRET: must be set for the realtime gateway (roles all and gateway) when JWT_SECRET is unset '
    + '(asymmetric keys only, SUPABASE_JWKS_URL): the gateways authenticate the realtime cluster\'s messages with a key they share, '
    + 'derived from JWT_SECRET when there is one. Set the same value on every gateway, 32 characters at least (`openssl rand -base64 48`) '
    + REFERENCE;
}

/** The test database: TEST_DATABASE_URL, or DATABASE_URL's server with database `potentia_test`. */
export function testDatabaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  const given = presentValues(env).TEST_DATABASE_URL;
  if (given) return given;
  const url = new URL(loadConfig(env).databaseUrl);
  url.pathname = '/potentia_test';
  return url.toString();
}
