import { z } from 'zod';

/** Everything Potentia reads from the environment, validated once at start-up. */
const EnvSchema = z.object({
  DATABASE_URL: z.string().url().default('postgres://postgres:postgres@127.0.0.1:5432/potentia'),
  TEST_DATABASE_URL: z.string().url().optional(),
  HOST: z.string().default('127.0.0.1'),
  PORT: z.coerce.number().int().min(0).max(65535).default(54321),
  DB_POOL_MAX: z.coerce.number().int().min(1).default(10),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Config = {
  databaseUrl: string;
  host: string;
  port: number;
  dbPoolMax: number;
  logLevel: z.infer<typeof EnvSchema>['LOG_LEVEL'];
};

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new Error(`invalid environment: ${problems}`);
  }
  const e = parsed.data;
  return { databaseUrl: e.DATABASE_URL, host: e.HOST, port: e.PORT, dbPoolMax: e.DB_POOL_MAX, logLevel: e.LOG_LEVEL };
}

/** The test database: TEST_DATABASE_URL, or DATABASE_URL's server with database `potentia_test`. */
export function testDatabaseUrl(env: NodeJS.ProcessEnv = process.env): string {
  if (env.TEST_DATABASE_URL) return env.TEST_DATABASE_URL;
  const url = new URL(loadConfig(env).databaseUrl);
  url.pathname = '/potentia_test';
  return url.toString();
}
