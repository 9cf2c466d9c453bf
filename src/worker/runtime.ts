import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { Logger as GraphileLogger, run, type Runner, type TaskList, type WorkerEvents, type WorkerPool } from 'graphile-worker';
import { pino, type Logger } from 'pino';
import postgres, { type Sql } from 'postgres';
import type { EmbeddingConfig, WorkerConfig } from '../config.ts';
import { CONNECT_TIMEOUT_SECONDS, reconnectBackoffSeconds } from '../db/index.ts';
import { connectionUrls } from '../db/pooling.ts';
import { createMetrics, type Metrics } from '../metrics.ts';
import { CircuitBreaker, type BreakerState } from './breaker.ts';
import { LockLedger } from './lock-ledger.ts';
import { createProvider, type EmbeddingProvider } from './providers.ts';
import { QueuePool } from './queue-pool.ts';
import { createTaskList, type TaskContext } from './tasks.ts';

export type WorkerRuntimeOptions = {
  databaseUrl: string;
  /** DIRECT_DATABASE_URL when databaseUrl is a transaction pooler (src/db/pooling.ts). */
  directDatabaseUrl?: string;
  worker: WorkerConfig;
  embedding: EmbeddingConfig;
  /** Overrides the provider the embedding config selects. */
  provider?: EmbeddingProvider;
  metrics?: Metrics;
  logger?: Logger;
  /** More tasks beside Potentia's (e.g. the benchmark's no-op). */
  extraTasks?: TaskList;
};

export type WorkerRuntime = {
  /** The Graphile pool id: the heartbeat row's id and what graphile_worker jobs.locked_by holds. */
  workerId: string;
  breaker: CircuitBreaker;
  provider: EmbeddingProvider;
  events: WorkerEvents;
  runner: Runner;
  metrics: Metrics;
  /** Moves every due embedding outbox row into the queue now; returns how many jobs were added. */
  drainOutbox(): Promise<number>;
  /** Writes the heartbeat, releases its own orphaned job locks, unlocks the jobs of stale workers, refreshes the queue-depth gauge. */
  tick(): Promise<{ released: string[]; recovered: string[] }>;
  /** Graceful shutdown: no new jobs; running jobs finish (or are released after a timeout); heartbeat removed. */
  stop(): Promise<void>;
};

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

/**
 * Starts a worker: Graphile Worker running Potentia's typed task list (and the cleanup crontab),
 * plus the outbox drain loop (embedding jobs) and the heartbeat loop (liveness for /ready and
 * crash recovery of other workers). Any number of workers may run against one database.
 */
