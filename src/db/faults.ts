/**
 * Whether a database error means the connection (not the statement) failed: the server ended the
 * session (57P01 admin shutdown or pg_terminate_backend, 57P02 crash shutdown, 57P03 cannot
 * connect now, 57P04 database dropped, 57P05 and 25P03 idle timeouts, class 08 connection
 * exceptions), the driver lost the socket, or no session could be made (couldNotConnect). Nothing
 * about the request itself was wrong: it may be retried as is.
 */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return false;
  return SESSION_ENDED.has(code) || code.startsWith('08') || DRIVER_CODES.has(code) || couldNotConnect(err);
}

/** How often work whose connection was lost is run again on another one (runAgainOnLostConnection). */
export const CONNECTION_RETRIES = 2;

/** What runAgainOnLostConnection's caller knows of its work and its tries. */
export type RetryRules = {
  /** Whether running the work again cannot apply anything twice (default: always; withRequest: false once COMMIT was sent). */
  safe?: () => boolean;
  /**
   * Whether the failed try's connection had answered it anything (a transaction's BEGIN; default:
   * not known, as for a single statement). One that had not ran nothing, or nothing that cannot be
   * run again, and was most likely dead when the pool handed it out: another casualty of the fault
   * that ended the try before (a restart, every backend terminated, a NAT's timeout), whose end the
   * pool had not read yet.
   */
  answered?: (err: unknown) => boolean;
  /** The pool's size (`sql.options.max`): how many such dead connections one fault can leave in it (default 0: every try counts). */
  pooled?: number;
  /** How many counted tries (lost after their connection answered) are run again (default CONNECTION_RETRIES). */
  retries?: number;
};

/**
 * `work()`, run again on another connection (the pool replaces the dead one), at most
 * CONNECTION_RETRIES more times, when its connection was lost (isConnectionFailure) and `safe()`
 * says running it again cannot apply anything twice (by default always: read-only or rolled-back
 * work; withRequest's is false once COMMIT was sent). A try whose connection was lost before it
 * answered anything (`answered()` false) is not counted, up to `pooled` of them: a fault that ends
 * every connection of the pool leaves each one to be drawn and found dead, and with three or more in
 * the pool the work failed while the database answered (database/sql's bad-connection retries
 * end on a new connection for the same reason). Not when no session could be opened at all
 * (couldNotConnect) or the answer never came (answerTimedOut): running it again at once only waits
 * for the same refusal or timeout. The one retry rule of API requests (src/db/request.ts), readiness
 * queries (src/http/readiness.ts), channel authorization (src/realtime/authorize.ts) and the worker's
 * tasks (src/worker/tasks.ts); canvas lanes (src/db/canvas-lanes.ts) apply its `answered` rule to a
 * reserved connection.
 */
export async function runAgainOnLostConnection<T>(work: () => Promise<T>, rules: RetryRules = {}): Promise<T> {
  const { safe = () => true, answered = () => false, pooled = 0, retries = CONNECTION_RETRIES } = rules;
  let counted = 0;
  let unanswered = 0;
  for (;;) {
    try {
      return await work();
    } catch (err) {
      if (!safe() || !mayRunAgain(err)) throw err;
      if (!answered(err) && unanswered < pooled) unanswered++;
      else if (counted++ >= retries) throw err;
    }
  }
}

/**
 * Whether work that failed with `err` may run again on another connection: its connection was lost
 * (isConnectionFailure), but a session could be opened (not couldNotConnect) and the answer did not
 * time out (not answerTimedOut): running it again at once would only wait for the same refusal or
 * timeout. runAgainOnLostConnection's rule, and canvas lanes' for a group on a connection dead when drawn.
 */
export function mayRunAgain(err: unknown): boolean {
  return isConnectionFailure(err) && !couldNotConnect(err) && !answerTimedOut(err);
}

/**
 * Whether the server said a word of the loss `err` (a PostgreSQL error, which carries a severity:
 * 57P01 from pg_terminate_backend or a shutdown mid-statement): the connection was alive when the
 * statement went out. A loss without one (a reset, a closed socket) on a connection the pool handed
 * out was most likely dead when drawn: the `answered` of single statements (src/worker/tasks.ts).
 */
export function serverAnnounced(err: unknown): boolean {
  return typeof (err as { severity?: unknown } | null)?.severity === 'string';
}

