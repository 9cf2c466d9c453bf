import { EventEmitter } from 'node:events';
import { hostname } from 'node:os';
import { Logger as GraphileLogger, run, type Runner, type TaskList, type WorkerEvents, type WorkerPool } from 'graphile-worker';
import { pino, type Logger } from 'pino';
import postgres, { type Sql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import type { EmbeddingConfig, WorkerConfig } from '../config.ts';
import { CONNECT_TIMEOUT_SECONDS, KEEPALIVE_IDLE_SECONDS, reconnectBackoffSeconds } from '../db/index.ts';
import { connectionUrls } from '../db/pooling.ts';
import { createMetrics, JOB_OUTCOMES, type Metrics } from '../metrics.ts';
import { CircuitBreaker, type BreakerState } from './breaker.ts';
import { LockLedger } from './lock-ledger.ts';
import { DatabaseOutage } from './outage.ts';
import { createProvider, type EmbeddingProvider } from './providers.ts';
import { QueuePool } from './queue-pool.ts';
import { UnknownTasks } from './unknown-tasks.ts';
import { createTaskList, PermanentJobError, type TaskContext } from './tasks.ts';

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
  /** The Graphile pool id: the heartbeat row's id and what graphile_worker jobs.locked_by holds (a new one if Graphile Worker had to be started again). */
  readonly workerId: string;
  /** Why Graphile Worker runs no job here now (it stopped on its own and is being started again), else undefined. */
  notRunning(): string | undefined;
  breaker: CircuitBreaker;
  provider: EmbeddingProvider;
  events: WorkerEvents;
  metrics: Metrics;
  /** Moves every due embedding outbox row into the queue now; returns how many jobs were added. */
  drainOutbox(): Promise<number>;
  /** Writes the heartbeat, releases its own orphaned job locks, unlocks the jobs of stale workers, refreshes the queue-depth gauge. */
  tick(): Promise<{ released: string[]; recovered: string[] }>;
  /** Graceful shutdown: no new jobs; running jobs finish (or are released after WORKER_SHUTDOWN_TIMEOUT_MS); heartbeat removed. Bounded. */
  stop(): Promise<void>;
};

const BREAKER_VALUE: Record<BreakerState, number> = { closed: 0, half_open: 1, open: 2 };

/** A stop's steps after the drain (release, closing the pools) each wait this long at most. */
const STOP_STEP_MS = 3000;

