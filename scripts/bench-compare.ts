// npm run bench:compare: pgbench scripts against two versions of the database code, in the same run,
// so that a change of a few per cent can be told from this machine's drift.
//
//   npm run bench:compare -- --base <commit> [--head <commit>] [--script mutation-rpc[,mutation-writes…]]
//                            [--rounds 8] [--seconds 8] [--clients 16] [--canvases 50] [--async] [--waits] [--cpu]
//                            [--instructions [--transactions 100,300] [--profiles DIR]] [--keep]
//
// Each side gets a database of its own (…_base and …_head: dropped, created, migrated with that
// side's own migrations and migrate script, so a commit's SQL is measured exactly as it landed),
// and the same fixture: one editor per pgbench client, a member of every canvas, with one block
// of their own on each (bench.pgbench_targets, as bench:mutate makes it). The head is the working
// tree unless --head names a commit, so a change can be measured before it is committed.
//
// Transactions per second (the default), on the server of DATABASE_URL: each script runs on each
// side in turn, --rounds times, the order swapped every round (base, head / head, base …); it
// prints each round's tps and, at the end, head / base over all rounds and in how many rounds the
// head was faster. A difference smaller than the rounds' spread is not a result
// (docs/performance.md, "Measuring on a small, noisy machine"). --async runs the backends with
// synchronous_commit = off: the CPU path alone, without the wait for the WAL flush. --waits samples
// pg_stat_activity every 50 ms during each run (scripts/lib/wait-sampler.ts) and prints, per script
// and side, the share of samples its backends were running, idle or waiting on each wait event.
// --cpu reads the machine's CPU time (/proc/stat) around each run and prints, per script and side,
// the CPU of the whole machine per transaction (the backends, the WAL writer, pgbench) and the idle
// share; with several scripts, the first's over each other's. That is what a saturated machine's
// throughput follows, and unlike instructions it counts cache misses, context switches and the
// kernel: on 2 cores the RPC's share of its writes in CPU per transaction falls from 0.67-0.75 at one
// client to 0.54-0.62 at 16 (docs/performance.md, twenty-ninth session).
//
// Instructions per transaction (--instructions): the sides are made in a private cluster
// (scripts/lib/callgrind-cluster.ts: initdb in a temporary directory, port 5499 or --port) whose
// server then runs under valgrind's callgrind; one pgbench client runs each script 100 and then
// 300 times (--transactions), and the difference of its two backends' instructions over 200 is
// the cost of one transaction. The same code reads up to 1-2 % apart between runs (the database's
// state differs: the rate-limit window's slots, pages written), so --rounds N (default 1 here)
// measures each side N times, the order swapped every round as for tps, and takes the mean. --profiles DIR keeps those backends'
// callgrind profiles (<script>-<side>-<transactions>.callgrind) for callgrind_annotate. With
// several scripts it also prints, per side, the first script's instructions over each other's: for
// --script mutation-writes,mutation-rpc that is the RPC's "share of its own writes" as bench:mutate
// reports it in throughput, counted in the backend's work alone (no waits, no cache misses, no
// client). A script named NAME:var=N[:var=N…] runs with those pgbench variables set: the
// fixture has bench.rpc_ladder (scripts/pgbench/rpc-ladder.sql), so --script
// mutation-rpc,mutation-ladder:auth=0:limit=0,mutation-ladder:auth=1:limit=0,mutation-ladder:auth=1:limit=1
// counts bench:mutate's ladder (the writes in a function, + authorization, + the per-user limit).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import postgres, { type Sql } from 'postgres';
import { withRequest } from '../src/db/request.ts';
import { addMachineCpu, benchDatabaseName, benchDatabaseUrl, cpuPerTransaction, findPgbench, formatMachineCpu, recreateBenchDatabase, runPgbench,
  type MachineCpuTally } from './lib/bench.ts';
import { CallgrindCluster } from './lib/callgrind-cluster.ts';
import { addWaits, formatWaits, sampleWaits, type WaitCounts } from './lib/wait-sampler.ts';

const USAGE = 'usage: npm run bench:compare -- --base <commit> [--head <commit>] [--script NAME[,NAME…]] [--rounds N>=1] [--seconds N>0] ' +
  '[--clients N>=1] [--canvases N>=1] [--async] [--waits] [--cpu] [--instructions [--transactions N1,N2 with N2>N1] [--port N] [--profiles DIR]] ' +
  '[--keep] [--database-url URL]   (scripts: scripts/pgbench/NAME.sql; what each option does: the comment at the top of scripts/bench-compare.ts)';
