import { randomUUID } from 'node:crypto';
import net from 'node:net';
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { DEFAULT_SYNC_INTERVAL_MS, decodeMessage } from '../../src/realtime/cluster.ts';
import { RECONNECT_BACKOFF_MAX_MS } from '../../src/realtime/replication.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

// Presence across the realtime cluster when two gateways' replication streams are lost together
// (a restarted or failed-over server, where every gateway's stream goes down and comes back at
// its own pace). Each gateway's presence diffs sent meanwhile reach neither; the gateway whose
// stream came back first asked the other for its presence (`sync_request`) while the other's
// stream was still down, so that request reached nobody, and the one back later only asked in
// turn: the first kept the other's presence stale until the next periodic sync (30 s). Seen in CI
// (postgres-restart.test.ts: "both presences on both gateways", 20 s, after the restart case) and
// here: gateway 1 never showed gateway 2's presence within the wait. Now a gateway whose stream
// comes back also sends its own presence (src/realtime/cluster.ts, "Presence across a stream's loss").
//
// The periodic sync (every 30 s from a gateway's start) repairs a stale view too, so the case runs
// right after gateway 2's periodic sync went out (read from the WAL by a slot of the test's own)
// and waits only until just before its next: before the fix it failed every run.
//
// How long a stream takes to come back once its gate opens: the gateway's next attempt comes at
// most RECONNECT_BACKOFF_MAX_MS (5 s, the backoff's cap) after the gate opened; connecting and
// creating its new temporary slot then take milliseconds (measured 20-600 ms, under load too),
// unless a transaction holding a transaction id is open anywhere on the server, in any database:
// creating a logical slot waits for every one of them to end (docs/realtime.md, slot-wait.ts), for
// as long as they last. So each stream's wait is bounded by the case's own window (until 2 s before
// gateway 2's next periodic sync, which leaves room for both gates' 2 x 5 s), not by a number of
// its own; one that runs out names the transactions the new slot waits for. Seen: another
// session's pgTAP file (one transaction for the whole file) on a shared server held gateway 1's
// slot for over 30 s, and the case failed at "gateway 1's stream back" (not this product's backoff).
const SYNC_MS = DEFAULT_SYNC_INTERVAL_MS;

const config = loadConfig();
const db = testDatabase(2);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const realtime = realtimeClients({ timeoutMs: 10_000 });
const gateways: PotentiaProcess[] = [];
const gates: Gate[] = [];
const slot = `presence_streams_${randomUUID().replace(/-/g, '').slice(0, 12)}`;

