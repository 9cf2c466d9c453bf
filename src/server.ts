import { getRequestListener, RequestError, serve, type ServerType } from '@hono/node-server';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { createTokenVerifier } from './auth/jwt.ts';
import type { Config } from './config.ts';
import { createDatabase, type Database } from './db/index.ts';
import { connectionUrls } from './db/pooling.ts';
import { createApp } from './http/app.ts';
import { answerAndClose, ApiError, rawErrorResponse } from './http/errors.ts';
import { hostProblem } from './http/host.ts';
import { isPostgrestPath, postgrestBody, requestLinePath } from './http/not-found.ts';
import type { Deps } from './http/env.ts';
import { createMetrics } from './metrics.ts';
import { startWorker, type WorkerRuntime } from './worker/runtime.ts';
import { createGateway, type Gateway } from './realtime/gateway.ts';
import type { Limits } from './realtime/hub.ts';

/** The local Potentia process: database pool, metrics and the HTTP server, with an explicit lifecycle. */
export type Server = { url: string; deps: Deps; database: Database; gateway?: Gateway; worker?: WorkerRuntime; stop(): Promise<void> };

export type ServerOptions = {
  logger?: Logger;
  /** The realtime gateway (/realtime/v1/websocket and H1 /ws/canvas/{id}); on unless false. */
  realtime?: false | { limits?: Partial<Limits> };
  /** The background-job worker (src/worker) in this process; off unless true (npm start passes WORKER_MODE=inprocess). */
  worker?: boolean;
};

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<Server> {
  // DATABASE_URL may be a transaction pooler; what needs a session uses the direct URL (db/pooling.ts)
  const urls = connectionUrls(config);
  const logger = opts.logger ?? pino({ level: config.logLevel });
  const database = createDatabase(urls.pooled, { max: config.dbPoolMax, applicationName: 'potentia-server', transactionPooler: urls.transactionPooler, logger });
  const metrics = createMetrics({ api: true, realtime: opts.realtime !== false, jobs: opts.worker === true });
  metrics.poolMax.set(config.dbPoolMax);
  let worker: WorkerRuntime | undefined;
  if (opts.worker) {
    try {
      worker = await startWorker({ databaseUrl: urls.pooled, directDatabaseUrl: urls.direct, worker: config.worker, embedding: config.embedding, metrics,
                                   logger });
    } catch (err) {
      await database.close();
      throw err;
    }
    config = { ...config, worker: { ...config.worker, expected: true } }; // /ready checks its heartbeat
  }
  const deps: Deps = {
    sql: database.sql,
    lanes: database.lanes,
    config,
    verify: createTokenVerifier(config.auth),
    metrics,
    logger,
  };
  const app = createApp(deps);
  // test runs (VALIDATE_RESPONSES): every response checked against the OpenAPI document; ajv is a devDependency, loaded only then
  const fetch = config.validateResponses
    ? (await import('./http/response-contract.ts')).contractCheckedFetch(app, deps.logger) : app.fetch;
  const http: ServerType = await new Promise((resolve, reject) => {
    const listener = requestListener(fetch, config.host);
    // a missing Host is refused by requestListener, in the one error shape (Node's own answer is an empty 400)
    const s = serve({ fetch, hostname: config.host, port: config.port,
      createServer: (() => createServer({ requireHostHeader: false }, listener)) as never }, () => resolve(s));
    s.once('error', reject);
  });
  let gateway: Gateway | undefined;
  if (opts.realtime !== false) {
    // the bus's logical replication stream needs a walsender session of its own: direct
    gateway = createGateway({ databaseUrl: urls.direct, sql: database.sql, lanes: database.lanes, auth: config.auth, logger: deps.logger,
      trustProxy: config.trustProxy, relaxedEndpointLimits: config.profile === 'development', metrics: deps.metrics, limits: { ...config.realtime, ...opts.realtime?.limits } });
    gateway.attach(http as import('node:http').Server);
    try {
      await gateway.start();
    } catch (err) {
      // no database (or no wal_level=logical) must not keep the HTTP API down: /ready reports it
      deps.logger.error({ err }, 'realtime gateway did not start');
      await gateway.stop().catch(() => {});
      gateway = undefined;
    }
  }
  answerMalformedRequests(http);
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://${config.host}:${port}`,
    deps,
    database,
    gateway,
    worker,
    async stop() {
      // stop accepting first: clients reconnecting after the gateway's 1001 close must reach
      // another process (a balancer sees a refused connection and moves on), not this one
      const closed = new Promise<void>((resolve) => http.close(() => resolve()));
      await gateway?.stop();
      await closed;
      await worker?.stop();
      await database.close();
    },
  };
}

