import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * The `endpoint` labels of potentia_rate_limit_rejections_total that the HTTP API counts: the ids of
 * app.endpoint_limits its handlers take (functions/*.ts; M3 is never counted, docs/limits.md), and
 * `auth`, the sign-in limits of /auth/v1 (src/http/gotrue.ts).
 */
export const API_RATE_LIMITS = [
  'H2', 'H3', 'H4', 'H5', 'H6', 'H7', 'A1', 'A2', 'A3', 'A4', 'A5', 'A6', 'A7', 'A8', 'S2',
  'W1', 'W2', 'W3', 'W4', 'W5', 'W6', 'W7', 'W8', 'W9', 'W10', 'F1', 'F2', 'F3', 'auth',
] as const;
export type ApiRateLimit = typeof API_RATE_LIMITS[number];

/**
 * The `endpoint` labels the realtime gateway counts: its per-caller bounds (src/realtime/admission.ts),
 * sockets closed past the frame rate, and an H1 resume's snapshot refused as H4 (docs/realtime.md).
 */
export const GATEWAY_RATE_LIMITS = [
  'realtime:sockets_per_address', 'realtime:sockets_per_user', 'realtime:authorizations', 'realtime:messages',
  'realtime:phoenix_frames', 'realtime:h1_frames', 'H4',
] as const;
export type GatewayRateLimit = typeof GATEWAY_RATE_LIMITS[number];

/** The `outcome` labels of potentia_jobs_total (src/worker/runtime.ts shows each task's at 0 from its start). */
export const JOB_OUTCOMES = ['success', 'error', 'failed'] as const;

/** What a process serves (src/roles.ts), and so which of its metrics it exposes. */
export type MetricParts = { api: boolean; realtime: boolean; jobs: boolean };

/**
 * Prometheus metrics of one process, in their own registry (no hidden global). Every metric object
 * exists, so code may record into any, but the registry exposes only those of the parts the
 * process serves: a worker's /metrics has no API pool gauges stuck at 0, a gateway's no job
 * queue. The HTTP request metrics are always there (every role answers its probes over HTTP).
 */
export function createMetrics(parts: MetricParts = { api: true, realtime: true, jobs: true }) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const exposedIf = (on: boolean) => (on ? [registry] : []);
  // this process's worker (src/worker/runtime.ts): when it last recorded its heartbeat and read
  // the queue depth (performance.now()), and how old a depth may be and still be shown
  const worker = { heartbeatAt: undefined as number | undefined, depthAt: undefined as number | undefined, depthValidMs: Infinity };
  // this process's realtime cluster node (src/realtime/gateway.ts): how many other gateways it hears
  const cluster = { nodes: undefined as (() => number) | undefined };
  const ageMs = (at: number | undefined) => (at === undefined ? undefined : performance.now() - at);
  const rateLimited = new Counter({
    name: 'potentia_rate_limit_rejections_total', help: 'requests rejected by a rate limit', labelNames: ['endpoint'],
    registers: exposedIf(parts.api || parts.realtime),
  });
  // every series this process can count is shown from the start, at 0: a series that appears only
  // at the first refusal gives rate() and increase() nothing to compare it with (that refusal is
  // never seen), and an alert on it nothing to evaluate before it
  const limits = new Set<string>([...(parts.api ? API_RATE_LIMITS : []), ...(parts.realtime ? GATEWAY_RATE_LIMITS : [])]);
  for (const endpoint of limits) rateLimited.inc({ endpoint }, 0);
  const httpDuration = new Histogram({
    name: 'potentia_http_request_duration_seconds', help: 'HTTP request latency by route, method and status',
    labelNames: ['route', 'method', 'status'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  });
  return {
    registry,
    worker,
    cluster,
    // one request, one observation of httpDuration: this counter is its _count by the same labels,
    // read when the metrics are (collect), not counted again on every request (a labelled
    // update costs a request as much as the observation itself). Record requests in httpDuration.
    httpRequests: new Counter({
      name: 'potentia_http_requests_total', help: 'HTTP requests by route, method and status',
      labelNames: ['route', 'method', 'status'], registers: [registry],
      async collect() {
        const counts = (await httpDuration.get()).values.filter((v) => v.metricName === 'potentia_http_request_duration_seconds_count');
        this.reset();
        for (const { labels, value } of counts) this.inc(labels as Record<'route' | 'method' | 'status', string>, value);
      },
    }),
    httpDuration,
    rpcDuration: new Histogram({
      name: 'potentia_rpc_duration_seconds', help: 'database RPC latency by function and outcome',
      labelNames: ['fn', 'outcome'], buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
      registers: exposedIf(parts.api),
    }),
    rateLimited,
    poolInUse: new Gauge({ name: 'potentia_db_pool_in_use', help: 'API requests running on the database (a process\'s mutations of one canvas share one connection, its canvas lane)', registers: exposedIf(parts.api) }),
    poolMax: new Gauge({ name: 'potentia_db_pool_max', help: 'database pool size', registers: exposedIf(parts.api) }),
    // the realtime gateway (src/realtime): refusals of its per-caller bounds count in rateLimited,
    // endpoint realtime:<limit> (src/realtime/admission.ts); sockets closed past the frame rate
    // (hub.ts framesPerSecond) as realtime:phoenix_frames / realtime:h1_frames; an H1 resume's
    // snapshot refused as H4, the limit it shares with GET /canvas/{id}/snapshot
    realtimeSockets: new Gauge({
      name: 'potentia_realtime_sockets', help: 'WebSockets open on this gateway process, by protocol (phoenix = realtime-js, h1)',
      labelNames: ['protocol'], registers: exposedIf(parts.realtime),
    }),
    // the gateway's logical replication stream (src/realtime/bus.ts): what /ready's `realtime`
    // check says, as a series an alert can watch
    realtimeStreamUp: new Gauge({
      name: 'potentia_realtime_replication_stream_up', help: "1 while this gateway's logical replication stream is up; 0 while it is down or stalled (deltas are then polled from realtime.messages, other gateways' presence and broadcasts do not arrive)",
      registers: exposedIf(parts.realtime),
    }),
    realtimeStreamLosses: new Counter({
      name: 'potentia_realtime_replication_stream_losses_total', help: "times this gateway's replication stream was lost (backend terminated, server restart, connection closed or stalled) and reconnected",
      registers: exposedIf(parts.realtime),
    }),
    // the realtime cluster's messages (src/realtime/cluster.ts) dropped unread for their MAC (another
    // database role writing under the cluster's prefix, or a gateway with another key), their number,
    // or their send time (a clock off, or a message written again later)
    realtimeClusterRejected: new Counter({
      name: 'potentia_realtime_cluster_messages_rejected_total', help: "realtime cluster messages this gateway dropped unread: unsigned (no MAC of this version's format: another writer of the prefix, a gateway of an older version), bad_mac (signed with no key this gateway accepts: a forgery, or a gateway with another REALTIME_CLUSTER_SECRET / JWT_SECRET), replayed (numbered at or below the last message read of its gateway: a genuine message written again, or a gateway's statement run again after a lost connection once it had landed) or stale (sent more than REALTIME_CLUSTER_FRESHNESS_MS, 5 min, before or after this gateway's clock: check the hosts' clocks (NTP); a stream lagging behind the WAL by more than that; or a captured message written again later)",
      labelNames: ['reason'], registers: exposedIf(parts.realtime),
    }),
    // which key the gateway signs the cluster's messages with, and whom it hears (src/realtime/gateway.ts):
    // an operator whose gateways count each other's messages as bad_mac finds the odd one out
    realtimeClusterKey: new Gauge({
      name: 'potentia_realtime_cluster_key_info', help: "1, labelled with the secret the realtime cluster's key comes from (REALTIME_CLUSTER_SECRET, else JWT_SECRET) and its fingerprint (a MAC of a fixed label under the key, not the key): every gateway of one deployment must show the same fingerprint",
      labelNames: ['source', 'fingerprint'], registers: exposedIf(parts.realtime),
    }),
    realtimeClusterNodes: new Gauge({
      name: 'potentia_realtime_cluster_nodes', help: 'the other gateways this gateway hears in its realtime cluster (messages under its key); with N gateways, N - 1',
      registers: exposedIf(parts.realtime),
      collect() { if (cluster.nodes) this.set(cluster.nodes()); },
    }),
    // background jobs (src/worker)
    jobQueueDepth: new Gauge({
      name: 'potentia_job_queue_depth', help: 'Graphile Worker jobs by task and state (ready, scheduled, running, failed; unknown = of a task no live worker runs, never run, deleted by cleanup after failed_job_retention_days; outbox = embedding outbox rows), as read with the heartbeat; not shown once that read is older than WORKER_STALE_MS',
      labelNames: ['task', 'state'], registers: exposedIf(parts.jobs),
      // while the database cannot be read, no number at all rather than the last one read
      collect() { if ((ageMs(worker.depthAt) ?? 0) > worker.depthValidMs) this.reset(); },
    }),
    workerHeartbeatAge: new Gauge({
      name: 'potentia_worker_heartbeat_age_seconds', help: "seconds since this process's worker last recorded its heartbeat (every WORKER_HEARTBEAT_MS while it reaches the database); past WORKER_STALE_MS the other workers take its jobs back",
      registers: exposedIf(parts.jobs),
      collect() {
        const age = ageMs(worker.heartbeatAt);
        if (age !== undefined) this.set(age / 1000);
      },
    }),
    jobs: new Counter({
      name: 'potentia_jobs_total', help: 'jobs run by this process, by task and outcome (success, error = will retry, failed = out of attempts)',
      labelNames: ['task', 'outcome'], registers: exposedIf(parts.jobs),
    }),
    jobDuration: new Histogram({
      name: 'potentia_job_duration_seconds', help: 'job run time by task and outcome',
      labelNames: ['task', 'outcome'], buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30], registers: exposedIf(parts.jobs),
    }),
    breakerState: new Gauge({
      name: 'potentia_circuit_breaker_state', help: 'circuit breaker state (0 closed, 1 half-open, 2 open)',
      labelNames: ['name'], registers: exposedIf(parts.jobs),
    }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
