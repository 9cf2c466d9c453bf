import { context as otelContext, propagation, ProxyTracerProvider, trace, type TextMapGetter, type TracerProvider } from '@opentelemetry/api';
import type { Context, MiddlewareHandler, Next } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { cors } from 'hono/cors';
import { getConnInfo } from '@hono/node-server/conninfo';
import { randomUUID } from 'node:crypto';
import { HTTP_USER_POLICY, TokenError, type Claims } from '../auth/jwt.ts';
import { checkCharset, checkContentEncoding, checkTransferEncoding, checkUrl, readJson, type InputViolation } from '../input-policy.ts';
import { SEVERAL_AUTHORIZATIONS, severalAuthorizations } from './authorization.ts';
import { ApiError, invalidInput } from './errors.ts';
import { canonicalUuid } from '../uuid.ts';
import type { AppEnv, Deps } from './env.ts';

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;
const CANVAS_IN_PATH = /\/canvas\/([0-9a-fA-F-]{36})(?:\/|$)/; // logged as canonicalUuid spells it (one spelling to search the logs for)
const tracer = trace.getTracer('potentia-http');
/** What @opentelemetry/api's global tracer provider delegates to while no SDK registered one (its no-op). */
const NO_TRACER_PROVIDER: TracerProvider = new ProxyTracerProvider().getDelegate();

/**
 * Whether a tracer provider (an OpenTelemetry SDK: trace.setGlobalTracerProvider) is registered,
 * asked per request (one may be registered after the app is built). Without one, every span is
 * the API's no-op and the request's trace context goes nowhere.
 */
function tracing(): boolean {
  const provider = trace.getTracerProvider();
  return !(provider instanceof ProxyTracerProvider) || provider.getDelegate() !== NO_TRACER_PROVIDER;
}
/** Trace context read from the request's headers in place (no copy of them per request). */
const HEADERS_GETTER: TextMapGetter<Headers> = { get: (headers, key) => headers.get(key) ?? undefined, keys: (headers) => [...headers.keys()] };

/** What the app answers an error thrown while a request is handled (Hono's onError, withCommonMiddleware). */
export type ErrorAnswer = (err: Error, c: Context<AppEnv>) => Response | Promise<Response>;

const EXPOSED_HEADERS = ['X-Request-Id', 'Retry-After', 'WWW-Authenticate'];

/**
 * What every request goes through before its route, as ONE middleware: each Hono middleware is a
 * dispatch, an async frame and its promises per request, and these four ran on every call.
 *
 *  - CORS for any origin, as Supabase answers browsers: credentials travel as bearer tokens and
 *    apikey headers, never cookies. A preflight is Hono's cors (it reflects the headers asked for:
 *    apikey, x-client-info, x-supabase-api-version, …) and is answered before anything else (auth,
 *    logs). Every other answer, errors included, gets the headers once it exists: Hono's cors sets
 *    them on a placeholder response before the handler runs, which makes Hono copy every answer
 *    into a new Response (on Node, a large part of a small request's cost).
 *  - observation: request id (kept from X-Request-Id when well-formed), a trace span (when an
 *    OpenTelemetry SDK registered a tracer provider: tracing()), the metrics and one structured
 *    log line per request.
 *  - the body limit, then the input policy (admission and checkInput below).
 *
 * An error thrown by the last two is answered by `onError` (the app's), as Hono would, and still
 * counted and logged as the request's answer.
 */
