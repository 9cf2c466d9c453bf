import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { answerAndClose, ApiError, rawErrorResponse } from '../http/errors.ts';

/**
 * The gateway's WebSocket paths, and the answer to an upgrade of one while this process's gateway
 * does not serve them: it is starting (roles `all` and `gateway`), its start failed and is tried
 * again after a backoff (role `all`, src/server.ts), or it is shutting down.
 */

/** realtime-js's socket (Supabase Realtime's path). */
export const REALTIME_SOCKET_PATH = '/realtime/v1/websocket';

/** Which socket of the gateway's `pathname` asks for (trailing slashes ignored; H1's canvas id as sent), or null: none. */
export function socketRoute(pathname: string): { protocol: 'phoenix' } | { protocol: 'h1'; canvasId: string } | null {
  const path = pathname.replace(/\/+$/, '');
  if (path === REALTIME_SOCKET_PATH) return { protocol: 'phoenix' };
  const m = /^\/ws\/canvas\/([^/]+)$/.exec(path);
  return m ? { protocol: 'h1', canvasId: m[1]! } : null;
}

/** Why the gateway does not serve now. `retrying`: attempts failed so far, and how long until the next one. */
export type GatewayDown = { state: 'starting' } | { state: 'retrying'; failures: number; retryInMs: number } | { state: 'stopping' };

/** How long a client is told to wait while the gateway starts or stops: a start takes two queries, a stop a second. */
const BRIEF_RETRY_SECONDS = 1;

/**
 * The 503 `unavailable` (with Retry-After: seconds until the next attempt, while a failed start
 * waits for it; else 1) that a WebSocket upgrade of the gateway's paths gets while it does not
 * serve, naming what to check. A temporary failure, as realtime-js and a balancer expect (both
 * try again, a balancer another process): it was a 404 `no route` as on role `api`, which
 * serves no gateway at all. Any other path is 404, as a serving gateway answers it.
 */
export function refuseUpgrade(req: IncomingMessage, socket: Duplex, down: GatewayDown, logger?: Logger): void {
  socket.on('error', () => {});
  let path: string | null = null;
  try {
    path = new URL(req.url ?? '/', 'http://localhost').pathname;
  } catch { /* no path of the gateway's */ }
  if (path === null || !socketRoute(path)) {
    answerAndClose(socket, rawErrorResponse(new ApiError('not_found', 'no WebSocket endpoint here')));
    return;
  }
  const refusal = unavailable(down);
  // debug: every client of the process retries while it lasts; the cause is logged once where it happens
  logger?.debug({ status: 503, state: down.state, reason: refusal.message }, 'WebSocket upgrade refused: the realtime gateway does not serve');
  answerAndClose(socket, rawErrorResponse(refusal));
}

function unavailable(down: GatewayDown): ApiError {
  switch (down.state) {
    case 'starting':
      return new ApiError('unavailable', `the realtime gateway of this process is starting: connect again in ${BRIEF_RETRY_SECONDS} s `
        + '(if it lasts, GET /ready says why, and the server log)', { retry_after: BRIEF_RETRY_SECONDS });
    case 'retrying': {
      const seconds = Math.max(1, Math.ceil(down.retryInMs / 1000));
      return new ApiError('unavailable', `the realtime gateway of this process is not running: its start failed `
        + `(${down.failures} attempt${down.failures === 1 ? '' : 's'}) and is tried again in ${seconds} s; `
        + 'the server log has the error ("realtime gateway did not start"), GET /ready shows its state (realtime)', { retry_after: seconds });
    }
    case 'stopping':
      return new ApiError('unavailable', 'the realtime gateway of this process is shutting down: connect again (another process serves)',
        { retry_after: BRIEF_RETRY_SECONDS });
  }
}
