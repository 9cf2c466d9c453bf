import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';
import { readHead } from '../../src/realtime/cluster.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { testDatabase } from '../helpers/db.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';
import { clockOffMs, steppedClock } from '../helpers/fake-clock.ts';

// A gateway whose host clock steps FORWARD (NTP correcting a clock that was behind, a VM resumed,
// an operator's `date -s`) in a two-gateway cluster, realtime-js clients on each gateway sharing a
// room's broadcasts and presence. g2 runs under libfaketime (LD_PRELOAD, as in
// realtime-cluster-clock-step.test.ts, which steps back): its wall clock (Date.now, the HTTP Date
// header) reads a file's offset, its monotonic clock is left alone.
//
// Within the freshness window (3 min of the default 5): the cluster's intervals (a peer's silence,
// the send outage bound, the heartbeats' echo) are monotonic, so neither gateway takes the other
// for dead and every broadcast and presence change crosses, once. Past the window (10 min): two
// clusters, each gateway's stale warning naming the other's node and saying to check the clocks.
//
// No timed wait, no sleep: that enough of g2's time has passed since the step for a sweep on the
// wall clock to have dropped its peer (its first sweep after the step would) is shown by g2's own
// rejection warning, which is held back 10 s on its monotonic clock: two unsigned messages written
// after the step, the first warned of at once, the second only once those 10 s are over. Whether a
// broadcast was delivered once is read after a later broadcast of the same sender arrived (a
// gateway's messages reach the others in the order sent).
//
// Seen failing with sweep()'s `now` on Date.now (the wall clock) in src/realtime/cluster.ts: g2 took
// every peer for dead at the first sweep after the step ('cannot be sent', then 'node silent'), its
// client saw g1's presence leave (and join again once g1 was heard anew).

