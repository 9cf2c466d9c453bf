import { spawn } from 'node:child_process';
import { createSecretKey, randomBytes, randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';
import { decodeMessage, encodeFrame, encodeMessage } from '../../src/realtime/cluster.ts';
import { clusterKeys } from '../../src/realtime/cluster-key.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// The realtime cluster's messages are authenticated (src/realtime/cluster.ts, "Authentication").
// pg_logical_emit_message is granted to PUBLIC: any role that runs SQL (here the API role
// `authenticated`) writes messages under the cluster's prefix, and every gateway reads them. Before,
// a gateway took them for its peers': a forged broadcast reached the subscribers of a private
// channel (no channel authorization), a forged heartbeat or presence_sync made a node with
// presences, and a forged sync_request with a new number made a gateway send its broadcasts again.
// Now every message carries an HMAC-SHA256 under a key the gateways share (derived from
// JWT_SECRET, or REALTIME_CLUSTER_SECRET), and one without it, or with another, is dropped before
// anything of it is read, and counted (potentia_realtime_cluster_messages_rejected_total).
//
// Each forgery is written twice: as the cluster wrote its messages before authentication
// (version 1, no MAC), and signed with a key no gateway has. Whether a gateway has read past it is
// shown by something genuine written after it reaching that gateway (messages are read in WAL
// order), never by waiting.

const config = loadConfig();
const db = testDatabase(3);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' };
const realtime = realtimeClients({ timeoutMs: 10_000 });
const slot = `h_mac_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
/** g1 and g2: the same key (JWT_SECRET's) */
let g1: PotentiaProcess;
let g2: PotentiaProcess;
let anon = '';

type Frames = Parameters<typeof encodeMessage>[0];
/** The frames as the cluster wrote them before its messages were authenticated: version 1, no MAC. */
const withoutMac = (frames: Frames) => Buffer.concat([Buffer.from([1]), ...frames]);
/** The frames signed with a key no gateway has. */
const wrongMac = (frames: Frames) => encodeMessage(frames, createSecretKey(randomBytes(32)), randomUUID(), 1n);

/** Writes `content` under the cluster's prefix as the API role `authenticated` would (pg_logical_emit_message is PUBLIC's). */
async function emitAsDatabaseUser(content: Buffer): Promise<void> {
  await db.sql.begin(async (tx) => {
    await tx`set local role authenticated`;
    await tx`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${content}::bytea), pg_current_xact_id()`;
  });
}

/** A gateway's potentia_realtime_cluster_messages_rejected_total, by reason. */
async function rejected(g: PotentiaProcess): Promise<{ unsigned: number; bad_mac: number }> {
  const text = await (await fetch(`${g.url}/metrics`)).text();
  const count = (reason: string) => Number(new RegExp(`^potentia_realtime_cluster_messages_rejected_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  return { unsigned: count('unsigned'), bad_mac: count('bad_mac') };
}

/** Every cluster frame the gateways wrote since the slot was made (what no gateway would read is skipped). */
async function clusterFrames() {
  return (await clusterMessagesInWal(db.sql, slot)).flatMap((content) => {
    try {
      return decodeMessage(content);
    } catch {
      return []; // a forgery of another version
    }
  });
}

async function restBroadcast(g: PotentiaProcess, topic: string, payloads: Record<string, unknown>[], bearer?: string) {
  const res = await fetch(`${g.url}/realtime/v1/api/broadcast`, {
    method: 'POST', headers: { apikey: anon, ...(bearer ? { authorization: `Bearer ${bearer}` } : {}), 'content-type': 'application/json' },
    body: JSON.stringify({ messages: payloads.map((payload) => ({ topic, event: 'n', payload, private: bearer !== undefined })) }),
  });
  expect({ status: res.status, body: res.status === 202 ? '' : await res.text() }).toEqual({ status: 202, body: '' });
}

/** The ids of the broadcasts a channel gets. */
function ids(ch: RealtimeChannel): Set<string> {
  const got = new Set<string>();
  ch.on('broadcast', { event: 'n' }, (m) => { got.add((m.payload as { id: string }).id); });
  return got;
}

const streams = async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
  where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n;

beforeAll(async () => {
  anon = await apiKey(config.auth.jwtSecret, 'anon');
  [g1, g2] = await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env)]);
  await until(async () => (await streams()) === 2, 60_000, 'both gateways\' streams');
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all([g1?.stop(), g2?.stop()]);
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
});

