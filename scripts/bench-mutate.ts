// npx tsx scripts/bench-mutate.ts [--seconds 10] [--rounds 1] [--functions] [--clients 16] [--canvases 50] [--lane-depth N] [--database-url URL]
//
// Throughput and latency of api.upsert_block_atomic, called the way the HTTP layer calls it
// (requestStatement: one pipelined transaction carrying the caller's claims, as an editor, down the canvas's
// lane, src/db/canvas-lanes.ts: --lane-depth sets its depth, default the product's), next to a baseline
// measured in the same run and called the same way: a bare single-row UPDATE function.
//
//   hot canvas    1 canvas; (a) every client edits the SAME block (conflicts: counted apart),
//                 (b) every client edits its OWN block (no conflicts: measures how the canvas
//                 lock serializes writers), and (b) again through lanes that send one transaction
//                 at a time (no pipelining: what it buys, in the row's note); baseline: 16 clients
//                 incrementing 1 row.
//   50 canvases   client i's n-th mutation goes to canvas (i + n) mod 50, on its own block there;
//                 baseline: the same round-robin over 50 rows. Also run with all clients as ONE
//                 editor, which shows what per-user work (the rate-limit row) serializes.
//   text ops      1 canvas; (a) every client types one character at a random position into the
//                 SAME text (from the version it last saw: transformed against what others
//                 committed since), or deletes one once the text grew past its first length (so
//                 it keeps its size, as the baseline's content does), (b) the same in its OWN
//                 text; baseline: a plain content update of its own block, measured in the same
//                 run (ratio = the cost of text OT).
// Mutations are content updates from the version the client last saw (read back from each
// result, conflicts included) plus one create (append) in every 10.
//   own writes    pgbench (the same driver for both sides, -M prepared, 16 clients, 50 canvases):
//                 scripts/pgbench/mutation-writes.sql, the writes of one applied content update as
//                 plain SQL in one transaction (canvas row lock, block UPDATE with its outbox
//                 trigger, canvas last_seq, operation row, audit row, realtime.messages row), vs
//                 scripts/pgbench/mutation-rpc.sql, set role/claims + api.upsert_block_atomic doing
//                 that same update; both BEGIN to COMMIT in one pipeline (one round trip), as the
//                 handler sends the RPC (requestStatement). Between them, the rungs of
//                 scripts/pgbench/rpc-ladder.sql (mutation-ladder.sql): the same writes in one
//                 SECURITY DEFINER function called as the RPC is, then + the caller's context and
//                 authorization, then + the per-user rate limit; the RPC row's note gives each as
//                 a share of the writes' rate (where the RPC's cost goes), and the floor
//                 (mutation-writes.sql with scripts/pgbench/mutation-floor.sql after its BEGIN: the
//                 writes plus the RPC's guarantees as plain SQL, what any implementation must cost
//                 at least). All alternated, every
//                 other round in reverse order, max(2, --rounds) rounds rounded up to even. pgbench: $PGBENCH, else the server's
//                 major version's /usr/lib/postgresql/<major>/bin/pgbench, else pg_config --bindir,
//                 else PATH.
// The RATIO lines (scripts/lib/bench-report.ts) give the issue's targets: RPC vs its own writes,
// one user vs 16 users, hot canvas vs 50 canvases, text op vs plain content update. The hot
// canvas holds its canvas row lock through each mutation's writes and commit (canvas_seq in
// commit order). pgbench runs those writes alone in one statement
// (scripts/pgbench/mutation-writes-serialized.sql) on 1 canvas and on 50, 16 backends taking turns
// on the one canvas row, as the RPC's callers did before canvas lanes; the note of the hot-canvas
// row gives the 1-canvas rate as a fraction of the RPC's 50-canvas rate (the RPC through a lane,
// one warm backend per canvas, can pass it: docs/performance.md).
//
// --rounds N runs every scenario above N times, interleaved (round 1 runs each once, then round
// 2, …), and the pgbench sides alternate max(2, N) times, rounded up to even: a ratio is then taken over N interleaved
// runs of each side, so a drift of the machine (this VM's speed moves by 10-20 % within minutes)
// falls on both sides alike, and each RATIO note lists the ratio of each round: the spread that
// one run alone would show.
//
// --functions: one more pgbench run of mutation-rpc.sql, ONE client (so a function's time is its
// CPU, not a wait for a core), with track_functions = all, then where an RPC call's time goes, per
// SQL function (pg_stat_user_functions: calls and self time per RPC call; the timing itself adds
// a little to each call): what the RPC does beyond its own writes.
//
// It uses its own database (default potentia_bench on the server of DATABASE_URL: dropped, created and migrated here), never
// dev data. mutations_per_minute is raised there so the rate limit does not cut the run short.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import { addMachineCpu, backendPids, benchDatabaseName, benchDatabaseUrl, cpuPerTransaction, findPgbench, formatMachineCpu, percentile, procCpuMs,
  recreateBenchDatabase, runPgbench, analyzeAsAutovacuumWould, type MachineCpuTally, type PgbenchResult } from './lib/bench.ts';
import { reportRows, type BenchRow } from './lib/bench-report.ts';
import postgres, { type Sql } from 'postgres';
import { CanvasLanes } from '../src/db/canvas-lanes.ts';
import { requestStatement, withRequest } from '../src/db/request.ts';

