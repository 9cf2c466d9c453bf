// npx tsx scripts/bench-wal.ts [--seconds 5] [--clients 8] [--slots 1,2,4] [--database-url URL]
//
// How many realtime gateways one Postgres feeds before logical decoding is the limit
// (docs/self-hosting.md, "Scaling past one Postgres"). Every gateway process holds one walsender
// that decodes the WAL (pgoutput; publication potentia_realtime; logical messages on, for the
// cluster): the publication filters what is SENT, but every record of the WAL is read and every
// transaction of the database is decoded and reassembled first. So the decoding work grows as
// gateways × WAL rate, whatever the gateways' subscribers are looking at.
//
//   1. WAL per mutation: EXPLAIN (ANALYZE, WAL) of api.upsert_block_atomic (a content update of
//      the caller's own block, ~200 characters of text, as an editor): the bytes this backend
//      wrote, exact even when the server is shared (lsn differences are not: they count every
//      database on the cluster).
//   2. A backlog: C clients update their own blocks at full speed for S seconds, behind
//      logical slots created first (pgoutput, not temporary, dropped at the end).
//   3. Decoding it: pg_logical_slot_peek_binary_changes (repeated until a pass set takes ~2 s) with the gateways' options, first 1 slot
//      alone, then K slots at once (each its own backend, as K gateways would be): MB/s of WAL and
//      mutations/s per slot and in total. Whatever else the cluster wrote meanwhile is in the range
//      too, as it would be for a real gateway.
//
// Scratch database (default potentia_bench_wal on the server of DATABASE_URL: dropped, created and migrated), never dev data.
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { decimalNumber, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import postgres, { type Sql } from 'postgres';
import { withRequest } from '../src/db/request.ts';
import { benchDatabaseName, benchDatabaseUrl, recreateBenchDatabase } from './lib/bench.ts';

const usage = 'usage: npx tsx scripts/bench-wal.ts [--seconds N>0] [--clients N>=1] [--slots 1,2,4] [--database-url URL]';
const { values, number, numbers } = parseCommandLine({
  options: {
    seconds: { type: 'string', default: '5' },
    clients: { type: 'string', default: '8' },
    slots: { type: 'string', default: '1,2,4' },
    'database-url': { type: 'string', default: benchDatabaseUrl('potentia_bench_wal') },
  },
}, usage);
const SECONDS = number('seconds', decimalNumber(0, undefined, { above: true }));
const CLIENTS = number('clients', wholeNumber(1));
const SLOT_RUNS = numbers('slots', wholeNumber(1));
if (SLOT_RUNS.length === 0) {
  console.error(usage);
  process.exit(2);
}
const url = values['database-url']!;
const dbName = benchDatabaseName(url);
const SLOT_PREFIX = `bench_wal_${dbName}_`;
const log = (line: string) => console.log(line);
/** The first row of a query that returns one. */
const one = async <T>(rows: Promise<T[]>): Promise<T> => (await rows)[0]!;
const mb = (bytes: number) => bytes / 1024 / 1024;
const text = () => Array.from({ length: 20 }, () => Math.random().toString(36).slice(2, 12)).join(' ').slice(0, 200);

type Writer = { user: string; canvas: string; block: string; version: number };

async function setup(sql: Sql): Promise<Writer[]> {
  await sql`update app.settings set value = '1000000000' where key = 'mutations_per_minute'`;
  const writers: Writer[] = [];
  for (let i = 0; i < CLIENTS; i++) {
    const { id: user } = await one(sql<{ id: string }[]>`insert into auth.users (email) values (${`bench-wal-${i}@bench.local`}) returning id`);
    const as = <T>(work: (tx: postgres.TransactionSql) => Promise<T>) => withRequest(sql, { claims: { sub: user, role: 'authenticated' } }, work);
    const { workspace_id } = await as(async (tx) => (await tx`select api.create_workspace('bench') as r`)[0]!.r);
    const { canvas_id } = await as(async (tx) => (await tx`select api.create_canvas(${workspace_id}::uuid, 'bench', '{}'::jsonb) as r`)[0]!.r);
    const created = await as(async (tx) => (await tx`select api.upsert_block_atomic(${canvas_id}::uuid, null, 'create', ${crypto.randomUUID()},
      null, ${tx.json({ type: 'text', content: { text: text() } })}::jsonb) as r`)[0]!.r);
    writers.push({ user, canvas: canvas_id, block: created.block_id, version: created.version });
  }
  return writers;
}

/** One mutation as the HTTP layer runs it (claims set locally, one transaction); `explain` returns its WAL bytes. */
async function update(sql: Sql, w: Writer, explain = false): Promise<number> {
  return withRequest(sql, { claims: { sub: w.user, role: 'authenticated' } }, async (tx) => {
    const args = [w.canvas, w.block, crypto.randomUUID(), w.version, { content: { text: text() } }];
    const call = `select api.upsert_block_atomic($1::uuid, $2::uuid, 'update', $3, $4::int, $5::jsonb) as r`;
    if (explain) {
      const [row] = await tx.unsafe(`explain (analyze, wal, format json) ${call}`, args as never[]);
      w.version++;
      return Number((row!['QUERY PLAN'] as any)[0].Plan['WAL Bytes'] ?? 0);
    }
    const [row] = await tx.unsafe(call, args as never[]);
    const r = row!.r as { status: string; version: number };
    if (r.status !== 'success') throw new Error(`mutation ${r.status}: ${JSON.stringify(r)}`);
    w.version = r.version;
    return 0;
  });
}

/** utime + stime of a local process in seconds, from /proc (undefined when not readable: the server is elsewhere). */
function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // clock ticks: USER_HZ is 100 on Linux
  } catch {
    return undefined;
  }
}

