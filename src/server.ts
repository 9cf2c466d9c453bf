import { getRequestListener, RequestError, serve, type ServerType } from '@hono/node-server';
import { createServer, type IncomingMessage, type RequestListener, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { pino, type Logger } from 'pino';
import { createTokenVerifier } from './auth/jwt.ts';
import { socketCaps, type Config } from './config.ts';
import { createDatabase, type Database } from './db/index.ts';
import { connectionUrls } from './db/pooling.ts';
import { createApp } from './http/app.ts';
import { answerAndClose, ApiError, rawErrorResponse } from './http/errors.ts';
import { gotrueAnswer, gotrueErrorOf } from './http/gotrue.ts';
import { hostProblem } from './http/host.ts';
import { isPostgrestPath, postgrestBody, requestLinePath } from './http/not-found.ts';
import type { Deps } from './http/env.ts';
import type { RealtimeRestDeps } from './http/realtime-rest.ts';
import { createMetrics } from './metrics.ts';
import { startWorker, type WorkerRuntime } from './worker/runtime.ts';
import { monotonicNow } from './clock.ts';
import { createGateway, gatewayReadiness, type Gateway } from './realtime/gateway.ts';
import type { Limits } from './realtime/hub.ts';
import { refuseUpgrade, type GatewayDown } from './realtime/unavailable.ts';

/** The local Potentia process: database pool, metrics and the HTTP server, with an explicit lifecycle. */
export type Server = { url: string; deps: Deps; database: Database; gateway?: Gateway; worker?: WorkerRuntime; stop(): Promise<void> };

export type ServerOptions = {
  logger?: Logger;
  /** The realtime gateway (/realtime/v1/websocket and H1 /ws/canvas/{id}); on unless false. */
  realtime?: false | { limits?: Partial<Limits> };
  /** The background-job worker (src/worker) in this process; off unless true (npm start passes WORKER_MODE=inprocess). */
  worker?: boolean;
  /**
   * How long a request may take to arrive (Node's http.Server headersTimeout, requestTimeout; its
   * defaults, 60 s and 300 s, unless set), and how often Node checks (its
   * connectionsCheckingInterval, 30 s). A request past one is answered 408 (answerMalformedRequests).
   */
  requestTimeouts?: { headersMs?: number; requestMs?: number; checkEveryMs?: number };
};

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<Server> {
  // DATABASE_URL may be a transaction pooler; what needs a session uses the direct URL (db/pooling.ts)
  const urls = connectionUrls(config);
  const logger = opts.logger ?? pino({ level: config.logLevel });
  const database = createDatabase(urls.pooled, { max: config.dbPoolMax, applicationName: 'potentia-server', transactionPooler: urls.transactionPooler, logger });
  const metrics = createMetrics({ api: true, realtime: opts.realtime !== false, jobs: opts.worker === true });
  metrics.poolMax.set(config.dbPoolMax);
  let worker: WorkerRuntime | undefined;
  if (opts.worker) config = { ...config, worker: { ...config.worker, expected: true } }; // /ready checks its heartbeat
  const deps: RealtimeRestDeps = {
    sql: database.sql,
    lanes: database.lanes,
    config,
    verify: createTokenVerifier(config.auth),
    metrics,
    logger,
    // no gateway in this process (--role api): its REST broadcast is the gateways' (realtime-rest.ts)
    ...(opts.realtime === false ? { realtime: null } : {}),
  };
  const app = createApp(deps);
  // test runs (VALIDATE_RESPONSES): every response checked against the OpenAPI document; ajv is a devDependency, loaded only then
  const fetch = config.validateResponses
    ? (await import('./http/response-contract.ts')).contractCheckedFetch(app, deps.logger) : app.fetch;
  // the port before the worker: a second `npm start` on a taken port fails before its worker takes
  // a job or writes a heartbeat that would outlive it (src/roles.ts does the same for the worker role)
  const http: ServerType = await new Promise<ServerType>((resolve, reject) => {
    const listener = requestListener(fetch, config.host);
    // a missing Host is refused by requestListener, in the one error shape (Node's own answer is an empty 400)
    const s = serve({ fetch, hostname: config.host, port: config.port,
      createServer: (() => createServer({ requireHostHeader: false, ...requestTimeouts(opts.requestTimeouts) }, listener)) as never },
      () => resolve(s));
    s.once('error', reject);
  }).catch(async (err: unknown) => {
    await database.close();
    throw err;
  });
  let stopped = false;
  /** The gateway's attempts failed so far, and (monotonicNow) when the next one is due. */
  let failed = { attempts: 0, retryAt: 0 };
  const down = (): GatewayDown => (stopped ? { state: 'stopping' } : failed.attempts === 0 ? { state: 'starting' }
    : { state: 'retrying', failures: failed.attempts, retryInMs: failed.retryAt - monotonicNow() });
  /**
   * The port's upgrades while no gateway is attached (from now, before the first attempt, and while
   * a failed one waits for the next): 503 `unavailable` with Retry-After, for realtime-js and a
   * balancer to try again (unavailable.ts). Without a listener Node handed them to the app as GET
   * requests, answered 404 `no route`, as role `api`, which never runs a gateway, answers them.
   */
  const refuse = (req: IncomingMessage, socket: Duplex) => refuseUpgrade(req, socket, down(), deps.logger);
  const httpServer = http as import('node:http').Server;
  if (opts.realtime !== false) httpServer.on('upgrade', refuse);
  if (opts.worker) {
    try {
      worker = await startWorker({ databaseUrl: urls.pooled, directDatabaseUrl: urls.direct, worker: config.worker, embedding: config.embedding, metrics,
                                   logger });
    } catch (err) {
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await database.close();
      throw err;
    }
  }
  let gateway: Gateway | undefined;
  let startingGateway: Promise<void> | undefined;
  let gatewayRetry: NodeJS.Timeout | undefined;
  if (opts.realtime !== false) {
    const realtimeOpts = opts.realtime;
    let notStarted = 'starting';
    /**
     * One attempt at the gateway: a new one, attached to the port, started. A gateway whose start
     * failed (its first queries: the database did not answer, a lock held past lock_timeout, a
     * permission missing) is stopped and detached, and another is tried after a backoff (1 s,
     * doubling, at most 30 s), for as long as the process runs: the HTTP API stays up meanwhile,
     * and /ready says `realtime: not started (…)` (503), so a balancer sends no realtime traffic
     * here. Before, the failure was logged once, the process never tried again and answered /ready
     * 200 without a gateway.
     */
    const attempt = async (failures: number): Promise<void> => {
      let g: Gateway | undefined;
      try {
        // (throws without a cluster key: no REALTIME_CLUSTER_SECRET nor JWT_SECRET, which main.ts refuses first)
        g = createGateway({ databaseUrl: urls.direct, sql: database.sql, lanes: database.lanes, auth: config.auth, logger: deps.logger,
          trustProxy: config.trustProxy, relaxedEndpointLimits: config.profile === 'development', metrics: deps.metrics,
          limits: { ...socketCaps(config), ...realtimeOpts?.limits }, clusterSecret: config.realtime.clusterSecret,
          clusterFreshnessMs: config.realtime.clusterFreshnessMs });
        // the gateway answers the port's upgrades from here (503 `starting` until started)
        httpServer.off('upgrade', refuse);
        g.attach(httpServer);
        await g.start();
        if (stopped) throw new Error('the server stopped while its realtime gateway started');
        gateway = g;
        deps.realtime = g.rest;
        if (failures > 0) deps.logger.info({ attempts: failures + 1 }, 'realtime gateway started');
      } catch (err) {
        const retryMs = Math.min(30_000, 1000 * 2 ** failures);
        failed = { attempts: failures + 1, retryAt: monotonicNow() + retryMs };
        g?.detach(httpServer);
        if (!httpServer.listeners('upgrade').includes(refuse)) httpServer.on('upgrade', refuse);
        await g?.stop().catch(() => {});
        if (stopped) return;
        notStarted = `not started (${failures + 1} attempt${failures === 0 ? '' : 's'} failed, the server log has the error; retrying)`;
        deps.logger.error({ err, attempt: failures + 1, retryInMs: retryMs }, 'realtime gateway did not start; retrying (the HTTP API serves meanwhile; /ready is 503)');
        gatewayRetry = setTimeout(() => { startingGateway = attempt(failures + 1); }, retryMs);
        gatewayRetry.unref();
      }
    };
    // (the port answers /ready already: 'starting' until the first attempt ends)
    deps.realtimeReadiness = () => (gateway ? gatewayReadiness(gateway) : notStarted);
    // the bus's logical replication stream needs a walsender session of its own: urls.direct
    startingGateway = attempt(0);
    await startingGateway;
  }
  answerMalformedRequests(http, { gotrue: true });
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://${config.host}:${port}`,
    deps,
    database,
    /** The realtime gateway once started (undefined while a failed start is being tried again). */
    get gateway() { return gateway; },
    worker,
    async stop() {
      // no further attempt at the gateway; one under way stops its own (attempt)
      stopped = true;
      clearTimeout(gatewayRetry);
      // stop accepting first: clients reconnecting after the gateway's 1001 close must reach
      // another process (a balancer sees a refused connection and moves on), not this one
      const closed = new Promise<void>((resolve) => http.close(() => resolve()));
      await startingGateway;
      await gateway?.stop();
      await closed;
      await worker?.stop();
      await database.close();
    },
  };
}

