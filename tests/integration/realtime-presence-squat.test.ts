import { randomUUID } from 'node:crypto';
import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { PRESENCE_KEY_MAX_METAS } from '../../src/realtime/presence.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// Presence keys are the client's choice (realtime-js `config.presence.key`, as on Supabase), and a
// key holds at most PRESENCE_KEY_MAX_METAS metas (every change of a key is sent whole). Counted
// over every meta of the key, the bound let anyone fill someone else's key: 16 sockets joining a
// public room and tracking under "alice" made alice's own track fail with too_many_presences. The
// bound counts the metas of one caller (the token's user; for a token without one, the address
// the socket comes from, as the gateway's other per-caller limits): another caller's metas never
// count against yours, and one caller still holds at most 16 under a key.
//
// Two real gateway processes of one cluster with TRUST_PROXY=1, so that a socket's address is its
// X-Forwarded-For (each client below says which address it comes from); real
// @supabase/realtime-js clients.

const config = loadConfig();
const db = testDatabase(2);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', TRUST_PROXY: '1' };
const userToken = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });

let gateways: PotentiaProcess[] = [];
const clients: RealtimeClient[] = [];

beforeAll(async () => {
  gateways = await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env)]);
  // each gateway hears the other once its replication stream is streaming
  await until(async () => {
    const [r] = await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
                             where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`;
    return r!.n >= 2;
  }, 60_000, 'both gateway streams');
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await Promise.all(gateways.map((g) => g.stop()));
  await db.close();
});

/** A WebSocket class whose upgrades come from `address` (its X-Forwarded-For, which the gateway trusts here). */
const from = (address: string) => class extends WebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols, { headers: { 'x-forwarded-for': address } });
  }
};

/**
 * A realtime-js client of its own (one socket) from `address`, with `token` (a user's, or the anon
 * key), joined to public room `topic` under presence key `key`, presence enabled.
 */
async function join(topic: string, key: string, address: string, token?: string, gateway = gateways[0]!): Promise<RealtimeChannel> {
  const client = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: token ?? await apiKey(config.auth.jwtSecret, 'anon') }, transport: from(address) as any, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const ch = client.channel(topic, { config: { private: false, presence: { key } } }).on('presence', { event: 'sync' }, () => {});
  const status = await new Promise<string>((resolve) => ch.subscribe((s) => { if (s !== 'CLOSED') resolve(s); }));
  expect(status).toBe('SUBSCRIBED');
  return ch;
}

/** A watcher's view: presence key → the `who` of each of its metas, sorted. */
const view = (ch: RealtimeChannel) => Object.fromEntries(Object.entries(ch.presenceState()).sort()
  .map(([key, metas]) => [key, (metas as { who?: string }[]).map((m) => m.who ?? '?').sort()]));
const squatters = (n: number) => Array.from({ length: n }, (_, i) => `squatter ${String(i + 1).padStart(2, '0')}`);

/** Fills presence key "alice" of `topic` with PRESENCE_KEY_MAX_METAS metas, each from a socket of its own with `token` from `address`. */
async function squat(topic: string, address: string, token?: string): Promise<void> {
  for (const [i, who] of squatters(PRESENCE_KEY_MAX_METAS).entries()) {
    expect(await (await join(topic, 'alice', address, token)).track({ who }), `squatter ${i + 1}'s track`).toBe('ok');
  }
}

const refusal = (whose: string) => `too_many_presences: presence key "alice" holds ${PRESENCE_KEY_MAX_METAS} presences ${whose} in this channel, `
  + 'the most one caller may hold under one key: untrack one first, or track under a key of its own';

/** The reply to `ch`'s next track, as realtime-js's channel.send hands it (the reason of an error). */
function trackReply(ch: RealtimeChannel, payload: Record<string, unknown>): Promise<{ status: string; reason?: string }> {
  return new Promise((resolve) => {
    (ch as any).channelAdapter.push('presence', { type: 'presence', event: 'track', payload }, 10_000)
      .receive('ok', () => resolve({ status: 'ok' }))
      .receive('error', (r: { reason?: string }) => resolve({ status: 'error', reason: r?.reason }))
      .receive('timeout', () => resolve({ status: 'timeout' }));
  });
}

