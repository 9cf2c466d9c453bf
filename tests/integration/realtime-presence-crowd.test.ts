import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { PRESENCE_KEY_MAX_METAS } from '../../src/realtime/presence.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// A presence key many clients share (an application's constant key, a public room's sockets under
// one key), watched by real @supabase/realtime-js clients on the crowd's gateway process and on
// another one. realtime-js (its phoenix Presence.syncDiff and presenceAdapter) strips `phx_ref`
// from the metas a key keeps whenever it applies a join to that key or a leave that leaves some of
// its metas: those metas can then never leave. The gateway sends a key's change whole (its old
// metas leave, then its new ones join), which it did only up to 16 metas a key: past that it sent
// the change alone, and every meta the key held then stayed in the watchers' presenceState() for
// good, whoever untracked. One caller holds at most PRESENCE_KEY_MAX_METAS metas under a key in a
// channel (here every socket is the anon key's from one address: one caller): its next track is
// refused, so every change of a key is sent whole (realtime-presence-squat.test.ts: other callers'
// metas under the key never count against yours).

const config = loadConfig();
const db = testDatabase(2);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development' };

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

/** A realtime-js client of `gateway` joined to public channel `topic` under presence key `key`. */
async function channel(gateway: { url: string }, topic: string, key: string): Promise<RealtimeChannel> {
  const client = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: await apiKey(config.auth.jwtSecret, 'anon') }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const ch = client.channel(topic, { config: { private: false, presence: { key } } }).on('presence', { event: 'sync' }, () => {});
  const status = await new Promise<string>((resolve) => ch.subscribe((s) => { if (s !== 'CLOSED') resolve(s); }));
  expect(status).toBe('SUBSCRIBED');
  return ch;
}

/** A watcher's view: presence key → the `n` of each of its metas, sorted. */
const view = (ch: RealtimeChannel) => Object.fromEntries(Object.entries(ch.presenceState()).sort()
  .map(([key, metas]) => [key, (metas as { n?: number }[]).map((m) => m.n ?? 0).sort((a, b) => a - b)]));
const ns = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

it(`one caller holds at most ${PRESENCE_KEY_MAX_METAS} metas under a key in a channel: the next track is refused, and every watcher shows exactly the metas tracked, down to none`, async () => {
  const [g1, g2] = gateways as [PotentiaProcess, PotentiaProcess];
  const topic = `crowd-${Date.now()}`;
  const watchers = [await channel(g1, topic, 'near'), await channel(g2, topic, 'far')];
  for (const w of watchers) expect(await w.track({ n: 0 })).toBe('ok');
  /** Every watcher comes to show `crowd` (the crowd key's metas; none: no key) beside the watchers' own keys and `others`. */
  const shows = async (step: string, crowd: number[], others: Record<string, number[]> = {}) => {
    const want = JSON.stringify(Object.fromEntries(Object.entries({ ...(crowd.length > 0 ? { crowd } : {}), far: [0], near: [0], ...others }).sort()));
    for (const [i, w] of watchers.entries()) {
      await until(() => JSON.stringify(view(w)) === want, 10_000, `${step}: watcher ${i + 1} to show ${want} (it shows ${JSON.stringify(view(w))})`);
    }
  };
  await shows('the watchers alone', []);
  const crowd: RealtimeChannel[] = [];
  for (let n = 1; n <= PRESENCE_KEY_MAX_METAS + 1; n++) crowd.push(await channel(g1, topic, 'crowd'));
  for (let n = 1; n <= PRESENCE_KEY_MAX_METAS; n++) expect(await crowd[n - 1]!.track({ n }), `track ${n}`).toBe('ok');
  await shows(`${PRESENCE_KEY_MAX_METAS} tracked`, ns(1, PRESENCE_KEY_MAX_METAS));
  const last = crowd[PRESENCE_KEY_MAX_METAS]!;
  expect(await last.track({ n: PRESENCE_KEY_MAX_METAS + 1 }), 'the key\'s next track').toBe('error');
  // every crowd member but the refused one leaves, one by one; then a presence of another key joins:
  // the watchers have every diff before its own (one gateway's diffs, in order)
  for (let n = 1; n <= PRESENCE_KEY_MAX_METAS; n++) expect(await crowd[n - 1]!.untrack(), `untrack ${n}`).toBe('ok');
  const marker = await channel(g1, topic, 'marker');
  expect(await marker.track({ n: 99 })).toBe('ok');
  for (const [i, w] of watchers.entries()) await until(() => 'marker' in view(w), 10_000, `watcher ${i + 1} to show the marker`);
  for (const w of watchers) expect(view(w)).toEqual({ far: [0], marker: [99], near: [0] });
  // room again: the refused one tracks now, and leaves
  expect(await last.track({ n: PRESENCE_KEY_MAX_METAS + 1 })).toBe('ok');
  await shows('the refused one tracked once there was room', [PRESENCE_KEY_MAX_METAS + 1], { marker: [99] });
  expect(await last.untrack()).toBe('ok');
  await shows('untracked, the last', [], { marker: [99] });
}, 120_000);