const { values, number } = parseCommandLine({
  options: {
    seconds: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '1' },
    functions: { type: 'boolean', default: false },
    clients: { type: 'string', default: '16' },
    canvases: { type: 'string', default: '50' },
    'database-url': { type: 'string', default: benchDatabaseUrl('potentia_bench') },
    'warmup-seconds': { type: 'string', default: '1' },
    'lane-depth': { type: 'string' },
  },
});
const SECONDS = number('seconds', decimalNumber(0, undefined, { above: true }));
const ROUNDS = number('rounds', wholeNumber(1));
const CLIENTS = number('clients', wholeNumber(1));
const CANVASES = number('canvases', wholeNumber(1));
const WARMUP = number('warmup-seconds', decimalNumber(0));
const url = values['database-url']!;
const LANE_DEPTH = number('lane-depth', wholeNumber(1), undefined);
/** The hot canvas through lanes that send one transaction at a time (no pipelining), beside the default. */
const SERIAL_LABEL = 'rpc: hot canvas, own block per client, lane one transaction at a time';
const dbName = benchDatabaseName(url);
const root = fileURLToPath(new URL('..', import.meta.url));
const log = (line: string) => console.log(line);
const command = `npx tsx scripts/bench-mutate.ts ${process.argv.slice(2).join(' ')}`.trim();

// ---------------------------------------------------------------------------------- pgbench
/** Transactions per second of one pgbench script (scripts/pgbench/<name>.sql, or a path) over `seconds`. */
async function pgbench(bin: string, name: string, seconds: number, clients = CLIENTS, spread = CANVASES,
  defines: Record<string, number> = {}): Promise<PgbenchResult> {
  const file = name.startsWith('/') ? name : `${root}scripts/pgbench/${name}.sql`;
  return runPgbench(bin, { url, file, seconds, clients, defines: { canvases: CANVASES, spread, ...defines } });
}

// ---------------------------------------------------------------------------------- database
const freshDatabase = () => recreateBenchDatabase(url, log);

type Result = {
  status: 'success' | 'conflict' | 'failed' | 'duplicate'; version?: number; block_id?: string;
  block?: { content?: { text?: string } }; error?: { code: string; message: string };
};

const claims = (userId: string) => ({ claims: { sub: userId, role: 'authenticated' } });

async function api<T = any>(sql: Sql, userId: string, call: (tx: postgres.TransactionSql) => Promise<T>): Promise<T> {
  return withRequest(sql, claims(userId), call);
}

function upsert(lanes: CanvasLanes, userId: string, canvasId: string, blockId: string | null, action: 'create' | 'update',
  clientOpId: string, baseVersion: number | null, patch: Record<string, unknown>): Promise<Result> {
  // as the HTTP layer and the H1 socket send a mutation (src/http/rpc.ts callMutation)
  return requestStatement<{ r: Result }>(lanes, canvasId, claims(userId), 'select api.upsert_block_atomic($1::uuid, $2::uuid, $3, $4, $5::int, $6::jsonb) as r',
    [canvasId, blockId, action, clientOpId, baseVersion, patch]).then((rows) => rows[0]!.r);
}

// ---------------------------------------------------------------------------------- measuring
type Outcome = 'success' | 'conflict' | 'failed';
type Row = {
  label: string; kind: 'rpc' | 'baseline'; group: 'hot' | 'spread' | 'text'; ops: number; seconds: number;
  success: number; conflict: number; failed: number; lat: number[]; firstFailure?: string; respaced?: number;
  sent?: { transactions: number; requests: number; pipelined: number };  // what went down the lanes (warm-up included)
  rounds: { success: number; seconds: number }[];  // applied and seconds of each round (--rounds)
  backendMs?: number;  // CPU of the bench pool's Postgres backends over the measured window (where Postgres runs here)
};

const pct = percentile;

/**
 * Runs `op(client, n)` in a loop on every client: WARMUP s uncounted, then SECONDS s measured. Also
 * reads the CPU the bench pool's backends used over the measured window (`backends`: their pids),
 * unless one of them cannot be read (Postgres on another machine, a backend replaced meanwhile).
 */
