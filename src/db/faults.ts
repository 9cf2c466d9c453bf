/**
 * Whether a database error means the connection (not the statement) failed: the server ended the
 * session (57P01 admin shutdown or pg_terminate_backend, 57P02 crash shutdown, 57P03 cannot
 * connect now, class 08 connection exceptions) or the driver lost the socket. Nothing about the
 * request itself was wrong: it may be retried as is.
 */
export function isConnectionFailure(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (typeof code !== 'string') return false;
  return code === '57P01' || code === '57P02' || code === '57P03' || code.startsWith('08') || DRIVER_CODES.has(code);
}

const DRIVER_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT',
  'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED', 'CONNECT_TIMEOUT',
]);
