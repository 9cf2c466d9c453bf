// npm run worker: a headless worker process (scale out by running more). It runs the jobs the
// database enqueues (embed_block, rebalance_canvas, the cleanup crontab) until SIGINT/SIGTERM,
// then shuts down gracefully (running jobs finish or are released for another worker).
import { createServer } from 'node:http';
import { pino } from 'pino';
import { loadConfigOrExit } from '../src/config.ts';
import { SEVERAL_AUTHORIZATIONS, severalAuthorizations } from '../src/http/authorization.ts';
import { ApiError } from '../src/http/errors.ts';
import { keepRunningOnUnhandledRejection } from '../src/last-resort.ts';
import { assertMigrated } from '../src/db/migrated.ts';
import { startFailureAdvice, unknownMigrationsWarnings } from '../src/start-failure.ts';
import { startWorker, type WorkerRuntime } from '../src/worker/runtime.ts';
import { parseCommandLine } from './lib/command-line.ts';

// no options (the environment configures it), but --help and a mistyped option are answered
parseCommandLine({ options: {} }, 'usage: npm run worker (configured by the environment: docs/self-hosting.md, Environment reference)');
keepRunningOnUnhandledRejection();
const config = loadConfigOrExit();
const logger = pino({ level: config.logLevel });
let worker: WorkerRuntime | undefined;

// queue depth, job outcomes and the breaker state for Prometheus, only when a port is configured
const metricsServer = config.worker.metricsPort === undefined ? undefined : createServer(async (req, res) => {
  const refuse = (err: ApiError) => res.writeHead(err.status, { 'Content-Type': 'application/json' }).end(JSON.stringify(err.body()));
  const notFound = () => refuse(new ApiError('not_found', 'no such endpoint'));
  if (req.method !== 'GET' || req.url !== '/metrics') return notFound();
  if (config.internalToken) {
    // one credential, as on the API's /metrics (src/http/authorization.ts): req.headers keeps the first of two
    if (severalAuthorizations(req.headersDistinct.authorization)) {
      return refuse(new ApiError('invalid_input', SEVERAL_AUTHORIZATIONS, { field: 'authorization' }));
    }
    if (req.headers.authorization !== `Bearer ${config.internalToken}`) return notFound();
  }
  if (!worker) return refuse(new ApiError('unavailable', 'the worker is starting'));
  res.writeHead(200, { 'Content-Type': worker.metrics.registry.contentType }).end(await worker.metrics.registry.metrics());
});
// the port first, as the worker role (src/roles.ts): a second copy on a taken port fails before it takes any job
if (metricsServer) {
  await new Promise<void>((resolve) => {
    metricsServer.once('error', (err: NodeJS.ErrnoException) => {
      console.error(err.code === 'EADDRINUSE'
        ? `WORKER_METRICS_PORT ${config.worker.metricsPort} on ${config.host} is in use: stop that process or set WORKER_METRICS_PORT to a free port`
        : `could not serve WORKER_METRICS_PORT ${config.worker.metricsPort} on HOST=${config.host}: ${err.message}`);
      process.exit(1);
    });
    metricsServer.listen(config.worker.metricsPort, config.host, resolve);
  });
}
// a database not migrated, missing or not answering is named with what to do, as `npm run serve -- --role worker` does
worker = await assertMigrated(config.databaseUrl, { unknown: (found) => unknownMigrationsWarnings(found, config).forEach((w) => console.warn(w)) })
  .then(() => startWorker({ databaseUrl: config.databaseUrl, directDatabaseUrl: config.directDatabaseUrl, worker: config.worker, embedding: config.embedding, logger }))
  .catch((err: NodeJS.ErrnoException) => {
    console.error([`could not start (npm run worker): ${err.message}`, startFailureAdvice(err, config)].filter(Boolean).join('\n  '));
    process.exit(1);
  });
const running = worker;
console.log(`potentia worker ${running.workerId} running (pid ${process.pid}, concurrency ${config.worker.concurrency}, provider ${running.provider.model})`);
if (metricsServer) console.log(`  metrics  http://${config.host}:${config.worker.metricsPort}/metrics`);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, async () => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal}: stopping worker…`);
    metricsServer?.close();
    await running.stop();
    process.exit(0);
  });
}