export function commonMiddleware(deps: Deps, onError: ErrorAnswer): MiddlewareHandler<AppEnv> {
  const preflight = cors({ origin: '*', exposeHeaders: EXPOSED_HEADERS, maxAge: 600 });
  const exposed = EXPOSED_HEADERS.join(',');
  // the span's callback: admission, then the route (one async frame for both)
  const inSpan = admission(deps, onError);
  return async (c, next) => {
    const method = c.req.method;
    if (method === 'OPTIONS') return preflight(c, next);
    const incoming = c.req.header('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    c.set('requestId', requestId);
    const log = deps.logger.child({ request_id: requestId });
    c.set('log', log);
    const outgoing = nodeResponse(c);
    if (outgoing) {
      outgoing.setHeader('Access-Control-Allow-Origin', '*');
      outgoing.setHeader('Access-Control-Expose-Headers', exposed);
      outgoing.setHeader('X-Request-Id', requestId);
    }
    const path = c.req.path;
    const started = performance.now();
    if (tracing()) {
      const parent = propagation.extract(otelContext.active(), c.req.raw.headers, HEADERS_GETTER);
      const span = tracer.startSpan(`${method} ${path}`, undefined, parent);
      try {
        await otelContext.with(trace.setSpan(parent, span), inSpan, undefined, c, next);
      } finally {
        span.end();
      }
    } else {
      // no SDK: the API's spans and context would be no-ops (a span name, a context and its Map per request for nothing)
      await inSpan(c, next);
    }
    const res = c.res;
    if (!outgoing) {
      const headers = res.headers; // not c.header(): once answered, each call copies the response
      headers.set('Access-Control-Allow-Origin', '*');
      headers.set('Access-Control-Expose-Headers', exposed);
      headers.set('X-Request-Id', requestId);
    }
    const status = res.status;
    const labels = { route: c.req.routePath || 'unmatched', method, status: String(status) };
    const ms = performance.now() - started;
    deps.metrics.httpDuration.observe(labels, ms / 1000); // and so potentia_http_requests_total (src/metrics.ts)
    // one line per request that explains itself: who, which canvas, which error code, how long
    const userId = c.get('claims')?.sub;
    const canvasInPath = CANVAS_IN_PATH.exec(path)?.[1];
    const canvasId = canvasInPath === undefined ? undefined : canonicalUuid(canvasInPath);
    const errorCode = c.get('errorCode');
    const line: { method: string; path: string; status: number; ms: number; user_id?: string; canvas_id?: string; error_code?: string } = {
      method, path, status, ms: Math.round(ms) };
    if (userId) line.user_id = userId;
    if (canvasId) line.canvas_id = canvasId;
    if (errorCode) line.error_code = errorCode;
    log.info(line, 'request');
  };
}

/**
 * The transfer coding (chunked or none: any other is 501 not_implemented, field
 * `transfer-encoding`, whatever the method, checkTransferEncoding), the body limit, then the input
 * policy, then the route (next). A refusal here, or an error thrown by the route, becomes the
 * request's answer (`c.res`) by `onError`, as Hono would answer it, and is still counted and logged
 * by commonMiddleware. Bodies up to config.maxBodyBytes: one announced by Content-Length is judged
 * by it, as Hono's bodyLimit does, but without touching `c.req.raw.body` (on Node that turns the
 * request into a web-stream Request, a large part of a small request's cost); a chunked body is
 * counted by Hono's bodyLimit as it is read. A body too large is answered by `onError`, as any
 * other refusal here, so each surface answers in its own shape (GoTrue's under /auth/v1).
 */
function admission(deps: Deps, onError: ErrorAnswer): (c: Context<AppEnv>, next: Next) => Promise<void> {
  const maxSize = deps.config.maxBodyBytes;
  const tooLarge = (c: Context<AppEnv>) => {
    // the rest of the body is never read: the connection cannot carry another request, say so
    // (without it keep-alive clients reuse the socket the server is closing and fail)
    c.header('Connection', 'close');
    return onError(new ApiError('payload_too_large', `request body is larger than ${maxSize} bytes`), c);
  };
  const counted = bodyLimit({ maxSize, onError: tooLarge });
  return async (c, next) => {
    try {
      const transferEncoding = c.req.header('transfer-encoding');
      const transfer = checkTransferEncoding(transferEncoding);
      if (transfer) {
        // the body is never read: close the connection rather than have Node drain it unbounded
        c.header('Connection', 'close');
        c.res = await onError(new ApiError('not_implemented', transfer.message, { field: transfer.field }), c);
        return;
      }
      const method = c.req.method;
      if (method !== 'GET' && method !== 'HEAD') {
        const length = c.req.header('content-length');
        if (length !== undefined && transferEncoding === undefined) {
          if (parseInt(length, 10) > maxSize) {
            c.res = await tooLarge(c);
            return;
          }
        } else {
          // a chunked body is read and counted here; next() is left to the policy below
          let admitted = false;
          const res = await receiving(() => counted(c, async () => { admitted = true; }));
          if (!admitted) {
            if (res instanceof Response) c.res = res;
            return;
          }
        }
      }
      checkInput(c);
      await next();
    } catch (err) {
      if (!(err instanceof Error)) throw err;
      c.error = err;
      c.res = await onError(err, c);
    }
  };
}

/**
 * The input policy (src/input-policy.ts) on HTTP. The URL first: every path segment and query
 * parameter must percent-decode to valid UTF-8 without NUL (400 invalid_input, field `path` or
 * `query.<name>`; Hono would keep an undecodable one as its raw text). The JSON body when a
 * validator reads it (after authentication and the path's own checks), whatever the route: sent
 * as UTF-8 and uncompressed (a Content-Type naming another charset, or a Content-Encoding other
 * than identity, is 415 unsupported_media_type on field `content-type` / `content-encoding`), decoded with a fatal UTF-8 decoder (field `body`), parsed, then walked once
 * for unpaired surrogates, NUL and nesting deeper than MAX_JSON_DEPTH (the field by its path,
 * e.g. `patch.content.t`). Never rewritten.
 */
function checkInput(c: Context<AppEnv>): void {
  // nothing to decode without a percent sign (and Node's parser refuses raw control characters)
  const url = c.req.url;
  const bad = url.includes('%') || url.includes('\u0000') ? checkUrl(url) : null;
  if (bad) throw new ApiError('invalid_input', bad.message, { field: bad.field });
  c.req.json = async () => {
    const encoding = checkCharset(c.req.header('content-type')) ?? checkContentEncoding(c.req.header('content-encoding'));
    // RFC 9110 §12.5.3: a 415 for a content coding says which codings are read
    if (encoding?.field === 'content-encoding') c.header('Accept-Encoding', 'identity');
    let err: ApiError;
    try {
      let read: { value: unknown } | InputViolation;
      if (encoding) read = encoding;
      else {
        let bytes: ArrayBuffer;
        try {
          bytes = await c.req.arrayBuffer();
        } catch (e) {
          throw transferFailure(e);
        }
        read = readJson(new Uint8Array(bytes));
      }
      if ('value' in read) return read.value as never;
      err = encoding ? new ApiError('unsupported_media_type', read.message, { field: read.field }) : invalidInput(read.field, read.message);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      err = e;
    }
    // Hono's validator turns any failure of json() into its own "Malformed JSON" 400: keep ours
    bodyErrors.set(c, err);
    throw err;
  };
}

/**
 * Receives the request body (`read`). When its transfer fails (the client closed the connection
 * before the whole body arrived: Node's `aborted`, ECONNRESET), that is the request's fault, not
 * the server's: 400 invalid_input on `body`, never the 500 `internal` an unknown error becomes (nor,
 * under /auth/v1, the 503 a connection reset reads as when it is taken for the database's).
 */
async function receiving<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    throw transferFailure(err);
  }
}

