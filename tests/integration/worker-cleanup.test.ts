// cleanup: internal.cleanup() removes exactly what is expired (stale presence, with a
// presence_leave broadcast; op log and audit past retention; expired or revoked refresh tokens;
// canvases soft-deleted past retention; jobs that will never run again) and nothing else; audit
// partitions and realtime.messages' daily ones are created ahead. The worker runs it from Graphile Worker's crontab.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { testDatabase } from '../helpers/db.ts';
import { addCanvas, createCanvas, createUser } from '../helpers/fixtures.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer } from '../../src/server.ts';
import { discardEmbeddingBacklog, fastWorker, startTestWorker } from '../helpers/worker.ts';

describe('cleanup', () => {
  let db: Database;
  beforeAll(async () => {
    db = testDatabase(3);
    await discardEmbeddingBacklog(db.sql); // else the crontab's cleanup job queues behind earlier files' embeddings
  });
  // jobs made below, one of them locked by no live worker: never left behind for later files
  const madeJobs: string[] = [];
  afterAll(async () => {
    if (!db) return;
    await db.sql`delete from graphile_worker._private_jobs where id = any(${madeJobs}::bigint[])`;
    await db.close();
  });

  it('removes exactly what is expired, and nothing else', async () => {
    const sql = db.sql;
    const { canvasId, workspaceId, users } = await createCanvas(sql);
    const owner = users.owner!;
    const idle = await createUser(sql, 'idle');
    const active = await createUser(sql, 'active');
    // presence: one idle past presence_expiry_seconds (120), one just inside it
    await sql`insert into app.presence (canvas_id, user_id, last_active_at) values
      (${canvasId}, ${idle}, now() - interval '121 seconds'), (${canvasId}, ${active}, now() - interval '100 seconds')`;
    // op log: 90 days retention
    const opOld = `old-${randomUUID()}`, opKept = `kept-${randomUUID()}`;
    await sql`insert into app.block_operations (client_op_id, canvas_id, action, status, created_at) values
      (${opOld}, ${canvasId}, 'update', 'failed', now() - interval '91 days'),
      (${opKept}, ${canvasId}, 'update', 'failed', now() - interval '89 days')`;
    // audit: 365 days retention
    const auditOld = randomUUID(), auditKept = randomUUID();
    await sql`insert into app.system_audit (action, status, entity_id, created_at) values
      ('test.cleanup', 'success', ${auditOld}, now() - interval '366 days'),
      ('test.cleanup', 'success', ${auditKept}, now() - interval '364 days')`;
    // refresh tokens: expired and revoked go; live and merely used (reuse detection) stay
    const family = randomUUID();
    const tok = (name: string) => `${name}-${randomUUID()}`;
    const [expired, revoked, live, used] = [tok('expired'), tok('revoked'), tok('live'), tok('used')];
    await sql`insert into app.refresh_tokens (token_hash, family_id, user_id, expires_at, revoked_at, used_at) values
      (${expired}, ${family}, ${owner}, now() - interval '1 second', null, null),
      (${revoked}, ${family}, ${owner}, now() + interval '1 day', now(), null),
      (${live}, ${family}, ${owner}, now() + interval '1 day', null, null),
      (${used}, ${family}, ${owner}, now() + interval '1 day', null, now())`;
    // canvases: 30 days retention after soft delete
    const purged = await addCanvas(sql, owner, workspaceId, 'deleted long ago');
    const recent = await addCanvas(sql, owner, workspaceId, 'deleted recently');
    await sql`update app.canvases set deleted_at = now() - interval '31 days' where canvas_id = ${purged}`;
    await sql`update app.canvases set deleted_at = now() - interval '29 days' where canvas_id = ${recent}`;
    // audit partitions: drop the furthest one ahead (empty), cleanup recreates it
    const [far] = await sql`select 'system_audit_' || to_char(date_trunc('month', now()) + interval '3 months', 'YYYY_MM') as name`;
    await sql.unsafe(`drop table if exists app.${far!.name}`);
    // a monthly audit partition wholly past the retention is dropped as a whole
    await sql.unsafe(`create table if not exists app.system_audit_2001_01 partition of app.system_audit
                      for values from ('2001-01-01') to ('2001-02-01')`);
    await sql`insert into app.system_audit (action, status, created_at) values ('test.cleanup', 'success', '2001-01-15')`;

    // jobs that will never run again: 7 days after their last run or change (failed_job_retention_days)
    const job = async (name: string, set: { attempts: number; max: number; ranDaysAgo: number; changedDaysAgo: number; locked?: boolean }) => {
      const [j] = await sql`select id from graphile_worker.add_job('embed_block', json_build_object('block_id', gen_random_uuid()),
                                                                   job_key => ${`cleanup-${name}-${randomUUID()}`}, run_at => now() + interval '1 day')`;
      await sql`update graphile_worker._private_jobs set attempts = ${set.attempts}, max_attempts = ${set.max}, key = null,
                  run_at = now() - make_interval(days => ${set.ranDaysAgo}), updated_at = now() - make_interval(days => ${set.changedDaysAgo}),
                  locked_at = ${set.locked ? sql`now()` : null}, locked_by = ${set.locked ? 'pool-cleanup-spec' : null}
                where id = ${j!.id}`;
      madeJobs.push(j!.id);
      return j!.id as string;
    };
    const failedLongAgo = await job('failed', { attempts: 25, max: 25, ranDaysAgo: 8, changedDaysAgo: 12 });
    const failedLately = await job('failed-lately', { attempts: 25, max: 25, ranDaysAgo: 2, changedDaysAgo: 12 });
    const replacedLately = await job('replaced-lately', { attempts: 1, max: 1, ranDaysAgo: 12, changedDaysAgo: 2 });
    const stillLocked = await job('locked', { attempts: 25, max: 25, ranDaysAgo: 8, changedDaysAgo: 12, locked: true });
    const stillToRun = await job('retrying', { attempts: 3, max: 25, ranDaysAgo: 8, changedDaysAgo: 12 });

    const [{ result }] = await sql`select internal.cleanup() as result` as any;
    expect(result.presence_expired).toBeGreaterThanOrEqual(1);
    expect(result.operations_deleted).toBeGreaterThanOrEqual(1);
    expect(result.audit_deleted).toBeGreaterThanOrEqual(1);
    expect(result.refresh_tokens_deleted).toBeGreaterThanOrEqual(2);
    expect(result.canvases_purged).toBeGreaterThanOrEqual(1);
    expect(result.audit_partitions_created).toBe(1);
    expect(result.audit_partitions_dropped).toBe(1);
    const [gone] = await sql`select to_regclass('app.system_audit_2001_01') is null as dropped`;
    expect(gone!.dropped).toBe(true);
    // realtime.messages of the compat schema (plain Postgres) is kept too: specified in
    // supabase/tests/realtime_messages_retention.test.sql
    expect(result.realtime_messages_maintained).toBe(true);
    // a day ahead is made in two runs, one day a run (sql/realtime/retention.sql, Locks): at most
    // four runs make the three (the migration made today's and the next two days')
    const daysAhead = async () => (await sql`select count(*)::int as n from generate_series(1, 3) k
      where to_regclass('realtime.messages_' || to_char(current_date + k, 'YYYY_MM_DD')) is not null`)[0]!.n as number;
    for (let run = 0; run < 4 && (await daysAhead()) < 3; run++) await sql`select internal.cleanup()`;
    expect(await daysAhead()).toBe(3);

    const presence = await sql`select user_id from app.presence where canvas_id = ${canvasId}`;
    expect(presence.map((r) => r.user_id)).toEqual([active]);
    const [leave] = await sql`select payload from realtime.messages where topic = ${`canvas:${canvasId}`} and event = 'presence_leave'`;
    expect(leave!.payload).toMatchObject({ user_id: idle, reason: 'expired' });
    const ops = await sql`select client_op_id from app.block_operations where client_op_id in (${opOld}, ${opKept})`;
    expect(ops.map((r) => r.client_op_id)).toEqual([opKept]);
    const audit = await sql`select entity_id from app.system_audit where entity_id in (${auditOld}, ${auditKept})`;
    expect(audit.map((r) => r.entity_id)).toEqual([auditKept]);
    const tokens = await sql`select token_hash from app.refresh_tokens where family_id = ${family} order by token_hash`;
    expect(tokens.map((r) => r.token_hash)).toEqual([live, used].sort());
    const canvases = await sql`select canvas_id from app.canvases where canvas_id in (${purged}, ${recent}, ${canvasId})`;
    expect(canvases.map((r) => r.canvas_id).sort()).toEqual([recent, canvasId].sort());
    const [part] = await sql`select to_regclass(${`app.${far!.name}`}) is not null as exists`;
    expect(part!.exists).toBe(true);
    expect(result.failed_jobs_deleted).toBeGreaterThanOrEqual(1);
    const jobs = await sql`select id from graphile_worker.jobs
                           where id = any(${[failedLongAgo, failedLately, replacedLately, stillLocked, stillToRun]}::bigint[]) order by id`;
    expect(jobs.map((r) => r.id)).toEqual([failedLately, replacedLately, stillLocked, stillToRun]);

    // idempotent: run again at the same moment (one transaction, one now()), nothing is left to do
    // (two separate calls would see other tests' presence rows age past the threshold meanwhile)
    const again = await sql.begin(async (tx) => {
      await tx`select internal.cleanup()`;
      const [row] = await tx`select internal.cleanup() as result`;
      return row!.result;
    });
    expect(again).toMatchObject({ presence_expired: 0, operations_deleted: 0, audit_deleted: 0, refresh_tokens_deleted: 0,
      canvases_purged: 0, audit_partitions_created: 0, audit_partitions_dropped: 0, failed_jobs_deleted: 0,
      realtime_partitions_created: 0, realtime_partitions_dropped: 0 });
  });

  it('runs from the worker (Graphile crontab task `cleanup`)', async () => {
    const worker = await startTestWorker(new LocalProvider(), { crontab: '* * * * * cleanup ?max=1&jobKey=cleanup' });
    try {
      const [known] = await db.sql`select count(*)::int as n from graphile_worker._private_known_crontabs where identifier = 'cleanup'`;
      expect(known!.n).toBe(1);
      const done = new Promise<void>((resolve) => worker.events.on('job:success', ({ job }) => {
        if (job.task_identifier === 'cleanup') resolve();
      }));
      await db.sql`select graphile_worker.add_job('cleanup', '{}'::json, job_key => 'cleanup')`;
      await done;
      const text = await worker.metrics.registry.metrics();
      expect(text).toMatch(/potentia_jobs_total\{task="cleanup",outcome="success"\} 1/);
    } finally {
      await worker.stop();
    }
  });

  it('/ready checks the worker heartbeat when a worker is expected; /metrics shows the queue', async () => {
    const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, worker: fastWorker({ mode: 'inprocess' }) };
    const withWorker = await startServer(config, { worker: true, realtime: false });
    try {
      const ready = await fetch(`${withWorker.url}/ready`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ checks: { database: 'ok', worker: 'ok' } });
      const metrics = await (await fetch(`${withWorker.url}/metrics`)).text();
      expect(metrics).toMatch(/potentia_job_queue_depth\{task="embed_block",state="outbox"\} \d+/);
    } finally {
      await withWorker.stop(); // graceful: its heartbeat row goes away
    }
    // a server that expects an external worker, with none running: 503
    const expecting = await startServer({ ...config, worker: fastWorker({ mode: 'external', expected: true }) }, { realtime: false });
    try {
      const [live] = await db.sql`select count(*)::int as n from app.worker_heartbeats where last_seen_at > now() - interval '2 seconds'`;
      expect(live!.n).toBe(0);
      const ready = await fetch(`${expecting.url}/ready`);
      expect(ready.status).toBe(503);
      // and what to do: 'no worker heartbeat' alone did not say that this server waits for a worker
      // process of its own (README: WORKER_MODE=external), nor how to start one or stop waiting
      expect(((await ready.json()) as any).checks.worker)
        .toBe('no worker heartbeat: WORKER_MODE=external expects a worker process on this database (npm run worker, or npm run serve -- --role worker); WORKER_MODE=off expects none');
    } finally {
      await expecting.stop();
    }
  });
});
