import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
import type { GatewayRateLimit, Metrics } from '../metrics.ts';
import { WebSocketServer, type WebSocket } from 'ws';
import { SEVERAL_AUTHORIZATIONS, severalAuthorizations } from '../http/authorization.ts';
import { answerAndClose, ApiError, apiErrorFromDatabase, MUTATION_RETRY_NOTE, rawErrorResponse } from '../http/errors.ts';
import { hostProblem } from '../http/host.ts';
import { createTokenVerifier, H1_POLICY, REALTIME_POLICY, TokenError, type AuthConfig, type TokenPolicy } from '../auth/jwt.ts';
import { canvasAccess, USER_GONE_MESSAGE, userGone, watchAccess } from './access.ts';
import { Admission, type SocketTicket } from './admission.ts';
import type { SocketClaims } from './authorize.ts';
import { createDatabaseBus, type DatabaseBus } from './bus.ts';
import { createClusterNode, type ClusterNode } from './cluster.ts';
import { clusterKeyFingerprint, clusterKeySource, clusterKeys } from './cluster-key.ts';
import { H1Socket } from './h1-socket.ts';
import { DEFAULT_LIMITS, Hub, type Limits } from './hub.ts';
import { deliverClientBroadcast, deliverPresenceDiff, PhoenixSocket } from './phoenix-socket.ts';
import { removeNodePresenceSessions, sweepUnknownNodes } from './presence-sessions.ts';
import { createRestBroadcast, type RealtimeRest } from './rest-broadcast.ts';
import { parseVsn } from './serializer.ts';
import { refuseUpgrade, socketRoute } from './unavailable.ts';
import { canonicalUuid } from '../uuid.ts';
import { SEQ_MAX, singleQueryValues } from '../input-policy.ts';

/**
 * The realtime gateway, attached to the HTTP server's `upgrade` event:
 *  - `/realtime/v1/websocket?apikey=<jwt>&vsn=1.0.0|2.0.0` — Supabase Realtime's protocol for
 *    @supabase/realtime-js / supabase-js (phoenix-socket.ts);
 *  - `/ws/canvas/{canvas_id}` — H1, the canvas sync socket (h1-socket.ts, h1-protocol.ts).
 * Both are fed by one database bus per process (bus.ts). Every gateway process is a node of the
 * realtime cluster (cluster.ts): client broadcasts and presence reach the subscribers on every
 * gateway process of the same database.
 */
export type GatewayOptions = {
  databaseUrl: string;
  sql: Sql;
  /** The H1 socket's mutations go down these (src/db/canvas-lanes.ts): the pool's, shared with HTTP. */
  lanes: CanvasLanes;
  auth: AuthConfig;
  logger: Logger;
  limits?: Partial<Limits>;
  /** Tell callers apart by the first X-Forwarded-For entry (TRUST_PROXY), not the peer address (admission.ts). */
  trustProxy?: boolean;
  /** The process's metrics: open sockets, and refusals of the per-caller and per-socket bounds. */
  metrics?: Metrics;
  /** The development profile: endpoint limits shared with HTTP (H1 snapshots count as H4) relaxed as there. */
  relaxedEndpointLimits?: boolean;
  /** REALTIME_CLUSTER_SECRET: the cluster's key (cluster-key.ts); unset: derived from `auth`'s JWT secrets. */
  clusterSecret?: string;
  /** REALTIME_CLUSTER_FRESHNESS_MS: how far a cluster message's send time may be from this gateway's clock (cluster.ts, Freshness; unset: 5 min). */
  clusterFreshnessMs?: number;
};

export type Gateway = {
  attach(server: HttpServer): void;
  /** Undoes attach: `server`'s upgrades no longer reach this gateway (one that failed to start, src/server.ts). */
  detach(server: HttpServer): void;
  start(): Promise<void>;
  stop(): Promise<void>;
  bus: DatabaseBus;
  cluster: ClusterNode;
  /** realtime-js's REST broadcast (/realtime/v1/api/broadcast…), served by the HTTP app (src/http/realtime-rest.ts). */
  rest: RealtimeRest;
};

