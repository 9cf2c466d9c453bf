import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase, type ReservedTransaction } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';
import { clockOffMs, steppedClock } from '../helpers/fake-clock.ts';
import { metricValue } from '../helpers/metrics.ts';

// The database bus (src/realtime/bus.ts) of a gateway whose host clock steps (NTP, `date -s`, a VM
// resumed) around a loss of its replication stream: its walsender terminated (pg_terminate_backend,
// what a managed Postgres does on failover or idle reaping). The gateway runs under libfaketime
// (LD_PRELOAD, as realtime-clock-step.test.ts): its wall clock (Date.now, the HTTP Date header)
// reads a file's offset, its monotonic clock is left alone. realtime-js subscribers of a canvas
// channel count every delta (canvas_seq) they get.
//
// The outage is held open, not raced: a transaction with an xid, open while the walsender is
// terminated, keeps the new slot's creation waiting (it waits for every such transaction), so the
// stream stays down, the gateway polls realtime.messages, and a delta seen then came by the poll.
//
// 1. Forward 15 min (past the de-duplication window, 10 min), then the walsender terminated: the
//    deltas committed during the outage arrive by polling, a subscriber joined during it gets what
//    was committed after its join, and after the stream is back every delta has arrived once.
//    Seen failing with remember()'s clock on Date.now (bus.ts): the step forgot every id
//    delivered before it at the next delivery, so the outage's first poll, reading back the
//    catch-up margin (60 s), sent the delta delivered just before the step again.
// 2. The walsender terminated, then the clock stepped back 15 min during the outage: the same, and
//    the bus still says why its stream is not up (the slot waits for the held transaction, named
//    by pid) after 10 s of outage on its own clock. Seen failing with explainSlotWait's clock on
//    Date.now: the outage began "15 min in the future", so nothing was said.
//
// No timed wait: each step is waited for on the gateway's HTTP Date header, each state on
// /metrics, pg_stat_activity and the gateway's log; whether a delta came once is read after a
// later one arrived (the bus delivers in commit order).

const config = loadConfig();
const db = testDatabase(3);
const realtime = realtimeClients({ timeoutMs: 10_000 });
const clock = steppedClock();
const UP = 'potentia_realtime_replication_stream_up';
const LOSSES = 'potentia_realtime_replication_stream_losses_total';
const SLOT_WAIT_WORDS = 'creating its slot waits for';
let gateway: PotentiaProcess | undefined;
let hold: ReservedTransaction | undefined;

beforeAll(async () => {
  gateway = await startPotentiaProcess({ WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', DATABASE_URL: testDatabaseUrl(),
    ...clock.env });
}, 120_000);

afterAll(async () => {
  await hold?.release();
  await realtime.disconnectAll();
  await gateway?.stop();
  await db.close();
  clock.remove();
}, 30_000);