it('a broadcast into a private channel forged by a database user reaches no subscriber on either gateway, and is counted', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
  const topic = `canvas:${canvasId}`;
  const on1 = realtime.connect(g1.url, await token(users[0]!), '2.0.0').channel(topic, { config: { private: true } });
  const on2 = realtime.connect(g2.url, await token(users[0]!), '2.0.0').channel(topic, { config: { private: true } });
  const got1 = ids(on1);
  const got2 = ids(on2);
  expect((await subscribed(on1)).status).toBe('SUBSCRIBED');
  expect((await subscribed(on2)).status).toBe('SUBSCRIBED');
  const before = await Promise.all([rejected(g1), rejected(g2)]);

  const forged = [randomUUID(), randomUUID()];
  const broadcast = (id: string) => encodeFrame({ type: 'broadcast', node: randomUUID(), key: `private:${topic}`, event: 'n', encoding: 'json' }, Buffer.from(JSON.stringify({ id })));
  await emitAsDatabaseUser(withoutMac([broadcast(forged[0]!)]));
  // (three times: the log below is not one line per message)
  for (let i = 0; i < 3; i++) await emitAsDatabaseUser(wrongMac([broadcast(forged[1]!)]));
  // then a genuine broadcast through each gateway: the other gateway delivers it once it has read past the forgeries
  const genuine = [randomUUID(), randomUUID()];
  const editor = await token(users[1]!);
  await restBroadcast(g1, topic, [{ id: genuine[0] }], editor);
  await restBroadcast(g2, topic, [{ id: genuine[1] }], editor);
  await until(() => genuine.every((id) => got1.has(id) && got2.has(id)), 20_000, 'the genuine broadcasts on both gateways');

  expect({ on1: forged.filter((id) => got1.has(id)), on2: forged.filter((id) => got2.has(id)) }).toEqual({ on1: [], on2: [] });
  const after = await Promise.all([rejected(g1), rejected(g2)]);
  expect(after.map((a, i) => ({ unsigned: a.unsigned - before[i]!.unsigned, bad_mac: a.bad_mac - before[i]!.bad_mac })))
    .toEqual([{ unsigned: 1, bad_mac: 3 }, { unsigned: 1, bad_mac: 3 }]);
  // logged at warn, but not per message: one line at first, and what came after it in the same
  // 10 s in one line when they are over, though no other message is dropped (before, that count
  // waited for the next rejection, which may never come)
  const logged = (g: PotentiaProcess) => g.output().split('\n').filter((l) => l.includes('without a valid MAC'))
    .map((l) => JSON.parse(l) as { rejected: Record<string, number> })
    .reduce((sum, l) => ({ unsigned: sum.unsigned + (l.rejected.unsigned ?? 0), bad_mac: sum.bad_mac + (l.rejected.bad_mac ?? 0) }), { unsigned: 0, bad_mac: 0 });
  await until(() => logged(g1).bad_mac + logged(g2).bad_mac === 6, 30_000, 'the held-back count logged');
  expect([logged(g1), logged(g2)]).toEqual([{ unsigned: 1, bad_mac: 3 }, { unsigned: 1, bad_mac: 3 }]);
  for (const g of [g1, g2]) expect(g.output().split('without a valid MAC').length - 1).toBe(2);
}, 60_000);

