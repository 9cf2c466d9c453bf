/**
 * Whether a database error means the connection (not the statement) failed: the server ended the
 * session (57P01 admin shutdown or pg_terminate_backend, 57P02 crash shutdown, 57P03 cannot
 * connect now, 57P04 database dropped, 57P05 and 25P03 idle timeouts, class 08 connection
 * exceptions) or the driver lost the socket. Nothing about the request itself was wrong: it may be
 * retried as is.
 */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return false;
  return SESSION_ENDED.has(code) || code.startsWith('08') || DRIVER_CODES.has(code);
}

/** The server ended the session: 57P01-57P05 (shutdown, crash, cannot connect now, database dropped, idle session timeout), 25P03 (idle in transaction timeout). */
const SESSION_ENDED = new Set(['57P01', '57P02', '57P03', '57P04', '57P05', '25P03']);

const DRIVER_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
]);
