import { testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess, type ScriptProcess } from './chaos.ts';

/**
 * A Potentia server process as a developer runs it against the test database, with the anon key
 * it printed at its start (what an app passes to createClient / createPotentiaClient).
 */
export type DevServer = PotentiaProcess & { anonKey: string };

/**
 * The anon key a `src/main.ts` process printed in its start banner (`  anon key  <key>`); throws,
 * with what it printed, when it printed none (a process that does not serve the API).
 */
export function printedAnonKey(process: ScriptProcess): string {
  const key = /anon key\s+(\S+)/.exec(process.output())?.[1];
  if (!key) throw new Error(`the process printed no anon key:\n${process.output()}`);
  return key;
}

/**
 * Starts `src/main.ts` on the test database (TEST_DATABASE_URL) with the development profile and
 * no worker, `env` added or overriding (PORT, POTENTIA_PROFILE, ACCESS_TOKEN_TTL_SECONDS, ...);
 * resolves once it serves, with the anon key it printed.
 */
export async function startDevServer(env: Record<string, string> = {}): Promise<DevServer> {
  const server = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', POTENTIA_PROFILE: 'development', ...env });
  return { ...server, anonKey: printedAnonKey(server) };
}