it('anonymous sockets of one address fill key "alice": alice, signed in, still tracks under it (from that same address too), and every member sees her; the address\'s next track is refused', async () => {
  const topic = `squat-anon-${randomUUID()}`;
  const watcher = await join(topic, 'watcher', '198.51.100.9');
  expect(await watcher.track({ who: 'watcher' })).toBe('ok');
  await squat(topic, '203.0.113.66');
  const alice = await join(topic, 'alice', '203.0.113.66', await userToken(randomUUID()));
  expect(await alice.track({ who: 'alice' }), 'alice\'s own track under her key').toBe('ok');
  const want = { alice: [...squatters(PRESENCE_KEY_MAX_METAS), 'alice'].sort(), watcher: ['watcher'] };
  for (const [name, ch] of [['watcher', watcher], ['alice', alice]] as const) {
    await until(() => JSON.stringify(view(ch)) === JSON.stringify(want), 10_000, `${name} to show alice (it shows ${JSON.stringify(view(ch))})`);
  }
  // the squatters' address is still bounded: its 17th meta under the key is refused, nobody sees it
  const extra = await join(topic, 'alice', '203.0.113.66');
  expect(await trackReply(extra, { who: 'extra' })).toEqual({ status: 'error', reason: refusal('from this address') });
  expect(await watcher.track({ who: 'watcher' })).toBe('ok'); // a later change: the watcher has every diff before it
  await until(() => JSON.stringify(view(watcher)) === JSON.stringify(want), 10_000, 'the watcher, after the refusal');
  expect(view(watcher)).toEqual(want);
}, 120_000);

it('anonymous sockets of one address fill key "alice": anonymous alice from another address still tracks under it', async () => {
  const topic = `squat-anon2-${randomUUID()}`;
  const watcher = await join(topic, 'watcher', '198.51.100.9');
  await squat(topic, '203.0.113.67');
  const alice = await join(topic, 'alice', '192.0.2.10');
  expect(await alice.track({ who: 'alice' }), 'alice\'s own track under her key').toBe('ok');
  const want = { alice: [...squatters(PRESENCE_KEY_MAX_METAS), 'alice'].sort() };
  await until(() => JSON.stringify(view(watcher)) === JSON.stringify(want), 10_000, `the watcher to show alice (it shows ${JSON.stringify(view(watcher))})`);
  // alice's second tab (her address again) is hers to open
  const tab = await join(topic, 'alice', '192.0.2.10');
  expect(await tab.track({ who: 'alice tab 2' })).toBe('ok');
  await until(() => view(watcher).alice?.includes('alice tab 2') === true, 10_000, 'the watcher to show alice\'s second tab');
}, 120_000);

it('one user\'s sockets fill key "alice": alice (another user) still tracks under it; the user\'s next track under it is refused, and one of theirs leaving makes room', async () => {
  const topic = `squat-user-${randomUUID()}`;
  const watcher = await join(topic, 'watcher', '198.51.100.9');
  const mallory = await userToken(randomUUID());
  // mallory's sockets come from several addresses: the user is the caller, not the address
  const mallorys: RealtimeChannel[] = [];
  for (const [i, who] of squatters(PRESENCE_KEY_MAX_METAS).entries()) {
    const ch = await join(topic, 'alice', `203.0.113.${100 + i}`, mallory);
    mallorys.push(ch);
    expect(await ch.track({ who }), `mallory's track ${i + 1}`).toBe('ok');
  }
  const alice = await join(topic, 'alice', '203.0.113.100', await userToken(randomUUID()));
  expect(await alice.track({ who: 'alice' }), 'alice\'s own track under her key').toBe('ok');
  const want = { alice: [...squatters(PRESENCE_KEY_MAX_METAS), 'alice'].sort() };
  await until(() => JSON.stringify(view(watcher)) === JSON.stringify(want), 10_000, `the watcher to show alice (it shows ${JSON.stringify(view(watcher))})`);
  const extra = await join(topic, 'alice', '203.0.113.200', mallory);
  expect(await trackReply(extra, { who: 'extra' })).toEqual({ status: 'error', reason: refusal('of this user') });
  // a re-track of one of mallory's is no new meta: not refused
  expect(await mallorys[0]!.track({ who: 'squatter 01' })).toBe('ok');
  expect(await mallorys[0]!.untrack()).toBe('ok');
  expect(await extra.track({ who: 'extra' })).toBe('ok');
  const after = { alice: [...squatters(PRESENCE_KEY_MAX_METAS).slice(1), 'alice', 'extra'].sort() };
  await until(() => JSON.stringify(view(watcher)) === JSON.stringify(after), 10_000, `the watcher, after mallory made room (it shows ${JSON.stringify(view(watcher))})`);
}, 120_000);

