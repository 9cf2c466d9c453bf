// A gateway whose replication connection stops carrying packets without closing: a partition of
// that one path, a stateful firewall or NAT that lost the flow, a proxy that hangs. Its walsender
// stays listed in pg_stat_replication (the bus's tick found it "up") until wal_sender_timeout
// (60 s by default) ends it, and the gateway delivered nothing at all meanwhile while its /ready
// said 200: measured before the fix, the first delta arrived 60.7 s after the stall began. Now
// the bus writes a probe message through its pool once the stream is silent, restarts a stream
// the probe does not come through, and polls realtime.messages meanwhile (src/realtime/bus.ts).
//
// A `--role gateway` process whose DIRECT_DATABASE_URL (the replication connection; its pool uses
// DATABASE_URL) goes through a TCP proxy that this test stalls: an H1 and a realtime-js subscriber
// on it get every delta within seconds, once and in order, through the stall and after it heals;
// /ready says the stream is down while it is, and 200 again after; so does /metrics
// (potentia_realtime_replication_stream_up, _losses_total), which had nothing on the stream.
import { RealtimeClient } from '@supabase/realtime-js';
import postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1, type H1Conn } from '../helpers/h1.ts';
import { subscribed } from '../helpers/realtime.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { sleep, until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(3);
/** How soon a delta committed during the stall must arrive: well under wal_sender_timeout (60 s). */
const STALL_BOUND_MS = 15_000;
let proxy: TcpProxy;
let gateway: PotentiaProcess;
let client: RealtimeClient | undefined;
let h1: H1Conn | undefined;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432));
  gateway = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), DIRECT_DATABASE_URL: databaseUrlThrough(proxy, direct), POTENTIA_ROLE: 'gateway',
    NODE_ENV: 'development', PORT: '0' });
}, 90_000);

afterAll(async () => {
  proxy?.restore();
  h1?.ws.terminate();
  await client?.disconnect().catch(() => {});
  await gateway?.stop();
  await proxy?.close();
  await db.close();
}, 30_000);

/** A sample of the gateway's /metrics (loopback: no token needed). */
async function metric(name: string): Promise<number | undefined> {
  const text = await fetch(`${gateway.url}/metrics`, { signal: AbortSignal.timeout(5000) }).then((r) => r.text());
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.split(' ')[1]);
}
const UP = 'potentia_realtime_replication_stream_up';
const LOSSES = 'potentia_realtime_replication_stream_losses_total';

const readyStatus = () => fetch(`${gateway.url}/ready`, { signal: AbortSignal.timeout(5000) }).then((r) => r.status, () => 0);