/**
 * Whether the driver gave up waiting for the server's answer (answer_timeout, src/db/index.ts):
 * the connection is gone, but the wait was already spent; another connection on the same path
 * would likely wait as long again, so withRequest does not run the request again.
 */
export function answerTimedOut(err: unknown): boolean {
  return (err as { code?: unknown })?.code === 'ANSWER_TIMEOUT';
}

/**
 * Whether the error is a failure to open a session at all: the host did not resolve or answer
 * (DNS, routing, refused, CONNECT_TIMEOUT: src/db/index.ts), or the server refused the
 * session while starting it (a database that does not accept connections, 55000 from
 * CheckMyDatabase; one that does not exist, 3D000; a login refused, class 28; told apart from the
 * same codes raised by a statement by the server routine that raised them). Running the request
 * again at once only waits for the same answer: withRequest retries a lost connection, not this.
 */
export function couldNotConnect(err: unknown): boolean {
  const e = err as { code?: unknown; routine?: unknown; message?: unknown };
  return (typeof e?.code === 'string' && CONNECT_CODES.has(e.code)) || (typeof e?.routine === 'string' && STARTUP_ROUTINES.has(e.routine))
    || (e?.code === '08P01' && typeof e.message === 'string' && POOLER_NO_SERVER.test(e.message)) || poolerLoginRefusal(err) !== undefined;
}

/**
 * A transaction pooler (PgBouncer) that has no server connection for the session: it refuses the
 * query (08P01) and closes the session, with one of these messages. The server is down or
 * refusing logins (server_login_retry), or the query waited query_wait_timeout in the pooler's
 * queue: the same answer as a failed connect, and running the request again at once waits for it again.
 */
const POOLER_NO_SERVER = /^(server login has been failing|query_wait_timeout|pgbouncer cannot connect to server|no more connections allowed)/;

/**
 * PgBouncer's refusals of a login, which it sends as 08P01 (protocol violation) and tells apart by
 * their message alone, with the code PostgreSQL gives the same refusal: the server's 'database "x"
 * does not exist' passed on (deploy/pgbouncer/pgbouncer.ini's * entry) and 'no such database: x' (a
 * [databases] list without it), 3D000; '<method> authentication failed' (SCRAM, MD5: a user or
 * password its auth file refuses) and 'no such user', 28P01.
 */
const POOLER_LOGIN_REFUSALS: readonly (readonly [RegExp, string])[] = [
  [/^database ".*" does not exist$|^no such database\b/s, '3D000'],
  [/^[\w-]+ authentication failed|^no such user\b/, '28P01'],
];

/**
 * The code PostgreSQL gives the login refusal `err` is PgBouncer's answer for (POOLER_LOGIN_REFUSALS),
 * undefined for any other error: a wrong URL (database, role, password) is told the same with or
 * without a pooler, by a role's start (src/db/migrated.ts) and by couldNotConnect (not an outage to retry).
 */
export function poolerLoginRefusal(err: unknown): string | undefined {
  const e = err as { code?: unknown; message?: unknown } | null;
  if (e?.code !== '08P01' || typeof e.message !== 'string') return undefined;
  const message = e.message;
  return POOLER_LOGIN_REFUSALS.find(([pattern]) => pattern.test(message))?.[1];
}

/** The server ended the session: 57P01-57P05 (shutdown, crash, cannot connect now, database dropped, idle session timeout), 25P03 (idle in transaction timeout). */
const SESSION_ENDED = new Set(['57P01', '57P02', '57P03', '57P04', '57P05', '25P03']);

/** The driver lost an open connection (postgres.js's codes and Node's socket errors), or gave it up. */
const DRIVER_CODES = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED',
  // the server sent nothing for answer_timeout while a query waited (src/db/index.ts): the connection was destroyed
  'ANSWER_TIMEOUT']);

/** No connection could be opened: Node's DNS and socket errors, postgres.js's connect timeout. */
const CONNECT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'CONNECT_TIMEOUT']);

/** PostgreSQL's functions that refuse a session while it starts (postinit.c, miscinit.c, auth.c). */
const STARTUP_ROUTINES = new Set(['CheckMyDatabase', 'InitPostgres', 'InitializeSessionUserId', 'ClientAuthentication', 'auth_failed', 'PerformAuthentication', 'ProcessStartupPacket']);