/**
 * The HTTP server's request listener: @hono/node-server's (the Request for `fetch`), except that a
 * request it cannot make into a Request gets the one JSON error shape (PostgREST's under /rest/v1)
 * naming what is wrong, where @hono/node-server answered an empty 400: no Host header on HTTP/1.1,
 * a Host that is not a host[:port] (RFC 9112 §3.2: 400), or a request target it refuses (a
 * backslash in the path, an absolute URL that is not http(s)). A request with more than one Host
 * line is refused too (§3.2: 400; Node kept the first, so the URL the app saw and the host a proxy
 * routed by could differ). Each refusal closes the connection, as for a request Node's parser refuses.
 */
export function requestListener(fetch: (request: Request, env: unknown) => Response | Promise<Response>, hostname: string): RequestListener {
  // the request being turned into a Request: @hono/node-server calls errorHandler synchronously
  // from its listener when that fails (before its first await), so this is the one at fault
  let current: IncomingMessage | undefined;
  const refusal = (incoming: IncomingMessage | undefined, err: ApiError) => {
    const path = (incoming?.url ?? '').split('?')[0]!;
    return { status: err.status, body: incoming?.method === 'HEAD' ? '' : JSON.stringify(isPostgrestPath(path) ? postgrestBody(err) : err.body()) };
  };
  const HEADERS = { 'Content-Type': 'application/json', Connection: 'close' };
  const badHost = (problem: string) => new ApiError('invalid_input', `host: ${problem} (RFC 9112 §3.2)`, { field: 'host' });
  const listener = getRequestListener(fetch as never, {
    hostname,
    errorHandler: (err) => {
      if (!(err instanceof RequestError)) return new Response(null, { status: 500 }); // as without a handler
      // the Host, when it is not one a URL can hold; else the request target
      const host = current?.headers.host;
      const refused = host !== undefined && (/host header/i.test(err.message) || !URL.canParse(`http://${host}/`))
        ? badHost('the Host header is not a host[:port]')
        : new ApiError('invalid_input', `path: the request target is not one this server reads (${err.message.toLowerCase()})`, { field: 'path' });
      const { status, body } = refusal(current, refused);
      return new Response(body === '' ? null : body, { status, headers: HEADERS });
    },
  });
  return (incoming: IncomingMessage, outgoing: ServerResponse) => {
    const problem = hostProblem(incoming);
    if (problem) {
      const refused = new ApiError('invalid_input', problem, { field: 'host' });
      const { status, body } = refusal(incoming, refused);
      outgoing.writeHead(status, { ...HEADERS, 'Content-Length': Buffer.byteLength(body) });
      outgoing.end(body);
      return;
    }
    current = incoming;
    try {
      return listener(incoming, outgoing);
    } finally {
      current = undefined;
    }
  };
}

/**
 * Requests Node's parser refuses before any app sees them (a bad request line, oversized headers)
 * still get the one JSON error shape instead of Node's empty 400 (431 for the headers).
 */
export function answerMalformedRequests(http: ServerType): void {
  http.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket) => {
    if (!socket.writable) return socket.destroy();
    // a HEAD request gets the headers only: a body would be read as the start of a next response
    const head = err.rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
    const refusal = err.code === 'HPE_HEADER_OVERFLOW'
      ? new ApiError('payload_too_large', 'request headers are too large')
      // RFC 9112 §6.3: a request whose last transfer coding is not chunked (or that applies
      // chunked twice) has no knowable length: 400 and close, naming the header
      : err.code === 'HPE_INVALID_TRANSFER_ENCODING'
        ? new ApiError('invalid_input', 'transfer-encoding: a request body\'s last transfer coding must be chunked, applied once '
          + '(RFC 9112 §6.3): send Content-Length, or Transfer-Encoding: chunked', { field: 'transfer-encoding' })
        : new ApiError('invalid_input', 'malformed HTTP request', { field: 'request' });
    // under /rest/v1 in PostgREST's shape, as every other answer there (not-found.ts)
    const path = requestLinePath(err.rawPacket);
    const shape = path !== null && isPostgrestPath(path) ? postgrestBody(refusal) : refusal.body();
    answerAndClose(socket, rawErrorResponse(refusal, err.code === 'HPE_HEADER_OVERFLOW' ? 431 : undefined, head, shape));
  });
  // An Expect header other than 100-continue: Node answers 417 itself, with an empty body and
  // none of the app's headers; here it is the one error shape, naming the header (its value is
  // not echoed). Nothing of the request is read.
  http.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const refusal = new ApiError('invalid_input', 'the Expect header is not supported here: send only Expect: 100-continue, or none', { field: 'expect' });
    const path = (req.url ?? '').split('?')[0]!;
    const body = JSON.stringify(isPostgrestPath(path) ? postgrestBody(refusal) : refusal.body());
    res.writeHead(417, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}