/** A loopback TCP proxy in front of Postgres that can be shut: shut, it cuts its connections and refuses new ones. */
type Gate = { port: number; shut(): void; open(): void; close(): void };
async function startGate(upstreamPort: number): Promise<Gate> {
  let shut = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (shut) return void client.destroy();
    const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
    sockets.add(client).add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    shut() {
      shut = true;
      for (const s of sockets) s.destroy();
    },
    open() { shut = false; },
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

/** Every cluster frame in the WAL since the test's slot was made, in WAL order (test_decoding prints a message's bytes after `content:`). */
async function frames() {
  return (await clusterMessagesInWal(db.sql, slot)).flatMap((content) => decodeMessage(content));
}

/**
 * The sessions that backends of this database wait for (a new slot, the gateways' or the test's
 * own, waits for every transaction holding an xid on the server), as a sentence; empty when none.
 */
async function slotWaits(): Promise<string> {
  const rows = await db.sql<{ pid: number; datname: string | null; ours: boolean; application_name: string; seconds: number | null }[]>`
    select b.pid, b.datname, b.datname = current_database() as ours, b.application_name, extract(epoch from now() - b.xact_start)::int as seconds
    from pg_stat_activity w join pg_stat_activity b on b.pid = any(pg_blocking_pids(w.pid))
    where w.datname = current_database()`;
  return rows.map((r) => `pid ${r.pid} (database ${r.datname}${r.ours ? ', this test\'s' : ', not this test\'s'}, `
    + `application ${JSON.stringify(r.application_name)}, transaction open ${r.seconds} s)`).join('; ');
}

/** `err`, naming what new slots wait for when they wait for something. */
async function explained(err: unknown): Promise<unknown> {
  const waits = await slotWaits();
  if (!waits) return err;
  return new Error(`${(err as Error).message}: creating a new slot waits for transaction(s) holding an xid on this server, `
    + `${waits} (a logical slot's creation waits for every one, in any database, to end)`, { cause: err });
}

/** Waits for `check` until `end` (a Date.now()); when it runs out, names what the new slots wait for. */
async function streamsBy(check: () => Promise<boolean>, end: number, what: string): Promise<void> {
  try {
    await until(check, Math.max(0, end - Date.now()), what);
  } catch (err) {
    throw await explained(err);
  }
}

const streams = async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
  where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n;

const START_MS = 120_000;
beforeAll(async () => {
  const begun = Date.now();
  const port = Number(new URL(testDatabaseUrl()).port || 5432);
  // made before the gateways start: their first heartbeats are read from it. (Ends before the
  // hook's own timeout, so that a slot held by another session's transaction is named.)
  const made = db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`.then(() => true);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => { timer = setTimeout(() => resolve(false), START_MS / 2); });
  if (!(await Promise.race([made, late]).finally(() => clearTimeout(timer)))) {
    const err = await explained(new Error('the test\'s slot not made'));
    // cancelled, not left waiting: a slot made after afterAll would stay, pinning WAL
    await db.sql`select pg_cancel_backend(pid) from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and query like ${`%${slot}%`}`;
    await made.catch(() => {});
    throw err;
  }
  for (let i = 0; i < 2; i++) {
    gates[i] = await startGate(port);
    // the pool direct; the replication stream (the direct URL) through the gate
    const direct = databaseUrlThrough(gates[i]!, testDatabaseUrl());
    gateways[i] = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), DIRECT_DATABASE_URL: direct,
      WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' });
  }
  await streamsBy(async () => (await streams()) === 2, begun + START_MS - 5_000, 'both gateways\' streams');
}, START_MS);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all(gateways.map((g) => g?.stop()));
  for (const g of gates) g?.close();
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
});

it('presence tracked on two gateways while both streams are down is whole on both once the later stream is back', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
  const channels: RealtimeChannel[] = [];
  for (const i of [0, 1]) {
    const ch = realtime.connect(gateways[i]!.url, await token(users[i]!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: `gateway${i}` } } })
      .on('presence', { event: 'sync' }, () => {});
    expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    channels.push(ch);
  }
  const keys = () => channels.map((ch) => Object.keys(ch.presenceState()).sort().join());

  // each gateway's node, by the presence it sends (another process on the database may send
  // cluster messages too): tracked and untracked again before the case
  for (const i of [0, 1]) expect(await channels[i]!.track({ n: 'before' })).toBe('ok');
  await until(() => keys().every((k) => k === 'gateway0,gateway1'), 20_000, 'both presences on both gateways before the case');
  const diffs = (await frames()).filter((f) => f.header.type === 'presence_diff' && f.header.key === `private:canvas:${canvasId}`)
    .map((f) => f.header as { node: string; joins: Record<string, unknown> });
  const ids = [0, 1].map((i) => diffs.find((d) => Object.hasOwn(d.joins, `gateway${i}`))!.node);
  for (const i of [0, 1]) expect(await channels[i]!.untrack()).toBe('ok');
  await until(() => keys().every((k) => k === ''), 20_000, 'no presence on either gateway');
  // gateway 2 syncs its presence every SYNC_MS from its start (its first heartbeat: the slot was made before it started)
  const first = new Map<string, number>();
  for (const f of await frames()) {
    const h = f.header as { type: string; node: string; sent?: number };
    if (h.type === 'heartbeat' && !first.has(h.node) && typeof h.sent === 'number') first.set(h.node, h.sent);
  }
  const started = first.get(ids[1]!)!;
  const syncsOf2 = async () => (await frames()).filter((f) => f.header.type === 'presence_sync' && f.header.node === ids[1]).length;
  const next = Math.floor((Date.now() - started) / SYNC_MS) + 1;
  const syncsBefore = await syncsOf2();
  await until(async () => Date.now() > started + SYNC_MS * next && (await syncsOf2()) > syncsBefore, 1.5 * SYNC_MS, 'gateway 2\'s periodic sync');
  // (a timer fires late, never early)
  const deadline = started + SYNC_MS * (next + 1) - 500;

  // both streams down
  for (const g of gates) g.shut();
  await until(async () => (await streams()) === 0, 20_000, 'both streams down');
  // each gateway's track goes into the WAL, in no stream
  expect(await channels[0]!.track({ n: 0 })).toBe('ok');
  expect(await channels[1]!.track({ n: 1 })).toBe('ok');
  // (each channel shows its own gateway's presence alone)
  expect(keys()).toEqual(['gateway0', 'gateway1']);

  // gateway 1's stream back first: its request for presence goes out while gateway 2's stream is down
  const requests = async () => (await frames()).filter((f) => f.header.type === 'sync_request' && f.header.node === ids[0]).length;
  const requestsBefore = await requests();
  // room in the window for each gateway's next attempt, a whole backoff cap after its gate opens
  expect(deadline - 2_000 - Date.now(), 'time left for both streams to come back').toBeGreaterThan(2 * RECONNECT_BACKOFF_MAX_MS);
  gates[0]!.open();
  // (until 2 s before the deadline: what the case needs after gateway 2's stream is back, below)
  await streamsBy(async () => (await streams()) === 1 && (await requests()) > requestsBefore, deadline - 2_000, 'gateway 1\'s stream back, and its request sent');
  expect(await streams()).toBe(1);

  // then gateway 2's
  gates[1]!.open();
  await streamsBy(async () => (await streams()) === 2, deadline - 2_000, 'gateway 2\'s stream back');
  // before gateway 2's next periodic sync, which would repair it anyway
  expect(deadline - Date.now(), 'time left before gateway 2\'s next periodic sync').toBeGreaterThan(2_000);
  await until(() => keys().every((k) => k === 'gateway0,gateway1'), deadline - Date.now(), 'both presences on both gateways');
}, 120_000);
