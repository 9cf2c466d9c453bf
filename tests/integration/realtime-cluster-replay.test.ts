import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';
import { decodeMessage, readHead } from '../../src/realtime/cluster.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { databaseClientPorts, startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { startCommitLossProxy, type CommitLossProxy } from '../helpers/commit-loss-proxy.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// The realtime cluster's messages (src/realtime/cluster.ts) carry a per-node message number under
// their MAC, and every gateway drops a message of a node whose number is not above the last it
// read of it. Two gateway processes: g1 sends (its pool through a proxy that can lose the
// connection under one statement), g2 receives (realtime-js subscribers on it).
//
// Replay: a genuine message, captured from the WAL (a logical slot of the test's own) and written
// again as is with plain SQL, passed its MAC: a live broadcast was delivered again, an old
// presence_sync showed a presence gone since. Seen failing before the number: the broadcast
// delivered twice, the old presence shown again.
//
// A lost send: g1's statement emitting a REST broadcast loses its connection, before it reached
// Postgres (the message never lands) or after (it lands, the answer is lost). It was not run
// again (it could deliver the message twice): the request was answered 503. Now it is run again
// with the same bytes (the same number: g2 drops the second copy). Seen failing before: 503 both
// times (and, with the retry but no number, the landed one delivered twice).
//
// Whether g2 has read past a message is shown by a later broadcast of g1 reaching it (a node's
// messages are read in the order it sent them), never by waiting.

const config = loadConfig();
const db = testDatabase(3);
const realtime = realtimeClients({ timeoutMs: 10_000 });
const slot = `h_replay_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
let proxy: CommitLossProxy;
let g1: PotentiaProcess;
let g2: PotentiaProcess;
let anon = '';

const streams = async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
  where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n;

beforeAll(async () => {
  anon = await apiKey(config.auth.jwtSecret, 'anon');
  const direct = new URL(testDatabaseUrl());
  proxy = await startCommitLossProxy(Number(direct.port || 5432));
  const proxied = databaseUrlThrough(proxy, direct);
  const env = { WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' };
  // g1's pool through the proxy, its replication stream direct
  [g1, g2] = await Promise.all([
    startPotentiaProcess({ ...env, DATABASE_URL: proxied, DIRECT_DATABASE_URL: direct.toString() }),
    startPotentiaProcess({ ...env, DATABASE_URL: direct.toString() }),
  ]);
  await until(async () => (await streams()) === 2, 60_000, 'both gateways\' streams');
  await db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`;
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all([g1?.stop(), g2?.stop()]);
  await proxy?.close();
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
});

/** The content of every cluster message in the WAL since the slot was made, as written (test_decoding prints it after `content:`). */
const clusterMessages = () => clusterMessagesInWal(db.sql, slot);

/** Writes `content` under the cluster's prefix again, with plain SQL (as a role that captured it from the WAL would). */
async function writeAgain(content: Buffer): Promise<void> {
  await db.sql`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${content}::bytea), pg_current_xact_id()`;
}

/** POST one broadcast `{id}` to g1's REST broadcast; its status. */
async function restBroadcast(topic: string, id: string): Promise<number> {
  const res = await fetch(`${g1.url}/realtime/v1/api/broadcast`, {
    method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ topic, event: 'n', payload: { id } }] }),
  });
  await res.text();
  return res.status;
}

/** How many times each id reached a subscriber of `topic` on g2. */
async function subscriber(topic: string, presence = false): Promise<{ ch: RealtimeChannel; times: Map<string, number> }> {
  const times = new Map<string, number>();
  const ch = realtime.connect(g2.url, anon, '2.0.0').channel(topic, presence ? { config: { presence: { key: 'g2' } } } : undefined)
    .on('broadcast', { event: 'n' }, (m) => {
      const id = (m.payload as { id: string }).id;
      times.set(id, (times.get(id) ?? 0) + 1);
    });
  // (a presence listener: realtime-js asks for presence only with one)
  if (presence) ch.on('presence', { event: 'sync' }, () => {});
  expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  return { ch, times };
}

/** g2's potentia_realtime_cluster_messages_rejected_total{reason="replayed"}. */
async function replayed(): Promise<number> {
  const text = await (await fetch(`${g2.url}/metrics`)).text();
  return Number(/^potentia_realtime_cluster_messages_rejected_total\{reason="replayed"\} (\d+)$/m.exec(text)?.[1] ?? -1);
}

/** A broadcast of g1 after everything before it: once on g2, g2 has read past all that g1 and the test wrote before. */
async function readPast(topic: string, times: Map<string, number>): Promise<void> {
  const mark = randomUUID();
  expect(await restBroadcast(topic, mark)).toBe(202);
  await until(() => times.has(mark), 20_000, 'a later broadcast of g1 on g2');
}

it('a live broadcast written again as is reaches the subscriber on the other gateway once', async () => {
  const topic = `replay-${randomUUID()}`;
  const { times } = await subscriber(topic);
  const id = randomUUID();
  expect(await restBroadcast(topic, id)).toBe(202);
  await until(() => times.has(id), 20_000, 'the broadcast on g2');
  const captured = (await clusterMessages()).filter((c) => c.includes(id));
  expect(captured.length).toBe(1);
  const before = await replayed();
  await writeAgain(captured[0]!);
  await writeAgain(captured[0]!);
  await readPast(topic, times);
  expect({ times: times.get(id), replayed: (await replayed()) - before }).toEqual({ times: 1, replayed: 2 });
}, 60_000);