/** ServerOptions.requestTimeouts as node:http's createServer options (what is not set keeps Node's default). */
function requestTimeouts(t: ServerOptions['requestTimeouts'] = {}) {
  return { ...(t.headersMs === undefined ? {} : { headersTimeout: t.headersMs }), ...(t.requestMs === undefined ? {} : { requestTimeout: t.requestMs }),
    ...(t.checkEveryMs === undefined ? {} : { connectionsCheckingInterval: t.checkEveryMs }) };
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
 * Requests Node's HTTP server refuses before any app sees them, or gives up on, still get the one
 * JSON error shape (GoTrue's under /auth/v1 when `opts.gotrue`, PostgREST's under /rest/v1) naming
 * what is wrong, instead of Node's bare answer or none:
 *  - what its parser refuses: headers over its limit (431, field `headers`), a Content-Length that
 *    is not one decimal length (field `content-length`), a transfer coding it cannot frame (field
 *    `transfer-encoding`), a chunk that is not a chunk (field `body`; an extension over Node's limit:
 *    413), anything else (field `request`): 400 unless said;
 *  - a request that did not arrive in time (Node's headersTimeout for its headers, requestTimeout
 *    for the whole request: a stalled or very slow client, a body that never ends): 408 `timeout`
 *    naming `headers` or `body`. Not a malformed request: it may be sent again as it was (these were
 *    400 "malformed HTTP request", which a client does not send again).
 * The connection is closed. A request Node had already handed to the app (a bad chunk, a body that
 * stopped coming) is named by its own method and path; if its answer has begun, nothing more is
 * written (it would be read as part of that answer), the socket is only closed, as Node does.
 */
export function answerMalformedRequests(http: ServerType, opts: { gotrue?: boolean } = {}): void {
  const server = http as import('node:http').Server;
  http.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket) => {
    if (!socket.writable) return socket.destroy();
    const inFlight = (socket as { _httpMessage?: ServerResponse | null })._httpMessage ?? undefined;
    if (inFlight?.headersSent) return socket.destroy();
    // the request at fault when Node had handed it to the app before its body was all in (a bad
    // chunk, a body that stopped coming); else the next one on the connection, not yet parsed
    const request = inFlight?.req && !inFlight.req.complete ? inFlight.req : undefined;
    const { refusal, status } = clientRefusal(err, request !== undefined, server);
    // a HEAD request gets the headers only: a body would be read as the start of a next response
    const head = request ? request.method === 'HEAD' : err.rawPacket?.subarray(0, 5).toString('latin1') === 'HEAD ';
    const path = request ? (request.url ?? '').split('?')[0]! : requestLinePath(err.rawPacket);
    const version = request ? request.headers['x-supabase-api-version'] : rawHeader(err.rawPacket, 'x-supabase-api-version');
    answerAndClose(socket, refusalResponse(refusal, status, path, opts.gotrue === true ? version : false, head));
  });
  // An Expect header other than 100-continue: Node answers 417 itself, with an empty body and
  // none of the app's headers; here it is the one error shape, naming the header (its value is
  // not echoed). Nothing of the request is read.
  http.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const refusal = new ApiError('invalid_input', 'the Expect header is not supported here: send only Expect: 100-continue, or none', { field: 'expect' });
    const path = (req.url ?? '').split('?')[0]!;
    const answer = answerShape(refusal, 417, path, opts.gotrue === true ? req.headers['x-supabase-api-version'] : false);
    const body = JSON.stringify(answer.body);
    res.writeHead(417, { ...answer.headers, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), Connection: 'close' });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
}