async function measure(backends: () => Promise<number[]>, label: string, kind: Row['kind'], group: Row['group'],
  op: (client: number, n: number) => Promise<{ outcome: Outcome; detail?: string }>): Promise<Row> {
  const row: Row = { label, kind, group, ops: 0, seconds: SECONDS, success: 0, conflict: 0, failed: 0, lat: [], rounds: [] };
  const counters = Array.from({ length: CLIENTS }, () => 0);
  const clock: { phase: 'warmup' | 'measure' | 'stop' } = { phase: WARMUP > 0 ? 'warmup' : 'measure' };
  const stopped = () => clock.phase === 'stop'; // read after each await (no narrowing across it)
  let started = performance.now();
  const loops = counters.map(async (_, client) => {
    while (!stopped()) {
      const counting = clock.phase === 'measure';
      const t0 = performance.now();
      const { outcome, detail } = await op(client, counters[client]!++);
      if (!counting || stopped()) continue; // started in warm-up, or ended after the clock stopped
      row.lat.push(performance.now() - t0);
      row.ops++;
      row[outcome]++;
      if (outcome === 'failed' && !row.firstFailure) row.firstFailure = detail;
    }
  });
  if (WARMUP > 0) await sleep(WARMUP * 1000);
  const pids = await backends();
  const cpuBefore = procCpuMs(pids);
  if (WARMUP > 0) {
    clock.phase = 'measure';
    started = performance.now();
  }
  const progress = setInterval(() => {
    const t = (performance.now() - started) / 1000;
    log(`  ${label.padEnd(46)} ${t.toFixed(0).padStart(3)} s  ${String(row.ops).padStart(7)} ops  ${(row.ops / t).toFixed(0).padStart(6)}/s` +
        (kind === 'rpc' ? `  success ${row.success}  conflict ${row.conflict}  failed ${row.failed}` : ''));
  }, 1000);
  await sleep(SECONDS * 1000);
  clock.phase = 'stop';
  row.seconds = (performance.now() - started) / 1000;
  const cpuAfter = procCpuMs(pids);
  const samePids = (await backends()).join() === pids.join();
  if (cpuBefore !== null && cpuAfter !== null && samePids) row.backendMs = cpuAfter - cpuBefore;
  clearInterval(progress);
  await Promise.all(loops);
  row.rounds.push({ success: row.success, seconds: row.seconds });
  return row;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Where an RPC call's time goes: mutation-rpc.sql under pgbench with track_functions = all (set on
 * the bench database, so pgbench's new sessions take it), then pg_stat_user_functions per RPC
 * call. Prints the table; returns the largest self times for the RATIO row's note.
 */
async function functionBreakdown(sql: Sql, pgbenchBin: string): Promise<string> {
  log(`\n-- where an RPC call's time goes (pgbench mutation-rpc.sql, 1 client, ${SECONDS} s, track_functions = all)`);
  await sql.unsafe(`alter database "${dbName}" set track_functions = 'all'`);
  try {
    await sql`select pg_stat_reset()`;
    await pgbench(pgbenchBin, 'mutation-rpc', SECONDS, 1);
  } finally {
    await sql.unsafe(`alter database "${dbName}" reset track_functions`);
  }
  await sleep(1500); // pgbench's sessions report their counters as they end
  const fns = (await sql`select schemaname || '.' || funcname as fn, calls::float8 as calls, self_time::float8 as self, total_time::float8 as total
    from pg_stat_user_functions where calls > 0 order by self_time desc`) as unknown as { fn: string; calls: number; self: number; total: number }[];
  const rpc = fns.find((f) => f.fn === 'api.upsert_block_atomic');
  if (!rpc) return '';
  const perCall = (ms: number) => (ms * 1000) / rpc.calls; // µs per RPC call
  log(`  ${rpc.calls} calls, ${perCall(rpc.total).toFixed(0)} µs per call inside the RPC (the rest of a transaction: claims, BEGIN/COMMIT, protocol)`);
  log(`  ${'function'.padEnd(34)} ${'calls/RPC'.padStart(9)} ${'self µs/RPC'.padStart(11)} ${'total µs/call'.padStart(13)}`);
  for (const f of fns.slice(0, 16)) {
    log(`  ${f.fn.padEnd(34)} ${(f.calls / rpc.calls).toFixed(1).padStart(9)} ${perCall(f.self).toFixed(1).padStart(11)} ${((f.total * 1000) / f.calls).toFixed(1).padStart(13)}`);
  }
  return `; one client: inside the RPC ${perCall(rpc.total).toFixed(0)} µs per call, largest self times (µs per call): ` +
    fns.slice(0, 6).map((f) => `${f.fn.replace(/^internal\./, '')} ${perCall(f.self).toFixed(0)}`).join(', ');
}

// ---------------------------------------------------------------------------------- main
async function main() {
  const started = Date.now();
  log(`bench-mutate: ${CLIENTS} clients, ${SECONDS} s per scenario (+${WARMUP} s warm-up), ${CANVASES} canvases in the spread case`);
  await freshDatabase();
  const sql = postgres(url, { max: CLIENTS + 2, onnotice: () => {}, connection: { application_name: 'potentia-bench' } });
  // mutations as the HTTP layer sends them: down the canvas's lane (src/db/canvas-lanes.ts)
  const pipelined = new CanvasLanes(sql, { depth: LANE_DEPTH });
  // the same lanes sending one transaction at a time: the hot canvas once more with them, to show
  // in the same run what pipelining buys
  const serial = new CanvasLanes(sql, { depth: LANE_DEPTH, pipeline: false });
  let lanes = pipelined;
  // the pool's backends, read on a connection of its own (one of the pool's would be among them)
  const probe = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: 'potentia-bench-probe' } });
  const backends = () => backendPids(probe, 'potentia-bench');
  try {
    const [{ version, max_connections, sync, major }] = (await sql`
      select current_setting('server_version') as version, current_setting('max_connections') as max_connections,
             current_setting('synchronous_commit') as sync, (current_setting('server_version_num')::int / 10000)::text as major`) as unknown as
      [{ version: string; max_connections: string; sync: string; major: string }];
    const pgbenchBin = await findPgbench(major);
    log(`PostgreSQL ${version}, max_connections ${max_connections}, synchronous_commit ${sync}; ` +
        `${availableParallelism()} CPUs here (if the server is local, bench and server share them)`);

    // the baseline: a bare single-row UPDATE, SECURITY DEFINER like the RPC, callable by authenticated
    await sql.unsafe(`
      update app.settings set value = '1000000000' where key = 'mutations_per_minute';
      create schema bench;
      create table bench.counter (id integer primary key, n bigint not null default 0);
      insert into bench.counter (id) select generate_series(1, ${CANVASES});
      create function bench.bare_update(p_id integer) returns void
        language sql security definer set search_path = pg_catalog, pg_temp as $$
        update bench.counter set n = n + 1 where id = p_id $$;
      grant usage on schema bench to authenticated;
      grant execute on function bench.bare_update(integer) to authenticated;`);

    // people and canvases
    const newUser = async (name: string) =>
      ((await sql`insert into auth.users (email) values (${`${name}@bench.local`}) returning id`)[0]!.id as string);
    const owner = await newUser('owner');
    const { workspace_id: workspaceId } = await api(sql, owner, async (tx) =>
      (await tx`select api.create_workspace('Bench') as r`)[0]!.r);
    const editors: string[] = [];
    for (let i = 0; i < CLIENTS; i++) editors.push(await newUser(`editor${i}`));
    const sharedEditor = await newUser('shared-editor');
    for (const id of [...editors, sharedEditor]) {
      await api(sql, owner, (tx) => tx`select api.set_workspace_member(${workspaceId}::uuid, ${id}::uuid, 'editor')`);
    }
    const newCanvas = async (title: string) => (await api(sql, owner, async (tx) =>
      (await tx`select api.create_canvas(${workspaceId}::uuid, ${title}, '{}'::jsonb) as r`)[0]!.r)).canvas_id as string;
    const hot = await newCanvas('hot');
    const spread: string[] = [];
    for (let c = 0; c < CANVASES; c++) spread.push(await newCanvas(`spread ${c}`));

    // blocks: one shared hot block, one own block per client on the hot canvas and on every spread canvas
    let opSeq = 0;
    const opId = (tag: string) => `${tag}-${++opSeq}`;
    const create = async (userId: string, canvasId: string, text: string) => {
      const r = await upsert(lanes, userId, canvasId, null, 'create', opId('setup'), null, { type: 'text', content: { text } });
      if (r.status !== 'success') throw new Error(`setup create failed: ${JSON.stringify(r)}`);
      return { id: r.block_id!, version: r.version! };
    };
    const hotShared = await create(editors[0]!, hot, 'shared');
    const hotOwn = await Promise.all(editors.map((e, i) => create(e, hot, `own ${i}`)));
    const spreadOwn = await Promise.all(editors.map(async (e, i) => {
      const mine = [];
      for (const c of spread) mine.push(await create(e, c, `own ${i}`));
      return mine;
    }));
    const textShared = await create(editors[0]!, hot, 'shared text');
    const textOwn = await Promise.all(editors.map((e, i) => create(e, hot, `own text ${i}`)));
    const plainOwn = await Promise.all(editors.map((e, i) => create(e, hot, `own plain ${i}`)));
    // pgbench's targets: client c's own block on spread canvas i is row k = c * CANVASES + i
    const targets = spreadOwn.flatMap((mine, c) => mine.map((b, i) => ({
      k: c * CANVASES + i, user_id: editors[c]!, canvas_id: spread[i]!, block_id: b.id })));
    await sql`create table bench.pgbench_targets (k integer primary key, user_id uuid not null, canvas_id uuid not null, block_id uuid not null)`;
    await sql`insert into bench.pgbench_targets ${sql(targets)}`;
    await sql.file(`${root}scripts/pgbench/own-writes.sql`);
    await sql.file(`${root}scripts/pgbench/rpc-ladder.sql`);
    log(`setup: 1 hot canvas + ${CANVASES} canvases, ${1 + CLIENTS + CLIENTS * CANVASES} blocks (${((Date.now() - started) / 1000).toFixed(1)} s)`);

    const sharedVersions = Array.from({ length: CLIENTS }, () => hotShared.version); // each client's view of the shared block
    /** One mutation: every 10th a create (append), else a content update from the known version. */
    async function mutation(userId: string, canvasId: string, client: number, n: number,
      block: { version: number; id: string }, versionOf: () => number, setVersion: (v: number) => void) {
      const r = n % 10 === 9
        ? await upsert(lanes, userId, canvasId, null, 'create', opId(`c${client}`), null, { type: 'text', content: { text: `new ${client}/${n}` } })
        : await upsert(lanes, userId, canvasId, block.id, 'update', opId(`c${client}`), versionOf(), { content: { text: `edit ${client}/${n}` } });
      if (n % 10 !== 9 && r.version !== undefined && r.version !== null) setVersion(Number(r.version));
      const outcome: Outcome = r.status === 'success' || r.status === 'duplicate' ? 'success' : r.status === 'conflict' ? 'conflict' : 'failed';
      return { outcome, detail: r.error ? `${r.error.code}: ${r.error.message}` : undefined };
    }
    /**
     * One character typed at a random position of `text`, from the version this client last saw; or,
     * when the text has grown past its first length (as this client last saw it), one deleted. So the
     * text keeps about its length, as the baseline's content does: a text that grew by every op
     * (to ~10 KB over a run) made each op write, log and broadcast a document 100x the baseline's,
     * which the ratio then measured instead of the cost of OT.
     */
    type TextView = { version: number; length: number; start: number };
    async function editChar(userId: string, client: number, block: { id: string }, view: TextView) {
      const typing = view.length <= view.start;
      const pos = Math.floor(Math.random() * (typing ? view.length + 1 : view.length));
      const edit = typing ? 'x' : { d: 1 };
      const r = await upsert(lanes, userId, hot, block.id, 'update', opId(`t${client}`), view.version, { text: { text: pos > 0 ? [pos, edit] : [edit] } });
      if (r.status === 'success') {
        view.version = Number(r.version);
        view.length = [...(r.block?.content?.text ?? '')].length; // code points, as the op counts
      }
      const outcome: Outcome = r.status === 'success' ? 'success' : r.status === 'conflict' ? 'conflict' : 'failed';
      return { outcome, detail: r.error ? `${r.error.code}: ${r.error.message}` : undefined };
    }
    const bare = async (client: number, id: number) => {
      await requestStatement(lanes, `bare:${id}`, claims(editors[client]!), 'select bench.bare_update($1::int)', [id]);
      return { outcome: 'success' as const };
    };
    const systemMoves = async () => Number((await sql`select count(*) as n from app.block_operations where actor_id is null`)[0]!.n);

    // one row per scenario; a later round adds its counts to the row of its first
    const rows: Row[] = [];
    const scenario = async (make: () => Promise<Row>) => {
      const before = await systemMoves();
      const sentBefore = lanes.sent;
      const row = await make();
      if (row.kind === 'rpc') row.respaced = (await systemMoves()) - before;
      row.sent = { transactions: lanes.sent.transactions - sentBefore.transactions, requests: lanes.sent.requests - sentBefore.requests,
        pipelined: lanes.sent.pipelined - sentBefore.pipelined };
      const first = rows.find((r) => r.label === row.label);
      if (!first) {
        rows.push(row);
        return;
      }
      first.ops += row.ops; first.seconds += row.seconds; first.success += row.success; first.conflict += row.conflict;
      first.failed += row.failed; first.lat.push(...row.lat); first.rounds.push(...row.rounds);
      first.firstFailure ??= row.firstFailure;
      if (row.respaced !== undefined) first.respaced = (first.respaced ?? 0) + row.respaced;
      // the backends' CPU only when every round could read it
      first.backendMs = first.backendMs === undefined || row.backendMs === undefined ? undefined : first.backendMs + row.backendMs;
      first.sent = { transactions: first.sent!.transactions + row.sent.transactions, requests: first.sent!.requests + row.sent.requests,
        pipelined: first.sent!.pipelined + row.sent.pipelined };
    };
    // the planner's statistics as autovacuum keeps them (scripts/lib/bench.ts): a table of a fresh
    // database never analyzed made a round's plans on none (the shared text's first round ran at
    // 0.14 of its baseline once, on this machine's autovacuum = off)
    let statistics = '';
    const rounds = async (group: () => Promise<void>) => {
      for (let round = 0; round < ROUNDS; round++) {
        if (ROUNDS > 1) log(`  round ${round + 1} of ${ROUNDS}`);
        statistics = await analyzeAsAutovacuumWould(sql);
        await group();
      }
    };

    const sharedTextViews = editors.map(() => ({ version: textShared.version, length: 'shared text'.length, start: 'shared text'.length }));
    const ownTextViews = textOwn.map((b, i) => ({ version: b.version, length: `own text ${i}`.length, start: `own text ${i}`.length }));
    await rounds(async () => {
      log('\n-- hot canvas');
      await scenario(() => measure(backends, 'rpc: hot canvas, one shared block', 'rpc', 'hot', (client, n) =>
        mutation(editors[client]!, hot, client, n, hotShared, () => sharedVersions[client]!, (v) => { sharedVersions[client] = v; })));
      const hotOwnMutation = (client: number, n: number) => {
        const b = hotOwn[client]!;
        return mutation(editors[client]!, hot, client, n, b, () => b.version, (v) => { b.version = v; });
      };
      await scenario(() => measure(backends, 'rpc: hot canvas, own block per client', 'rpc', 'hot', hotOwnMutation));
      lanes = serial;
      await scenario(() => measure(backends, SERIAL_LABEL, 'rpc', 'hot', hotOwnMutation));
      lanes = pipelined;
      await scenario(() => measure(backends, 'baseline: bare UPDATE, 1 row', 'baseline', 'hot', (client) => bare(client, 1)));

      log(`\n-- ${CANVASES} canvases, round-robin`);
      await scenario(() => measure(backends, `rpc: ${CANVASES} canvases, own blocks`, 'rpc', 'spread', (client, n) => {
        const c = (client + n) % CANVASES;
        const b = spreadOwn[client]![c]!;
        return mutation(editors[client]!, spread[c]!, client, n, b, () => b.version, (v) => { b.version = v; });
      }));
      await scenario(() => measure(backends, `rpc: ${CANVASES} canvases, all clients one user`, 'rpc', 'spread', (client, n) => {
        const c = (client + n) % CANVASES;
        const b = spreadOwn[client]![c]!; // the same blocks as above: only the user differs
        return mutation(sharedEditor, spread[c]!, client, n, b, () => b.version, (v) => { b.version = v; });
      }));
      await scenario(() => measure(backends, `baseline: bare UPDATE, ${CANVASES} rows`, 'baseline', 'spread', (client, n) =>
        bare(client, ((client + n) % CANVASES) + 1)));

      log('\n-- text operations, hot canvas');
      await scenario(() => measure(backends, 'rpc: text op, one shared text (transformed)', 'rpc', 'text', (client) =>
        editChar(editors[client]!, client, textShared, sharedTextViews[client]!)));
      await scenario(() => measure(backends, 'rpc: text op, own text per client', 'rpc', 'text', (client) =>
        editChar(editors[client]!, client, textOwn[client]!, ownTextViews[client]!)));
      await scenario(() => measure(backends, 'baseline: plain content update, own block', 'baseline', 'text', (client, n) => {
        // n × 10: always an update, never the every-10th create, and new content each time, as a
        // text op writes: an update writing the same content again changes no content_hash, so it
        // skipped the embedding trigger every real edit fires (until 2026-12-01 it passed n = 0)
        const b = plainOwn[client]!;
        return mutation(editors[client]!, hot, client, n * 10, b, () => b.version, (v) => { b.version = v; });
      }));
    });
    for (const r of rows) r.lat.sort((a, b) => a - b);

    // runs last: it edits the spread blocks behind the node clients' known versions
    // an even number of rounds, so with every other one reversed each side runs as often early as late
    const pgRounds = Math.max(2, ROUNDS + (ROUNDS % 2));
    log(`\n-- own writes (pgbench ${pgbenchBin}, ${CLIENTS} clients, ${CANVASES} canvases, ${SECONDS} s each, alternated ${pgRounds} times)`);
    // Each round runs the writes, the floor, the rungs of bench.rpc_ladder (the writes in one
    // function called as the RPC is, then + authorization, then + the rate limit) and the RPC,
    // every other round in reverse order: the run after a checkpoint is the slow one, and the
    // VM drifts, so each side runs as often early in a round as late.
    // The floor: mutation-writes.sql with the guarantees of mutation-floor.sql right after its BEGIN
    const writesScript = readFileSync(`${root}scripts/pgbench/mutation-writes.sql`, 'utf8');
    if (!/^begin;$/m.test(writesScript)) throw new Error('scripts/pgbench/mutation-writes.sql has no line `begin;` to put the floor after');
    const floorScript = join(tmpdir(), `potentia-mutation-floor-${process.pid}.sql`);
    writeFileSync(floorScript, writesScript.replace(/^begin;$/m, () => `begin;\n${readFileSync(`${root}scripts/pgbench/mutation-floor.sql`, 'utf8').trimEnd()}`));
    const sides = [
      { key: 'writes', script: 'mutation-writes', defines: {} },
      { key: 'floor', script: floorScript, defines: {} },
      { key: 'ladder', script: 'mutation-ladder', defines: { auth: 0, limit: 0 } },
      { key: 'auth', script: 'mutation-ladder', defines: { auth: 1, limit: 0 } },
      { key: 'limit', script: 'mutation-ladder', defines: { auth: 1, limit: 1 } },
      { key: 'rpc', script: 'mutation-rpc', defines: {} },
    ] as const;
    type Side = (typeof sides)[number]['key'];
    const perRoundTps: Record<Side, number>[] = [];
    // the machine's CPU (/proc/stat: backends, WAL writer, pgbench) and transactions per side: on a
    // saturated machine the rates follow CPU per transaction, which counts what instructions do not
    const cpu = {} as Record<Side, MachineCpuTally>;
    let pgFailed = 0;
    try {
      if (WARMUP > 0) {
        for (const side of sides) await pgbench(pgbenchBin, side.script, WARMUP, CLIENTS, CANVASES, side.defines);
      }
      for (let round = 0; round < pgRounds; round++) {
        await analyzeAsAutovacuumWould(sql);
        const tps = {} as Record<Side, number>;
        for (const side of round % 2 ? [...sides].reverse() : sides) {
          const r = await pgbench(pgbenchBin, side.script, SECONDS, CLIENTS, CANVASES, side.defines);
          cpu[side.key] = addMachineCpu(cpu[side.key], r);
          const what = side.key === 'floor' ? 'mutation-writes.sql + mutation-floor.sql'
            : side.script === 'mutation-ladder' ? `${side.script}.sql (${side.key})` : `${side.script}.sql`;
          log(`  pgbench ${what}: ${r.tps.toFixed(0)} tps${r.failed ? `, ${r.failed} failed` : ''}`);
          tps[side.key] = r.tps;
          pgFailed += r.failed;
        }
        perRoundTps.push(tps);
      }
    } finally {
      rmSync(floorScript, { force: true });  // also when a pgbench run fails
    }
    // each side's mean rate over the rounds, and the RPC's ratio per round
    const pg = Object.fromEntries(sides.map(({ key }) =>
      [key, perRoundTps.reduce((sum, t) => sum + t[key], 0) / pgRounds])) as Record<Side, number>;
    const pgRatios = perRoundTps.map((t) => t.rpc / t.writes);
    // where the RPC's cost over its writes goes, each rung against the writes of the same rounds
    const ladder = `; where the RPC's cost goes, as a share of the writes' rate in the same rounds (scripts/pgbench/rpc-ladder.sql): ` +
      `the floor (the writes + the caller's role, scope and rate-limit slot as plain SQL, scripts/pgbench/mutation-floor.sql) ${(pg.floor / pg.writes).toFixed(2)}x, ` +
      `the writes in one SECURITY DEFINER function called as the RPC is ${(pg.ladder / pg.writes).toFixed(2)}x, ` +
      `+ the caller's context and authorization ${(pg.auth / pg.writes).toFixed(2)}x, + the per-user rate limit ${(pg.limit / pg.writes).toFixed(2)}x, ` +
      `the RPC (+ validation, merge preparation, refusal as an answer, idempotent retry, result) ${(pg.rpc / pg.writes).toFixed(2)}x ` +
      `(per round, floor / function / auth / limit / RPC: ${perRoundTps.map((t) => [t.floor, t.ladder, t.auth, t.limit, t.rpc].map((x) => (x / t.writes).toFixed(2)).join(' ')).join(', ')})`;
    const cpuNote = `; the machine's CPU per transaction (/proc/stat: backends, WAL writer, pgbench): writes ${formatMachineCpu(cpu.writes)}, ` +
      `RPC ${formatMachineCpu(cpu.rpc)}, writes / RPC ${(cpuPerTransaction(cpu.writes) / cpuPerTransaction(cpu.rpc)).toFixed(2)}`;
    log(`\n${ladder.slice(2)}${cpuNote}`);
    // the same writes with nothing else, 16 backends taking turns on 1 canvas, and on CANVASES
    log(`\n-- hot canvas, backends taking turns: the mutation's own writes in one statement (pgbench mutation-writes-serialized.sql), 1 canvas vs ${CANVASES}, alternated ${pgRounds} times`);
    const serialized = { hot: 0, spread: 0 };
    for (let round = 0; round < pgRounds; round++) {
      for (const side of ['hot', 'spread'] as const) {
        const r = await pgbench(pgbenchBin, 'mutation-writes-serialized', SECONDS, CLIENTS, side === 'hot' ? 1 : CANVASES);
        log(`  own writes, ${side === 'hot' ? '1 canvas' : `${CANVASES} canvases`}: ${r.tps.toFixed(0)} tps${r.failed ? `, ${r.failed} failed` : ''}`);
        serialized[side] += r.tps / pgRounds;
      }
    }
    const [{ refused }] = (await sql`select count(*)::int as refused from app.block_operations
      where client_op_id like 'pgbench-%' and status <> 'success'`) as unknown as [{ refused: number }];
    const breakdown = values.functions ? await functionBreakdown(sql, pgbenchBin) : '';

    // ------------------------------------------------------------------------------ report
    const base = new Map(rows.filter((r) => r.kind === 'baseline').map((r) => [r.group, r.ops / r.seconds]));
    const f = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '-');
    // per tx: requests per transaction down the canvas lanes (group commit: src/db/canvas-lanes.ts);
    // pipelined: the share of those transactions sent behind another one on the wire
    const header = ['scenario', 'calls/s', 'applied/s', 'success', 'conflict', 'failed', 'p50 ms', 'p95 ms', 'p99 ms', 'per tx', 'pipelined', 'rpc/baseline'];
    const table = rows.map((r) => {
      const rate = r.ops / r.seconds;
      return [r.label, f(rate, 0), r.kind === 'rpc' ? f(r.success / r.seconds, 0) : f(rate, 0),
        r.kind === 'rpc' ? String(r.success) : '-', r.kind === 'rpc' ? String(r.conflict) : '-', r.kind === 'rpc' ? String(r.failed) : '-',
        f(pct(r.lat, 50), 2), f(pct(r.lat, 95), 2), f(pct(r.lat, 99), 2),
        r.sent && r.sent.transactions > 0 ? f(r.sent.requests / r.sent.transactions, 2) : '-',
        r.sent && r.sent.transactions > 0 ? f(r.sent.pipelined / r.sent.transactions, 2) : '-',
        r.kind === 'rpc' ? `${f(rate / base.get(r.group)!, 3)} (applied ${f(r.success / r.seconds / base.get(r.group)!, 3)})` : '1'];
    });
    const widths = header.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
    log(`\nresults: ${CLIENTS} clients, ${SECONDS} s each (calls = every RPC answered; applied = status success; per tx = requests per transaction down the canvas lanes; pipelined = share of those transactions sent behind another on the wire)`);
    log(line(header));
    log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const t of table) log(line(t));
    for (const r of rows) {
      if (r.firstFailure) log(`  ${r.label}: first failure: ${r.firstFailure}`);
      if (r.respaced) log(`  ${r.label}: ${r.respaced} system respace moves logged (rank keys ran out of room)`);
    }
    const rate = (label: string) => {
      const r = rows.find((x) => x.label === label)!;
      return r.success / r.seconds;
    };
    /** The ratio of each round, for a RATIO row's note: how far one run alone can stray. */
    const perRound = (label: string, baselineLabel: string) => {
      if (ROUNDS < 2) return '';
      const a = rows.find((x) => x.label === label)!.rounds;
      const b = rows.find((x) => x.label === baselineLabel)!.rounds;
      return `; per round ${a.map((x, i) => ((x.success / x.seconds) / (b[i]!.success / b[i]!.seconds)).toFixed(2)).join(' / ')}`;
    };
    const hotOwnRate = rate('rpc: hot canvas, own block per client');
    const spreadRate = rate(`rpc: ${CANVASES} canvases, own blocks`);
    const oneUserRate = rate(`rpc: ${CANVASES} canvases, all clients one user`);
    const plainRate = rate('baseline: plain content update, own block');
    const bareHot = rate('baseline: bare UPDATE, 1 row');
    const bareSpread = rate(`baseline: bare UPDATE, ${CANVASES} rows`);
    const row = (workload: string, measured: number, baseline: number, target: number, note: string): BenchRow => ({
      bench: 'bench:mutate', workload, measured, baseline, unit: 'mut/s', ratio: measured / baseline, target: { op: '>=', value: target }, command, note: `${note}; ${statistics}` });
    // the mutation's own writes alone, 16 backends taking turns on one canvas row
    const turns = serialized.hot / spreadRate;
    const turnsNote = `16 backends taking turns in this run: the mutation's own writes alone in one statement on 1 canvas ` +
      `${serialized.hot.toFixed(0)}/s = ${turns.toFixed(2)}x the RPC's ${CANVASES}-canvas rate (those writes on ${CANVASES} canvases: ` +
      `${serialized.spread.toFixed(0)}/s, so serializing them alone costs ${(serialized.hot / serialized.spread).toFixed(2)}x); ` +
      `a bare UPDATE of 1 row vs ${CANVASES} rows ${(bareHot / bareSpread).toFixed(2)}x (${bareHot.toFixed(0)} vs ${bareSpread.toFixed(0)}/s)`;
    // how much of the wall time the backends ran: a canvas's transactions run one at a time (its lane,
    // its row), so on the hot canvas that is the share of one core its serialized work kept busy
    const busy = (label: string) => {
      const r = rows.find((x) => x.label === label)!;
      return r.backendMs === undefined ? null : r.backendMs / (r.seconds * 1000);
    };
    const hotBusy = busy('rpc: hot canvas, own block per client');
    const spreadBusy = busy(`rpc: ${CANVASES} canvases, own blocks`);
    const hotSent = rows.find((x) => x.label === 'rpc: hot canvas, own block per client')?.sent;
    const piped = hotSent && hotSent.transactions > 0 ? `, ${(hotSent.pipelined / hotSent.transactions).toFixed(2)} of them pipelined behind the one on the wire` : '';
    const busyNote = hotBusy === null || spreadBusy === null ? '' :
      `; Postgres backends busy ${hotBusy.toFixed(2)} of a core on the hot canvas (its transactions run one at a time${piped}, so at most ` +
      `${(1 / hotBusy).toFixed(2)}x more with no gap between them: ${(hotOwnRate / hotBusy / spreadRate).toFixed(2)}x the ${CANVASES}-canvas rate at one full core) ` +
      `vs ${spreadBusy.toFixed(2)} cores on ${CANVASES} canvases`;
    // what pipelining the lane buys, in this run: the same scenario with lanes one transaction at a time
    const serialRate = rate(SERIAL_LABEL);
    const serialBusy = busy(SERIAL_LABEL);
    const pipelineNote = `; lanes pipelined vs one transaction at a time: ${hotOwnRate.toFixed(0)} vs ${serialRate.toFixed(0)}/s = ` +
      `${(hotOwnRate / serialRate).toFixed(2)}x${serialBusy === null ? '' : ` (backends busy ${serialBusy.toFixed(2)} of a core without it)`}` +
      perRound('rpc: hot canvas, own block per client', SERIAL_LABEL).replace('; per round', ', lanes vs one at a time per round');
    log(`\nhot-canvas, ${turnsNote}${busyNote}${pipelineNote}. The canvas row is held through each mutation's writes and COMMIT (canvas_seq in commit order); ` +
        'the RPC sends a canvas\'s mutations down one connection (src/db/canvas-lanes.ts), so it does not pay the turns between backends');
    reportRows([
      row(`api.upsert_block_atomic vs its own writes as plain SQL (pgbench -M prepared, ${CLIENTS} clients, ${CANVASES} canvases)`,
        pg.rpc, pg.writes, 0.7,
        `scripts/pgbench/mutation-rpc.sql vs mutation-writes.sql, each BEGIN to COMMIT in one pipeline, alternated, mean of ${pgRounds} runs each ` +
        `(per pair ${pgRatios.map((x) => x.toFixed(2)).join(' / ')}); ${refused} RPC calls not applied, ${pgFailed} pgbench failures` +
        ladder + cpuNote + breakdown),
      row(`one user x ${CLIENTS} clients vs ${CLIENTS} users (${CANVASES} canvases, applied/s)`, oneUserRate, spreadRate, 0.9,
        'the per-user mutation limit counts a slot per hit, taken first and never waited for (docs/limits.md)' +
        perRound(`rpc: ${CANVASES} canvases, all clients one user`, `rpc: ${CANVASES} canvases, own blocks`)),
      row(`hot canvas, disjoint blocks vs ${CANVASES} canvases (applied/s)`, hotOwnRate, spreadRate, 0.9,
        turnsNote + busyNote + pipelineNote +
        perRound('rpc: hot canvas, own block per client', `rpc: ${CANVASES} canvases, own blocks`).replace('; per round', `; hot vs ${CANVASES} canvases per round`)),
      row('text op, own text vs plain content update (hot canvas, applied/s)', rate('rpc: text op, own text per client'), plainRate, 0.7,
        'one character typed or deleted per op (the text keeps its length); both on the hot canvas' +
        perRound('rpc: text op, own text per client', 'baseline: plain content update, own block')),
      row('text op, one shared text (transformed) vs plain content update (hot canvas, applied/s)',
        rate('rpc: text op, one shared text (transformed)'), plainRate, 0.7,
        'one character typed or deleted per op (the text keeps its length), transformed against what others committed since the version its client last saw' +
        perRound('rpc: text op, one shared text (transformed)', 'baseline: plain content update, own block')),
    ]);
    log(`\ndone in ${((Date.now() - started) / 1000).toFixed(0)} s; database ${dbName} left in place for inspection`);
  } finally {
    await sql.end();
    await probe.end();
  }
}

main().catch((err) => {
  console.error(`bench-mutate failed: ${(err as Error).stack ?? err}`);
  process.exitCode = 1;
});