/** What receiving throws for an error met while the body was read: ours and Hono's as they are, any other the 400 above. */
function transferFailure(err: unknown): unknown {
  if (err instanceof ApiError || err instanceof HTTPException) return err;
  return new ApiError('invalid_input', 'body: the request ended before its whole body arrived (the connection was closed)', { field: 'body' });
}

/**
 * On Node (@hono/node-server), the ServerResponse the answer will be written to. Headers every
 * answer carries (CORS, X-Request-Id) are set there: Node merges them into the head it writes for
 * whatever Response the app returns, whereas reading `c.res.headers` turns the adapter's plain
 * header object into a WHATWG Headers (undici) that is then copied back into a plain object, a
 * noticeable part of a small request's cost. Elsewhere (edge runtimes, app.request in tests):
 * undefined, and the headers go on the Response.
 */
function nodeResponse(c: Context): { setHeader(name: string, value: string): unknown } | undefined {
  const outgoing = (c.env as { outgoing?: { setHeader?: unknown; headersSent?: boolean } } | undefined)?.outgoing;
  return outgoing && typeof outgoing.setHeader === 'function' && !outgoing.headersSent
    ? outgoing as { setHeader(name: string, value: string): unknown } : undefined;
}

const bodyErrors = new WeakMap<Context, ApiError>();

