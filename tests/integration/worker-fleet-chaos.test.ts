// Three `npm run worker` processes under a steady stream of mutations while every worker
// connection on the database is terminated again and again, and one worker's path to the
// database is cut for longer than WORKER_STALE_MS (the server gone, as far as it can tell): no
// process exits, every block ends embedded at its final content, no job stays locked, and the
// cut-off worker's /metrics says the truth meanwhile (its heartbeat's age grows, no queue depth
// read before the cut is shown) and its log says so once, not at every drain.
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { OUTAGE_ENDED, OUTAGE_STARTED } from '../../src/worker/outage.ts';
import { startWorkerProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep } from '../helpers/wait.ts';
import { quietQueue, raiseMutationLimit, waitFor } from '../helpers/worker.ts';

const STALE_MS = 3000;
const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as { port: number }; s.close(() => resolve(port)); });
});

describe('a fleet of workers under connection kills and a cut', () => {
  let db: Database;
  let admin: postgres.Sql;
  let restoreLimit: () => Promise<void>;
  let proxy: TcpProxy;
  const workers: ScriptProcess[] = [];

  beforeAll(async () => {
    db = testDatabase(5);
    admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    restoreLimit = await raiseMutationLimit(db.sql);
    proxy = await startTcpProxy(Number(new URL(testDatabaseUrl()).port || 5432));
    await quietQueue(db.sql);
  }, 60_000);
  afterAll(async () => {
    for (const w of workers) w.child.kill('SIGKILL');
    await proxy?.close();
    await restoreLimit?.();
    await admin?.end();
    await db?.close();
  });

  it('loses nothing, locks nothing, exits never, and reports the cut', async () => {
    const through = databaseUrlThrough(proxy, testDatabaseUrl());
    const metricsPort = await freePort();
    const env = (url: string, extra: Record<string, string> = {}) => ({
      DATABASE_URL: url, LOG_LEVEL: 'info', NODE_ENV: 'test', EMBEDDING_PROVIDER: 'local', WORKER_CONCURRENCY: '3',
      WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '300', WORKER_STALE_MS: String(STALE_MS), WORKER_CRONTAB: '',
      EMBED_DEBOUNCE_MS: '100', EMBED_DRAIN_INTERVAL_MS: '100', ...extra,
    });
    workers.push(...await Promise.all([
      startWorkerProcess(env(testDatabaseUrl()), 30_000),
      startWorkerProcess(env(testDatabaseUrl()), 30_000),
      startWorkerProcess(env(through, { WORKER_METRICS_PORT: String(metricsPort) }), 30_000),
    ]));
    const cutOff = workers[2]!;
    const metrics = async () => {
      const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
      return { age: Number(/^potentia_worker_heartbeat_age_seconds (\S+)$/m.exec(text)?.[1]), depth: /^potentia_job_queue_depth\{/m.test(text) };
    };

    const { canvasId, users } = await createCanvas(db.sql);
    const tag = `fleet${randomUUID().slice(0, 8)}`;
    const versions = new Map<string, number>();
    let writing = true;
    const writers = Array.from({ length: 3 }, async (_, w) => {
      for (let i = 0; writing; i++) {
        const ids = [...versions.keys()];
        const id = ids[(i * 7 + w) % Math.max(ids.length, 1)];
        const r = i % 3 === 0 || !id
          ? await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: `${tag} ${w}.${i}` } } })
          : await mutate(db.sql, users.owner!, canvasId, { blockId: id, action: 'update', baseVersion: versions.get(id)!, patch: { content: { text: `${tag} ${w}.${i} edited` } } });
        if (r.status === 'success') versions.set(r.block_id ?? id!, r.version!);
        await sleep(15);
      }
    });
    let kills = 0;
    const killAll = async () => {
      const [r] = await admin`select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity
                              where datname = current_database() and application_name like 'potentia-worker%') k`;
      kills += r!.n;
    };
    const during: { age: number; depth: boolean }[] = [];
    let cutLog = '';
    const chaos = (async () => {
      for (let round = 0; round < 2; round++) { await killAll(); await sleep(1500); }
      // the server vanishes for the third worker, longer than WORKER_STALE_MS
      const before = cutOff.output().length;
      proxy.cut();
      for (const end = Date.now() + STALE_MS + 2000; Date.now() < end;) {
        await killAll();
        during.push(await metrics());
        await sleep(700);
      }
      cutLog = cutOff.output().slice(before);
      proxy.restore();
      for (let round = 0; round < 2; round++) { await killAll(); await sleep(1500); }
      writing = false;
    })();
    await Promise.all([chaos, ...writers]);
    expect(kills).toBeGreaterThan(30);
    expect(versions.size).toBeGreaterThan(30);

    // while cut off: alive, its heartbeat's age past WORKER_STALE_MS, no queue depth shown
    expect(during.at(-1)!.age).toBeGreaterThan(STALE_MS / 1000);
    expect(during.at(-1)!.depth).toBe(false);
    // the cut logged once (src/worker/outage.ts), not at every drain (every 100 ms) or heartbeat
    expect(cutLog.split(OUTAGE_STARTED).length - 1).toBeLessThanOrEqual(1);
    expect(cutLog.match(/worker (outbox drain|heartbeat) failed/g)?.length ?? 0).toBe(0);

    await waitFor('every block embedded at its final content, no job locked', async () => {
      // locked by these workers (whatever pool id they run under now)
      const [r] = await db.sql`
        select (select count(*)::int from app.blocks where canvas_id = ${canvasId} and embedded_hash is distinct from content_hash) as behind,
               (select count(*)::int from graphile_worker.jobs where locked_by = any(${workers.map((w) => w.ready[1]!)})
                  or locked_by in (select worker_id from app.worker_heartbeats where pid = any(${workers.map((w) => w.pid)}))) as locked`;
      return r!.behind === 0 && r!.locked === 0;
    }, 30_000, 250);
    const [count] = await db.sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(count!.n).toBe(versions.size);
    // back: its heartbeat fresh again, the depth shown again
    await waitFor('the cut-off worker to report again', async () => {
      const m = await metrics();
      return m.depth && m.age < 1;
    });
    expect(cutOff.output()).toContain(OUTAGE_ENDED);
    for (const w of workers) expect(w.exited()).toBeNull();
  }, 120_000);
});