async function dropSlots(sql: Sql): Promise<void> {
  await sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like ${`${SLOT_PREFIX}%`} and not active`;
}

async function main() {
  const t0 = Date.now();
  log(`bench-wal: ${CLIENTS} writers for ${SECONDS} s, then decoding with ${SLOT_RUNS.join(', ')} slot(s) at once; ` +
      `${availableParallelism()} CPUs here, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  // slots of an earlier run that died would keep the database from being dropped
  const admin = postgres(url.replace(/\/[^/]*$/, '/postgres'), { max: 1, onnotice: () => {} });
  await dropSlots(admin).catch(() => {});
  await admin.end();
  await recreateBenchDatabase(url, log);
  const sql = postgres(url, { max: Math.max(CLIENTS, ...SLOT_RUNS) + 2, onnotice: () => {}, connection: { application_name: 'potentia-bench-wal' } });
  try {
    const { version, wal_level } = await one(sql<{ version: string; wal_level: string }[]>`select current_setting('server_version') as version, current_setting('wal_level') as wal_level`);
    log(`PostgreSQL ${version}, wal_level ${wal_level}`);
    const writers = await setup(sql);

    // 1. WAL per mutation, this backend's own
    const samples: number[] = [];
    for (let i = 0; i < 100; i++) samples.push(await update(sql, writers[i % CLIENTS]!, true));
    // EXPLAIN shows no result: the versions in the table tell that every sampled mutation applied
    const { applied } = await one(sql<{ applied: number }[]>`select coalesce(sum(version), 0)::int as applied from app.blocks`);
    const expected = writers.reduce((n, w) => n + w.version, 0);
    if (applied !== expected) throw new Error(`the sampled mutations did not all apply (versions ${applied}, expected ${expected})`);
    samples.sort((a, b) => a - b);
    const walPerMutation = samples.reduce((a, b) => a + b, 0) / samples.length;
    log(`WAL per mutation (EXPLAIN WAL, 100 updates of ~200 characters): mean ${walPerMutation.toFixed(0)} B, median ${samples[50]} B`);

    // 2. the backlog, behind slots made first
    const total = SLOT_RUNS.reduce((a, b) => a + b, 0);
    const slots = Array.from({ length: total }, (_, i) => `${SLOT_PREFIX}${i}`);
    for (const s of slots) await sql`select pg_create_logical_replication_slot(${s}, 'pgoutput')`;
    const { lsn: start } = await one(sql<{ lsn: string }[]>`select pg_current_wal_lsn()::text as lsn`);
    let mutations = 0;
    const until = Date.now() + SECONDS * 1000;
    await Promise.all(writers.map(async (w) => {
      while (Date.now() < until) { await update(sql, w); mutations++; }
    }));
    const { lsn: end, bytes } = await one(sql<{ lsn: string; bytes: number }[]>`select pg_current_wal_lsn()::text as lsn, pg_wal_lsn_diff(pg_current_wal_lsn(), ${start}::pg_lsn)::float8 as bytes`);
    const { rows } = await one(sql<{ rows: number }[]>`select count(*)::int as rows from realtime.messages where inserted_at > now() - ${`${SECONDS + 5} seconds`}::interval`);
    log(`backlog: ${mutations} mutations in ${SECONDS} s (${(mutations / SECONDS).toFixed(0)}/s), ${rows} realtime.messages rows; ` +
        `WAL written on the cluster meanwhile ${mb(bytes).toFixed(1)} MB (${(bytes / mutations).toFixed(0)} B per mutation, other databases included)`);

    // 3. decoding, K slots at once. A few seconds of writes decode in a blink, so each slot
    // decodes the same range R times (peek: the slot does not advance), R chosen so that one
    // slot alone takes about 3 s. Each decoding backend's CPU time comes from /proc when the
    // server runs on this machine: what N gateways cost in cores, whatever else shares them.
    const decode = (q: Sql | postgres.ReservedSql, slot: string) => one(q<{ n: number }[]>`select count(*)::int as n
      from pg_logical_slot_peek_binary_changes(${slot}, ${end}::pg_lsn, null,
                                               'proto_version', '1', 'publication_names', 'potentia_realtime', 'messages', 'true')`);
    let t = performance.now();
    const sent = (await decode(sql, slots[0]!)).n;
    await decode(sql, slots[0]!); // warm: the first pass also reads the WAL from disk
    t = performance.now();
    await decode(sql, slots[0]!);
    const repeats = Math.max(1, Math.ceil(3 / ((performance.now() - t) / 1000)));
    log('');
    log(`decoding: each slot decodes the backlog ${repeats} times (${sent} rows sent per pass: the publication's rows and logical messages)`);
    log('slots at once  wall s  WAL MB/s per slot  mutations/s per slot  total mutations/s decoded  backend CPU s per 1000 mutations');
    let next = 0;
    const results: { k: number; perSlotMBs: number; perSlotMut: number; cpuPer1000?: number }[] = [];
    for (const k of SLOT_RUNS) {
      const mine = slots.slice(next, next + k);
      next += k;
      const conns = await Promise.all(mine.map(() => sql.reserve()));
      const pids = await Promise.all(conns.map(async (c) => (await one(c<{ pid: number }[]>`select pg_backend_pid() as pid`)).pid));
      const cpu0 = pids.map(cpuSeconds);
      t = performance.now();
      await Promise.all(mine.map(async (s, i) => { for (let r = 0; r < repeats; r++) await decode(conns[i]!, s); }));
      const wall = (performance.now() - t) / 1000;
      const cpu = pids.map((p, i) => (cpuSeconds(p) ?? NaN) - (cpu0[i] ?? NaN)).reduce((a, b) => a + b, 0);
      for (const c of conns) c.release();
      const perSlotMBs = (mb(bytes) * repeats) / wall;
      const perSlotMut = (mutations * repeats) / wall;
      const cpuPer1000 = Number.isNaN(cpu) ? undefined : (cpu / (mutations * repeats * k)) * 1000;
      results.push({ k, perSlotMBs, perSlotMut, cpuPer1000 });
      log(`${String(k).padStart(13)}  ${wall.toFixed(2).padStart(6)}  ${perSlotMBs.toFixed(1).padStart(17)}  ${perSlotMut.toFixed(0).padStart(20)}  ` +
          `${(perSlotMut * k).toFixed(0).padStart(25)}  ${cpuPer1000 === undefined ? '(server not local)' : cpuPer1000.toFixed(4).padStart(32)}`);
    }
    const single = results[0]!;
    const perCore = single.cpuPer1000 ? 1000 / single.cpuPer1000 : single.perSlotMut;
    log('');
    log(`one decoding backend keeps up with ${single.perSlotMut.toFixed(0)} mutations/s (${single.perSlotMBs.toFixed(1)} MB/s of WAL) here; ` +
        `a core decodes ${perCore.toFixed(0)} mutations/s${single.cpuPer1000 ? ' (CPU time)' : ''}: N gateways at W mutations/s cost about N x W / ${perCore.toFixed(0)} cores`);
    log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  } finally {
    await dropSlots(sql).catch((err) => console.error(`could not drop the bench slots (drop them by hand: ${SLOT_PREFIX}*): ${err.message}`));
    await sql.end();
  }
}

await main();