export async function startWorker(opts: WorkerRuntimeOptions): Promise<WorkerRuntime> {
  const { worker: cfg } = opts;
  const log = opts.logger ?? pino({ level: 'info' });
  const metrics = opts.metrics ?? createMetrics({ api: false, realtime: false, jobs: true });
  const urls = connectionUrls(opts);
  const sql: Sql = postgres(urls.pooled, {
    max: cfg.concurrency + 2, onnotice: () => {}, connection: { application_name: 'potentia-worker' }, backoff: reconnectBackoffSeconds,
    connect_timeout: CONNECT_TIMEOUT_SECONDS,
    prepare: !urls.transactionPooler,
  });
  const provider = opts.provider ?? createProvider(opts.embedding);
  const breaker = new CircuitBreaker({
    name: `embedding provider ${provider.model}`,
    ...opts.embedding.breaker,
    onStateChange: (state) => {
      metrics.breakerState.set({ name: 'embedding' }, BREAKER_VALUE[state]);
      log.warn({ state }, `embedding circuit breaker ${state}`);
    },
  });
  metrics.breakerState.set({ name: 'embedding' }, 0);
  const ctx: TaskContext = { sql, provider, breaker };
  const taskList: TaskList = { ...(createTaskList(ctx) as TaskList), ...opts.extraTasks };

  const events: WorkerEvents = new EventEmitter();
  let pool: WorkerPool | undefined;
  events.on('pool:create', ({ workerPool }) => { pool ??= workerPool; });
  const ledger = new LockLedger(events);
  const started = new Map<string, number>();
  events.on('job:start', ({ job }) => { started.set(job.id, performance.now()); });
  const outcome = (job: { id: string; task_identifier: string }, result: string) => {
    metrics.jobs.inc({ task: job.task_identifier, outcome: result });
    const t = started.get(job.id);
    if (t !== undefined) metrics.jobDuration.observe({ task: job.task_identifier, outcome: result }, (performance.now() - t) / 1000);
    started.delete(job.id);
  };
  events.on('job:success', ({ job }) => outcome(job, 'success'));
  events.on('job:error', ({ job, error }) => {
    outcome(job, job.attempts >= job.max_attempts ? 'failed' : 'error');
    log.warn({ task: job.task_identifier, job_id: job.id, attempt: job.attempts, err: String((error as Error)?.message ?? error) }, 'job failed');
  });

  // Graphile Worker's own pool, named so operators (and the fault tests) can tell its connections
  // apart; a connection the server terminates while idle is an 'error' event to log, not a crash.
  // Behind a transaction pooler its LISTEN client is a direct connection (queue-pool.ts).
  const queuePool = new QueuePool(urls, { max: cfg.concurrency + 2, applicationName: 'potentia-worker-queue' });
  events.on('pool:listen:success', ({ client }) => {
    if (!queuePool.isDirect(client)) log.error('Graphile Worker LISTENs through the transaction pooler: new jobs wait for the next poll');
  });
  const lost = (err: Error) => log.warn({ err: err.message }, 'worker queue connection lost; the pool reconnects');
  queuePool.on('error', lost);
  queuePool.on('connect', (client) => client.on('error', lost));
  let runner: Runner;
  try {
    runner = await run({
      pgPool: queuePool,
      // named statements do not survive a transaction pooler (src/db/pooling.ts)
      noPreparedStatements: urls.transactionPooler,
      concurrency: cfg.concurrency,
      pollInterval: cfg.pollIntervalMs,
      taskList,
      crontab: cfg.crontab,
      noHandleSignals: true,
      events,
      logger: graphileLogger(log),
    });
  } catch (err) {
    await sql.end();
    await queuePool.end();
    throw err;
  }
  const workerId = pool?.id;
  if (!workerId) throw new Error('graphile worker pool did not start');

  const interval = (ms: number) => `${ms} milliseconds`;
  // with the heartbeat: release this worker's locks on jobs it is not running (lock-ledger.ts),
  // and read the clock that bounds the next release (a Date: cut to the millisecond, never later)
  const heartbeat = ({ running, lockedBefore }: ReturnType<LockLedger['inUse']>) => sql`
    select internal.worker_heartbeat(${workerId}, ${hostname()}, ${process.pid}, ${Object.keys(taskList)}),
           internal.release_orphaned_locks(${workerId}, ${running}::bigint[], ${lockedBefore}::timestamptz) as released,
           clock_timestamp() as now`;

  async function tick() {
    const [hb] = await heartbeat(ledger.inUse());
    ledger.mark(hb!.now as Date);
    const released = (hb!.released as string[]).map(String);
    if (released.length > 0) {
      log.warn({ jobs: released }, 'released locks on jobs this worker is not running (lost with a terminated connection); they run again');
      pool?.nudge(cfg.concurrency);
    }
    const [row] = await sql`select internal.recover_stale_workers(${interval(cfg.staleMs)}::interval) as ids`;
    const recovered = (row!.ids as string[]) ?? [];
    if (recovered.length > 0) {
      log.warn({ workers: recovered }, 'unlocked the jobs of workers whose heartbeat went stale');
      pool?.nudge(cfg.concurrency);
    }
    const depth = await sql`select task, state, jobs from internal.job_queue_depth()`;
    metrics.jobQueueDepth.reset();
    for (const d of depth) metrics.jobQueueDepth.set({ task: d.task, state: d.state }, Number(d.jobs));
    return { released, recovered };
  }

  async function drainOutbox() {
    let total = 0;
    for (;;) {
      const [row] = await sql`
        select internal.drain_embedding_outbox(${interval(cfg.embedDebounceMs)}::interval,
                                               ${interval(cfg.embedMaxWaitMs)}::interval, ${cfg.drainBatch}) as n`;
      total += row!.n as number;
      if ((row!.n as number) < cfg.drainBatch || stopping) return total;
    }
  }

  // Loops: each reschedules itself after its work, so a slow database never piles calls up.
  let stopping = false;
  const timers = new Set<NodeJS.Timeout>();
  const running = new Set<Promise<unknown>>();
  const loop = (name: string, every: number, work: () => Promise<unknown>) => {
    const next = () => {
      if (stopping) return;
      const t = setTimeout(() => {
        timers.delete(t);
        const p = work().catch((err) => log.error({ err }, `worker ${name} failed`)).finally(() => { running.delete(p); next(); });
        running.add(p);
      }, every);
      timers.add(t);
    };
    next();
  };
  await tick();
  loop('heartbeat', cfg.heartbeatMs, tick);
  loop('outbox drain', cfg.drainIntervalMs, drainOutbox);
  log.info({ worker_id: workerId, concurrency: cfg.concurrency, provider: provider.model }, 'worker started');

  return {
    workerId, breaker, provider, events, runner, metrics, drainOutbox, tick,
    async stop() {
      if (stopping) return;
      stopping = true;
      for (const t of timers) clearTimeout(t);
      await Promise.allSettled([...running]);
      await runner.stop();
      await sql`select internal.worker_stopped(${workerId})`.catch(() => {});
      await sql.end();
      await queuePool.end();
      log.info({ worker_id: workerId }, 'worker stopped');
    },
  };
}

function graphileLogger(log: Logger) {
  return new GraphileLogger(() => (level, message, meta) => {
    // Graphile logs every completed job at info: that is debug detail here (metrics count jobs)
    const fn = level === 'error' ? 'error' : level === 'warning' ? 'warn' : 'debug';
    log[fn]({ graphile: meta }, message);
  });
}
