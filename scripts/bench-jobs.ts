// npm run bench:jobs [-- --database-url URL --seconds 4 --writers 8 --jobs 2000 --concurrency 8]
//
// 1. Write path: mutation throughput (api.upsert_block_atomic content updates, one canvas per
//    writer) with embedding enqueueing OFF (the outbox triggers disabled) and ON (triggers on, the
//    outbox drained into Graphile Worker every 500 ms, as the worker does), alternating phases.
// 2. Jobs: a real Graphile Worker (src/worker runtime, local provider) runs a burst of embed_block
//    jobs and, in the same run, a burst of no-op jobs: jobs/s and enqueue→done latency, and the
//    ratio embed/no-op.
// Runs in its own scratch database (potentia_bench_jobs, made fresh), never in dev or test data.
import { randomUUID } from 'node:crypto';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { pino } from 'pino';
import postgres from 'postgres';
import { loadConfig } from '../src/config.ts';
import { withRequest } from '../src/db/request.ts';
import { LocalProvider } from '../src/worker/providers.ts';
import { benchDatabaseUrl, percentile, recreateBenchDatabase } from './lib/bench.ts';
import { startWorker } from '../src/worker/runtime.ts';

const { values, number } = parseCommandLine({ options: {
  'database-url': { type: 'string' }, seconds: { type: 'string', default: '3' }, writers: { type: 'string', default: '8' },
  rounds: { type: 'string', default: '4' }, jobs: { type: 'string', default: '2000' }, concurrency: { type: 'string', default: '8' },
} });
const SECONDS = number('seconds', decimalNumber(0, undefined, { above: true })), WRITERS = number('writers', wholeNumber(1)), ROUNDS = number('rounds', wholeNumber(1));
const JOBS = number('jobs', wholeNumber(1)), CONCURRENCY = number('concurrency', wholeNumber(1));
const config = loadConfig();
// database potentia_bench_jobs on the server of DATABASE_URL, as every other benchmark (it was
// 127.0.0.1:5432 whatever DATABASE_URL said)
const url = values['database-url'] ?? benchDatabaseUrl('potentia_bench_jobs');
await recreateBenchDatabase(url, console.log);
const sql = postgres(url, { max: WRITERS + 4, onnotice: () => {} });

const as = <T>(user: string, fn: string, args: unknown[]) => withRequest(sql, { claims: { sub: user, role: 'authenticated' } }, async (tx) => {
  const [row] = await tx.unsafe(`select api.${fn}(${args.map((_, i) => `$${i + 1}`).join(', ')}) as r`, args as never[]);
  return row!.r as T;
});
const pct = (xs: number[], p: number) => percentile([...xs].sort((a, b) => a - b), p * 100);
const median = (xs: number[]) => pct(xs, 0.5);