/** What a request Node's server refused (`err`, from its 'clientError') is answered: the error and the status. */
function clientRefusal(err: NodeJS.ErrnoException, handedToApp: boolean, server: import('node:http').Server): { refusal: ApiError; status?: number } {
  switch (err.code) {
    case 'ERR_HTTP_REQUEST_TIMEOUT': {
      const seconds = (ms: number) => `${Math.round(ms / 100) / 10} s`;
      return { status: 408, refusal: handedToApp
        ? new ApiError('timeout', `body: the request did not arrive in full within ${seconds(server.requestTimeout)} of its start `
          + '(a stalled or very slow upload, or a body that never ends): send it again', { field: 'body' })
        : new ApiError('timeout', `headers: the request's headers did not arrive in full within ${seconds(server.headersTimeout)} `
          + '(a stalled or very slow connection): send the request again', { field: 'headers' }) };
    }
    case 'HPE_HEADER_OVERFLOW':
      return { status: 431, refusal: new ApiError('payload_too_large', 'request headers are too large', { field: 'headers' }) };
    // RFC 9112 §6.3: a request whose last transfer coding is not chunked (or that applies chunked
    // twice, or also has a Content-Length) has no knowable length: 400 and close, naming the header
    case 'HPE_INVALID_TRANSFER_ENCODING':
      return { refusal: new ApiError('invalid_input', 'transfer-encoding: a request body\'s last transfer coding must be chunked, applied once '
        + '(RFC 9112 §6.3): send Content-Length, or Transfer-Encoding: chunked', { field: 'transfer-encoding' }) };
    case 'HPE_INVALID_CONTENT_LENGTH':
    case 'HPE_UNEXPECTED_CONTENT_LENGTH':
      return { refusal: new ApiError('invalid_input', 'content-length: send one Content-Length, a length in decimal digits (RFC 9110 §8.6), '
        + 'or Transfer-Encoding: chunked instead', { field: 'content-length' }) };
    case 'HPE_CHUNK_EXTENSIONS_OVERFLOW':
      return { status: 413, refusal: new ApiError('payload_too_large', 'body: a chunk\'s extensions are larger than this server reads', { field: 'body' }) };
    case 'HPE_INVALID_CHUNK_SIZE':
      return { refusal: new ApiError('invalid_input', 'body: a chunk of the chunked body does not start with its size in hex digits '
        + '(RFC 9112 §7.1), or its size is too large', { field: 'body' }) };
    default:
      return { refusal: new ApiError('invalid_input', 'malformed HTTP request', { field: 'request' }) };
  }
}

