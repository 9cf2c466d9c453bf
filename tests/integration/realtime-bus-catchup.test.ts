import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import postgres from 'postgres';
import { afterEach, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabaseBus, MARGIN_BEFORE_START, orderCatchUp, type BusMessage, type DatabaseBus } from '../../src/realtime/bus.ts';
import { createDatabase } from '../../src/db/index.ts';
import { testDatabase } from '../helpers/db.ts';
import { databaseUrlThrough, startTcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';

// The database bus's catch-up (src/realtime/bus.ts) reads realtime.messages back by inserted_at,
// the writing transaction's start, minus a margin, and de-duplicates by id for a while. Each case
// is a way that read delivered a message twice, or in an order that let a revoked member see it:
//  - a fresh bus delivered the last minute's messages (committed before it started) as live ones;
//  - a stream outage longer than the de-duplication window delivered every message since its
//    start again (the watermark stayed at the start of the outage);
//  - a mutation whose transaction began before a member's removal and committed after it was
//    dispatched before the removal's access_changed;
//  - a transaction longer than the margin that committed while the stream was down (a new slot
//    waits for it to end) was behind every catch-up's reach, and its messages were never delivered.

const db = testDatabase(3);
const buses: DatabaseBus[] = [];
afterEach(async () => {
  for (const bus of buses.splice(0)) await bus.stop();
});

const send = (topic: string, n: number, isPrivate = false) => db.sql`select realtime.send(${db.sql.json({ n })}::jsonb, 'ev', ${topic}, ${isPrivate})`;

function listen(bus: DatabaseBus, topic: string): number[] {
  const got: number[] = [];
  bus.on(topic, (m) => got.push((m.payload as { n: number }).n));
  return got;
}

describe('the database bus catch-up', () => {
  // private broadcasts (every canvas delta) and public ones are found through different indexes (MARGIN_BEFORE_START)
  it.each([false, true])('a fresh bus delivers only what commits after it started, not the margin before (private %s)', async (isPrivate) => {
    const topic = `bus-fresh-${randomUUID()}`;
    for (let n = 1; n <= 5; n++) await send(topic, n, isPrivate);
    const bus = createDatabaseBus({ databaseUrl: testDatabaseUrl(), sql: db.sql, tickMs: 100 });
    buses.push(bus);
    const got = listen(bus, topic);
    await bus.start();
    await bus.ready();
    await send(topic, 6, isPrivate);
    await until(() => got.includes(6), 10_000, 'the message committed after the start');
    await sleep(300); // a tick or two more: nothing else may come
    expect(got).toEqual([6]);
  });

  it("reads the margin before its start through indexes, not by a scan of today's partition", async () => {
    // today's partition with 20,000 rows before the margin, a tenth of them public broadcasts
    const prefix = `bus-start-plan-${randomUUID()}:`;
    await db.sql`insert into realtime.messages (payload, event, topic, private, extension, inserted_at)
                 select '{}', 'ev', ${prefix} || (g % 200), g % 10 <> 0, 'broadcast',
                        greatest(date_trunc('day', localtimestamp), localtimestamp - interval '2 minutes') - make_interval(secs => g * 0.001)
                 from generate_series(1, 20000) g`;
    try {
      await db.sql`analyze realtime.messages`;
      const [clock] = await db.sql<{ at: string; today: string }[]>`
        select localtimestamp::text as at, 'messages_' || to_char(localtimestamp, 'YYYY_MM_DD') as today`;
      const { at, today } = clock!;
      // (seq scans off: whether the planner takes them depends on how much of the partition the
      // last minute holds, which CI's other files writing this table change; what is asked is that
      // each half can be read as a range of an index by time, where the old query had no such index
      // and read the whole partition whatever the setting)
      const [explained] = await db.sql.begin(async (tx) => {
        await tx`set local enable_seqscan = off`;
        return tx.unsafe<{ 'QUERY PLAN': any }[]>(`explain (format json) ${MARGIN_BEFORE_START}`, [at, 60]);
      });
      const plan = explained!['QUERY PLAN'];
      const nodes: { 'Node Type': string; 'Relation Name'?: string; 'Index Name'?: string; 'Index Cond'?: string }[] = [];
      const walk = (n: any) => { nodes.push(n); for (const c of n.Plans ?? []) walk(c); };
      walk(plan[0].Plan);
      // today's partition and its indexes: a bitmap scan names the index in a child of its own
      const onToday = nodes.filter((n) => n['Relation Name'] === today || (n['Index Name'] ?? '').startsWith(`${today}_`));
      // never a scan of the whole partition (it was one Parallel Seq Scan), and each half a range
      // of its index by time (an index scan, or a bitmap one: the planner's choice)
      expect(onToday.filter((n) => n['Node Type'].includes('Seq Scan')).map((n) => n['Node Type'])).toEqual([]);
      expect(onToday.filter((n) => n['Index Name']).map((n) => ({ index: n['Index Name'], byTime: /\binserted_at\s*>=/.test(n['Index Cond'] ?? '') }))
        .sort((x, y) => x.index!.localeCompare(y.index!)))
        .toEqual([{ index: `${today}_inserted_at_idx`, byTime: true }, { index: `${today}_inserted_at_topic_idx`, byTime: true }]);
    } finally {
      await db.sql`delete from realtime.messages where topic like ${`${prefix}%`}`;
    }
  });

  it('polling through an outage longer than the de-duplication window delivers each message once', async () => {
    const topic = `bus-outage-${randomUUID()}`;
    // no walsender to reach: the stream never comes up, the bus polls the table every tick
    const closed = new URL(testDatabaseUrl());
    closed.port = '1';
    const bus = createDatabaseBus({ databaseUrl: closed.toString(), sql: db.sql, tickMs: 50, catchUpMarginMs: 200, dedupeWindowMs: 600 });
    buses.push(bus);
    const got = listen(bus, topic);
    await bus.start();
    await send(topic, 1);
    await until(() => got.includes(1), 10_000, 'the first message, polled');
    await sleep(1500); // past the de-duplication window (600 ms), many polls later
    await send(topic, 2);
    await until(() => got.includes(2), 10_000, 'the second message, polled');
    await sleep(300);
    expect(got).toEqual([1, 2]);
  });

  it('a topic first listened to while the stream is down gets nothing committed before its listener, only what comes after', async () => {
    // a channel joined during an outage (or while a new slot waits): a poll read listened topics
    // alone, so the first poll after the join sent it up to a margin of the topic's past messages
    const topic = `bus-late-${randomUUID()}`;
    const sentinel = `bus-sentinel-${randomUUID()}`;
    const closed = new URL(testDatabaseUrl());
    closed.port = '1'; // no walsender to reach: the bus polls the table every tick
    const bus = createDatabaseBus({ databaseUrl: closed.toString(), sql: db.sql, tickMs: 50 });
    buses.push(bus);
    const polled = listen(bus, sentinel);
    await bus.start();
    await send(topic, 1); // nobody listens to `topic` yet
    await send(sentinel, 1);
    // a poll that sees the sentinel sees the message committed before it
    await until(() => polled.includes(1), 10_000, 'a poll after the first message');
    const got = listen(bus, topic);
    await send(topic, 2);
    await until(() => got.includes(2), 10_000, 'the message sent after the listener');
    // the first message would have come in the same poll as the second, or an earlier one
    expect(got).toEqual([2]);
  });

  it('a transaction longer than the margin that commits while the stream is down is delivered, once', { timeout: 30_000 }, async () => {
    const topic = `bus-long-${randomUUID()}`;
    const marginMs = 1000;
    const bus = createDatabaseBus({ databaseUrl: testDatabaseUrl(), sql: db.sql, tickMs: 100, catchUpMarginMs: marginMs, dedupeWindowMs: 60_000 });
    buses.push(bus);
    const got = listen(bus, topic);
    await bus.start();
    await bus.ready();
    // a DBA's script: its message is written at once, its transaction commits 3 margins later
    const writer = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    try {
      const long = writer.begin(async (tx) => {
        await tx`select realtime.send(${tx.json({ n: 1 })}::jsonb, 'ev', ${topic}, false)`;
        await sleep(3 * marginMs);
      });
      await sleep(300);
      // the stream is lost meanwhile (a failover, a network blip); the new slot waits for the writer
      await db.sql`select pg_terminate_backend(${bus.replicationPid()!}::int)`;
      await long;
    } finally {
      await writer.end();
    }
    await send(topic, 2);
    await until(() => got.includes(2), 15_000, 'the message sent after the long transaction');
    await until(() => got.includes(1), 5_000, 'the long transaction\'s message');
    await sleep(500); // ticks more: nothing twice
    expect(got.sort()).toEqual([1, 2]);
  });

  it('orders a batch read back with access changes first, then each topic\'s operations by server_seq', () => {
    const m = (id: string, event: string, payload: Record<string, unknown>, topic = 'canvas:c'): BusMessage =>
      ({ id, topic, event, extension: 'broadcast', private: true, payload, payloadJson: JSON.stringify(payload) });
    // by inserted_at (transaction start): a mutation begun before the removal, committed after it
    const batch = [m('1', 'block_op', { server_seq: 7 }), m('2', 'access_changed', { user_id: 'u' }), m('3', 'block_op', { server_seq: 6 }),
      m('4', 'block_op', { server_seq: 1 }, 'canvas:other')];
    expect(orderCatchUp(batch).map((x) => x.id)).toEqual(['2', '3', '1', '4']);
  });

  it("puts a canvas's deletion last: its canvas_deleted broadcast, then its access change, after the topic's other messages", () => {
    const m = (id: string, event: string, payload: Record<string, unknown>, topic = 'canvas:c'): BusMessage =>
      ({ id, topic, event, extension: 'broadcast', private: true, payload, payloadJson: JSON.stringify(payload) });
    // one transaction's rows share their inserted_at, and their ids are random: read back in any order
    const batch = [m('1', 'access_changed', { user_id: null, reason: 'canvas_deleted' }), m('2', 'canvas_deleted', { canvas_id: 'c' }),
      m('3', 'access_changed', { user_id: 'u', reason: 'canvas_member' }), m('4', 'block_op', { server_seq: 9 }), m('5', 'presence', {})];
    expect(orderCatchUp(batch).map((x) => x.id)).toEqual(['3', '4', '5', '2', '1']);
  });
});

describe("the database bus's tick", () => {
  it('runs one at a time: a stalled pool gets one query from it, not one more every tick', { timeout: 90_000 }, async () => {
    // the pool goes through a proxy the test stalls; the replication stream does not
    const direct = new URL(testDatabaseUrl());
    const proxy = await startTcpProxy(Number(direct.port || 5432));
    const pool = createDatabase(databaseUrlThrough(proxy, direct), { max: 5, applicationName: 'potentia-test-bus-tick' });
    try {
      const topic = `bus-tick-${randomUUID()}`;
      const bus = createDatabaseBus({ databaseUrl: testDatabaseUrl(), sql: pool.sql, tickMs: 20, probeAfterMs: 100, stallMs: 60_000 });
      buses.push(bus);
      const got = listen(bus, topic);
      await bus.start();
      // creating the slot waits for every transaction running in the cluster: on a shared server, a while
      await until(() => bus.streaming(), 60_000, 'the stream up');
      const opened = proxy.counters.accepted;
      proxy.cut({ existing: 'stall', incoming: 'blackhole' });
      await sleep(1000); // 50 ticks
      // each tick that overlapped the one still waiting took another of the pool's connections
      expect(proxy.counters.blackholed).toBe(0);
      expect(proxy.counters.accepted).toBe(opened);
      proxy.restore();
      await send(topic, 1);
      await until(() => got.includes(1), 10_000, 'a message after the pool healed');
      await sleep(200);
      expect(got).toEqual([1]);
    } finally {
      proxy.restore();
      for (const bus of buses.splice(0)) await bus.stop();
      await pool.close();
      await proxy.close();
    }
  });

  it('a slot waiting for an open transaction is logged, naming its session; the stream comes up once it ends', { timeout: 30_000 }, async () => {
    // a session of another database holding a transaction id, as a DBA's forgotten BEGIN would
    const other = new URL(testDatabaseUrl());
    other.pathname = '/postgres';
    const holder = postgres(other.toString(), { max: 1, onnotice: () => {}, connection: { application_name: 'potentia-test-slot-holder' } });
    const warnings: { blockers?: { pid: number; application_name: string }[]; msg: string }[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => { warnings.push(JSON.parse(line)); } });
    let release!: () => void;
    const released = new Promise<void>((r) => { release = r; });
    let holderPid = 0;
    const held = holder.begin(async (tx) => {
      const [row] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid, txid_current() as secret_marker`;
      holderPid = row!.pid;
      await released;
    });
    try {
      await until(() => holderPid !== 0, 5_000, 'the transaction open');
      const bus = createDatabaseBus({ databaseUrl: testDatabaseUrl(), sql: db.sql, tickMs: 100, logger, slotWaitWarnAfterMs: 500 });
      buses.push(bus);
      await bus.start();
      await until(() => warnings.some((w) => w.blockers?.some((b) => b.pid === holderPid)), 15_000, 'the slot wait logged');
      const warning = warnings.find((w) => w.blockers?.some((b) => b.pid === holderPid))!;
      expect(warning.blockers!.find((b) => b.pid === holderPid)!.application_name).toBe('potentia-test-slot-holder');
      expect(warning.msg).toMatch(/pg_terminate_backend/);
      expect(warning.msg).toContain(`where pid in (${holderPid}`);
      // another session's query text (its data) stays out of the gateway's log
      expect(JSON.stringify(warnings)).not.toContain('secret_marker');
      expect(bus.streaming()).toBe(false);
      release();
      await held;
      await until(() => bus.streaming(), 20_000, 'the stream up once the transaction ended');
    } finally {
      release();
      await held.catch(() => {});
      await holder.end();
    }
  });
});