const [limit] = await sql`select value from app.settings where key = 'mutations_per_minute'`;
let workspaceId: string | undefined;
try {
  await sql`update app.settings set value = '100000000' where key = 'mutations_per_minute'`;
  const [owner] = await sql`insert into auth.users (email) values (${`bench-${randomUUID()}@bench.local`}) returning id`;
  ({ workspace_id: workspaceId } = await as<{ workspace_id: string }>(owner!.id, 'create_workspace', ['bench:jobs']));
  const writers: { user: string; canvas: string; block: string; version: number }[] = [];
  for (let i = 0; i < WRITERS; i++) {
    const [u] = await sql`insert into auth.users (email) values (${`bench-${randomUUID()}@bench.local`}) returning id`;
    await as(owner!.id, 'set_workspace_member', [workspaceId, u!.id, 'editor']);
    const { canvas_id } = await as<{ canvas_id: string }>(u!.id, 'create_canvas', [workspaceId, `bench ${i}`, {}]);
    const r = await as<any>(u!.id, 'upsert_block_atomic', [canvas_id, null, 'create', randomUUID(), null, { type: 'text', content: { text: 'start' } }]);
    writers.push({ user: u!.id, canvas: canvas_id, block: r.block_id, version: r.version });
  }

  // ---- 1. write path ----
  const setTriggers = (on: boolean) => sql.unsafe(`alter table app.blocks ${on ? 'enable' : 'disable'} trigger queue_embedding_insert,
                                                                        ${on ? 'enable' : 'disable'} trigger queue_embedding_update`);
  const phase = async (enqueue: boolean) => {
    await setTriggers(enqueue);
    let drains = 0;
    let draining = enqueue;
    const drainer = (async () => {
      while (draining) {
        await sql`select internal.drain_embedding_outbox('1 second', '10 seconds', 500)`;
        drains++;
        await new Promise((r) => setTimeout(r, 500));
      }
    })();
    const until = performance.now() + SECONDS * 1000;
    const counts = await Promise.all(writers.map(async (w) => {
      let n = 0;
      while (performance.now() < until) {
        const r = await as<any>(w.user, 'upsert_block_atomic', [w.canvas, w.block, 'update', randomUUID(), w.version, { content: { text: `edit ${n} ${randomUUID()}` } }]);
        if (r.status !== 'success') throw new Error(`mutation failed: ${JSON.stringify(r.error)}`);
        w.version = r.version;
        n++;
      }
      return n;
    }));
    draining = false;
    await drainer;
    return counts.reduce((a, b) => a + b, 0) / SECONDS;
  };
  const off: number[] = [], on: number[] = [];
  await phase(false); // warm-up
  for (let r = 0; r < ROUNDS; r++) {
    off.push(await phase(false));
    on.push(await phase(true));
  }
  await setTriggers(true);
  await sql`select internal.drain_embedding_outbox('0 seconds', '0 seconds', 100000)`;
  const offTps = median(off), onTps = median(on);
  console.log(`write path (${WRITERS} writers, ${SECONDS} s phases, median of ${ROUNDS}):`);
  console.log(`  mutations/s  enqueue OFF ${offTps.toFixed(0)}  [${off.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  mutations/s  enqueue ON  ${onTps.toFixed(0)}  [${on.map((x) => x.toFixed(0)).join(', ')}]`);
  console.log(`  ON/OFF = ${(onTps / offTps).toFixed(3)}  (${onTps >= offTps * 0.9 ? 'within' : 'NOT within'} 10%)`);

  // ---- 2. jobs ----
  const enqueuedAt = new Map<string, number>();
  const latency: Record<string, number[]> = { embed_block: [], noop: [] };
  let lastDone: Record<string, number> = {};
  const worker = await startWorker({
    databaseUrl: url,
    worker: { ...config.worker, concurrency: CONCURRENCY, crontab: '', pollIntervalMs: 1000 },
    embedding: config.embedding, provider: new LocalProvider(), logger: pino({ level: 'warn' }),
    extraTasks: { noop: async () => {} },
  });
  worker.events.on('job:success', ({ job }) => {
    const t = enqueuedAt.get(job.key ?? '');
    if (t === undefined) return;
    latency[job.task_identifier]?.push(performance.now() - t);
    lastDone[job.task_identifier] = performance.now();
  });
  const [{ canvas_id: jobCanvas }] = [await as<{ canvas_id: string }>(writers[0]!.user, 'create_canvas', [workspaceId, 'bench jobs', {}])];
  const blocks = await sql`
    insert into app.blocks (canvas_id, type, content, y_order)
    select ${jobCanvas}, 'text', jsonb_build_object('text', 'bench block ' || i || ' about gardens rockets and bread ' || md5(i::text)),
           'c' || lpad(i::text, 6, '0') || 'z'
    from generate_series(1, ${JOBS}) i returning block_id`;
  await sql`delete from app.embedding_outbox where canvas_id = ${jobCanvas}`;
  const burst = async (task: 'embed_block' | 'noop') => {
    const ids = blocks.map((b) => b.block_id as string);
    const t0 = performance.now();
    for (const id of ids) enqueuedAt.set(`bench:${task}:${id}`, t0);
    await sql`select count(*) from graphile_worker.add_jobs(array(
                select row(${task}, json_build_object('block_id', b), null, null, null, ${`bench:${task}:`} || b, null, null)::graphile_worker.job_spec
                from unnest(${ids}::uuid[]) b))`;
    while (latency[task]!.length < JOBS) await new Promise((r) => setTimeout(r, 20));
    const seconds = (lastDone[task]! - t0) / 1000;
    return { jobsPerSecond: JOBS / seconds, p50: pct(latency[task]!, 0.5), p95: pct(latency[task]!, 0.95) };
  };
  const noop = await burst('noop');
  const embed = await burst('embed_block');
  await worker.stop();
  const [check] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${jobCanvas} and embedded_hash = content_hash`;
  console.log(`jobs (burst of ${JOBS}, concurrency ${CONCURRENCY}, local provider; latency = enqueue → done, ms):`);
  console.log(`  no-op        ${noop.jobsPerSecond.toFixed(0)} jobs/s  p50 ${noop.p50.toFixed(0)}  p95 ${noop.p95.toFixed(0)}`);
  console.log(`  embed_block  ${embed.jobsPerSecond.toFixed(0)} jobs/s  p50 ${embed.p50.toFixed(0)}  p95 ${embed.p95.toFixed(0)}  (${check!.n}/${JOBS} embedded)`);
  console.log(`  embed_block / no-op throughput = ${(embed.jobsPerSecond / noop.jobsPerSecond).toFixed(2)}`);
} finally {
  await sql.unsafe(`alter table app.blocks enable trigger queue_embedding_insert, enable trigger queue_embedding_update`).catch(() => {});
  await sql`update app.settings set value = ${limit!.value} where key = 'mutations_per_minute'`;
  if (workspaceId) await sql`delete from app.workspaces where workspace_id = ${workspaceId}`;
  await sql`delete from auth.users where email like 'bench-%@bench.local'`;
  await sql.end();
}