const STALE_WORDS = 'check the hosts\' clocks (NTP)';
const UNSIGNED_WORDS = 'without a valid MAC ignored';
const DEAD_WORDS = /realtime cluster node silent|realtime cluster messages cannot be sent/;
const config = loadConfig();
const db = testDatabase(2);
const realtime = realtimeClients({ timeoutMs: 10_000 });
const env = { WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', DATABASE_URL: testDatabaseUrl() };
const clock = steppedClock();
const slot = `h_fwd_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
let g1: PotentiaProcess | undefined;
let g2: PotentiaProcess | undefined;

beforeAll(async () => {
  g1 = await startPotentiaProcess(env);
  g2 = await startPotentiaProcess({ ...env, ...clock.env });
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all([g1?.stop(), g2?.stop()]);
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
  clock.remove();
}, 30_000);

async function metrics(g: PotentiaProcess): Promise<string> {
  return (await fetch(`${g.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
}

/** `g`'s potentia_realtime_cluster_nodes: the other gateways it hears. */
async function nodes(g: PotentiaProcess): Promise<number> {
  return Number(/^potentia_realtime_cluster_nodes (\d+)$/m.exec(await metrics(g))?.[1] ?? -1);
}

/** `g`'s potentia_realtime_cluster_messages_rejected_total{reason} (0 before the first). */
async function rejected(g: PotentiaProcess, reason: string): Promise<number> {
  return Number(new RegExp(`^potentia_realtime_cluster_messages_rejected_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(await metrics(g))?.[1] ?? 0);
}

/** How many log lines of `g` include `words`. */
const lines = (g: PotentiaProcess, words: string) => g.output().split('\n').filter((l) => l.includes(words)).length;
/** The JSON of `g`'s log lines that include `words`. */
const logged = (g: PotentiaProcess, words: string) => g.output().split('\n').filter((l) => l.includes(words))
  .map((l) => JSON.parse(l.slice(l.indexOf('{'))) as Record<string, unknown>);

/** Writes something under the cluster's prefix without a MAC (what a gateway of another version would). */
const unsigned = () => db.sql`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${Buffer.from('not a cluster message')}::bytea)`;

type Side = { name: 'g1' | 'g2'; channel: RealtimeChannel; got: Map<string, number>; joins: string[]; leaves: string[] };
let sides: [Side, Side];

/**
 * Each side sends `n` broadcasts tagged `tag` and then a mark; once each side got the other's
 * mark (sent after the n, so read after them), the count of every id each side got.
 */
async function exchange(tag: string, n: number): Promise<Record<string, Record<string, number>>> {
  const ids = (from: string) => [...Array.from({ length: n }, (_, i) => `${tag}-${from}-${i}`), `${tag}-${from}-mark`];
  await Promise.all(sides.map(async (s) => {
    for (const id of ids(s.name)) expect(await s.channel.send({ type: 'broadcast', event: 'n', payload: { id } })).toBe('ok');
  }));
  const [a, b] = sides;
  await until(() => a.got.has(`${tag}-g2-mark`) && b.got.has(`${tag}-g1-mark`), 20_000, `the ${tag} marks across the gateways`);
  const counts = (s: Side, from: string) => Object.fromEntries(ids(from).map((id) => [id, s.got.get(id) ?? 0]));
  return { g1: counts(a, 'g2'), g2: counts(b, 'g1') };
}
const once = (tag: string, n: number) => {
  const ids = (from: string) => [...Array.from({ length: n }, (_, i) => `${tag}-${from}-${i}`), `${tag}-${from}-mark`];
  return { g1: Object.fromEntries(ids('g2').map((id) => [id, 1])), g2: Object.fromEntries(ids('g1').map((id) => [id, 1])) };
};

it('a gateway whose clock steps forward within the freshness window neither takes its peer for dead nor is taken for dead; broadcasts and presence cross once', async () => {
  await until(async () => (await nodes(g1!)) === 1 && (await nodes(g2!)) === 1, 180_000, 'g1 and g2 hearing each other (creating a slot waits for every transaction with an xid on the server)');
  const anon = await apiKey(config.auth.jwtSecret, 'anon');
  const topic = `clock-fwd-${randomUUID()}`;
  sides = (['g1', 'g2'] as const).map((name) => {
    const g = name === 'g1' ? g1! : g2!;
    const side: Side = { name, got: new Map(), joins: [], leaves: [],
      channel: realtime.connect(g.url, anon, '2.0.0').channel(topic, { config: { broadcast: { ack: true, self: false }, presence: { key: `on-${name}` } } }) };
    side.channel.on('broadcast', { event: 'n' }, (m) => {
      const id = (m.payload as { id: string }).id;
      side.got.set(id, (side.got.get(id) ?? 0) + 1);
    }).on('presence', { event: 'join' }, (p) => side.joins.push(p.key))
      .on('presence', { event: 'leave' }, (p) => side.leaves.push(p.key))
      .on('presence', { event: 'sync' }, () => {});
    return side;
  }) as [Side, Side];
  for (const s of sides) expect((await subscribed(s.channel)).status).toBe('SUBSCRIBED');
  for (const s of sides) expect(await s.channel.track({ phase: 'before' })).toBe('ok');
  const seen = (s: Side, key: string, phase: string) => (s.channel.presenceState()[key] as { phase?: string }[] | undefined)?.map((m) => m.phase);
  await until(() => seen(sides[0], 'on-g2', 'before')?.[0] === 'before' && seen(sides[1], 'on-g1', 'before')?.[0] === 'before', 20_000, 'each side\'s presence on the other gateway');
  expect(await exchange('before', 5)).toEqual(once('before', 5));
  const staleBefore = { g1: await rejected(g1!, 'stale'), g2: await rejected(g2!, 'stale') };

  clock.step('+3m');
  await until(async () => (await clockOffMs(g2!.url)) > 170_000, 20_000, 'g2\'s clock 3 min ahead');

  // 10 s of g2's own time since the step (its rejection warning's interval, monotonic): the first
  // unsigned message is warned of at once, the second when the interval is over
  const warned = lines(g2!, UNSIGNED_WORDS);
  await unsigned();
  await until(() => lines(g2!, UNSIGNED_WORDS) === warned + 1, 20_000, 'g2\'s warning of the first unsigned message after the step');
  await unsigned();
  await until(() => lines(g2!, UNSIGNED_WORDS) === warned + 2, 30_000, 'g2\'s warning of the second, 10 s (monotonic) later');

  // nobody was taken for dead: no such warning, nobody's presence left, both still hear each other
  expect({ g1: g1!.output().match(DEAD_WORDS)?.[0] ?? null, g2: g2!.output().match(DEAD_WORDS)?.[0] ?? null }).toEqual({ g1: null, g2: null });
  expect({ g1: await nodes(g1!), g2: await nodes(g2!) }).toEqual({ g1: 1, g2: 1 });
  expect(sides.map((s) => s.leaves)).toEqual([[], []]);

  // broadcasts both ways, once; presence changes both ways
  expect(await exchange('after', 5)).toEqual(once('after', 5));
  for (const s of sides) expect(await s.channel.track({ phase: 'after' })).toBe('ok');
  await until(() => seen(sides[0], 'on-g2', 'after')?.[0] === 'after' && seen(sides[1], 'on-g1', 'after')?.[0] === 'after', 20_000, 'each side\'s new presence on the other gateway');
  expect(sides.map((s) => ({ g1: s.channel.presenceState()['on-g1']?.length, g2: s.channel.presenceState()['on-g2']?.length })))
    .toEqual([{ g1: 1, g2: 1 }, { g1: 1, g2: 1 }]);
  // (the re-track is a leave of the old meta and a join of the new, for both keys, on both sides; nothing else)
  expect(sides.map((s) => ({ leaves: [...s.leaves].sort(), joins: [...s.joins].sort() }))).toEqual([
    { leaves: ['on-g1', 'on-g2'], joins: ['on-g1', 'on-g1', 'on-g2', 'on-g2'] },
    { leaves: ['on-g1', 'on-g2'], joins: ['on-g1', 'on-g1', 'on-g2', 'on-g2'] },
  ]);
  // within the window: nothing dropped as stale
  expect({ g1: await rejected(g1!, 'stale'), g2: await rejected(g2!, 'stale') }).toEqual(staleBefore);
  expect({ g1: g1!.output().match(DEAD_WORDS)?.[0] ?? null, g2: g2!.output().match(DEAD_WORDS)?.[0] ?? null }).toEqual({ g1: null, g2: null });
  expect({ g1: g1!.exited(), g2: g2!.exited() }).toEqual({ g1: null, g2: null });
}, 400_000);

it('past the window (10 min ahead), each gateway\'s stale warning names the other\'s node and says to check the clocks', async () => {
  // the nodes' ids, as their messages carry them: a slot of the test's own reads them from the WAL
  await db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`;
  clock.step('+10m');
  await until(async () => (await clockOffMs(g2!.url)) > 590_000, 20_000, 'g2\'s clock 10 min ahead');
  // (a few of either's own messages in flight at the step are stale too, own: true; the other's keep coming)
  const other = (g: PotentiaProcess) => logged(g, STALE_WORDS).find((l) => l.own === false);
  await until(() => other(g1!) !== undefined && other(g2!) !== undefined, 60_000, 'each gateway\'s stale warning of the other');
  await until(async () => (await nodes(g1!)) === 0 && (await nodes(g2!)) === 0, 60_000, 'two clusters');

  const heads = (await clusterMessagesInWal(db.sql, slot)).map(readHead);
  const now = Date.now();
  const n2 = [...new Set(heads.filter((h) => h.sent > now + 5 * 60_000).map((h) => h.node))];
  const n1 = [...new Set(heads.filter((h) => h.node !== n2[0] && Math.abs(h.sent - now) < 2 * 60_000).map((h) => h.node))];
  expect({ n1: n1.length, n2: n2.length }).toEqual({ n1: 1, n2: 1 });
  const [w1, w2] = [other(g1!)!, other(g2!)!];
  expect({ node: w1.node, reason: w1.reason, minutes: Math.round(-(w1.ageMs as number) / 60_000) }).toEqual({ node: n2[0], reason: 'stale', minutes: 10 });
  expect({ node: w2.node, reason: w2.reason, minutes: Math.round((w2.ageMs as number) / 60_000) }).toEqual({ node: n1[0], reason: 'stale', minutes: 10 });
  expect({ g1: g1!.exited(), g2: g2!.exited() }).toEqual({ g1: null, g2: null });
}, 240_000);
