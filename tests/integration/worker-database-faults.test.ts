// A real Graphile Worker (src/worker, in-process) whose database connections are terminated, again
// and again, and whose database then refuses connections for a while (what a restart looks like
// from the worker: every session ended, then the server refusing while it starts). What an
// operator reads in the log: one warn line per fault, saying the worker retries, and one info line
// once the database answers again, with no stack; a task that fails for its own reason is still
// logged at error. And Graphile Worker's LISTEN client comes back at once after a long refusal:
// its own reconnection backoff (main.js, growing to about 56 s) never gets past its first step.
import postgres from 'postgres';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { OUTAGE_ENDED, OUTAGE_STARTED } from '../../src/worker/outage.ts';
import { startWorker, type WorkerRuntime } from '../../src/worker/runtime.ts';
import { databaseClientPorts } from '../helpers/chaos.ts';
import { sleep } from '../helpers/wait.ts';
import { fastWorker, quietQueue, TestProvider, waitFor } from '../helpers/worker.ts';

type Line = { level: number; msg: string; [k: string]: unknown };

const FAULT = OUTAGE_STARTED;
const BACK = OUTAGE_ENDED;

describe('the worker under database faults', () => {
  let admin: postgres.Sql;
  // ALTER DATABASE … ALLOW_CONNECTIONS is refused on the database itself: from the cluster's `postgres`
  let cluster: postgres.Sql;
  let database = '';
  let worker: WorkerRuntime;
  const lines: Line[] = [];
  let listenAttempts: number[] = [];

  beforeAll(async () => {
    admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    const url = new URL(testDatabaseUrl());
    database = url.pathname.slice(1);
    url.pathname = '/postgres';
    cluster = postgres(url.toString(), { max: 1, onnotice: () => {} });
    await quietQueue(admin);
    const logger = pino({ level: 'debug' }, { write: (s: string) => { lines.push(JSON.parse(s) as Line); } });
    worker = await startWorker({
      databaseUrl: testDatabaseUrl(), worker: fastWorker({ pollIntervalMs: 1000 }),
      embedding: { ...loadConfig().embedding, breaker: { failureThreshold: 3, cooldownMs: 1500 } },
      provider: new TestProvider(), logger,
      extraTasks: { test_fails_for_its_own_reason: async () => { throw new Error('the task failed for its own reason'); } },
    });
    worker.events.on('pool:listen:connecting', ({ attempts }) => { listenAttempts.push(attempts); });
  }, 60_000);
  afterAll(async () => {
    await cluster?.unsafe(`alter database "${database}" allow_connections true`);
    await worker?.stop();
    await admin?.end();
    await cluster?.end();
  });

  /** Graphile Worker's LISTEN client, connected and listening. */
  const listening = () => waitFor('the LISTEN client', async () => (await admin`
    select 1 from pg_stat_activity where datname = current_database() and application_name = 'potentia-worker-queue'
      and query like 'LISTEN%' and client_port = any(${databaseClientPorts(process.pid)})`).length === 1, 30_000);
  /** Every connection of the worker (its pool, Graphile Worker's pool and LISTEN client) terminated. */
  const terminateAll = async () => (await admin`
    select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
    where datname = current_database() and application_name like 'potentia-worker%'
      and client_port = any(${databaseClientPorts(process.pid)}) and pid <> pg_backend_pid()`)[0]!.n as number;
  /** The worker wrote a heartbeat after `since` (performance.now()): its database works again. */
  const heartbeatSince = (since: number) => waitFor('a heartbeat of the worker', async () => (worker.metrics.worker.heartbeatAt ?? 0) > since, 30_000);
  const at = (level: number) => lines.filter((l) => l.level === level);
  const count = (msg: string) => lines.filter((l) => l.msg === msg).length;
  const hasStack = (l: Line) => /\n\s+at /.test(JSON.stringify(l).replace(/\\n/g, '\n'));

  it('each fault is one warn line and one info line once the database answers; a task failing for its own reason is an error', async () => {
    for (let fault = 1; fault <= 3; fault++) {
      await listening();
      const since = performance.now();
      expect(await terminateAll()).toBeGreaterThan(0);
      await heartbeatSince(since);
    }
    // nothing at error, no stack; per fault one line at warn, one at info
    expect(at(50).map((l) => l.msg)).toEqual([]);
    expect(at(40).filter(hasStack).map((l) => l.msg)).toEqual([]);
    expect(count(FAULT)).toBe(3);
    expect(count(BACK)).toBe(3);
    const job = (await admin`select id from graphile_worker.add_job('test_fails_for_its_own_reason', '{}', max_attempts => 1)`)[0]!.id as string;
    await waitFor('the task failure logged', async () => at(50).some((l) => JSON.stringify(l).includes(`"job_id":"${job}"`)));
    // at error: the task's own failure only (Graphile's line and ours), nothing of the faults
    expect(at(50).filter((l) => !JSON.stringify(l).includes('the task failed for its own reason')).map((l) => l.msg)).toEqual([]);
    expect(at(50).length).toBeGreaterThan(0);
    // the faults' lines say what happened (the code) and that it retries
    for (const l of lines.filter((x) => x.msg === FAULT)) expect(l).toMatchObject({ level: 40, code: expect.any(String), err: expect.any(String) });
    await admin`delete from graphile_worker._private_jobs where id = ${job}`;
  });

  it('refusing connections for a while: one warn and one info line; the LISTEN client is back at its first reconnection step', async () => {
    await listening();
    const [faults, backs, errors] = [count(FAULT), count(BACK), at(50).length];
    listenAttempts = [];
    await cluster.unsafe(`alter database "${database}" allow_connections false`);
    try {
      expect(await terminateAll()).toBeGreaterThan(0);
      // long enough for Graphile Worker's own backoff to reach 7 s between tries (136, 370, 1005, 2730, 7421 ms)
      await sleep(8_000);
    } finally {
      await cluster.unsafe(`alter database "${database}" allow_connections true`);
    }
    const since = performance.now();
    await heartbeatSince(since);
    await listening();
    expect(at(50).slice(errors).map((l) => l.msg)).toEqual([]);
    expect(at(40).filter(hasStack).map((l) => l.msg)).toEqual([]);
    expect(count(FAULT)).toBe(faults + 1);
    expect(count(BACK)).toBe(backs + 1);
    // Graphile Worker's LISTEN reconnection: one try after the fault (attempts 1), which the queue
    // pool holds until a connection opens, so its backoff never grows
    expect(Math.max(...listenAttempts)).toBe(1);
  }, 60_000);
});
