import { context as otelContext, propagation, trace } from '@opentelemetry/api';
import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { getConnInfo } from '@hono/node-server/conninfo';
import { randomUUID } from 'node:crypto';
import type { Claims } from '../auth/jwt.ts';
import { ApiError } from './errors.ts';
import type { AppEnv, Deps } from './env.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const USER_ROLES = new Set(['authenticated', 'service_role']);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const tracer = trace.getTracer('potentia-http');

/** Request id (kept from X-Request-Id when well-formed), structured log line, metrics, trace. */
export function observe(deps: Deps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    c.set('requestId', requestId);
    const log = deps.logger.child({ request_id: requestId });
    c.set('log', log);
    const parent = propagation.extract(otelContext.active(), Object.fromEntries(c.req.raw.headers));
    const started = performance.now();
    await tracer.startActiveSpan(`${c.req.method} ${c.req.path}`, {}, parent, async (span) => {
      try {
        await next();
      } finally {
        span.end();
      }
    });
    c.header('X-Request-Id', requestId);
    const route = c.req.routePath || 'unmatched';
    const labels = { route, method: c.req.method, status: String(c.res.status) };
    deps.metrics.httpRequests.inc(labels);
    deps.metrics.httpDuration.observe(labels, (performance.now() - started) / 1000);
    log.info({ method: c.req.method, path: c.req.path, status: c.res.status, ms: Math.round(performance.now() - started) }, 'request');
  };
}

export function limitBody(deps: Deps): MiddlewareHandler<AppEnv> {
  return bodyLimit({
    maxSize: deps.config.maxBodyBytes,
    onError: (c) => {
      // the rest of the body is never read: the connection cannot carry another request, say so
      // (without it keep-alive clients reuse the socket the server is closing and fail)
      c.header('Connection', 'close');
      return errorResponse(c, new ApiError('payload_too_large', `request body is larger than ${deps.config.maxBodyBytes} bytes`));
    },
  });
}

/** Requires a valid access token (Authorization: Bearer …); sets `claims`. */
export function requireAuth(deps: Deps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer\s+(\S+)$/i.exec(header);
    if (!match) throw new ApiError('unauthorized', 'missing bearer token: send Authorization: Bearer <access token>');
    let claims: Claims;
    try {
      claims = await deps.verify(match[1]!);
    } catch (err) {
      throw new ApiError('unauthorized', (err as Error).message);
    }
    // a validly signed token may still name no user (the anon key), or a role the API never runs as
    // (PostgREST answers those 401 too): refuse before any database work, not with a 500 from it
    if (!USER_ROLES.has(claims.role)) throw new ApiError('unauthorized', `a signed-in user's token is required (role ${JSON.stringify(claims.role)} cannot call this endpoint)`);
    if (!UUID.test(claims.sub)) throw new ApiError('unauthorized', 'token subject (sub) is not a user id');
    c.set('claims', claims);
    await next();
  };
}

/** True when the caller may reach internal endpoints: the internal token, or loopback without one configured. */
export function isInternalCaller(c: Context, deps: Deps): boolean {
  const token = deps.config.internalToken;
  if (token) return c.req.header('authorization') === `Bearer ${token}`;
  try {
    const address = getConnInfo(c).remote.address ?? '';
    return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
  } catch {
    return false; // not on Node (edge runtime): closed unless a token is configured
  }
}

export function errorResponse(c: Context, err: ApiError) {
  if (err.code === 'rate_limited' && typeof err.details.retry_after === 'number') {
    c.header('Retry-After', String(err.details.retry_after));
  }
  return c.json(err.body(), err.status);
}
