// The database bus of a gateway that connects as a least-privilege login role (a member of
// potentia_app: docs/self-hosting.md, "Database"), or as any role that is not a superuser (the
// documented owner `potentia` too). The catch-up after a lost stream reads realtime.messages back
// from a watermark that must never pass the start of a writing transaction still open (its rows'
// inserted_at), which it found in pg_stat_activity. Postgres shows such a role the xact_start (and
// backend_type) of its own role's sessions only: another role's transaction (a DBA's script as
// the owner or as postgres, a migration) was invisible, the watermark moved past its start, and a
// message it committed while the stream was down was never delivered.
//
// Nor is such a role shown its own walsender's sent position (pg_stat_replication's details need
// pg_read_all_stats): the stall check, which tells a walsender still decoding a large transaction
// (a bulk load, silent for seconds) from a path that carries nothing, took every bulk load for a
// stall and restarted the stream (a new slot; the cluster's messages lost meanwhile). It now reads
// the walsender's wait event, which the role is shown.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { createDatabaseBus, type DatabaseBus } from '../../src/realtime/bus.ts';
import { sleep, until } from '../helpers/wait.ts';

const role = `potentia_test_bus_${process.pid}`;
const password = 'bus-horizon-test';
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const asRole = (() => { const u = new URL(testDatabaseUrl()); u.username = role; u.password = password; return u.toString(); })();
let pool: Database;
let bus: DatabaseBus | undefined;

beforeAll(async () => {
  await admin.unsafe(`drop role if exists ${role}`);
  // as docs/self-hosting.md has the DBA create the processes' login role
  await admin.unsafe(`create role ${role} login replication bypassrls password '${password}' in role potentia_app`);
  pool = createDatabase(asRole, { max: 3, applicationName: `potentia-test-bus-horizon-${process.pid}` });
});
afterAll(async () => {
  await bus?.stop();
  await pool?.close();
  await admin.unsafe(`drop role if exists ${role}`);
  await admin.end();
});

describe('the bus of a gateway connected as a login role in potentia_app', () => {
  it('delivers, once, the message of another role\'s transaction longer than the margin that commits while the stream is down', { timeout: 60_000 }, async () => {
    const topic = `bus-role-${randomUUID()}`;
    const marginMs = 1000;
    bus = createDatabaseBus({ databaseUrl: asRole, sql: pool.sql, tickMs: 100, catchUpMarginMs: marginMs, dedupeWindowMs: 60_000 });
    const got: number[] = [];
    bus.on(topic, (m) => got.push((m.payload as { n: number }).n));
    await bus.start();
    await until(() => bus!.streaming(), 45_000, 'the stream up'); // its slot waits for transactions open anywhere on the server
    // a DBA's script, as another role (here the superuser): its message is written at once, its
    // transaction commits 3 margins later
    const writer = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    try {
      const long = writer.begin(async (tx) => {
        await tx`select realtime.send(${tx.json({ n: 1 })}::jsonb, 'ev', ${topic}, false)`;
        await sleep(3 * marginMs);
      });
      await sleep(300);
      // the stream is lost meanwhile; the new slot waits for the writer
      await admin`select pg_terminate_backend(${bus.replicationPid()!}::int)`;
      await long;
    } finally {
      await writer.end();
    }
    await admin`select realtime.send(${admin.json({ n: 2 })}::jsonb, 'ev', ${topic}, false)`;
    await until(() => got.includes(2), 30_000, 'the message sent after the long transaction');
    await until(() => got.includes(1), 5_000, 'the long transaction\'s message');
    await sleep(500); // ticks more: nothing twice
    expect(got.sort()).toEqual([1, 2]);
  });
});

describe('the stream of a gateway connected as a login role in potentia_app, silent while its walsender decodes a bulk load', () => {
  it('is not restarted, and the message after the bulk load arrives on it', { timeout: 240_000 }, async () => {
    await bus?.stop();
    const topic = `bus-role-bulk-${randomUUID()}`;
    // the defaults of a gateway: probe after 2.5 s of silence, stalled 3 s after an unanswered probe
    bus = createDatabaseBus({ databaseUrl: asRole, sql: pool.sql, tickMs: 100 });
    const got: number[] = [];
    bus.on(topic, (m) => got.push((m.payload as { n: number }).n));
    await bus.start();
    await until(() => bus!.streaming(), 45_000, 'the stream up');
    const before = bus.stats();
    // a DBA's bulk load, as another role: decoding its commit keeps the walsender silent for seconds
    const dba = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    const table = `bus_role_bulk_${process.pid}`;
    try {
      await dba.unsafe(`create table ${table} (id int, t text)`);
      await dba.unsafe(`insert into ${table} select g, repeat('x', 50) from generate_series(1, 3000000) g`);
      await dba`select realtime.send(${dba.json({ n: 1 })}::jsonb, 'ev', ${topic}, false)`;
      await until(() => got.includes(1), 90_000, 'the message sent after the bulk load');
    } finally {
      await dba.unsafe(`drop table if exists ${table}`).catch(() => {});
      await dba.end();
    }
    // before: 'realtime replication stream stalled' and a restart (lost and reconnects counted)
    const after = bus.stats();
    expect({ lost: after.lost - before.lost, reconnects: after.reconnects - before.reconnects, caughtUp: after.caughtUp - before.caughtUp })
      .toEqual({ lost: 0, reconnects: 0, caughtUp: 0 });
    expect(bus.streaming()).toBe(true);
  });
});