/**
 * `refusal` in the error shape of the API its `path` is under, with that API's headers:
 * PostgREST's under /rest/v1, GoTrue's under /auth/v1 unless `gotrueVersion` is false (the
 * X-Supabase-Api-Version the request sent picks GoTrue's shape), else ours.
 */
function answerShape(refusal: ApiError, status: number, path: string | null, gotrueVersion: string | string[] | undefined | false):
  { body: unknown; headers: Record<string, string> } {
  if (path !== null && isPostgrestPath(path)) return { body: postgrestBody(refusal), headers: {} };
  if (gotrueVersion !== false && path !== null && (path === '/auth/v1' || path.startsWith('/auth/v1/'))) {
    const gotrue = gotrueErrorOf(refusal, status);
    if (gotrue) return gotrueAnswer(gotrue, Array.isArray(gotrueVersion) ? gotrueVersion[0] : gotrueVersion);
  }
  return { body: refusal.body(), headers: {} };
}

function refusalResponse(refusal: ApiError, status: number | undefined, path: string | null, gotrueVersion: string | string[] | undefined | false,
  headOnly: boolean): string {
  const answer = answerShape(refusal, status ?? refusal.status, path, gotrueVersion);
  return rawErrorResponse(refusal, status, headOnly, answer.body, answer.headers);
}

/** The value of header `name` (lower case) in the head of a refused request as Node's parser had it, if there. */
function rawHeader(raw: Buffer | undefined, name: string): string | undefined {
  const head = raw?.subarray(0, 16384).toString('latin1');
  const match = head ? new RegExp(`\\r\\n${name}:[ \\t]*([^\\r\\n]*?)[ \\t]*\\r\\n`, 'i').exec(head) : null;
  return match?.[1];
}
