// npx tsx scripts/bench-rank.ts [--inserts 1000] [--blocks 100] [--database-url URL]
//
// The worst case for LexoRank keys: many inserts at ONE spot of a canvas, each through
// api.upsert_block_atomic called the way the HTTP layer calls it (withRequest: one transaction
// carrying an editor's claims), next to plain appends measured in the same run. Three canvases
// start with the same --blocks appended blocks; X is the block in the middle, Y the one after it.
//
//   after X       every insert has after_id = X: the new block goes directly after X, pushing the
//                 previous inserts down (the gap next to X keeps shrinking)
//   before Y      every insert has after_id = the previous insert (X at first): the new block goes
//                 directly before Y, between the same neighbour and the run (typing line after line)
//   append        create with no placement: the block goes last (the baseline)
//
// The three are interleaved one call at a time, so noise from the shared machine hits them alike.
// Afterwards the final order of each canvas is checked against the intents, keys against the
// storable form, and the canvas's canvas_seq against 1..n with no gap. No worker runs here: the
// rebalance jobs that long keys enqueue stay queued, so placement alone must keep inserts cheap.
//
// It uses its own database (default potentia_bench_rank on the server of DATABASE_URL: dropped, created and migrated here).
import { parseCommandLine, wholeNumber } from './lib/command-line.ts';
import postgres, { type Sql, type TransactionSql } from 'postgres';
import { withRequest } from '../src/db/request.ts';
import { benchDatabaseName, benchDatabaseUrl, percentile, recreateBenchDatabase } from './lib/bench.ts';
import { reportRows, type BenchRow } from './lib/bench-report.ts';

const DEFAULT_URL = benchDatabaseUrl('potentia_bench_rank');
const { values, number } = parseCommandLine({
  options: {
    inserts: { type: 'string', default: '1000' },
    blocks: { type: 'string', default: '100' },
    'database-url': { type: 'string', default: DEFAULT_URL },
  },
});
const INSERTS = number('inserts', wholeNumber(1));
const BLOCKS = number('blocks', wholeNumber(2));
const url = values['database-url']!;
const dbName = benchDatabaseName(url);
const log = (line: string) => console.log(line);
const command = ['npm run bench:rank', values.inserts !== '1000' ? `--inserts ${INSERTS}` : '',
  values.blocks !== '100' ? `--blocks ${BLOCKS}` : '', url !== DEFAULT_URL ? `--database-url ${url}` : '']
  .filter(Boolean).join(' ').replace('bench:rank ', 'bench:rank -- ');

type Result = { status: string; block_id?: string; error?: { code: string; message: string } };

function api<T>(sql: Sql, userId: string, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  return withRequest(sql, { claims: { sub: userId, role: 'authenticated' } }, work);
}

let opSeq = 0;
/**
 * Creates a block (placement from `patch`) as `userId`; returns its id and the time the call took
 * inside the server (ms: the RPC alone, without the round trips a loaded client adds), or throws
 * on any non-success.
 */
async function create(sql: Sql, userId: string, canvasId: string, patch: Record<string, unknown>) {
  const [row] = await api(sql, userId, async (tx) => tx`
    select api.upsert_block_atomic(${canvasId}::uuid, null, 'create', ${`rank-${++opSeq}`}, null,
                                   ${tx.json({ type: 'text', ...patch } as postgres.JSONValue)}::jsonb) as r,
           extract(epoch from clock_timestamp() - statement_timestamp()) * 1000 as ms`);
  const r = row!.r as Result;
  if (r.status !== 'success' || !r.block_id) throw new Error(`create failed: ${JSON.stringify(r)}`);
  return { id: r.block_id, serverMs: Number(row!.ms) };
}

type Scenario = {
  label: string; canvasId: string; initial: string[]; inserted: string[]; lat: number[]; serverLat: number[];
  patch: () => Record<string, unknown>;
  expected: () => string[];
};

