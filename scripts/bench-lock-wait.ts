// npx tsx scripts/bench-lock-wait.ts --database-url URL [--hold 5] [--rounds 3]
//
// How long writers stall behind a migration step waiting for a lock (src/db/migration-step.ts),
// for two shapes of its tries, with the step's pause between them (RETRY_PAUSE_MS, 1 s): the
// step's own (tryLockTimeoutMs: 0.1 s, 0.2 s, 0.4 s, 0.8 s, 1.6 s, then 2 s; GitLab's way) and, as
// the baseline, the fixed 2 s tries the step had before it. A forgotten session holds ACCESS
// SHARE on a table (`begin; select … ;` left open) for --hold seconds; the step's ALTER TABLE
// then queues for ACCESS EXCLUSIVE, and every single-row UPDATE of a writer queues behind it
// until the try gives up. One writer updates one row in a loop; printed per shape: the writer's
// longest update, the time its updates spent over 50 ms in all, and when the ALTER got through. The two shapes alternate, --rounds times each.
// It uses the database it is given (a table bench_lock_wait, dropped at the end).
import postgres from 'postgres';
import { parseCommandLine, decimalNumber, wholeNumber } from './lib/command-line.ts';
import { RETRY_PAUSE_MS, tryLockTimeoutMs } from '../src/db/migration-step.ts';

const { values, number } = parseCommandLine({ options: { 'database-url': { type: 'string' }, hold: { type: 'string', default: '5' },
  rounds: { type: 'string', default: '3' } } });
const url = values['database-url'];
if (!url) throw new Error('--database-url URL is required');
const HOLD_MS = number('hold', decimalNumber(0)) * 1000;
const ROUNDS = number('rounds', wholeNumber(1));
/** The baseline: every try waited 2 s for the lock, the migration step's shape before 619c4a6. */
const BASELINE_LOCK_TIMEOUT_MS = 2000;
const SHAPES: Record<string, (attempt: number) => number> = {
  'baseline (fixed 2 s tries)': () => BASELINE_LOCK_TIMEOUT_MS,
  'the step\'s (0.1 s doubling to 2 s)': tryLockTimeoutMs,
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const admin = postgres(url, { max: 1, onnotice: () => {} });
await admin`drop table if exists bench_lock_wait`;
await admin`create table bench_lock_wait (id int primary key, v int not null default 0)`;
await admin`insert into bench_lock_wait (id) values (1)`;

/** One round: the holder's transaction, the step's tries of `shape`, a writer all along. */
async function round(shape: (attempt: number) => number) {
  const holder = postgres(url!, { max: 1, onnotice: () => {} });
  const migrator = postgres(url!, { max: 1, onnotice: () => {} });
  const writer = postgres(url!, { max: 1, onnotice: () => {} });
  let writing = true;
  let longest = 0;
  let over50 = 0;
  const writes = (async () => {
    while (writing) {
      const t = performance.now();
      await writer`update bench_lock_wait set v = v + 1 where id = 1`;
      const ms = performance.now() - t;
      longest = Math.max(longest, ms);
      if (ms > 50) over50 += ms;
    }
  })();
  await sleep(300);
  const held = holder.begin(async (tx) => {
    await tx`select * from bench_lock_wait`;
    await sleep(HOLD_MS);
  });
  await sleep(100);
  const started = performance.now();
  let attempts = 0;
  for (;; attempts++) {
    try {
      await migrator.begin(async (tx) => {
        await tx`select set_config('lock_timeout', ${`${shape(attempts)}ms`}, true)`;
        await tx`alter table bench_lock_wait add column probe int`;
        await tx`alter table bench_lock_wait drop column probe`;
      });
      break;
    } catch (err) {
      if ((err as { code?: string }).code !== '55P03') throw err;
      await sleep(RETRY_PAUSE_MS);
    }
  }
  const applied = performance.now() - started;
  await held;
  await sleep(300);
  writing = false;
  await writes;
  await Promise.all([holder.end(), migrator.end(), writer.end()]);
  return { longest, over50, applied, attempts: attempts + 1 };
}

const results: Record<string, Awaited<ReturnType<typeof round>>[]> = {};
for (let r = 0; r < ROUNDS; r++) {
  for (const [name, shape] of Object.entries(SHAPES)) (results[name] ??= []).push(await round(shape));
}
await admin`drop table bench_lock_wait`;
await admin.end();
console.log(`hold ${HOLD_MS / 1000} s, pause ${RETRY_PAUSE_MS / 1000} s between tries, ${ROUNDS} round(s) each (median of the rounds)`);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, rows] of Object.entries(results)) {
  console.log(`${name.padEnd(34)} writer's longest update ${median(rows.map((x) => x.longest)).toFixed(0).padStart(5)} ms, `
    + `time over 50 ms ${median(rows.map((x) => x.over50)).toFixed(0).padStart(5)} ms, ALTER through after ${median(rows.map((x) => x.applied)).toFixed(0).padStart(5)} ms `
    + `(${median(rows.map((x) => x.attempts))} tries)`);
}