/** Terminates the gateway's walsender (this database's: the gateway is its only one); how many were. */
async function killWalsender(): Promise<number> {
  const [row] = await db.sql<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
    where datname = current_database() and backend_type = 'walsender' and application_name = 'potentia-realtime-bus'`;
  return row!.n;
}

/**
 * Whether the gateway's new walsender is waiting, creating its slot, on a lock (the xid of a
 * transaction open when it began: the held one, or another session's anywhere on the server, which
 * it waits for one after the other; it cannot finish before the held one ends).
 */
async function slotWaits(): Promise<boolean> {
  const rows = await db.sql`select from pg_stat_activity where datname = current_database() and backend_type = 'walsender'
    and application_name = 'potentia-realtime-bus' and cardinality(pg_blocking_pids(pid)) > 0`;
  return rows.length === 1;
}

/** The stream down and held down: the walsender terminated while a transaction with an xid is open. */
async function outage(): Promise<void> {
  hold = await reservedTransaction(db.sql);
  await hold.conn`select pg_current_xact_id()`;
  expect(await killWalsender()).toBe(1);
  await until(async () => (await metricValue(gateway!.url, UP)) === 0, 20_000, 'the stream down (metric)');
  await until(slotWaits, 20_000, 'the new slot waiting for open transactions');
}

async function endOutage(): Promise<void> {
  await hold!.release();
  hold = undefined;
  await until(async () => (await metricValue(gateway!.url, UP)) === 1, 180_000, 'the stream up again (metric)');
}

it('a step of the clock forward, then back, around terminated walsenders: polled meanwhile, every delta once, the stream back', { timeout: 600_000 }, async () => {
  await until(async () => (await metricValue(gateway!.url, UP)) === 1, 180_000, 'the gateway\'s stream up');
  const losses = await metricValue(gateway!.url, LOSSES);
  const { canvasId, users } = await createCanvas(db.sql);
  // valid long after either step (the gateway compares exp with its wall clock, as it must)
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 24 * 3600 });
  const seqs: Record<string, number[]> = {};
  const subscriber = async (name: string) => {
    seqs[name] = [];
    const ch: RealtimeChannel = realtime.connect(gateway!.url, token, '1.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (m) => seqs[name]!.push(Number(m.payload.canvas_seq)));
    expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  };
  const create = async () => Number((await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).canvas_seq!);
  const expected: Record<string, number[]> = { a: [] };
  /** Commits one delta and waits until every subscriber joined so far has it (and any before it). */
  const delta = async (what: string) => {
    const seq = await create();
    for (const list of Object.values(expected)) list.push(seq);
    await until(() => Object.keys(expected).every((k) => seqs[k]!.includes(seq)), 20_000, `${what} (${seq}) on every subscriber`);
  };
  await subscriber('a');

  // 1. forward, then the outage
  await delta('a live delta before the step');
  clock.step('+15m');
  await until(async () => (await clockOffMs(gateway!.url)) > 14 * 60_000, 20_000, 'the gateway\'s clock 15 min ahead');
  await delta('a live delta after the step');
  await outage();
  for (let i = 0; i < 3; i++) await delta('a delta committed during the outage');
  await subscriber('b');
  expected.b = [];
  await delta('a delta committed after b joined during the outage');
  // polled: the stream could not have carried them
  expect({ up: await metricValue(gateway!.url, UP), held: await slotWaits() }).toEqual({ up: 0, held: true });
  await endOutage();
  await delta('a live delta after the stream came back');
  expect(seqs).toEqual(expected);

  // 2. the outage, then back (15 min, to the test's clock) during it
  await outage();
  const slotWarnings = gateway!.output().split('\n').filter((l) => l.includes(SLOT_WAIT_WORDS)).length;
  clock.step('+0');
  await until(async () => Math.abs(await clockOffMs(gateway!.url)) < 10_000, 20_000, 'the gateway\'s clock back');
  for (let i = 0; i < 2; i++) await delta('a delta committed during the outage, after the step back');
  await subscriber('c');
  expected.c = [];
  await delta('a delta committed after c joined during the outage');
  // the bus says why its stream is not up, naming the held transaction, 10 s (its own clock) into the outage
  await until(() => gateway!.output().split('\n').filter((l) => l.includes(SLOT_WAIT_WORDS)).length > slotWarnings, 25_000,
    'the bus\'s warning that its slot waits for the held transaction');
  // (naming the held transaction, or another session's the walsender waits for first: it waits for them one after the other)
  const warning = gateway!.output().split('\n').filter((l) => l.includes(SLOT_WAIT_WORDS)).at(-1)!;
  expect(warning).toMatch(/where pid in \(\d+(, \d+)*\)\)/);
  expect({ up: await metricValue(gateway!.url, UP), held: await slotWaits() }).toEqual({ up: 0, held: true });
  await delta('one more delta committed during the outage');
  await endOutage();
  await delta('a live delta after the stream came back');
  expect(seqs).toEqual(expected);

  // two losses, the two terminations: no stall taken for one, nothing else
  expect((await metricValue(gateway!.url, LOSSES))! - losses!).toBe(2);
  expect(gateway!.output()).not.toMatch(/replication stream stalled|unhandled|uncaught/i);
  expect(gateway!.exited()).toBeNull();
});

// 3. The stream's position confirmed to its walsender (a standby status update, once a second)
//    after a step back: the slot's position must keep up, or it holds WAL and catalog rows back
//    from removal. pg-logical-replication timed that second on the wall clock, so after a step back
//    it confirmed nothing for the step's length, unless the walsender asked for a reply (after
//    wal_sender_timeout / 2). This gateway's walsender never asks (wal_sender_timeout = 0 on its
//    replication connection, PGOPTIONS), so what confirms the position is the gateway's timer alone.
//    Seen failing before it was timed on the monotonic clock (patches/pg-logical-replication+2.5.0.patch,
//    an override in src/realtime/replication.ts before): flush_lsn
//    stood still after the step (10 min back), never reaching the WAL written after it.
it('after a step back, the stream\'s position is still confirmed to its walsender once a second', { timeout: 300_000 }, async () => {
  await gateway?.stop();
  gateway = undefined;
  clock.step('+0');
  gateway = await startPotentiaProcess({ WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', DATABASE_URL: testDatabaseUrl(),
    PGOPTIONS: '-c wal_sender_timeout=0',
    ...clock.env });
  await until(async () => (await metricValue(gateway!.url, UP)) === 1, 180_000, 'the gateway\'s stream up');
  /** Whether the gateway's walsender was told the WAL up to `lsn` is flushed (its slot may move past it). */
  const confirmed = async (lsn: string) => (await db.sql`select r.flush_lsn >= ${lsn}::pg_lsn as done
    from pg_stat_replication r join pg_stat_activity a using (pid)
    where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]?.done === true;
  const walNow = async () => (await db.sql`select pg_current_wal_insert_lsn()::text as lsn`)[0]!.lsn as string;
  // (the WAL moves on by itself: the gateway's cluster heartbeats, every 2 s, go through its stream)
  const before = await walNow();
  await until(() => confirmed(before), 30_000, 'the position confirmed before the step');

  clock.step('-10m');
  await until(async () => (await clockOffMs(gateway!.url)) < -9 * 60_000, 20_000, 'the gateway\'s clock 10 min back');
  const after = await walNow();
  await until(() => confirmed(after), 60_000, 'the position confirmed past the WAL written after the step');
  expect(gateway.exited()).toBeNull();
});