async function main() {
  const started = Date.now();
  log(`bench-rank: ${INSERTS} inserts per scenario, canvases of ${BLOCKS} blocks to start`);
  await recreateBenchDatabase(url, log);
  const sql = postgres(url, { max: 2, onnotice: () => {}, connection: { application_name: 'potentia-bench-rank' } });
  try {
    await sql`update app.settings set value = '1000000000' where key = 'mutations_per_minute'`;
    const newUser = async (name: string) =>
      (await sql`insert into auth.users (email) values (${`${name}@bench.local`}) returning id`)[0]!.id as string;
    const owner = await newUser('owner');
    const editor = await newUser('editor');
    const { workspace_id: workspaceId } = await api(sql, owner, async (tx) =>
      (await tx`select api.create_workspace('Bench rank') as r`)[0]!.r as { workspace_id: string });
    await api(sql, owner, (tx) => tx`select api.set_workspace_member(${workspaceId}::uuid, ${editor}::uuid, 'editor')`);
    const newCanvas = async (title: string) => (await api(sql, owner, async (tx) =>
      (await tx`select api.create_canvas(${workspaceId}::uuid, ${title}, '{}'::jsonb) as r`)[0]!.r as { canvas_id: string })).canvas_id;

    const x = Math.floor(BLOCKS / 2) - 1; // X = initial[x], Y = initial[x + 1]
    const scenario = async (label: string, patchOf: (s: Scenario) => Record<string, unknown>,
      expectedOf: (s: Scenario) => string[]): Promise<Scenario> => {
      const canvasId = await newCanvas(label);
      const initial: string[] = [];
      for (let i = 0; i < BLOCKS; i++) initial.push((await create(sql, editor, canvasId, {})).id);
      const s: Scenario = { label, canvasId, initial, inserted: [], lat: [], serverLat: [], patch: () => patchOf(s), expected: () => expectedOf(s) };
      return s;
    };
    const afterX = await scenario('after X (each new block directly after X)',
      (s) => ({ after_id: s.initial[x] }),
      (s) => [...s.initial.slice(0, x + 1), ...[...s.inserted].reverse(), ...s.initial.slice(x + 1)]);
    const beforeY = await scenario('before Y (each after the previous insert)',
      (s) => ({ after_id: s.inserted.at(-1) ?? s.initial[x] }),
      (s) => [...s.initial.slice(0, x + 1), ...s.inserted, ...s.initial.slice(x + 1)]);
    const append = await scenario('append (no placement: last)',
      () => ({}),
      (s) => [...s.initial, ...s.inserted]);
    const all = [afterX, beforeY, append];
    log(`setup: 3 canvases of ${BLOCKS} blocks (${((Date.now() - started) / 1000).toFixed(1)} s)`);

    const moves = async (canvasId: string) => Number((await sql`
      select count(*) as n from app.block_operations where canvas_id = ${canvasId}::uuid and actor_id is null`)[0]!.n);
    const movesBefore = await Promise.all(all.map((s) => moves(s.canvasId)));

    for (let i = 0; i < INSERTS; i++) {
      for (const s of all) {
        const patch = s.patch();
        const t0 = performance.now();
        const { id, serverMs } = await create(sql, editor, s.canvasId, patch);
        s.lat.push(performance.now() - t0);
        s.inserted.push(id);
        s.serverLat.push(serverMs);
      }
      if ((i + 1) % 250 === 0) log(`  ${i + 1} / ${INSERTS}`);
    }

    // ---------------------------------------------------------------------------- checks
    let failed = false;
    const f = (n: number) => n.toFixed(2);
    const heads = ['p50 ms', 'p95 ms', 'p99 ms', 'max ms'];
    log(`\nper insert: client time (withRequest round trip) | time inside the server`);
    log(`${'scenario'.padEnd(44)}  ${heads.map((h) => h.padStart(7)).join('  ')} | ${heads.map((h) => h.padStart(7)).join('  ')}  system moves  max key  order  canvas_seq`);
    for (const [i, s] of all.entries()) {
      const order = (await sql`select block_id from app.blocks where canvas_id = ${s.canvasId}::uuid order by y_order`)
        .map((r) => r.block_id as string);
      const orderOk = JSON.stringify(order) === JSON.stringify(s.expected());
      const [k] = await sql`
        select max(length(y_order)) as max_len, bool_and(internal.lexorank_is_valid(y_order)) as valid,
               count(distinct y_order) = count(*) as unique_keys
        from app.blocks where canvas_id = ${s.canvasId}::uuid`;
      const [q] = await sql`
        select count(*) as n, count(distinct canvas_seq) as distinct_seq, min(canvas_seq) as lo, max(canvas_seq) as hi,
               (select last_canvas_seq from app.canvases where canvas_id = ${s.canvasId}::uuid) as last
        from app.block_operations where canvas_id = ${s.canvasId}::uuid and canvas_seq is not null`;
      const seqOk = Number(q!.lo) === 1 && Number(q!.hi) === Number(q!.n) && Number(q!.distinct_seq) === Number(q!.n)
        && Number(q!.last) === Number(q!.n);
      const keysOk = k!.valid === true && k!.unique_keys === true;
      if (!orderOk || !seqOk || !keysOk) failed = true;
      s.lat.sort((a, b) => a - b);
      s.serverLat.sort((a, b) => a - b);
      const cols = (lat: number[]) => [50, 95, 99, 100].map((p) => f(percentile(lat, p)).padStart(7)).join('  ');
      log(`${s.label.padEnd(44)}  ${cols(s.lat)} | ${cols(s.serverLat)}  ` +
          `${String((await moves(s.canvasId)) - movesBefore[i]!).padStart(12)}  ${String(k!.max_len).padStart(7)}  ` +
          `${(orderOk ? 'exact' : 'WRONG').padStart(5)}  ${seqOk ? '1..' + q!.n + ' no gap' : 'GAPS/DUPLICATES'}` +
          `${keysOk ? '' : '  INVALID OR DUPLICATE KEYS'}`);
    }
    const jobs = Number((await sql`select count(*) as n from graphile_worker.jobs where task_identifier = 'rebalance_canvas'`)[0]!.n);
    log(`rebalance jobs queued (no worker runs here): ${jobs}`);

    // the target is on the client's time; the server's time is printed next to it, since the
    // round trips of a loaded machine can hide what placement costs
    const rows = (time: 'lat' | 'serverLat', target: BenchRow['target']) => [afterX, beforeY].map((s): BenchRow => {
      const measured = percentile(s[time], 95);
      const baseline = percentile(append[time], 95);
      return {
        bench: 'bench:rank',
        workload: `${INSERTS} inserts at one spot vs plain append, p95${time === 'serverLat' ? ' inside the server' : ''}: ${s.label.split(' (')[0]}`,
        measured, baseline, unit: 'ms p95', ratio: measured / baseline, target, command,
        note: `api.upsert_block_atomic as an editor, one call at a time, interleaved with ${INSERTS} appends to a canvas of the same size`,
      };
    });
    reportRows([...rows('lat', { op: '<=', value: 2 }), ...rows('serverLat', null)]);
    log(`\ndone in ${((Date.now() - started) / 1000).toFixed(0)} s; database ${dbName} left in place for inspection`);
    if (failed) {
      console.error('bench-rank: a check failed (order, keys or canvas_seq): see the table above');
      process.exitCode = 1;
    }
  } finally {
    await sql.end();
  }
}

main().catch((err) => {
  console.error(`bench-rank failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
