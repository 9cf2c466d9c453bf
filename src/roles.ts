import { serve, type ServerType } from '@hono/node-server';
import type { Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { createTokenVerifier } from './auth/jwt.ts';
import { EnvSchema, socketCaps, type Config } from './config.ts';
import { presentValues } from './env-values.ts';
import { blankOptionProblem } from './option-values.ts';
import { createDatabase } from './db/index.ts';
import { connectionUrls } from './db/pooling.ts';
import type { Deps } from './http/env.ts';
import type { RealtimeRestDeps } from './http/realtime-rest.ts';
import { createProbeApp } from './http/probes.ts';
import { readyQuery } from './http/readiness.ts';
import { createMetrics } from './metrics.ts';
import { createGateway, gatewayReadiness, type Gateway } from './realtime/gateway.ts';
import { answerMalformedRequests, startServer } from './server.ts';
import { startWorker, type WorkerRuntime } from './worker/runtime.ts';

/**
 * Process roles: one entry point (src/main.ts, `npm run serve -- --role R` or POTENTIA_ROLE=R),
 * four ways to run it against one database. Every role listens on HOST:PORT and answers /health
 * and /ready there; run any number of each behind any load balancer (no sticky sessions: the
 * realtime cluster meets in Postgres, src/realtime/cluster.ts). docs/self-hosting.md.
 *
 *   all      HTTP API + realtime gateway on one port, the worker too when WORKER_MODE=inprocess
 *            (what `npm start` runs); /ready also needs the gateway started (a failed start is
 *            tried again in the background, the API serving meanwhile) and its replication
 *            stream up, as a gateway's
 *   api      the HTTP API only (/api/v1, /functions/v1, /auth/v1, the demo, /docs/api): no
 *            gateway (a WebSocket upgrade is answered 404 naming the gateway role), no worker
 *   gateway  the realtime gateway only (/realtime/v1/websocket, H1 /ws/canvas/{id}, realtime-js's
 *            REST broadcast /realtime/v1/api/broadcast) with
 *            /health, /ready, /metrics (src/http/probes.ts); /ready also needs its replication
 *            stream up
 *   worker   Graphile Worker (src/worker, what `npm run worker` runs) with /health, /ready,
 *            /metrics; /ready also needs this worker's own heartbeat to be fresh
 */
export const ROLES = EnvSchema.shape.POTENTIA_ROLE.unwrap().options;
export type Role = (typeof ROLES)[number];

export const ROLE_USAGE = `usage: npm run serve -- [--role ${ROLES.join('|')}]   (or POTENTIA_ROLE; default all)
  where it listens and which database it uses come from the environment, not options: HOST, PORT
  (default 127.0.0.1:54321), DATABASE_URL, e.g. PORT=8000 npm run serve -- --role api (README, "Environment")`;

/** Options people try that are environment variables here. */
const ENVIRONMENT_OPTIONS: Readonly<Record<string, string>> = { '--port': 'PORT', '--host': 'HOST', '--database-url': 'DATABASE_URL' };

/** `--role R` or `--role=R` on the command line, else POTENTIA_ROLE, else `all`; throws on anything else. */
export function resolveRole(argv: string[], env: NodeJS.ProcessEnv = process.env): Role {
  let flag: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--role') {
      flag = argv[++i];
      if (flag === undefined) throw new Error(`--role needs a value\n${ROLE_USAGE}`);
    } else if (arg.startsWith('--role=')) flag = arg.slice('--role='.length);
    else {
      const name = arg.split('=')[0]!;
      const env = Object.hasOwn(ENVIRONMENT_OPTIONS, name) ? ENVIRONMENT_OPTIONS[name] : undefined;
      throw new Error(env
        ? `${name} is not an option of npm run serve: set ${env} in the environment instead (${env}=… npm run serve -- --role …)\n${ROLE_USAGE}`
        : `unknown argument ${arg}\n${ROLE_USAGE}`);
    }
  }
  // --role= (ROLE unset in `--role="$ROLE"`) is refused as every script's blank option is, not taken for a role
  const blank = blankOptionProblem('role', flag);
  if (blank) throw new Error(`${blank}\n${ROLE_USAGE}`);
  // POTENTIA_ROLE= (blank, as an env file leaves it) is unset, as in loadConfig: role all
  const fromEnv = presentValues(env).POTENTIA_ROLE;
  const value = flag ?? fromEnv ?? 'all';
  if (!(ROLES as readonly string[]).includes(value)) {
    throw new Error(`unknown role ${value}${flag === undefined ? ' (POTENTIA_ROLE)' : ''}: expected one of ${ROLES.join(', ')}\n${ROLE_USAGE}`);
  }
  return value as Role;
}

/** A started role: where it listens, what it runs, and a graceful stop. */
export type RoleProcess = {
  role: Role;
  url: string;
  gateway?: Gateway;
  worker?: WorkerRuntime;
  stop(): Promise<void>;
};