/**
 * A started gateway's readiness (/ready's `realtime` check, roles `all` and `gateway`): 'ok' while
 * its replication stream is up. While it is down the bus polls realtime.messages (deltas still
 * arrive, later), but cluster presence and client broadcasts from other gateways do not: out of
 * rotation until it is back. A refusal that retrying does not cure is named (replication.ts).
 */
export function gatewayReadiness(gateway: Gateway): string {
  if (gateway.bus.streaming()) return 'ok';
  // a refusal someone must act on (wal_level, a pooler in the way) is named, with what to do
  const refusal = gateway.bus.streamRefusal();
  return refusal ? `replication stream down: ${refusal} (retrying; deltas are polled meanwhile)`
    : 'replication stream down (reconnecting; deltas are polled meanwhile)';
}

export function createGateway(opts: GatewayOptions): Gateway {
  const bus = createDatabaseBus({ databaseUrl: opts.databaseUrl, sql: opts.sql, logger: opts.logger });
  const limits: Limits = { ...DEFAULT_LIMITS, ...opts.limits };
  const rateLimited = (endpoint: GatewayRateLimit) => opts.metrics?.rateLimited.inc({ endpoint });
  const admission = new Admission(limits, opts.trustProxy === true, (limit) => rateLimited(`realtime:${limit}`));
  const hub = new Hub(opts.sql, opts.lanes, bus, opts.logger, limits, admission, opts.relaxedEndpointLimits === true, rateLimited);
  const keys = clusterKeys({ clusterSecret: opts.clusterSecret, jwtSecret: opts.auth.jwtSecret, secondaryJwtSecret: opts.auth.secondaryJwtSecret });
  // (main.ts refuses such a configuration before anything starts: config.ts realtimeConfigProblem)
  if (!keys) throw new Error('the realtime cluster has no key: set REALTIME_CLUSTER_SECRET (the same on every gateway) or JWT_SECRET');
  const cluster = createClusterNode({
    sql: opts.sql,
    keys,
    onRejected: (reason) => opts.metrics?.realtimeClusterRejected.inc({ reason }),
    freshnessMs: opts.clusterFreshnessMs,
    bus,
    presence: hub.presence,
    logger: opts.logger,
    onBroadcast: (key, event, payload) => deliverClientBroadcast(hub, key, event, payload),
    onPresenceDiff: (key, diff) => deliverPresenceDiff(hub, key, diff),
    // its durable presence sessions leave (presence-sessions.ts): its users who hold no other leave their canvases
    onNodeGone: (node) => void removeNodePresenceSessions(opts.sql, opts.logger, node),
    // and this process's, removed so by another gateway that took it for dead, recorded again when it hears this one again
    onHeardAgain: () => hub.recordSessionsAgain(),
  });
  hub.cluster = cluster;
  // which key, so that an operator can compare gateways (the secret never: its fingerprint)
  const keySecrets = { clusterSecret: opts.clusterSecret, jwtSecret: opts.auth.jwtSecret, secondaryJwtSecret: opts.auth.secondaryJwtSecret };
  const keyInfo = { source: clusterKeySource(keySecrets), fingerprint: clusterKeyFingerprint(keys.sign) };
  opts.metrics?.realtimeClusterKey.set(keyInfo, 1);
  opts.metrics?.realtimeClusterNodes.set(0);
  if (opts.metrics) opts.metrics.cluster.nodes = () => cluster.nodes().length;
  // both series from the start (0): a rise is what an alert watches for (docs/realtime.md, Cluster)
  for (const reason of ['unsigned', 'bad_mac', 'replayed', 'stale'] as const) opts.metrics?.realtimeClusterRejected.inc({ reason }, 0);
  opts.metrics?.realtimeStreamUp.set(0);
  bus.onStreamState((up) => {
    opts.metrics?.realtimeStreamUp.set(up ? 1 : 0);
    if (!up) opts.metrics?.realtimeStreamLosses.inc();
  });
  const checkToken = createTokenVerifier(opts.auth);
  let lastKeysWarning = 0;
  /**
   * The token check of every surface of the gateway (the upgrades, phx_join, access_token). A
   * token of the JWKS's keys that cannot be checked because the JWKS could not be fetched
   * (TokenError keys_unavailable) is no verdict on the token: each caller answers it as a
   * transient failure, never as a refused token. Logged at warn, once per 10 s while it lasts
   * (every socket and channel meets it at once).
   */
  const verifyToken = async (token: string, policy: TokenPolicy): Promise<SocketClaims> => {
    try {
      return await checkToken(token, policy);
    } catch (err) {
      if (err instanceof TokenError && err.code === 'keys_unavailable' && monotonicNow() - lastKeysWarning > 10_000) {
        lastKeysWarning = monotonicNow();
        opts.logger.warn({ err: err.cause }, 'the JWKS could not be fetched: realtime tokens signed by its keys are refused as unavailable (retryable) until it answers');
      }
      throw err;
    }
  };
  const verifyRealtime = (token: string) => verifyToken(token, REALTIME_POLICY);
  const wss = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  const sockets = new Set<WebSocket>();
  /** Upgrade requests that became a WebSocket: its close gives the ticket back, not the request's end. */
  const upgraded = new WeakSet<Duplex>();
  let lastCapWarning = 0;
  /**
   * Upgrades are served once start() has finished, until stop(): before, they are answered 503
   * `starting` (unavailable.ts), as role `all` answers them while a failed start waits for its
   * next attempt. A socket accepted before the bus had started subscribed before the bus counted
   * the rows committed until then as delivered, some of them after the subscription (bus.ts start).
   */
  let serving: 'starting' | 'serving' | 'stopping' = 'starting';
  /** the sessions of nodes no live gateway knows (killed unseen): removed from start to stop */
  let unknownSweep: { stop(): void } | null = null;

  /** Answers an upgrade with an API error and closes the socket; `field`: the URL part at fault (a 400). */
  function reject(socket: Duplex, status: 400 | 401 | 403 | 404 | 429 | 503, message: string, retryAfterMs?: number, field?: string): void {
    const code = ({ 400: 'invalid_input', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found', 429: 'rate_limited', 503: 'unavailable' } as const)[status];
    // a WebSocket client cannot read this answer (realtime-js says only "transport failure"): the
    // server's log is where the reason can be found
    opts.logger.info({ status, reason: message }, 'WebSocket upgrade refused');
    const retryAfter = retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(retryAfterMs / 1000));
    answerAndClose(socket, rawErrorResponse(new ApiError(code, message, {
      ...(retryAfter === undefined ? {} : { retry_after: retryAfter }), ...(field === undefined ? {} : { field }),
    })));
  }

  /** Completes the upgrade; the socket keeps `ticket`'s places in the counts until it closes. */
  function accept(req: IncomingMessage, socket: Duplex, head: Buffer, ticket: SocketTicket, protocol: 'phoenix' | 'h1', then: (ws: WebSocket) => void): void {
    wss.handleUpgrade(req, socket, head, (ws) => {
      upgraded.add(socket);
      sockets.add(ws);
      opts.metrics?.realtimeSockets.inc({ protocol });
      ws.on('close', () => {
        sockets.delete(ws);
        ticket.release();
        opts.metrics?.realtimeSockets.dec({ protocol });
      });
      then(ws);
    });
  }

  /** Counts the socket against its user's cap (admission.ts); false after answering 429. */
  function claimUser(socket: Duplex, ticket: SocketTicket, claims: SocketClaims): boolean {
    if (!claims.sub || ticket.claimUser(claims.sub)) return true;
    reject(socket, 429, `too many WebSockets open for this user (at most ${limits.maxSocketsPerUser}): close one first`);
    return false;
  }

  /**
   * The token's claims under `policy`, or null after answering 401 (any other failure
   * propagates). A token whose keys could not be fetched is answered as the HTTP API answers it:
   * 503 `unavailable` with Retry-After, not 401 (realtime-js and @potentia/client reconnect after
   * either, but a 401 says the session is over).
   */
  async function verifyOrReject(socket: Duplex, token: string, policy: TokenPolicy): Promise<SocketClaims | null> {
    try {
      return await verifyToken(token, policy);
    } catch (err) {
      if (err instanceof TokenError) {
        if (err.code === 'keys_unavailable') reject(socket, 503, err.message, 1000);
        else reject(socket, 401, err.message);
        return null;
      }
      throw err;
    }
  }

  async function realtime(req: IncomingMessage, socket: Duplex, head: Buffer, url: URL, ticket: SocketTicket): Promise<void> {
    const query = singleQueryValues(url.searchParams, ['vsn', 'apikey']);
    if (!('values' in query)) return reject(socket, 400, query.message, undefined, query.field);
    const vsn = parseVsn(query.values.vsn);
    if (!vsn) return reject(socket, 400, 'unsupported vsn: use 1.0.0 or 2.0.0', undefined, 'vsn');
    const apikeys = req.headersDistinct.apikey ?? [];
    if (apikeys.length > 1) return reject(socket, 400, `apikey: ${apikeys.length} apikey headers: send one`, undefined, 'apikey');
    const key = oneToken([query.values.apikey, apikeys[0]]);
    if (key === SEVERAL) return reject(socket, 400, `apikey: ${SEVERAL_TOKENS} (the apikey query parameter, the apikey header)`, undefined, 'apikey');
    const bearerToken = bearer(req);
    const token = key ?? bearerToken;
    if (!token) return reject(socket, 401, 'apikey is required');
    const claims = await verifyOrReject(socket, token, REALTIME_POLICY);
    if (!claims) return;
    // Supabase's pair, as supabase-js sends it on every request: apikey the project's key, Authorization
    // the user's JWT. The socket runs as the key, as on Supabase Realtime (a channel's user comes from
    // its join's access_token); the Bearer grants nothing here. An apikey that is a user's token
    // beside another token in Authorization is two credentials, refused.
    if (key !== undefined && bearerToken !== undefined && bearerToken !== key && claims.sub !== undefined) {
      return reject(socket, 400, `apikey: ${SEVERAL_TOKENS} (a user's token as apikey, another in Authorization: Bearer)`, undefined, 'apikey');
    }
    if (!claimUser(socket, ticket, claims)) return;
    accept(req, socket, head, ticket, 'phoenix', (ws) => new PhoenixSocket(ws, hub, vsn, token, verifyRealtime, ticket.address));
  }

  async function h1(req: IncomingMessage, socket: Duplex, head: Buffer, url: URL, canvasIdAsSent: string, ticket: SocketTicket): Promise<void> {
    // any case is the same canvas; its topic and access checks use the canonical spelling (canvas-topic.ts)
    const canvasId = canonicalUuid(canvasIdAsSent);
    if (!canvasId) return reject(socket, 400, 'canvas_id must be a uuid', undefined, 'canvas_id');
    // the same bound as a resume frame's (h1-protocol.ts, SEQ_MAX), and a message that says it
    const query = singleQueryValues(url.searchParams, ['since_canvas_seq', 'since_seq', 'access_token', 'snapshot_parts']);
    if (!('values' in query)) return reject(socket, 400, query.message, undefined, query.field);
    const snapshotParts = query.values.snapshot_parts;
    if (snapshotParts !== null && snapshotParts !== '1') return reject(socket, 400, 'snapshot_parts must be 1 (the client joins a snapshot sent in parts)', undefined, 'snapshot_parts');
    for (const name of ['since_canvas_seq', 'since_seq'] as const) {
      const value = query.values[name];
      if (value !== null && !(/^\d{1,16}$/.test(value) && Number(value) <= SEQ_MAX)) {
        return reject(socket, 400, `${name} must be a whole number from 0 to ${SEQ_MAX}`, undefined, name);
      }
    }
    const { since_canvas_seq: sinceCanvas, since_seq: since } = query.values;
    const token = oneToken([query.values.access_token, bearer(req)]);
    if (token === SEVERAL) return reject(socket, 400, `access_token: ${SEVERAL_TOKENS} (the access_token query parameter, Authorization: Bearer)`, undefined, 'access_token');
    if (!token) return reject(socket, 401, 'a JWT is required (access_token query parameter or Authorization: Bearer)');
    const claims = await verifyOrReject(socket, token, H1_POLICY); // a signed-in user, sub a UUID
    if (!claims || !claimUser(socket, ticket, claims)) return;
    // the access check is a database transaction: bounded per user across sockets
    const waitMs = admission.authorize(claims, ticket.address);
    if (waitMs > 0) {
      return reject(socket, 429, `too many canvas connections per second for this user (at most ${limits.authorizationsPerSecond}): retry in ${waitMs} ms`, waitMs);
    }
    // re-run on every access change (access.ts); watched from before the check, so one committed
    // while it runs is re-checked once the socket listens
    const watch = watchAccess(hub, `canvas:${canvasId}`, claims);
    socket.once('close', () => watch.stop());
    const access = await canvasAccess(opts.sql, claims, canvasId).catch((err) => { watch.stop(); throw err; });
    if (!access.read) {
      watch.stop();
      // a deleted user's token: 401, as the HTTP API answers it, not the 404 of a non-member
      if (await userGone(opts.sql, claims)) return reject(socket, 401, USER_GONE_MESSAGE);
      return reject(socket, 404, 'canvas not found, or you are not a member of it');
    }
    const sinceSeq = since === null ? null : Number(since);
    accept(req, socket, head, ticket, 'h1', (ws) => {
      const h1Socket = new H1Socket(ws, hub, canvasId, claims, access, sinceSeq, sinceCanvas === null ? null : Number(sinceCanvas), snapshotParts === '1');
      if (watch.messageIds.length > 0) h1Socket.recheckAccess(watch.messageIds);
      watch.stop();
    });
  }

  /**
   * The answer to an upgrade whose own work failed (H1's access check in the database): the
   * database's failures as the HTTP API answers them (apiErrorFromDatabase: a lost connection or an
   * unreachable server 503 `unavailable` with Retry-After, a statement timeout 504 `timeout`), logged
   * as a warning; anything else 500 `internal`, logged as an error. Before, a check whose connection
   * was terminated was 500 `internal`, as if the gateway were broken.
   */
  function upgradeFailure(err: unknown): ApiError {
    const error = apiErrorFromDatabase(err);
    if (error.code === 'internal') {
      opts.logger.error({ err }, 'WebSocket upgrade failed');
      return new ApiError('internal', 'internal error: the WebSocket upgrade failed');
    }
    opts.logger.warn({ err, code: error.code }, 'WebSocket upgrade failed: the database did not answer its check');
    // no mutation was sent: the HTTP API's note on resending them does not apply
    return new ApiError(error.code, error.message.replace(MUTATION_RETRY_NOTE, ''), error.details);
  }

  function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    if (serving !== 'serving') return refuseUpgrade(req, socket, { state: serving }, opts.logger);
    socket.on('error', () => {});
    // the address's place is taken before anything else (a token check, a database probe), so
    // upgrades sent all at once cannot pass the cap together
    const address = admission.addressOf(req);
    const ticket = admission.admit(address);
    if (typeof ticket === 'string') {
      // a flood is refused quietly: one line per 10 s says it is happening, and to whom
      if (monotonicNow() - lastCapWarning > 10_000) {
        lastCapWarning = monotonicNow();
        opts.logger.warn({ address }, `WebSocket refused: ${ticket}`);
      }
      answerAndClose(socket, rawErrorResponse(new ApiError('rate_limited', ticket)));
      return;
    }
    // one Host, a host[:port] (RFC 9112 §3.2), as for every HTTP request (src/server.ts): any, two or none were upgraded
    const badHost = hostProblem(req);
    if (badHost) {
      ticket.release();
      return reject(socket, 400, badHost, undefined, 'host');
    }
    // one credential, as on every HTTP surface (authorization.ts): req.headers keeps the first of two
    if (severalAuthorizations(req.headersDistinct.authorization)) {
      ticket.release();
      return reject(socket, 400, SEVERAL_AUTHORIZATIONS, undefined, 'authorization');
    }
    let handled: Promise<void> | undefined;
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      // (the canvas id is matched as sent: a canvas id is a UUID, which needs no percent-decoding)
      const route = socketRoute(url.pathname);
      if (route?.protocol === 'phoenix') handled = realtime(req, socket, head, url, ticket);
      else if (route?.protocol === 'h1') handled = h1(req, socket, head, url, route.canvasId, ticket);
    } catch (err) {
      handled = Promise.reject(err); // answered below: an upgrade event must never throw
    }
    if (!handled) {
      ticket.release();
      return reject(socket, 404, 'no WebSocket endpoint here');
    }
    handled.catch((err) => {
      if (!socket.destroyed) answerAndClose(socket, rawErrorResponse(upgradeFailure(err)));
    }).finally(() => {
      // refused, failed or closed during the upgrade: no WebSocket holds the places
      if (!upgraded.has(socket)) ticket.release();
    });
  }

  return {
    bus,
    cluster,
    rest: createRestBroadcast(hub, cluster, admission, limits),
    attach(server) {
      server.on('upgrade', onUpgrade);
    },
    detach(server) {
      server.off('upgrade', onUpgrade);
    },
    async start() {
      await bus.start();
      await cluster.start();
      unknownSweep = sweepUnknownNodes(opts.sql, opts.logger, cluster);
      serving = 'serving';
      opts.logger?.info({ clusterKey: { ...keyInfo, accepted: keys.accept.map(clusterKeyFingerprint) } },
        'realtime cluster key: every gateway of this deployment must sign with the same fingerprint (else each counts the others\' messages as bad_mac)');
    },
    async stop() {
      serving = 'stopping';
      // 1001 "going away": clients reconnect (to another gateway) instead of seeing an abnormal 1006
      const closing = [...sockets].map((ws) => new Promise<void>((resolve) => {
        ws.once('close', () => resolve());
        ws.close(1001, 'server shutting down');
      }));
      await Promise.race([Promise.all(closing), new Promise((r) => setTimeout(r, 1000))]);
      for (const ws of sockets) ws.terminate();
      wss.close();
      // this process's durable presence sessions: each channel's and socket's close leaves its own,
      // but a close still on its way as the process ends would leave its session behind (the other
      // gateways remove them too, on `leave`; alone, nobody would until the rows expired). Once, and
      // for at most 2 s, as `leave` below: a stop never waits long on a database that is down.
      unknownSweep?.stop();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([removeNodePresenceSessions(opts.sql, opts.logger, cluster.id, 1),
        new Promise<void>((r) => { timer = setTimeout(r, 2000); })]).finally(() => clearTimeout(timer));
      await cluster.stop(); // `leave`: the other gateways drop this one's presences (and sessions) at once
      await bus.stop();
    },
  };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const SEVERAL = Symbol('several tokens');
const SEVERAL_TOKENS = 'different tokens in two places: send one (RFC 6750 §2: one method per request)';

/**
 * The one token an upgrade carries in any of `carriers`, undefined when none. Two that differ are
 * two credentials: SEVERAL, refused, where the first found was used and the other ignored
 * unseen (a proxy or log in front may have judged the request by it). The same token twice is one.
 */
function oneToken(carriers: (string | null | undefined)[]): string | undefined | typeof SEVERAL {
  const sent = new Set(carriers.filter((t): t is string => typeof t === 'string' && t !== ''));
  if (sent.size > 1) return SEVERAL;
  return sent.values().next().value;
}

function bearer(req: IncomingMessage): string | undefined {
  const auth = header(req, 'authorization');
  const m = auth ? /^Bearer\s+(.+)$/i.exec(auth) : null;
  return m?.[1];
}