const { values, number, numbers } = parseCommandLine({
  options: {
    base: { type: 'string', default: 'HEAD' },
    head: { type: 'string' },
    script: { type: 'string', default: 'mutation-rpc' },
    rounds: { type: 'string' },  // 8, or 1 with --instructions
    seconds: { type: 'string', default: '8' },
    clients: { type: 'string', default: '16' },
    canvases: { type: 'string', default: '50' },
    async: { type: 'boolean', default: false },
    waits: { type: 'boolean', default: false },
    cpu: { type: 'boolean', default: false },
    instructions: { type: 'boolean', default: false },
    transactions: { type: 'string', default: '100,300' },
    port: { type: 'string', default: '5499' },
    profiles: { type: 'string' },
    keep: { type: 'boolean', default: false },
    'database-url': { type: 'string', default: benchDatabaseUrl('potentia_bench_compare') },
  },
}, USAGE);
const ROUNDS = number('rounds', wholeNumber(1), values.instructions ? 1 : 8);
const SECONDS = number('seconds', decimalNumber(0, undefined, { above: true }));
const CLIENTS = number('clients', wholeNumber(1));
const CANVASES = number('canvases', wholeNumber(1));
const PORT = number('port', wholeNumber(1, 65535));
const TRANSACTIONS = numbers('transactions', wholeNumber(1));
const SCRIPTS = values.script!.split(',').map((s) => s.trim());
if (TRANSACTIONS.length !== 2 || !(TRANSACTIONS[1]! > TRANSACTIONS[0]!)
    || !SCRIPTS.every((s) => /^[a-z0-9_-]+(:[a-z_]+=[0-9]+)*$/.test(s))) {
  console.error(USAGE);
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const log = (line: string) => console.log(line);
// A script is NAME or NAME:var=N[:var=N…], the numbers set with pgbench's -D beside the
// usual ones: mutation-ladder:auth=1:limit=1 is one rung of the ladder (scripts/pgbench/rpc-ladder.sql).
const scriptFile = (name: string) => join(root, 'scripts/pgbench', `${name.split(':')[0]}.sql`);
const scriptDefines = (name: string, defines: Record<string, number>): Record<string, number> =>
  ({ ...defines, ...Object.fromEntries(name.split(':').slice(1).map((d) => [d.split('=')[0]!, wholeNumber(0).parse(d.split('=')[1]!)])) });

/** A side's database URL: the --database-url's name with `_base` or `_head` after it, on `server` (a URL) if given. */
function sideUrl(side: 'base' | 'head', server?: string): string {
  const url = new URL(server ?? values['database-url']!);
  url.pathname = `/${benchDatabaseName(values['database-url']!)}_${side}`;
  return url.toString();
}

/** The commit `rev` names, or a usage error that says what to pass. */
function resolve(rev: string): string {
  try {
    return execFileSync('git', ['rev-parse', '--verify', '--quiet', `${rev}^{commit}`], { cwd: root, encoding: 'utf8' }).trim();
  } catch {
    console.error(`bench:compare: ${JSON.stringify(rev)} is not a commit here: pass --base (and --head) as a commit, tag or branch`);
    process.exit(2);
  }
}

/** The files of commit `sha` in a temporary directory, with this checkout's node_modules, to migrate from. */
function checkout(sha: string): string {
  const dir = mkdtempSync(join(tmpdir(), `potentia-${sha.slice(0, 7)}-`));
  execFileSync('sh', ['-c', `git archive ${sha} | tar -x -C "${dir}"`], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
  symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

/**
 * The fixture of bench:mutate's spread scenario: CLIENTS editors (the mutation limit raised out of
 * the way, and the H2 endpoint limit to 10^8 hits per 1 s window, as bench:http raises it, for
 * mutation-rpc-h2.sql), CANVASES canvases, and bench.pgbench_targets: client c's block on canvas i is row
 * k = c * CANVASES + i, and the shared text of mutation-text-behind.sql is row k = -1. Made through each side's own API, as its users would make it;
 * then bench.rpc_ladder from this checkout's scripts/pgbench/rpc-ladder.sql, for mutation-ladder.sql, and the prototype
 * scripts/pgbench/deferred-turn.sql, for deferred-turn-*.sql.
 */
async function seed(sql: Sql): Promise<void> {
  const as = <T>(userId: string, work: (tx: postgres.TransactionSql) => Promise<T>) =>
    withRequest(sql, { claims: { sub: userId, role: 'authenticated' } }, work);
  await sql.unsafe(`
    update app.settings set value = '1000000000' where key = 'mutations_per_minute';
    update app.endpoint_limits set max_hits = 100000000, window_seconds = 1 where endpoint = 'H2';
    create schema bench;
    grant usage on schema bench to authenticated;
    create table bench.pgbench_targets (k integer primary key, user_id uuid not null, canvas_id uuid not null, block_id uuid not null);`);
  const newUser = async (name: string) => (await sql`insert into auth.users (email) values (${`${name}@bench.local`}) returning id`)[0]!.id as string;
  const owner = await newUser('owner');
  const workspaceId = (await as(owner, (tx) => tx`select api.create_workspace('Bench') as r`))[0]!.r.workspace_id as string;
  const canvases: string[] = [];
  for (let i = 0; i < CANVASES; i++) {
    canvases.push((await as(owner, (tx) => tx`select api.create_canvas(${workspaceId}::uuid, ${`canvas ${i}`}, '{}'::jsonb) as r`))[0]!.r.canvas_id);
  }
  for (let c = 0; c < CLIENTS; c++) {
    const editor = await newUser(`editor${c}`);
    await as(owner, (tx) => tx`select api.set_workspace_member(${workspaceId}::uuid, ${editor}::uuid, 'editor')`);
    const created = await as(editor, (tx) => tx`
      select i - 1 as i, api.upsert_block_atomic(canvas_id, null, 'create', ${`seed-${c}-`} || i, null,
                                                 jsonb_build_object('type', 'text', 'content', jsonb_build_object('text', 'seed'))) as r
      from unnest(${canvases}::uuid[]) with ordinality as t (canvas_id, i)`);
    const targets = created.map(({ i, r }) => {
      if (r.status !== 'success') throw new Error(`seeding: a block create failed: ${JSON.stringify(r)}`);
      return { k: c * CANVASES + Number(i), user_id: editor, canvas_id: canvases[Number(i)]!, block_id: r.block_id as string };
    });
    await sql`insert into bench.pgbench_targets ${sql(targets)}`;
  }
  // the shared text of mutation-text-behind.sql, row k = -1: a block of the last editor's on the
  // last canvas that no other script edits, so its content is never set as a whole after its
  // create and an op from 15 versions back is never a conflict without a look at the log
  const last = CLIENTS - 1;
  const [lastTarget] = await sql`select user_id, canvas_id from bench.pgbench_targets where k = ${last * CANVASES + CANVASES - 1}`;
  const text = (await as(lastTarget!.user_id, (tx) => tx`
    select api.upsert_block_atomic(${lastTarget!.canvas_id}::uuid, null, 'create', 'seed-shared-text', null,
                                   jsonb_build_object('type', 'text', 'content', jsonb_build_object('text', 'seed'))) as r`))[0]!.r;
  if (text.status !== 'success') throw new Error(`seeding: the shared text's create failed: ${JSON.stringify(text)}`);
  // 15 keystrokes after the create, so that the first op measured is already 15 versions behind
  // (a run of 100 ops that began at the create had its first 15 not behind, and read cheaper)
  for (let version = 1; version <= 15; version++) {
    const r = (await as(lastTarget!.user_id, (tx) => tx`
      select api.upsert_block_atomic(${lastTarget!.canvas_id}::uuid, ${text.block_id}::uuid, 'update', ${`seed-shared-text-${version}`}, ${version},
                                     '{"text": {"text": ["x"]}}'::jsonb) as r`))[0]!.r;
    if (r.status !== 'success') throw new Error(`seeding: a keystroke in the shared text failed: ${JSON.stringify(r)}`);
  }
  await sql`insert into bench.pgbench_targets ${sql({ k: -1, user_id: lastTarget!.user_id, canvas_id: lastTarget!.canvas_id, block_id: text.block_id })}`;
  await sql.file(join(root, 'scripts/pgbench/rpc-ladder.sql'));
  await sql.file(join(root, 'scripts/pgbench/deferred-turn.sql'));  // a prototype, for deferred-turn-*.sql
  await sql`vacuum analyze`;
}

async function main() {
  const started = Date.now();
  const baseSha = resolve(values.base!);
  const headSha = values.head === undefined ? null : resolve(values.head);
  for (const name of SCRIPTS) {
    if (!existsSync(scriptFile(name))) {
      console.error(`bench:compare: no script ${name} (scripts/pgbench/${name}.sql)`);
      process.exit(2);
    }
  }
  const pgOptions = values.async || values.instructions ? '-c synchronous_commit=off' : undefined;
  const serverMajor = /PostgreSQL (\d+)/.exec(execFileSync('pg_config', ['--version'], { encoding: 'utf8' }))?.[1] ?? '15';
  const pgbench = await findPgbench(serverMajor);
  const cluster = values.instructions ? CallgrindCluster.create(dirname(pgbench), PORT) : null;
  const sides = [
    { side: 'base' as const, label: `base ${baseSha.slice(0, 7)}`, sha: baseSha },
    { side: 'head' as const, label: headSha ? `head ${headSha.slice(0, 7)}` : 'head (working tree)', sha: headSha },
  ].map((s) => ({ ...s, url: sideUrl(s.side, cluster?.url('postgres')) }));
  const trees: string[] = [];
  try {
    if (values.profiles) mkdirSync(values.profiles, { recursive: true });
    if (cluster) {
      log(`a private cluster on port ${PORT} (${dirname(pgbench)}), for callgrind`);
      await cluster.start(false);
    }
    for (const s of sides) {
      const tree = s.sha ? checkout(s.sha) : root;
      if (s.sha) trees.push(tree);
      await recreateBenchDatabase(s.url, log, tree);
      const sql = postgres(s.url, { max: 2, onnotice: () => {} });
      try {
        await seed(sql);
      } finally {
        await sql.end();
      }
      log(`${s.label}: migrated and seeded (${CLIENTS} editors × ${CANVASES} canvases)`);
    }
    const defines = { canvases: CANVASES, spread: CANVASES };
    if (cluster) {
      await cluster.stop();
      log('the private cluster again, under callgrind (about 50 times slower)');
      await cluster.start(true);
      const counts = new Map<string, number>();  // mean over the rounds
      const fmt = (n: number) => Math.round(n).toLocaleString('en');
      for (const name of SCRIPTS) {
        const runs = new Map<string, number[]>(sides.map((s) => [s.side, []]));
        for (let round = 0; round < ROUNDS; round++) {
          for (const s of round % 2 === 0 ? sides : [...sides].reverse()) {
            const n = await cluster.instructionsPerTransaction(pgbench, { database: new URL(s.url).pathname.slice(1), file: scriptFile(name),
              defines: scriptDefines(name, defines), transactions: [TRANSACTIONS[0]!, TRANSACTIONS[1]!], pgOptions,
              keepAs: values.profiles ? join(values.profiles, `${name}-${s.side}${ROUNDS > 1 ? `-r${round + 1}` : ''}`) : undefined });
            runs.get(s.side)!.push(n);
            if (ROUNDS > 1) log(`${name}.sql, ${s.label}, round ${round + 1}: ${fmt(n)} instructions per transaction`);
          }
        }
        for (const s of sides) {
          const all = runs.get(s.side)!;
          const mean = all.reduce((a, b) => a + b, 0) / all.length;
          counts.set(`${name} ${s.side}`, mean);
          log(`${name}.sql, ${s.label}: ${fmt(mean)} instructions per transaction${ROUNDS > 1 ? ` (mean of ${ROUNDS}, ${fmt(Math.min(...all))}-${fmt(Math.max(...all))})` : ''}`);
        }
        const base = counts.get(`${name} base`)!, head = counts.get(`${name} head`)!;
        log(`${name}.sql: head / base ${(head / base).toFixed(3)} in instructions per transaction`);
      }
      for (const s of sides) {
        for (const name of SCRIPTS.slice(1)) {
          log(`${s.label}: ${SCRIPTS[0]}'s instructions / ${name}'s: ${(counts.get(`${SCRIPTS[0]} ${s.side}`)! / counts.get(`${name} ${s.side}`)!).toFixed(3)}`);
        }
      }
    } else {
      const probe = postgres(sides[0]!.url, { max: 1, onnotice: () => {} });
      const rows = await probe<{ sync: string }[]>`select current_setting('synchronous_commit') as sync`.finally(() => probe.end());
      log(`${CLIENTS} clients, ${ROUNDS} rounds of ${SECONDS} s per side and script, synchronous_commit ${values.async ? 'off' : rows[0]!.sync}`);
      // per script and side: the machine's busy and idle CPU ms and the transactions, summed over rounds (--cpu)
      const cpu = new Map<string, MachineCpuTally>();
      for (const name of SCRIPTS) {
        const tps = { base: [] as number[], head: [] as number[] };
        const waits = { base: new Map() as WaitCounts, head: new Map() as WaitCounts };
        let failed = 0;
        for (const s of sides) await runPgbench(pgbench, { url: s.url, file: scriptFile(name), seconds: 2, clients: CLIENTS, defines: scriptDefines(name, defines), pgOptions });  // warm-up
        for (let r = 0; r < ROUNDS; r++) {
          const order = r % 2 === 0 ? sides : [...sides].reverse();
          const line: string[] = [];
          for (const s of order) {
            const sampler = values.waits ? sampleWaits(s.url, new URL(s.url).pathname.slice(1)) : null;
            const result = await runPgbench(pgbench, { url: s.url, file: scriptFile(name), seconds: SECONDS, clients: CLIENTS, defines: scriptDefines(name, defines), pgOptions })
              .finally(async () => { if (sampler) addWaits(waits[s.side], await sampler.stop()); });
            cpu.set(`${name} ${s.side}`, addMachineCpu(cpu.get(`${name} ${s.side}`), result));
            tps[s.side].push(result.tps);
            failed += result.failed;
            line.push(`${s.side} ${result.tps.toFixed(0)}`);
          }
          log(`${name}.sql round ${r + 1}/${ROUNDS}: ${line.join(', ')} tps; head / base ${(tps.head[r]! / tps.base[r]!).toFixed(3)}`);
        }
        const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);
        const ratios = tps.head.map((t, i) => t / tps.base[i]!).sort((a, b) => a - b);
        const wins = tps.head.filter((t, i) => t > tps.base[i]!).length;
        log(`${name}.sql: ${sides[0]!.label} ${(sum(tps.base) / ROUNDS).toFixed(0)} tps on average, ${sides[1]!.label} ${(sum(tps.head) / ROUNDS).toFixed(0)}; ` +
          `head / base ${(sum(tps.head) / sum(tps.base)).toFixed(3)} over ${ROUNDS} rounds, head faster in ${wins} of ${ROUNDS}, ` +
          `rounds' ratios ${ratios[0]!.toFixed(3)}-${ratios[ratios.length - 1]!.toFixed(3)}`);
        if (failed > 0) log(`WARNING: ${failed} failed transactions: these tps are not comparable`);
        if (values.waits) for (const s of sides) log(`${name}.sql, ${s.label}, backends: ${formatWaits(waits[s.side])}`);
        if (values.cpu) {
          for (const s of sides) {
            log(`${name}.sql, ${s.label}: the machine's CPU per transaction (backends, WAL writer, pgbench) ${formatMachineCpu(cpu.get(`${name} ${s.side}`)!)}`);
          }
        }
      }
      if (values.cpu && SCRIPTS.length > 1) {
        for (const s of sides) {
          const per = (name: string) => cpuPerTransaction(cpu.get(`${name} ${s.side}`)!);
          for (const other of SCRIPTS.slice(1)) {
            log(`${s.label}: ${SCRIPTS[0]}'s CPU per transaction / ${other}'s: ${(per(SCRIPTS[0]!) / per(other)).toFixed(3)}`);
          }
        }
      }
    }
    log(`(${((Date.now() - started) / 1000).toFixed(0)} s; reproduce: npm run bench:compare -- ${process.argv.slice(2).join(' ')})`);
  } finally {
    for (const t of trees) rmSync(t, { recursive: true, force: true });
    if (cluster) {
      await cluster.destroy();
    } else if (!values.keep) {
      const admin = new URL(values['database-url']!);
      admin.pathname = '/postgres';
      const sql = postgres(admin.toString(), { max: 1, onnotice: () => {} });
      for (const s of sides) await sql.unsafe(`drop database if exists "${new URL(s.url).pathname.slice(1)}" with (force)`);
      await sql.end();
    }
  }
}

main().catch((err) => {
  console.error(`bench:compare failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