it('an old presence_sync written again shows no presence gone since', async () => {
  const topic = `replay-${randomUUID()}`;
  const { ch: watcher, times } = await subscriber(topic, true);
  const old = `old-${randomUUID()}`;
  const tracker = realtime.connect(g1.url, anon, '2.0.0').channel(topic, { config: { presence: { key: old } } }).on('presence', { event: 'sync' }, () => {});
  expect((await subscribed(tracker)).status).toBe('SUBSCRIBED');
  expect(await tracker.track({})).toBe('ok');
  await until(() => Object.keys(watcher.presenceState()).includes(old), 20_000, 'the presence on g2');
  // g1's full presence, with it: sent when g1's stream comes back (its walsender terminated)
  const seen = (await clusterMessages()).length;
  const ports = databaseClientPorts(g1.pid, Number(new URL(testDatabaseUrl()).port || 5432));
  const terminated = await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
    where datname = current_database() and application_name = 'potentia-realtime-bus' and client_port = any(${ports})`;
  expect(terminated.length).toBe(1);
  let sync: Buffer | undefined;
  await until(async () => {
    sync = (await clusterMessages()).slice(seen).find((c) => c.includes('"presence_sync"') && c.includes(old));
    return sync !== undefined;
  }, 30_000, 'g1\'s presence_sync with the presence');
  // gone: g2 shows it no more
  expect(await tracker.untrack()).toBe('ok');
  await until(() => !Object.keys(watcher.presenceState()).includes(old), 20_000, 'the presence gone on g2');
  const before = await replayed();
  await writeAgain(sync!);
  await readPast(topic, times);
  expect(Object.keys(watcher.presenceState())).not.toContain(old);
  expect((await replayed()) - before).toBe(1);
}, 90_000);

it('a REST broadcast whose cluster statement lost its connection, before or after it reached Postgres, is answered 202 and delivered once', async () => {
  const topic = `lost-${randomUUID()}`;
  const { times } = await subscriber(topic);
  const before = await replayed();
  // the statement carries the payload as a bytea, hex-encoded
  const hex = (id: string) => Buffer.from(id).toString('hex');
  const landed = randomUUID();
  const answerLost = proxy.loseAnswer(hex(landed));
  const landedStatus = await restBroadcast(topic, landed);
  await answerLost;
  const neverLanded = randomUUID();
  const reset = proxy.reset;
  proxy.resetOnMarker(hex(neverLanded));
  const neverLandedStatus = await restBroadcast(topic, neverLanded);
  expect(proxy.reset).toBe(reset + 1);
  await readPast(topic, times);
  expect({ landed: [landedStatus, times.get(landed)], neverLanded: [neverLandedStatus, times.get(neverLanded)] })
    .toEqual({ landed: [202, 1], neverLanded: [202, 1] });
  // the landed one is in the WAL twice (the statement ran again, the same bytes), and g2 dropped the second
  const copies = (await clusterMessages()).filter((c) => c.includes(landed));
  expect({ copies: copies.length, same: copies[0]?.equals(copies[1]!), replayed: (await replayed()) - before }).toEqual({ copies: 2, same: true, replayed: 1 });
}, 60_000);

// The statement run again lands once more (the first had landed, its answer was lost). A receiver
// whose stream was lost between the two copies read the first; the second lies in the WAL its
// streams did not carry, so it asks the sender for its broadcasts there, and the sender (which
// logged the broadcast at the second copy's position, the one it heard) sends it again: it was
// delivered twice. Seen failing before resent broadcasts carried their statement's number:
// delivered twice. Now the receiver drops a resent broadcast whose statement's number it had read
// before the loss.
it('a broadcast whose statement ran twice, the receiver\'s stream lost between the two, is delivered once', async () => {
  const topic = `lost-${randomUUID()}`;
  const { times } = await subscriber(topic);
  const hex = (id: string) => Buffer.from(id).toString('hex');
  const id = randomUUID();
  // the first run lands and its answer is lost; the run again is held before it reaches Postgres
  const answerLost = proxy.loseAnswer(hex(id));
  const held = proxy.holdNext(hex(id));
  const status = restBroadcast(topic, id);
  await answerLost;
  await held;
  await until(() => times.has(id), 20_000, 'the first copy on g2');
  const sender = readHead((await clusterMessages()).find((c) => c.includes(id))!).node;
  const seen = (await clusterMessages()).length;
  // g2's stream lost; its next slot waits for a transaction holding an xid, so the second copy
  // lands in WAL no stream of g2 carries
  const ports = databaseClientPorts(g2.pid, Number(new URL(testDatabaseUrl()).port || 5432));
  const tx = await reservedTransaction(db.sql);
  try {
    await tx.conn`select pg_current_xact_id()`;
    const terminated = await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and application_name = 'potentia-realtime-bus' and client_port = any(${ports})`;
    expect(terminated.length).toBe(1);
    await until(async () => (await streams()) === 1, 20_000, 'g2\'s stream down');
    proxy.releaseHeld();
    expect(await status).toBe(202);
  } finally {
    proxy.releaseHeld();
    await tx.release();
  }
  await until(async () => (await streams()) === 2, 60_000, 'g2\'s stream back');
  // g2 asks g1 for what it missed; g1 sends it again, then says so in a heartbeat
  await until(async () => {
    const frames = (await clusterMessages()).slice(seen).flatMap((c) => decodeMessage(c)).map((f) => f.header);
    return frames.some((r) => r.type === 'sync_request' && r.to === sender && r.lost
      && frames.some((h) => h.type === 'heartbeat' && h.node === sender && (h.answered?.[r.node] ?? 0) >= r.req!));
  }, 30_000, 'g1\'s answer to g2\'s request');
  await readPast(topic, times);
  expect(times.get(id)).toBe(1);
}, 90_000);
