import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { couldNotConnect, isConnectionFailure } from '../db/faults.ts';
/**
 * The one error shape of the HTTP API: `{ "error": { "code", "message", ...details } }`.
 * Codes are stable; `invalid_input` names the `field`, `conflict` carries the current `block` and,
 * per clashing field, `fields.<field>.{base, theirs, mine}`; `rebase_required` (the log no longer
 * holds what changed since base_version) carries the current `block`;
 * `rate_limited` comes with a Retry-After header.
 */
export const ERROR_STATUS = {
  invalid_input: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  rebase_required: 409,
  payload_too_large: 413,
  // a body in a media type or charset the endpoint does not read (anything but UTF-8 JSON)
  unsupported_media_type: 415,
  rate_limited: 429,
  internal: 500,
  // a transfer coding other than chunked on a request (RFC 9112 §6.1), field `transfer-encoding`
  not_implemented: 501,
  unavailable: 503,
  // files (functions/files.ts): no bucket is configured (S3_BUCKET; docs/files.md)
  storage_not_configured: 503,
  timeout: 504,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
  get status() {
    return ERROR_STATUS[this.code];
  }
  body() {
    return { error: { code: this.code, message: this.message, ...this.details } };
  }
}

/**
 * invalid_input on `field` (a body path, or a parameter's name). A body path inside one op of a
 * batch (`ops.N…`, the mutate endpoint's `{ops}`) also names that op, `failed_index: N`, as the
 * database's refusal of a batch's op does (docs/mutations.md, Batches): whichever check refused
 * the batch, a client finds the op at fault the same way.
 */
export function invalidInput(field: string, message: string): ApiError {
  const op = /^ops\.(\d+)(?=[.[]|$)/.exec(field);
  return new ApiError('invalid_input', message, op ? { field, failed_index: Number(op[1]) } : { field });
}

const isCode = (c: unknown): c is ErrorCode => typeof c === 'string' && c in ERROR_STATUS;

/** An `{code, message, ...}` object from the database (mutation results, PX errors). */
export function apiErrorFromObject(error: { code?: unknown; message?: unknown; [k: string]: unknown }): ApiError {
  const { code, message, ...details } = error;
  return new ApiError(isCode(code) ? code : 'internal', typeof message === 'string' ? message : 'request failed', details);
}

/**
 * What an API caller may safely do after a lost connection, appended to those 503s' messages; the
 * surfaces without mutations (GoTrue's /auth/v1) leave it out.
 */
export const MUTATION_RETRY_NOTE = ' (a mutation retried with the same client_op_id, or a create with the same workspace_id or canvas_id, is applied at most once)';

/** Maps a postgres.js error: our PX-class errors carry the stable code as HINT and JSON DETAIL. */
export function apiErrorFromDatabase(err: unknown): ApiError {
  const e = err as { code?: string; hint?: string; detail?: string; message?: string };
  if (typeof e?.code === 'string' && e.code.startsWith('PX') && isCode(e.hint)) {
    let details: Record<string, unknown> = {};
    try { details = JSON.parse(e.detail ?? '{}'); } catch { /* keep empty */ }
    return new ApiError(e.hint, e.message ?? e.hint, details);
  }
  if (e?.code === '57014' || e?.code === '55P03') return new ApiError('timeout', 'the database did not finish in time: retry shortly');
  // data exceptions (22: bad text for a type, NUL in text, bad \u escapes in jsonb...), constraint violations
  // (23) and program limits (54: input too complex) are about the input, as in internal.error_object
  if (e?.code?.startsWith('22') || e?.code?.startsWith('23') || e?.code?.startsWith('54')) {
    return new ApiError('invalid_input', e.message ?? 'invalid input');
  }
  // insufficient resources (53300 too many connections, 53200 out of memory, 53100 disk full):
  // the server's state, not the request, and it passes; nothing was done
  if (e?.code?.startsWith('53')) {
    return new ApiError('unavailable', 'the database is out of connections or resources right now: retry shortly', { retry_after: 1 });
  }
  // read_only_sql_transaction: the database takes no writes right now (a primary demoted in a
  // failover the pooler or DNS has not followed yet, a hot standby, a provider's read-only mode
  // when its disk fills): its state, not a fault of this server, and it passes; nothing was done
  if (e?.code === '25006') {
    return new ApiError('unavailable', `the database is read-only right now (a failover or maintenance): retry shortly${MUTATION_RETRY_NOTE}`, { retry_after: 1 });
  }
  // a deadlock or serialization failure rolled the transaction back: nothing was done, and a retry
  // meets other transactions (a mutation is resent with the same client_op_id)
  if (e?.code === '40P01' || e?.code === '40001') {
    return new ApiError('unavailable', 'the database rolled the request back to resolve a conflict with concurrent ones: retry it', { retry_after: 1 });
  }
  if (couldNotConnect(err)) {
    return new ApiError('unavailable', `the database cannot be reached right now: retry shortly${MUTATION_RETRY_NOTE}`, { retry_after: 1 });
  }
  if (isConnectionFailure(err)) {
    return new ApiError('unavailable', `the database connection was lost: retry the request${MUTATION_RETRY_NOTE}`, { retry_after: 1 });
  }
  return new ApiError('internal', 'internal error');
}

/** The same error as a raw HTTP/1.1 response, for sockets answered before (or instead of) Hono:
 *  WebSocket upgrade refusals and requests Node's parser rejects. `shape`: the body (another API's
 *  error shape under its prefix); `headers`: more header lines. */
export function rawErrorResponse(err: ApiError, status: number = err.status, headOnly = false, shape: unknown = err.body(),
  headers: Record<string, string> = {}): string {
  const body = JSON.stringify(shape);
  const retryAfter = typeof err.details.retry_after === 'number' && !('Retry-After' in headers) ? `Retry-After: ${err.details.retry_after}\r\n` : '';
  const extra = Object.entries(headers).map(([name, value]) => `${name}: ${value}\r\n`).join('');
  return `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nContent-Type: application/json\r\n${retryAfter}${extra}` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${headOnly ? '' : body}`;
}

/**
 * Answers `response` (a rawErrorResponse) on a socket outside Node's HTTP response cycle (a
 * refused WebSocket upgrade, a request Node's parser refused) and closes it for good: destroyed
 * once written, or after 5 s if the peer does not read. `end()` alone leaves a half-open socket
 * (Node allows them, and stops timing a socket once it is upgraded) that a peer which never
 * closes its side kept open, a file descriptor each, until the process ran out of them.
 */
export function answerAndClose(socket: Duplex, response: string): void {
  const timer = setTimeout(() => socket.destroy(), 5000);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('finish', () => socket.destroy());
  socket.end(response);
}