it('across the cluster: one caller\'s metas under a key on both gateway processes count together (the 17th refused on either), another caller\'s never', async () => {
  const [g1, g2] = gateways as [PotentiaProcess, PotentiaProcess];
  const topic = `squat-cluster-${randomUUID()}`;
  const watchers = [await join(topic, 'watcher', '198.51.100.9', undefined, g1), await join(topic, 'watcher', '198.51.100.9', undefined, g2)];
  // half of one address's squatters on each gateway
  for (const [i, who] of squatters(PRESENCE_KEY_MAX_METAS).entries()) {
    const ch = await join(topic, 'alice', '203.0.113.68', undefined, i % 2 === 0 ? g1 : g2);
    expect(await ch.track({ who }), `squatter ${i + 1}'s track`).toBe('ok');
  }
  const all = { alice: squatters(PRESENCE_KEY_MAX_METAS) };
  for (const [i, w] of watchers.entries()) {
    await until(() => JSON.stringify(view(w)) === JSON.stringify(all), 10_000, `watcher ${i + 1} to show every squatter (it shows ${JSON.stringify(view(w))})`);
  }
  // each gateway has heard the other's 8: the address holds 16 under the key in the cluster's view
  for (const g of [g1, g2]) {
    const extra = await join(topic, 'alice', '203.0.113.68', undefined, g);
    expect(await trackReply(extra, { who: 'extra' }), `the address's 17th, on ${g === g1 ? 'gateway 1' : 'gateway 2'}`)
      .toEqual({ status: 'error', reason: refusal('from this address') });
  }
  // a gateway process that starts now learns the room from the others' presence_sync, callers
  // included: the address's 17th is refused there too
  const g3 = await startPotentiaProcess(env);
  try {
    await until(async () => {
      const [r] = await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
                               where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`;
      return r!.n >= 3;
    }, 60_000, 'the third gateway\'s stream');
    const late = await join(topic, 'watcher', '198.51.100.9', undefined, g3);
    await until(() => JSON.stringify(view(late)) === JSON.stringify(all), 30_000, `the third gateway's watcher to show every squatter (it shows ${JSON.stringify(view(late))})`);
    const extra = await join(topic, 'alice', '203.0.113.68', undefined, g3);
    expect(await trackReply(extra, { who: 'extra' }), 'the address\'s 17th, on the third gateway').toEqual({ status: 'error', reason: refusal('from this address') });
    await Promise.all([late, extra].map((ch) => ch.socket.disconnect()));
  } finally {
    await g3.stop();
  }
  // alice, from another address, on either gateway
  const alice = await join(topic, 'alice', '192.0.2.11', undefined, g2);
  expect(await alice.track({ who: 'alice' })).toBe('ok');
  const want = { alice: [...squatters(PRESENCE_KEY_MAX_METAS), 'alice'].sort() };
  for (const [i, w] of watchers.entries()) {
    await until(() => JSON.stringify(view(w)) === JSON.stringify(want), 10_000, `watcher ${i + 1} to show alice (it shows ${JSON.stringify(view(w))})`);
  }
}, 120_000);