/** The input-policy error of this request's JSON body, if reading it failed. */
export function bodyInputError(c: Context): ApiError | undefined {
  return bodyErrors.get(c);
}

/**
 * Requires a signed-in user's access token (Authorization: Bearer …, HTTP_USER_POLICY of
 * src/auth/jwt.ts: role `authenticated` only); sets `claims`. API keys, tokens naming no user and
 * anon or service_role tokens (even with a `sub`) are refused 401 here, before any database work.
 */
export function requireAuth(deps: Deps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const match = /^Bearer\s+(\S+)$/i.exec(requestAuthorization(c) ?? '');
    if (!match) throw new ApiError('unauthorized', 'missing bearer token: send Authorization: Bearer <access token>');
    let claims: Claims;
    try {
      claims = await deps.verify(match[1]!, HTTP_USER_POLICY);
    } catch (err) {
      if (err instanceof TokenError) {
        // the keys to check it could not be fetched: not the token's fault, and not for its client to drop
        if (err.code === 'keys_unavailable') {
          c.get('log')?.warn({ err: err.cause }, 'the JWKS could not be fetched: tokens signed by its keys are answered 503');
          throw new ApiError('unavailable', err.message, { retry_after: 1 });
        }
        throw new ApiError('unauthorized', err.message);
      }
      throw err;
    }
    c.set('claims', claims);
    await next();
  };
}

/** The request's Authorization header, or undefined; 400 invalid_input on field `authorization` for several (authorization.ts). */
export function requestAuthorization(c: Context): string | undefined {
  const value = c.req.header('authorization');
  if (value !== undefined && severalAuthorizations([value])) throw new ApiError('invalid_input', SEVERAL_AUTHORIZATIONS, { field: 'authorization' });
  return value;
}

/** True when the caller may reach internal endpoints: the internal token, or loopback without one configured. */
export function isInternalCaller(c: Context, deps: Deps): boolean {
  const token = deps.config.internalToken;
  if (token) return requestAuthorization(c) === `Bearer ${token}`;
  // not on Node (edge runtime, no peer): closed unless a token is configured
  const address = peerAddress(c) ?? '';
  return address === '127.0.0.1' || address === '::1' || address === '::ffff:127.0.0.1';
}

/** The address of the request's connection peer (Node's server), undefined where there is none to read (an edge runtime). */
export function peerAddress(c: Context): string | undefined {
  try {
    return getConnInfo(c).remote.address;
  } catch {
    return undefined;
  }
}

/**
 * The client's address: with TRUST_PROXY, the first X-Forwarded-For entry (the proxy in front
 * sets it: deploy/nginx/potentia.conf), else the connection's peer; undefined when neither is known.
 */
export function clientAddress(c: Context, deps: Deps): string | undefined {
  if (deps.config.trustProxy) {
    const first = c.req.header('x-forwarded-for')?.split(',')[0]?.trim();
    if (first) return first;
  }
  return peerAddress(c);
}

export function errorResponse(c: Context, err: ApiError) {
  c.set('errorCode', err.code);
  if ((err.code === 'rate_limited' || err.code === 'unavailable') && typeof err.details.retry_after === 'number') {
    c.header('Retry-After', String(err.details.retry_after));
  }
  // RFC 6750 §3: a 401 names its scheme; with a token that was refused, error="invalid_token"
  // (no error code when the request carried none)
  if (err.code === 'unauthorized') c.header('WWW-Authenticate', c.req.header('authorization') ? 'Bearer error="invalid_token"' : 'Bearer');
  return c.json(err.body(), err.status);
}
