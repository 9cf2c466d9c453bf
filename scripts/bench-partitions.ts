// npm run bench:partitions [-- --rows 3000000 --days 2 --writers 4 --interval-ms 5 --baseline-seconds 20
//                          --old-partitions 2 --pause-ms 500 --max-runs 30 --skip-scan-under-lock --keep --database-url URL]
//
// What the worker's `cleanup` costs the writers of realtime.messages while it makes the daily
// partitions on plain Postgres (sql/realtime/retention.sql, internal.maintain_realtime_messages,
// called last by internal.cleanup) on a database whose partitions ran out, so that the default
// partition holds --rows rows (default 3 million): what docs/self-hosting.md and docs/performance.md
// quote. Never part of npm test nor of `npm run bench` (a few minutes, ~1 GB of scratch database).
//
//   1. Setup: its own database (default potentia_bench_partitions on the server of DATABASE_URL:
//      dropped, created and migrated here; dropped again at the end unless --keep). Every
//      realtime.messages_YYYY_MM_DD partition is dropped (the migration made today's and the next
//      two), --old-partitions daily partitions wholly past realtime_messages_retention_days are made
//      with 10,000 rows each (for cleanup to drop), and --rows rows are loaded into the default
//      partition, spread evenly over the last --days days (inside the retention: none is deleted);
//      then VACUUM ANALYZE and a CHECKPOINT, so that neither autovacuum nor the load's checkpoint
//      falls into one phase and not the other.
//   2. Writers: --writers connections each call realtime.send (as every mutation does: one row of
//      today, so into the default partition) in a transaction of its own, one after another with
//      --interval-ms between them; every call's latency is recorded on the client.
//   3. Baseline: the writers with no maintenance running, --baseline-seconds, half before and half
//      after the maintenance (the VM's speed drifts within minutes).
//   4. Maintenance: the writers again while `select internal.cleanup()` (what the worker's cron runs
//      every minute) runs again and again, --pause-ms apart, until a run has nothing left to do (no
//      day marked, made or deferred, no partition dropped, no row moved or deleted). Expected: a run
//      marking the three days ahead (NOT VALID checks), one run per day moving, validating and
//      attaching, one dropping the old partitions, one doing nothing.
//   5. Scan under lock (unless --skip-scan-under-lock): the three days' partitions dropped again and
//      made as realtime.create_partitions makes them (`create table … partition of`, in one
//      transaction): each scans the default partition under its ACCESS EXCLUSIVE lock, held to the
//      commit, which is what the two-run scheme of step 4 avoids.
//
// Prints the writers' p50, p99 and max insert latency in each phase, each maintenance run with the
// longest insert that overlapped it, and the ratios of the maintenance (and of the scan under lock)
// against the baseline: informative rows, no target.
import postgres, { type Sql } from 'postgres';
import { decimalNumber, milliseconds, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { benchDatabaseName, benchDatabaseUrl, percentile, recreateBenchDatabase } from './lib/bench.ts';
import { reportRows, type BenchRow } from './lib/bench-report.ts';

const DEFAULT_URL = benchDatabaseUrl('potentia_bench_partitions');
const DEFAULTS = {
  rows: '3000000', days: '2', writers: '4', 'interval-ms': '5', 'baseline-seconds': '20',
  'old-partitions': '2', 'pause-ms': '500', 'max-runs': '30',
} as const;
const usage = 'usage: npm run bench:partitions -- [--rows N>=1] [--days N>=1] [--writers N>=1] [--interval-ms MS>=0]\n'
  + '       [--baseline-seconds S>0] [--old-partitions N>=0] [--pause-ms MS>=0] [--max-runs N>=2]\n'
  + '       [--skip-scan-under-lock] [--keep] [--database-url URL]';
const { values, number } = parseCommandLine({
  options: {
    ...Object.fromEntries(Object.entries(DEFAULTS).map(([k, v]) => [k, { type: 'string' as const, default: v }])),
    'skip-scan-under-lock': { type: 'boolean', default: false },
    keep: { type: 'boolean', default: false },
    'database-url': { type: 'string', default: DEFAULT_URL },
  },
}, usage);
const opt = values as Record<string, string | boolean | undefined>;
const ROWS = number('rows', wholeNumber(1)), DAYS = number('days', wholeNumber(1)), WRITERS = number('writers', wholeNumber(1));
const INTERVAL_MS = number('interval-ms', milliseconds(0)), BASELINE_S = number('baseline-seconds', decimalNumber(0, undefined, { above: true }));
const OLD = number('old-partitions', wholeNumber(0)), PAUSE_MS = number('pause-ms', milliseconds(0)), MAX_RUNS = number('max-runs', wholeNumber(2));
const SCAN_UNDER_LOCK = opt['skip-scan-under-lock'] !== true;
const url = opt['database-url'] as string;
const dbName = benchDatabaseName(url);
const command = ['npm run bench:partitions --',
  ...Object.entries(DEFAULTS).filter(([k, v]) => opt[k] !== v).map(([k]) => `--${k} ${opt[k]}`),
  SCAN_UNDER_LOCK ? '' : '--skip-scan-under-lock', url !== DEFAULT_URL ? `--database-url ${url}` : '']
  .filter(Boolean).join(' ').replace(/ --$/, '');
const log = (line: string) => console.log(line);
const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(0)} s`;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const count = (n: number) => n.toLocaleString('en-US');
const ms = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));

/** One realtime.send: when it started (performance.now()) and how long it took, in ms. */
type Sample = { t0: number; ms: number };

/**
 * --writers loops calling realtime.send until stop(); each on a connection of its own. A send that
 * failed (realtime.send turns any error into a WARNING and returns) is counted in `failed`.
 */
function startWriters(label: string) {
  const samples: Sample[] = [];
  let failed = 0;
  let running = true;
  const sql = postgres(url, {
    max: WRITERS, onnotice: (n) => { if (n.severity === 'WARNING') failed++; },
    connection: { application_name: 'potentia-bench-partitions-writer' },
  });
  const loops = Array.from({ length: WRITERS }, async (_, w) => {
    const topic = `bench:partitions:writer:${w}`;
    for (let i = 0; running; i++) {
      const t0 = performance.now();
      await sql`select realtime.send(${sql.json({ op: 'update', phase: label, writer: w, n: i })}::jsonb, 'delta', ${topic}, true)`;
      samples.push({ t0, ms: performance.now() - t0 });
      if (INTERVAL_MS > 0) await sleep(INTERVAL_MS);
    }
  });
  return {
    samples,
    failed: () => failed,
    ready: async () => { await sql`select 1`; },
    stop: async () => { running = false; await Promise.all(loops); await sql.end(); },
  };
}

type Stats = { n: number; p50: number; p99: number; max: number };
function stats(samples: Sample[]): Stats {
  const sorted = samples.map((s) => s.ms).sort((a, b) => a - b);
  return { n: sorted.length, p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? NaN };
}
const showStats = (s: Stats) => `${count(s.n).padStart(7)} inserts  p50 ${ms(s.p50).padStart(5)}  p99 ${ms(s.p99).padStart(5)}  max ${ms(s.max).padStart(6)} ms`;

/** The longest insert that was in flight at some moment of [from, to]. */
const longestOverlapping = (samples: Sample[], from: number, to: number) =>
  samples.filter((s) => s.t0 <= to && s.t0 + s.ms >= from).reduce((m, s) => Math.max(m, s.ms), 0);

async function baseline(seconds: number): Promise<Sample[]> {
  const writers = startWriters('baseline');
  await writers.ready();
  await sleep(seconds * 1000);
  await writers.stop();
  if (writers.failed()) throw new Error(`${writers.failed()} realtime.send call(s) failed in the baseline`);
  return writers.samples;
}

type RunResult = {
  realtime_partitions_pending: number; realtime_partitions_created: number; realtime_partitions_dropped: number;
  realtime_messages_moved: number; realtime_messages_deleted: number; realtime_partitions_deferred: number;
};
type Run = { from: number; to: number; r: RunResult };

async function prepare(sql: Sql): Promise<number> {
  const { retention } = (await sql<{ retention: number }[]>`select internal.setting_int('realtime_messages_retention_days') as retention`)[0]!;
  if (DAYS >= retention) {
    throw new Error(`--days ${DAYS}: must be under realtime_messages_retention_days (${retention}), or cleanup would delete the rows as they age past it`);
  }
  const { comment } = (await sql<{ comment: string | null }[]>`select obj_description('realtime'::regnamespace, 'pg_namespace') as comment`)[0]!;
  if (comment !== 'potentia compatibility schema') throw new Error(`the realtime schema is not the compat one (comment ${comment}): cleanup would leave it alone`);
  const parts = await sql<{ name: string }[]>`
    select c.relname as name from pg_inherits i join pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'realtime.messages'::regclass and c.relname ~ '^messages_[0-9]{4}_[0-9]{2}_[0-9]{2}$' order by 1`;
  for (const { name } of parts) await sql.unsafe(`drop table realtime."${name}"`);
  log(`dropped the ${parts.length} daily partitions the migration made (${parts.map((p) => p.name).join(', ')}): every row now goes to realtime.messages_default`);
  for (let k = 0; k < OLD; k++) {
    // wholly past the retention: the day's end at least a day before the cutoff (now - retention)
    const { day } = (await sql<{ day: string }[]>`select to_char(current_date - ${retention + 2 + k}::int, 'YYYY-MM-DD') as day`)[0]!;
    const name = `messages_${day.replace(/-/g, '_')}`;
    await sql.unsafe(`create table realtime."${name}" partition of realtime.messages for values from ('${day}') to ('${day}'::date + 1)`);
    await sql`insert into realtime.messages (topic, extension, payload, event, private, inserted_at, updated_at)
              select 'bench:partitions:old', 'broadcast', jsonb_build_object('n', i), 'delta', true, t, t
              from generate_series(1, 10000) i, lateral (select ${day}::date + make_interval(secs => (i - 1) * 8.64) as t) x`;
    log(`made ${name}, past the retention (${retention} days), with 10,000 rows: for cleanup to drop`);
  }
  // the rows: evenly over (now - DAYS days, now], oldest first, in chunks (progress)
  const chunk = 250_000;
  const t = Date.now();
  for (let from = 1; from <= ROWS; from += chunk) {
    const to = Math.min(ROWS, from + chunk - 1);
    await sql`
      insert into realtime.messages (topic, extension, payload, event, private, inserted_at, updated_at)
      select 'realtime:canvas:' || (i % 997), 'broadcast',
             jsonb_build_object('op', 'update', 'block_id', gen_random_uuid(), 'version', i,
                                'patch', jsonb_build_object('content', jsonb_build_object('text', 'bench row ' || i))),
             'delta', true, ts, ts
      from generate_series(${from}::int, ${to}::int) i,
           lateral (select localtimestamp - make_interval(secs => ${DAYS * 86400}::float8 * (${ROWS}::int - i) / ${ROWS}::int) as ts) x`;
    const s = (Date.now() - t) / 1000;
    log(`  loaded ${count(to)} / ${count(ROWS)} rows into realtime.messages_default (${Math.round((100 * to) / ROWS)} %, ${s.toFixed(0)} s` +
        `${to < ROWS ? `, ~${((s / to) * (ROWS - to)).toFixed(0)} s to go` : ''})`);
  }
  log('vacuum analyze realtime.messages_default; checkpoint');
  await sql`vacuum (analyze) realtime.messages_default`;
  await sql`checkpoint`.catch((err) => log(`  (no checkpoint: ${(err as Error).message})`));
  const [size] = await sql<{ rows: number; size: string }[]>`
    select (select count(*)::int from realtime.messages_default) as rows,
           pg_size_pretty(pg_total_relation_size('realtime.messages_default')) as size`;
  log(`realtime.messages_default: ${count(size!.rows)} rows, ${size!.size} with its indexes (${elapsed()})`);
  return retention;
}

async function maintenance(sql: Sql): Promise<{ samples: Sample[]; runs: Run[]; span: [number, number] }> {
  const writers = startWriters('maintenance');
  await writers.ready();
  await sleep(1000);
  const runs: Run[] = [];
  const from = performance.now();
  for (;;) {
    if (runs.length === MAX_RUNS) throw new Error(`cleanup still had work after ${MAX_RUNS} runs (--max-runs)`);
    const t0 = performance.now();
    const [row] = await sql<{ r: RunResult }[]>`select internal.cleanup() as r`;
    const r = row!.r;
    runs.push({ from: t0, to: performance.now(), r });
    log(`  run ${runs.length}: ${((performance.now() - t0) / 1000).toFixed(2)} s  ${describe(r)}`);
    const idle = r.realtime_partitions_pending + r.realtime_partitions_created + r.realtime_partitions_dropped
      + r.realtime_messages_moved + r.realtime_messages_deleted + r.realtime_partitions_deferred === 0;
    if (idle) break;
    await sleep(PAUSE_MS);
  }
  const to = performance.now();
  await sleep(1000);
  await writers.stop();
  if (writers.failed()) throw new Error(`${writers.failed()} realtime.send call(s) failed during the maintenance`);
  return { samples: writers.samples, runs, span: [from, to] };
}

function describe(r: RunResult): string {
  const parts = [
    r.realtime_partitions_pending && `${r.realtime_partitions_pending} day(s) marked (NOT VALID check)`,
    r.realtime_partitions_created && `${r.realtime_partitions_created} partition(s) made`,
    r.realtime_messages_moved && `${count(r.realtime_messages_moved)} row(s) moved`,
    r.realtime_partitions_dropped && `${r.realtime_partitions_dropped} partition(s) dropped`,
    r.realtime_messages_deleted && `${count(r.realtime_messages_deleted)} row(s) deleted`,
    r.realtime_partitions_deferred && `${r.realtime_partitions_deferred} deferred (lock not had in 200 ms)`,
  ].filter(Boolean);
  return parts.length ? parts.join(', ') : 'nothing left to do';
}

/** The three days ahead made as realtime.create_partitions makes them: scans under the default partition's lock. */
async function scanUnderLock(sql: Sql): Promise<{ samples: Sample[]; seconds: number; span: [number, number] }> {
  const ahead = await sql<{ name: string }[]>`
    select 'messages_' || to_char(current_date + k, 'YYYY_MM_DD') as name from generate_series(1, 3) k`;
  for (const { name } of ahead) await sql.unsafe(`drop table if exists realtime."${name}"`);
  const writers = startWriters('scan-under-lock');
  await writers.ready();
  await sleep(1000);
  const from = performance.now();
  await sql`select realtime.create_partitions(current_date + 1, 3)`;
  const to = performance.now();
  await sleep(1000);
  await writers.stop();
  if (writers.failed()) throw new Error(`${writers.failed()} realtime.send call(s) failed during the scan under lock`);
  return { samples: writers.samples, seconds: (to - from) / 1000, span: [from, to] };
}

async function main() {
  log(`bench-partitions: ${count(ROWS)} rows in realtime.messages_default over the last ${DAYS} day(s), ` +
      `${WRITERS} writers (realtime.send, ${INTERVAL_MS} ms apart), baseline ${BASELINE_S} s`);
  await recreateBenchDatabase(url, log);
  const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: 'potentia-bench-partitions' } });
  try {
    await prepare(sql);

    log(`\nbaseline, first half (${BASELINE_S / 2} s, no maintenance)`);
    const base1 = await baseline(BASELINE_S / 2);
    log('\nmaintenance: internal.cleanup() until a run has nothing left to do, writers running');
    const m = await maintenance(sql);
    log(`\nbaseline, second half (${BASELINE_S / 2} s, no maintenance)`);
    const base2 = await baseline(BASELINE_S / 2);
    const under = SCAN_UNDER_LOCK ? (log('\nscan under lock: realtime.create_partitions(current_date + 1, 3), writers running'), await scanUnderLock(sql)) : null;

    const base = stats([...base1, ...base2]);
    // the inserts that started while cleanup was running or between its runs
    const during = stats(m.samples.filter((s) => s.t0 >= m.span[0] && s.t0 <= m.span[1]));
    const made = m.runs.reduce((n, run) => n + run.r.realtime_partitions_created, 0);
    const dropped = m.runs.reduce((n, run) => n + run.r.realtime_partitions_dropped, 0);
    const deferred = m.runs.reduce((n, run) => n + run.r.realtime_partitions_deferred, 0);

    log(`\nwriters' insert latency (realtime.send, ${WRITERS} connections, client side):`);
    log(`  baseline (no maintenance)       ${showStats(base)}`);
    log(`  during the maintenance          ${showStats(during)}  (${((m.span[1] - m.span[0]) / 1000).toFixed(1)} s)`);
    if (under) {
      const u = stats(under.samples.filter((s) => s.t0 + s.ms >= under.span[0] && s.t0 <= under.span[1]));
      log(`  during the scan under lock      ${showStats(u)}  (create_partitions ${under.seconds.toFixed(1)} s)`);
    }
    log(`\ncleanup runs: ${m.runs.length}; partitions made ${made}, dropped ${dropped}; deferred ${deferred}`);
    log('  run   seconds  longest insert in flight (ms)  what it did');
    for (const [i, run] of m.runs.entries()) {
      log(`  ${String(i + 1).padStart(3)}  ${((run.to - run.from) / 1000).toFixed(2).padStart(8)}  ` +
          `${ms(longestOverlapping(m.samples, run.from, run.to)).padStart(29)}  ${describe(run.r)}`);
    }

    const note = `${count(ROWS)} rows in realtime.messages_default over the last ${DAYS} day(s); ${WRITERS} writers calling realtime.send ` +
      `${INTERVAL_MS} ms apart; ${m.runs.length} cleanup runs ${PAUSE_MS} ms apart made ${made} partitions and dropped ${dropped} ` +
      `(${deferred} deferred); baseline: the same writers with no maintenance, ${BASELINE_S / 2} s before and ${BASELINE_S / 2} s after`;
    const rows: BenchRow[] = [
      { bench: 'bench:partitions', workload: "writers' longest insert during cleanup's partition maintenance vs no maintenance",
        measured: during.max, baseline: base.max, unit: 'ms max', ratio: during.max / base.max, target: null, command, note },
      { bench: 'bench:partitions', workload: "writers' p99 insert during cleanup's partition maintenance vs no maintenance",
        measured: during.p99, baseline: base.p99, unit: 'ms p99', ratio: during.p99 / base.p99, target: null, command, note },
    ];
    if (under) {
      const u = stats(under.samples.filter((s) => s.t0 + s.ms >= under.span[0] && s.t0 <= under.span[1]));
      rows.push({ bench: 'bench:partitions', workload: "writers' longest insert while create table … partition of scans the default partition under its lock vs no maintenance",
        measured: u.max, baseline: base.max, unit: 'ms max', ratio: u.max / base.max, target: null, command,
        note: `realtime.create_partitions(current_date + 1, 3) in one transaction, ${under.seconds.toFixed(1)} s` });
    }
    log('');
    reportRows(rows);
    log(`\ndone in ${elapsed()}`);
  } finally {
    await sql.end();
    if (opt.keep !== true) {
      const adminUrl = new URL(url);
      adminUrl.pathname = '/postgres';
      const a = postgres(adminUrl.toString(), { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists "${dbName}" with (force)`).catch((err) => console.error(`could not drop ${dbName}: ${err.message}`));
      await a.end();
      log(`database ${dbName} dropped (--keep keeps it)`);
    } else {
      log(`database ${dbName} left in place (--keep)`);
    }
  }
}

main().catch((err) => {
  console.error(`bench-partitions failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