it('a forged sync_request with a new number makes no gateway send again, and a forged heartbeat or presence_sync adds no node nor presence', async () => {
  const topic = `mac-${randomUUID()}`;
  // (a presence listener: realtime-js asks for presence only with one)
  const p1 = realtime.connect(g1.url, anon, '2.0.0').channel(topic, { config: { presence: { key: 'one' } } }).on('presence', { event: 'sync' }, () => {});
  const p2 = realtime.connect(g2.url, anon, '2.0.0').channel(topic, { config: { presence: { key: 'two' } } }).on('presence', { event: 'sync' }, () => {});
  expect((await subscribed(p1)).status).toBe('SUBSCRIBED');
  expect((await subscribed(p2)).status).toBe('SUBSCRIBED');
  await db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`;
  // g1's sent log (what a sync_request for lost WAL has it send again), and the gateways' ids
  const mark = randomUUID();
  await restBroadcast(g1, topic, Array.from({ length: 10 }, (_, i) => (i === 9 ? { id: mark } : { id: randomUUID() })));
  let node1 = '';
  let node2 = '';
  await until(async () => {
    const frames = await clusterFrames();
    node1 = (frames.find((f) => f.header.type === 'broadcast' && f.body.toString().includes(mark))?.header.node) ?? '';
    node2 = (frames.find((f) => f.header.type === 'heartbeat' && f.header.node !== node1)?.header.node) ?? '';
    return node1 !== '' && node2 !== '';
  }, 20_000, 'both gateways\' ids in the WAL');
  const before = await Promise.all([rejected(g1), rejected(g2)]);

  // as g2 asking g1 for every broadcast in all of the WAL, with a number higher than any it used;
  // and two nodes no gateway knows, each with a presence in the channel
  const strangers: string[] = [randomUUID(), randomUUID()];
  const forgery = (stranger: string) => [
    encodeFrame({ type: 'sync_request', node: node2, to: node1, lost: [['0/1', 'FFFFFFFF/FFFFFFFF']], req: 1_000_000_000 }),
    encodeFrame({ type: 'heartbeat', node: stranger }),
    encodeFrame({ type: 'presence_sync', node: stranger, state: { [`public:${topic}`]: { forged: { metas: [{ phx_ref: stranger }] } } } }),
  ];
  await emitAsDatabaseUser(withoutMac(forgery(strangers[0]!)));
  await emitAsDatabaseUser(wrongMac(forgery(strangers[1]!)));
  // each gateway's presence after that reaches the other: it has read past the forgeries
  expect(await p1.track({})).toBe('ok');
  expect(await p2.track({})).toBe('ok');
  await until(() => Object.keys(p1.presenceState()).includes('two') && Object.keys(p2.presenceState()).includes('one'), 20_000, 'each gateway\'s presence on the other');
  // two heartbeats of g1 after that: whatever it sent again for the request is in the WAL before them
  const seen = (await clusterFrames()).length;
  await until(async () => (await clusterFrames()).slice(seen).filter((f) => f.header.type === 'heartbeat' && f.header.node === node1).length >= 2,
    20_000, 'two heartbeats of g1');

  const frames = await clusterFrames();
  expect({
    sentAgain: frames.filter((f) => f.header.type === 'broadcast' && f.header.to !== undefined).length,
    // a gateway hearing a node it does not know asks it for its presence
    askedStrangers: frames.filter((f) => 'to' in f.header && strangers.includes(f.header.to as string)).length,
    presence1: Object.keys(p1.presenceState()).sort(),
    presence2: Object.keys(p2.presenceState()).sort(),
  }).toEqual({ sentAgain: 0, askedStrangers: 0, presence1: ['one', 'two'], presence2: ['one', 'two'] });
  const after = await Promise.all([rejected(g1), rejected(g2)]);
  expect(after.map((a, i) => ({ unsigned: a.unsigned - before[i]!.unsigned, bad_mac: a.bad_mac - before[i]!.bad_mac })))
    .toEqual([{ unsigned: 1, bad_mac: 1 }, { unsigned: 1, bad_mac: 1 }]);
}, 90_000);

it('gateways with different keys read none of each other\'s messages, and each one\'s metric shows it', async () => {
  // g3 and g4 share a key of their own (REALTIME_CLUSTER_SECRET), which g1 and g2 do not have
  const secret = randomBytes(36).toString('base64');
  const other = { ...env, REALTIME_CLUSTER_SECRET: secret };
  const [g3, g4] = await Promise.all([startPotentiaProcess(other), startPotentiaProcess(other)]);
  try {
    await until(async () => (await streams()) === 4, 60_000, 'four gateways\' streams');
    const topic = `mac-${randomUUID()}`;
    const on1 = realtime.connect(g1.url, anon, '2.0.0').channel(topic);
    const on3 = realtime.connect(g3.url, anon, '2.0.0').channel(topic);
    const got1 = ids(on1);
    const got3 = ids(on3);
    expect((await subscribed(on1)).status).toBe('SUBSCRIBED');
    expect((await subscribed(on3)).status).toBe('SUBSCRIBED');
    const before = await Promise.all([rejected(g1), rejected(g3)]);
    const from1 = randomUUID();
    const from3 = randomUUID();
    await restBroadcast(g1, topic, [{ id: from1 }]);
    await restBroadcast(g3, topic, [{ id: from3 }]);
    // then one through each one's peer of the same key: delivered once read past the other key's
    const from2 = randomUUID();
    const from4 = randomUUID();
    await restBroadcast(g2, topic, [{ id: from2 }]);
    await restBroadcast(g4, topic, [{ id: from4 }]);
    await until(() => got1.has(from2) && got3.has(from4), 20_000, 'the broadcasts of the same key');
    expect({ on1: got1.has(from3), on3: got3.has(from1) }).toEqual({ on1: false, on3: false });
    const after = await Promise.all([rejected(g1), rejected(g3)]);
    expect(after.map((a, i) => a.bad_mac - before[i]!.bad_mac > 0)).toEqual([true, true]);
    expect(g3.output()).toContain('without a valid MAC');
  } finally {
    await Promise.all([g3.stop(), g4.stop()]);
  }
}, 120_000);

// Not a defect before authentication (every message was read then): the key derived from
// JWT_SECONDARY_SECRET is accepted, so the gateways of two neighbouring steps of the JWT secret's
// rotation (docs/self-hosting.md, "Rotating the JWT secret") still form one cluster. Seen failing
// with the secondary's key not accepted.
it('gateways at neighbouring steps of the JWT secret\'s rotation read each other\'s messages', async () => {
  const [old, next] = [randomBytes(36).toString('base64'), randomBytes(36).toString('base64')];
  const [standby, switched] = await Promise.all([
    startPotentiaProcess({ ...env, JWT_SECRET: old, JWT_SECONDARY_SECRET: next }),
    startPotentiaProcess({ ...env, JWT_SECRET: next, JWT_SECONDARY_SECRET: old }),
  ]);
  try {
    // (g1 and g2, of another key, run too: what they send, these two drop)
    await until(async () => (await streams()) === 4, 60_000, 'four gateways\' streams');
    const key = await apiKey(old, 'anon'); // accepted by both
    const topic = `mac-${randomUUID()}`;
    const onStandby = realtime.connect(standby.url, key, '2.0.0').channel(topic);
    const onSwitched = realtime.connect(switched.url, key, '2.0.0').channel(topic);
    const gotStandby = ids(onStandby);
    const gotSwitched = ids(onSwitched);
    expect((await subscribed(onStandby)).status).toBe('SUBSCRIBED');
    expect((await subscribed(onSwitched)).status).toBe('SUBSCRIBED');
    const [fromStandby, fromSwitched] = [randomUUID(), randomUUID()];
    for (const [g, id] of [[standby, fromStandby], [switched, fromSwitched]] as const) {
      const res = await fetch(`${g.url}/realtime/v1/api/broadcast`, {
        method: 'POST', headers: { apikey: key, 'content-type': 'application/json' },
        body: JSON.stringify({ messages: [{ topic, event: 'n', payload: { id } }] }),
      });
      expect(res.status).toBe(202);
    }
    await until(() => gotStandby.has(fromSwitched) && gotSwitched.has(fromStandby), 20_000, 'each one\'s broadcast on the other');
  } finally {
    await Promise.all([standby.stop(), switched.stop()]);
  }
}, 120_000);

it('a gateway without any key to share (asymmetric keys only in production) refuses to start, naming what to set', async () => {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', '--role', 'gateway'], {
    cwd: new URL('../..', import.meta.url).pathname, stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'production', DATABASE_URL: testDatabaseUrl(), JWT_SECRET: '', JWT_SECONDARY_SECRET: '',
      REALTIME_CLUSTER_SECRET: '', SUPABASE_JWKS_URL: 'https://example.invalid/auth/v1/.well-known/jwks.json', PORT: '0', HOST: '127.0.0.1' },
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  // one that starts (before: it did, unauthenticated) is stopped
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c))).finally(() => clearTimeout(timer));
  expect({ code, running: out.includes('is running') }).toEqual({ code: 2, running: false });
  expect(out).toContain('invalid environment: REALTIME_CLUSTER_SECRET: must be set for the realtime gateway');
}, 60_000);

it('a transactional message under the prefix is not read, even one signed with the key: the cluster writes none, and its LSN is where it was written, not where the stream is', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
  const topic = `canvas:${canvasId}`;
  const on2 = realtime.connect(g2.url, await token(users[0]!), '2.0.0').channel(topic, { config: { private: true } });
  const got = ids(on2);
  expect((await subscribed(on2)).status).toBe('SUBSCRIBED');
  const key = clusterKeys({ jwtSecret: config.auth.jwtSecret })!.sign;
  const node = randomUUID();
  const message = (id: string, number: bigint) => encodeMessage([encodeFrame({ type: 'broadcast', node, key: `private:${topic}`, event: 'n', encoding: 'json' },
    Buffer.from(JSON.stringify({ id })))], key, node, number);
  const [transactional, not] = [randomUUID(), randomUUID()];
  await db.sql`select pg_logical_emit_message(true, ${CLUSTER_MESSAGE_PREFIX}, ${message(transactional, 1n)}::bytea)`;
  await db.sql`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${message(not, 2n)}::bytea)`;
  // the second comes after the first in the WAL: once it is delivered, the first was read past
  await until(() => got.has(not), 20_000, 'the non-transactional message');
  expect(got.has(transactional)).toBe(false);
}, 60_000);