/** Whether `work` settles within `ms`; after that it goes on, and nobody waits for it. */
async function settlesWithin(ms: number, work: Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), ms); });
  try {
    return await Promise.race([work.then(() => true, () => true), late]);
  } finally {
    clearTimeout(timer);
  }
}

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
    connect_timeout: CONNECT_TIMEOUT_SECONDS, keep_alive: KEEPALIVE_IDLE_SECONDS,
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
  // every part's lost or refused connection is one outage in the log (outage.ts)
  const outage = new DatabaseOutage(log);
  const ctx: TaskContext = { sql, provider, breaker };
  const taskList: TaskList = { ...(createTaskList(ctx) as TaskList), ...opts.extraTasks };

  const events: WorkerEvents = new EventEmitter();
  const ledger = new LockLedger(events);
  const started = new Map<string, number>();
  events.on('job:start', ({ job }) => { started.set(job.id, performance.now()); });
  // every task's outcomes are series from the start, at 0 (as the rate-limit rejections, src/metrics.ts)
  for (const task of Object.keys(taskList)) for (const result of JOB_OUTCOMES) metrics.jobs.inc({ task, outcome: result }, 0);
  const outcome = (job: { id: string; task_identifier: string }, result: typeof JOB_OUTCOMES[number]) => {
    metrics.jobs.inc({ task: job.task_identifier, outcome: result });
    const t = started.get(job.id);
    if (t !== undefined) metrics.jobDuration.observe({ task: job.task_identifier, outcome: result }, (performance.now() - t) / 1000);
    started.delete(job.id);
  };
  events.on('job:success', ({ job }) => outcome(job, 'success'));
  events.on('job:error', ({ job, error }) => {
    const permanent = error instanceof PermanentJobError;
    const final = permanent || job.attempts >= job.max_attempts;
    outcome(job, final ? 'failed' : 'error');
    const fields = { task: job.task_identifier, job_id: job.id, attempt: job.attempts, max_attempts: job.max_attempts,
                     err: String((error as Error)?.message ?? error) };
    if (permanent) log.error({ ...fields, next: error.next }, 'job failed permanently');
    else if (final && isCrontabJob(job.payload)) {
      // one attempt each (cleanup: ?max=1) and another at the next tick: not a job left for good
      log.warn({ ...fields, next: 'its next crontab tick runs it again; if this repeats, fix the cause (err)' },
        'crontab job failed; it runs again at its next tick');
    } else if (final) {
      log.error({ ...fields, next: `fix the cause (err), then run it again: select graphile_worker.reschedule_jobs(array[${job.id}]::bigint[], attempts => 0); `
        + `cleanup deletes it after failed_job_retention_days` }, 'job failed permanently: out of attempts');
    } else if (!outage.failed(error, `job ${job.task_identifier}`)) log.warn(fields, 'job failed; retried later');
  });

  // Graphile Worker's own pool, named so operators (and the fault tests) can tell its connections
  // apart; a connection the server terminates while idle is an 'error' event to log, not a crash.
  // Behind a transaction pooler its LISTEN client is a direct connection (queue-pool.ts).
  const queuePool = new QueuePool(urls, { max: cfg.concurrency + 2, applicationName: 'potentia-worker-queue' });
  events.on('pool:listen:success', ({ client }) => {
    if (!queuePool.isDirect(client)) log.error('Graphile Worker LISTENs through the transaction pooler: new jobs wait for the next poll');
  });
  const lost = (err: Error) => {
    if (!outage.failed(err, 'queue pool')) log.warn({ err: err.message }, 'worker queue connection lost; the pool reconnects');
  };
  queuePool.on('error', lost);
  queuePool.on('connect', (client) => client.on('error', lost));
  // Graphile Worker's runner and its pool; none while it is started again after stopping on its
  // own (below). lastId: the pool id of the latest, what heartbeats and locks are recorded under.
  let active: { runner: Runner; pool: WorkerPool } | undefined;
  const runnerNow = () => active?.runner;
  let lastId = '';
  let down: string | undefined;
  let stopping = false;
  const startRunner = async () => {
    const seen: { pool?: WorkerPool } = {};
    const created = ({ workerPool }: { workerPool: WorkerPool }) => { seen.pool ??= workerPool; };
    events.on('pool:create', created);
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
        logger: graphileLogger(log, outage),
      });
    } finally {
      events.off('pool:create', created);
    }
    const pool = seen.pool;
    if (!pool) {
      await runner.stop();
      throw new Error('graphile worker pool did not start');
    }
    active = { runner, pool };
    lastId = pool.id;
    down = undefined;
    void runner.promise.then(() => undefined, (err: unknown) => err).then((err) => {
      // nothing may reject unhandled here (it would end the process): a failure of the restart is logged
      if (active?.runner === runner && !stopping) restart(pool, err).catch((e: unknown) => log.error({ err: e }, 'Graphile Worker restart failed'));
    });
  };
  // Graphile Worker stops by itself on a NOTIFY "worker:migrate" announcing a breaking schema
  // migration (a newer Graphile Worker's, or anyone's with NOTIFY), or when one of its workers
  // dies. The process went on heartbeating, so /ready said ok and no other worker took its jobs,
  // while it ran none. Started again, with backoff: if the schema is indeed newer, that fails and
  // /ready says why, until the process is upgraded.
  async function restart(lost: WorkerPool, reason: unknown) {
    active = undefined;
    down = `Graphile Worker stopped (${reason ? String(reason) : 'its worker pool shut down'}); starting it again`;
    log.error({ worker_id: lost.id, reason: reason ? String(reason) : undefined },
      'Graphile Worker stopped on its own: no job runs here until it starts again (retried with backoff); its jobs go back to the queue');
    // its heartbeat and locks go: the other workers take its jobs, its /ready says why
    await sql`select internal.worker_stopped(${lost.id})`.catch(() => {});
    for (let attempt = 0; !stopping; attempt++) {
      await new Promise((r) => setTimeout(r, Math.min(1000 * 2 ** attempt, 60_000)).unref());
      if (stopping) return;
      try {
        await startRunner();
      } catch (err) {
        down = `Graphile Worker cannot start: ${(err as Error).message}`;
        if (attempt === 0) log.error({ err }, 'Graphile Worker could not start again; retried with backoff (at least every 60 s), logged again once it starts');
        continue;
      }
      // stop() may have come meanwhile, and found no runner to stop
      if (stopping) await runnerNow()?.stop();
      else log.warn({ worker_id: lastId, was: lost.id, attempts: attempt + 1 }, 'Graphile Worker started again');
      return;
    }
  }
  try {
    await startRunner();
  } catch (err) {
    await sql.end();
    await queuePool.end();
    throw err;
  }

  const interval = (ms: number) => `${ms} milliseconds`;
  // with the heartbeat: release this worker's locks on jobs it is not running (lock-ledger.ts),
  // and read the clock that bounds the next release (a Date: cut to the millisecond, never later)
  const heartbeat = (workerId: string, { running, lockedBefore, started }: ReturnType<LockLedger['inUse']>) => sql`
    select internal.worker_heartbeat(${workerId}, ${hostname()}, ${process.pid}, ${Object.keys(taskList)}),
           internal.release_orphaned_locks(${workerId}, ${running}::bigint[], ${lockedBefore}::timestamptz, ${started}::bigint[]) as released,
           clock_timestamp() as now`;

  async function tick() {
    // no heartbeat for a pool that is gone: its age grows on /metrics and /ready says why
    if (!active) throw new Error(down);
    const { pool } = active;
    const asOf = performance.now();
    const [hb] = await heartbeat(pool.id, ledger.inUse());
    if (active?.pool !== pool) {
      // Graphile Worker stopped while this heartbeat was on its way, and restart() removed the
      // pool's row before the heartbeat wrote it again: a row for a pool that runs nothing, which
      // no worker would recover before it went stale. Removed again.
      await sql`select internal.worker_stopped(${pool.id})`;
      throw new Error(down ?? 'Graphile Worker stopped');
    }
    metrics.worker.heartbeatAt = performance.now();
    ledger.mark(hb!.now as Date);
    const released = (hb!.released as string[]).map(String);
    ledger.released(released, asOf);
    if (released.length > 0) {
      log.warn({ jobs: released }, 'released locks on jobs this worker is not running (lost with a terminated connection); they run again');
      active?.pool.nudge(cfg.concurrency);
    }
    const [row] = await sql`select internal.recover_stale_workers(${interval(cfg.staleMs)}::interval) as ids`;
    const recovered = (row!.ids as string[]) ?? [];
    if (recovered.length > 0) {
      log.warn({ workers: recovered }, 'unlocked the jobs of workers whose heartbeat went stale');
      active?.pool.nudge(cfg.concurrency);
    }
    const depth = await sql`select task, state, jobs from internal.job_queue_depth()`;
    metrics.jobQueueDepth.reset();
    for (const d of depth) metrics.jobQueueDepth.set({ task: d.task, state: d.state }, Number(d.jobs));
    metrics.worker.depthAt = performance.now();
    unknownTasks.seen(depth.filter((d) => d.state === 'unknown').map((d) => ({ task: d.task as string, jobs: Number(d.jobs) })));
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

  const unknownTasks = new UnknownTasks(log);

  // Loops: each reschedules itself after its work, so a slow database never piles calls up.
  const timers = new Set<NodeJS.Timeout>();
  const running = new Set<Promise<unknown>>();
  // A loop that fails logs it once, and once more when it works again: the outbox drain runs every
  // EMBED_DRAIN_INTERVAL_MS, and an outage logged a stack each time. A lost or refused connection
  // is the outage's (outage.ts), which a loop that works again ends.
  const loop = (name: string, every: number, work: () => Promise<unknown>) => {
    let failing: { since: number; failures: number } | undefined;
    const worked = () => {
      outage.answered();
      if (!failing) return;
      log.info({ failures: failing.failures, seconds: Math.round((monotonicNow() - failing.since) / 1000) }, `worker ${name} works again`);
      failing = undefined;
    };
    const failed = (err: unknown) => {
      if (outage.failed(err, `worker ${name}`)) return;
      if (!failing) log.error({ err, every_ms: every }, `worker ${name} failed; it is retried, and logged again once it works`);
      failing ??= { since: monotonicNow(), failures: 0 };
      failing.failures += 1;
    };
    const next = () => {
      if (stopping) return;
      const t = setTimeout(() => {
        timers.delete(t);
        const p = work().then(worked, failed).finally(() => { running.delete(p); next(); });
        running.add(p);
      }, every);
      timers.add(t);
    };
    next();
  };
  metrics.worker.depthValidMs = cfg.staleMs;
  await tick();
  loop('heartbeat', cfg.heartbeatMs, tick);
  loop('outbox drain', cfg.drainIntervalMs, drainOutbox);
  log.info({ worker_id: lastId, concurrency: cfg.concurrency, provider: provider.model }, 'worker started');

  return {
    get workerId() { return lastId; },
    notRunning: () => down,
    breaker, provider, events, metrics, drainOutbox, tick,
    async stop() {
      if (stopping) return;
      stopping = true;
      for (const t of timers) clearTimeout(t);
      // no new jobs; the running ones may finish, for a bounded time: a task can hang (a provider
      // that never answers, with a long EMBEDDING_TIMEOUT_MS) and so can any query across a path
      // that stalled, and an orchestrator's SIGKILL would leave its jobs locked until this
      // worker's heartbeat goes stale
      const drained = await settlesWithin(cfg.shutdownTimeoutMs, Promise.allSettled([...running]).then(() => active?.runner.stop()));
      const held = ledger.inUse().running;
      if (!drained) {
        log.warn({ worker_id: lastId, jobs: held, timeout_ms: cfg.shutdownTimeoutMs },
          'jobs still running after WORKER_SHUTDOWN_TIMEOUT_MS: released for another worker (a task still running here may finish too: tasks are idempotent)');
      }
      // removes the heartbeat and unlocks whatever this worker still holds: a job past the bound
      // runs again at once elsewhere, instead of after WORKER_STALE_MS
      let released = false;
      await settlesWithin(STOP_STEP_MS, sql`select internal.worker_stopped(${lastId})`.then(() => { released = true; }));
      if (!released) {
        log.warn({ worker_id: lastId, jobs: held, stale_ms: cfg.staleMs },
          'could not reach the database to release this worker: the other workers take its jobs back once its heartbeat is WORKER_STALE_MS old');
      }
      // connections a hung task or a stalled path still holds are closed, not waited for
      await settlesWithin(STOP_STEP_MS, Promise.allSettled([sql.end({ timeout: drained ? STOP_STEP_MS / 1000 : 0 }), queuePool.end()]));
      log.info({ worker_id: lastId, drained, released }, 'worker stopped');
    },
  };
}