export async function startRole(config: Config, role: Role, logger: Logger = pino({ level: config.logLevel })): Promise<RoleProcess> {
  switch (role) {
    case 'all': {
      const server = await startServer(config, { worker: config.worker.mode === 'inprocess', logger });
      // (a getter: a gateway that failed to start is started again in the background, src/server.ts)
      return { role, url: server.url, get gateway() { return server.gateway; }, worker: server.worker, stop: () => server.stop() };
    }
    case 'api': {
      // WORKER_MODE=external still makes /ready check that some worker's heartbeat is fresh
      const server = await startServer(config, { realtime: false, worker: false, logger });
      return { role, url: server.url, stop: () => server.stop() };
    }
    case 'gateway':
      return startGatewayRole(config, logger);
    case 'worker':
      return startWorkerRole(config, logger);
  }
}

/** The realtime gateway alone: its own pool, the bus on the direct URL, probes on the same port. */
async function startGatewayRole(config: Config, logger: Logger): Promise<RoleProcess> {
  const urls = connectionUrls(config);
  const database = createDatabase(urls.pooled, { max: config.dbPoolMax, applicationName: 'potentia-gateway', transactionPooler: urls.transactionPooler, logger });
  const metrics = createMetrics({ api: false, realtime: true, jobs: false });
  const deps: RealtimeRestDeps = { sql: database.sql, lanes: database.lanes, config, verify: createTokenVerifier(config.auth), metrics, logger };
  const gateway = createGateway({ databaseUrl: urls.direct, sql: database.sql, lanes: database.lanes, auth: config.auth, logger,
    trustProxy: config.trustProxy, relaxedEndpointLimits: config.profile === 'development', metrics, limits: socketCaps(config),
    clusterSecret: config.realtime.clusterSecret, clusterFreshnessMs: config.realtime.clusterFreshnessMs });
  const app = createProbeApp(deps, {
    realtime: () => gatewayReadiness(gateway),
  }, { realtimeRest: true });
  let http: ServerType | undefined;
  try {
    http = await listen(config, app.fetch);
    gateway.attach(http as HttpServer);
    // unlike `all`, a gateway that cannot start has nothing else to serve: fail, the supervisor restarts it
    await gateway.start();
    deps.realtime = gateway.rest;
  } catch (err) {
    await gateway.stop().catch(() => {});
    if (http) await close(http);
    await database.close();
    throw err;
  }
  const server = http;
  return {
    role: 'gateway',
    url: urlOf(config, server),
    gateway,
    async stop() {
      // stop accepting first: clients reconnecting after the 1001 close below must reach another
      // gateway (the balancer sees a refused connection and moves on), not this one on its way out
      const closed = close(server);
      await gateway.stop();
      await closed;
      await database.close();
    },
  };
}

/** A worker with its probes: what `npm run worker` runs, plus /health and /ready on HOST:PORT. */
async function startWorkerRole(config: Config, logger: Logger): Promise<RoleProcess> {
  const urls = connectionUrls(config);
  const metrics = createMetrics({ api: false, realtime: false, jobs: true });
  // two connections of its own: a busy job pool must not make the probe look like a dead worker
  const database = createDatabase(urls.pooled, { max: 2, applicationName: 'potentia-worker-probe', transactionPooler: urls.transactionPooler, logger });
  const deps: Deps = { sql: database.sql, lanes: database.lanes, config, verify: createTokenVerifier(config.auth), metrics, logger };
  let worker: WorkerRuntime | undefined;
  const app = createProbeApp(deps, {
    // this worker's own heartbeat row (written every WORKER_HEARTBEAT_MS): older than WORKER_STALE_MS,
    // the other workers take its jobs back, so it must not count as serving
    worker: async () => {
      if (!worker) return 'starting';
      const notRunning = worker.notRunning();
      if (notRunning) return notRunning;
      const id = worker.workerId;
      const [row] = await readyQuery(database.sql, (sql) => sql`select extract(epoch from now() - last_seen_at)::float8 as age
                                                                         from app.worker_heartbeats where worker_id = ${id}`);
      if (!row) return `no heartbeat row for worker ${id}`;
      const age = row.age as number;
      return age * 1000 <= config.worker.staleMs ? 'ok' : `heartbeat stale (${Math.round(age)} s old)`;
    },
  }, { apiRoles: false }); // a worker's jobs run as its own role, never as anon/authenticated/service_role
  // the port first: a second copy on a taken port fails before it takes any job
  let http: ServerType;
  try {
    http = await listen(config, app.fetch);
  } catch (err) {
    await database.close();
    throw err;
  }
  try {
    worker = await startWorker({ databaseUrl: config.databaseUrl, directDatabaseUrl: config.directDatabaseUrl, worker: config.worker,
                                 embedding: config.embedding, metrics, logger });
  } catch (err) {
    await close(http);
    await database.close();
    throw err;
  }
  const running = worker;
  return {
    role: 'worker',
    url: urlOf(config, http),
    worker: running,
    async stop() {
      await close(http);
      await running.stop();
      await database.close();
    },
  };
}

/** Serves `fetch` on HOST:PORT; malformed requests get the one JSON error shape, as on the API (src/server.ts). */
async function listen(config: Config, fetch: (req: Request) => Response | Promise<Response>): Promise<ServerType> {
  const http: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch, hostname: config.host, port: config.port }, () => resolve(s));
    s.once('error', reject);
  });
  answerMalformedRequests(http);
  return http;
}

const urlOf = (config: Config, http: ServerType) => `http://${config.host}:${(http.address() as AddressInfo).port}`;
const close = (http: ServerType) => new Promise<void>((resolve) => http.close(() => resolve()));
