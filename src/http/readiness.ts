import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { ApiRolesError } from '../db/api-roles.ts';
import { runAgainOnLostConnection } from '../db/faults.ts';

/** What /ready waits for the database, on every port that serves it (the API's, a gateway's, a worker's). */
export const READY_TIMEOUT_MS = 2000;

/**
 * What /ready shows for a check whose database work failed: a stable code. The error itself (a
 * database's text: role names, hosts, users, the grant to run) goes to the log only, as /ready
 * answers anyone who can reach the port (the API's and a gateway's are public).
 */
export type DatabaseFailure = 'timeout' | 'api_roles' | 'error';

/** One safe sentence per code, for /ready's `message`. */
export const DATABASE_FAILURE_MESSAGES: Record<DatabaseFailure, string> = {
  timeout: `no answer from the database within ${READY_TIMEOUT_MS} ms`,
  api_roles: 'the connecting role cannot act as the API roles (anon, authenticated, service_role); '
    + 'the server log names the grant to run (docs/self-hosting.md, "Database")',
  error: 'the database query failed; the server log has the error',
};

class ReadyTimeout extends Error {}

/** The code of a check whose database work failed; the error is logged (warn) with the check's name. */
export function databaseFailure(err: unknown, log: Logger, check: string): DatabaseFailure {
  const code: DatabaseFailure = err instanceof ReadyTimeout ? 'timeout' : err instanceof ApiRolesError ? 'api_roles' : 'error';
  log.warn({ err, check, code }, `/ready: ${check} check failed`);
  return code;
}

/**
 * A readiness query (read-only, so safe to run again): `work`'s result within READY_TIMEOUT_MS,
 * run again on another connection when the pooled one it drew was lost before it answered (a
 * backend terminated, a connection a pooler or a NAT dropped, noticed only at its next write:
 * ECONNRESET, EPIPE, 57P01), as withRequest runs every API request again (runAgainOnLostConnection, src/db/faults.ts). A
 * dead pooled connection is not a database that does not answer: /ready said 503 "the database
 * query failed" while every other request was served, and a balancer that acts on one failed probe
 * took the process out of rotation. Each of the pool's connections a fault ended may be drawn
 * dead in turn: those tries are not counted (`pooled`). A session that cannot be opened at all, or an answer that never
 * came, is not run again: those say the database does not answer.
 */
export function readyQuery<T>(sql: Sql, work: (sql: Sql) => Promise<T>): Promise<T> {
  return withReadyTimeout(runAgainOnLostConnection(() => work(sql), { pooled: sql.options.max }));
}

/** `work`'s result, or a ReadyTimeout rejection once READY_TIMEOUT_MS passed (the work is left to finish). */
export async function withReadyTimeout<T>(work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ReadyTimeout(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** /ready's `message`: a sentence per failed check (a failure code's from DATABASE_FAILURE_MESSAGES, else the check's own text). */
export function notReadyMessage(checks: Record<string, string>): string {
  return Object.entries(checks).filter(([, value]) => value !== 'ok')
    .map(([name, value]) => `${name}: ${DATABASE_FAILURE_MESSAGES[value as DatabaseFailure] ?? value}`)
    .join('; ');
}