function graphileLogger(log: Logger, outage: DatabaseOutage) {
  return new GraphileLogger(() => (level, message, meta) => {
    // Graphile logs every completed job at info: that is debug detail here (metrics count jobs)
    let fn: 'error' | 'warn' | 'debug' = level === 'error' ? 'error' : level === 'warning' ? 'warn' : 'debug';
    // its errors carry the error as `error` (`fatalError` for a worker's): a lost or refused
    // connection is the outage's line, and this one detail at debug
    const err = meta?.error ?? meta?.fatalError;
    if (fn !== 'debug' && err !== undefined && outage.failed(err, 'graphile-worker')) fn = 'debug';
    log[fn]({ graphile: meta && 'job' in meta ? { ...meta, job: jobSummary(meta.job) } : meta }, message);
  });
}

/** A job as logged: without its payload, which a job inserted by hand can make megabytes long. */
function jobSummary(job: unknown) {
  if (!job || typeof job !== 'object') return job;
  const { id, task_identifier, attempts, max_attempts, key } = job as Record<string, unknown>;
  return { id, task_identifier, attempts, max_attempts, key };
}

/** A job Graphile Worker's crontab enqueued: its payload carries `_cron` (graphile-worker cron.js makeJobForItem). */
function isCrontabJob(payload: unknown): boolean {
  return typeof payload === 'object' && payload !== null && '_cron' in payload;
}