describe('a replication connection that stalls without closing', () => {
  it('is noticed within seconds, not after wal_sender_timeout: every delta arrives, once and in order', { timeout: 180_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    h1 = await openH1(gateway.url, canvasId, token, '&since_canvas_seq=0');
    await h1.next((m) => m.type === 'resumed');
    const realtime: number[] = [];
    client = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
      params: { apikey: token }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
    });
    const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (m) => realtime.push(Number(m.payload.canvas_seq)));
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
    // creating the slot waits for every transaction running in the cluster: on a shared server, a while
    await until(async () => (await readyStatus()) === 200, 60_000, 'the gateway ready (its stream up)');
    expect({ up: await metric(UP), losses: await metric(LOSSES) }).toEqual({ up: 1, losses: 0 });

    const create = async () => (await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).canvas_seq!;
    const h1Seqs = () => h1!.inbox.flatMap((m) => (m.type === 'delta' ? [Number(m.canvas_seq)] : []));
    const both = (n: number) => h1Seqs().length >= n && realtime.length >= n;
    const expected = [await create()];
    await until(() => both(1), 10_000, 'the first delta, live');

    // the path stalls: the open replication connection carries nothing either way, a new one is refused
    proxy.cut({ existing: 'stall', incoming: 'refuse' });
    const stalledAt = Date.now();
    expected.push(await create());
    await until(() => both(2), STALL_BOUND_MS, `the delta committed during the stall within ${STALL_BOUND_MS} ms`);
    const tookMs = Date.now() - stalledAt;
    // the stream is down (reconnects are refused): out of rotation, as after any loss of the stream
    await until(async () => (await readyStatus()) === 503, 10_000, '/ready 503 while the stream is down');
    // and /metrics says so, for an alert
    expect(await metric(UP)).toBe(0);
    expect(await metric(LOSSES)).toBeGreaterThanOrEqual(1);
    for (let i = 0; i < 3; i++) expected.push(await create());
    await until(() => both(5), 10_000, 'deltas polled while the stream is down');

    // healed: the stream comes back, the stalled connection's bytes arrive and change nothing
    proxy.restore();
    await until(async () => (await readyStatus()) === 200, 60_000, '/ready 200 again');
    expect(await metric(UP)).toBe(1);
    for (let i = 0; i < 3; i++) expected.push(await create());
    await until(() => both(8), 10_000, 'live deltas after the stall');
    await sleep(1000); // nothing more may come
    expect({ h1: h1Seqs(), realtime }).toEqual({ h1: expected, realtime: expected });
    expect(deltaSeqs(h1).length).toBe(expected.length);
    expect(tookMs).toBeLessThan(STALL_BOUND_MS);
    expect(gateway.exited(), gateway.output()).toBeNull();
    expect(gateway.output()).not.toMatch(/unhandled|uncaught/i);
    expect(gateway.output()).toMatch(/realtime replication stream stalled/);
  });
});

// The other side of the probe: a stream that is silent because its walsender is busy. A large
// transaction's commit (a bulk load, a restore, a migration) is decoded in one go, seconds for
// millions of rows, and the walsender sends nothing meanwhile: the probe written after 2.5 s of
// silence waits behind it in the WAL. The bus took that for a stalled path and restarted the
// stream (measured: 3 million rows, 'nothing received for 5583 ms', the stream down, a new slot),
// throwing the decoding away, taking the gateway out of rotation and losing the cluster's messages
// meanwhile. Now a walsender still short of the probe's LSN and not blocked writing is busy, not
// stalled (src/realtime/bus.ts).
describe('a replication stream that is silent while its walsender decodes a large transaction', () => {
  it('is not restarted, and the deltas after it arrive live', { timeout: 240_000 }, async () => {
    proxy.restore();
    await until(async () => (await readyStatus()) === 200, 60_000, 'the gateway ready (its stream up)');
    const lossesBefore = await metric(LOSSES);
    const outputBefore = gateway.output().length;
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const seen: number[] = [];
    const rt = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
      params: { apikey: token }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
    });
    try {
      const channel = rt.channel(`canvas:${canvasId}`, { config: { private: true } })
        .on('broadcast', { event: 'block_op' }, (m) => seen.push(Number(m.payload.canvas_seq)));
      expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
      // a DBA's bulk load, on a connection of its own (no statement or answer timeout)
      const dba = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
      const table = `stall_bulk_${process.pid}`;
      try {
        await dba.unsafe(`create table ${table} (id int, t text)`);
        await dba.unsafe(`insert into ${table} select g, repeat('x', 50) from generate_series(1, 3000000) g`);
        const seq = (await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).canvas_seq!;
        await until(() => seen.includes(Number(seq)), 60_000, 'the delta committed after the bulk load');
        // the walsender has got through it: long enough for the probe to have timed out many times
        await sleep(1000);
      } finally {
        await dba.unsafe(`drop table if exists ${table}`).catch(() => {});
        await dba.end();
      }
      expect(await metric(LOSSES)).toBe(lossesBefore);
      expect(await metric(UP)).toBe(1);
      expect(gateway.output().slice(outputBefore)).not.toMatch(/stalled|stream ended/);
      expect(gateway.exited(), gateway.output()).toBeNull();
    } finally {
      await rt.disconnect().catch(() => {});
    }
  });
});
