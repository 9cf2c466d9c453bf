import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas } from '../helpers/fixtures.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

// One user in two tabs, under one presence key (docs/realtime.md: "the user id is a good one"; "a
// user in two tabs appears twice under one key"), watched by real @supabase/realtime-js clients on
// the same gateway process and on another one. realtime-js (its phoenix Presence and
// presenceAdapter) strips `phx_ref` from the metas a key keeps whenever it applies a join to that
// key or a leave that leaves some of its metas: those metas can then never leave. Before, the
// second tab's join made the first tab's meta permanent in every watcher's presenceState(), and
// nothing either tab did later (re-track, untrack, close) left it: ghosts until the watcher
// rejoined. The gateway sends a key's change whole (its old metas leave, then its new ones join).
//
// A watcher whose socket drops (a network cut, its gateway restarted) rejoins with the presence
// state it had, and realtime-js syncs the new presence_state onto it the same way: a presence
// re-tracked meanwhile (a moved cursor) kept its old meta, for good. The gateway sends a join's
// presence as a diff the client holds until the presence_state, which is empty: whatever it
// had leaves whole, then the room joins whole, and it shows one sync.

const config = loadConfig();
const db = testDatabase(2);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development' };
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });

let gateways: PotentiaProcess[] = [];
let proxy: TcpProxy | undefined;
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
  await proxy?.close();
  await Promise.all(gateways.map((g) => g.stop()));
  await db.close();
});

/** Subscribes `ch`; resolves with the first status other than CLOSED, and calls `onSubscribed` at each SUBSCRIBED (rejoins too). */
function subscribed(ch: RealtimeChannel, onSubscribed: () => void): Promise<{ status: string }> {
  return new Promise((resolve) => ch.subscribe((status) => {
    if (status === 'SUBSCRIBED') onSubscribed();
    if (status !== 'CLOSED') resolve({ status });
  }));
}

async function channel(gateway: { url: string }, userId: string, canvasId: string, presenceKey: string, vsn: string): Promise<{ client: RealtimeClient; ch: RealtimeChannel; joins: { count: number } }> {
  const client = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: await token(userId) }, transport: WebSocket as any, vsn, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const ch = client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: presenceKey } } })
    .on('presence', { event: 'sync' }, () => {});
  const joins = { count: 0 };
  expect((await subscribed(ch, () => joins.count++)).status).toBe('SUBSCRIBED');
  return { client, ch, joins };
}

/** A watcher's view: presence key → the `tab` of each of its metas, sorted. */
const view = (ch: RealtimeChannel) => Object.fromEntries(Object.entries(ch.presenceState()).sort()
  .map(([key, metas]) => [key, (metas as { tab?: unknown }[]).map((m) => m.tab).sort()]));

describe.each(['1.0.0', '2.0.0'])('two tabs of one user under one presence key (tabs on gateway 1, vsn %s)', (vsn) => {
  it('every watcher, on the tabs\' gateway and on the other, shows exactly the tabs that are tracked, at every step', async () => {
    const [g1, g2] = gateways as [PotentiaProcess, PotentiaProcess];
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const watchers = [
      (await channel(g1, await addMember(db.sql, owner, workspaceId, 'viewer', 'near'), canvasId, 'near', vsn)).ch,
      (await channel(g2, await addMember(db.sql, owner, workspaceId, 'viewer', 'far'), canvasId, 'far', vsn)).ch,
    ];
    const tab1 = await channel(g1, owner, canvasId, owner, vsn);
    const tab2 = await channel(g1, owner, canvasId, owner, vsn);
    /** Every watcher comes to show `tabs` under the owner's key (nothing: no key), and the watchers' own keys. */
    const shows = async (step: string, tabs: number[]) => {
      const want = { ...(tabs.length > 0 ? { [owner]: [...tabs].sort() } : {}), far: [0], near: [0] };
      for (const [i, w] of watchers.entries()) {
        await until(() => JSON.stringify(view(w)) === JSON.stringify(Object.fromEntries(Object.entries(want).sort())), 10_000,
          `${step}: watcher ${i + 1} to show ${JSON.stringify(want)} (it shows ${JSON.stringify(view(w))})`);
      }
    };
    for (const w of watchers) expect(await w.track({ tab: 0 })).toBe('ok');
    await shows('no tab tracked', []);
    expect(await tab1.ch.track({ tab: 1 })).toBe('ok');
    await shows('tab 1 tracked', [1]);
    expect(await tab2.ch.track({ tab: 2 })).toBe('ok');
    await shows('tab 2 tracked beside it', [1, 2]);
    expect(await tab1.ch.track({ tab: 11 })).toBe('ok');
    await shows('tab 1 re-tracked', [2, 11]);
    expect(await tab1.ch.untrack()).toBe('ok');
    await shows('tab 1 untracked', [2]);
    expect(await tab1.ch.track({ tab: 1 })).toBe('ok');
    await shows('tab 1 back', [1, 2]);
    await tab2.client.disconnect();
    await shows('tab 2 closed', [1]);
    expect(await tab1.ch.untrack()).toBe('ok');
    await shows('tab 1 untracked, the last', []);
  }, 90_000);
});

describe.each(['1.0.0', '2.0.0'])('a watcher whose socket drops while a presence is re-tracked (vsn %s)', (vsn) => {
  it('shows the presence as it is once it has rejoined, and every change after', async () => {
    const [g1, g2] = gateways as [PotentiaProcess, PotentiaProcess];
    proxy = await startTcpProxy(Number(new URL(g2.url).port));
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    const watcher = await channel(proxy, await addMember(db.sql, owner, workspaceId, 'viewer', 'watcher'), canvasId, 'watcher', vsn);
    const tab = await channel(g1, owner, canvasId, owner, vsn);
    const shows = (step: string, tabs: number[]) => until(() => JSON.stringify(view(watcher.ch)) === JSON.stringify(tabs.length > 0 ? { [owner]: tabs } : {}),
      20_000, `${step}: the watcher to show ${JSON.stringify(tabs)} (it shows ${JSON.stringify(view(watcher.ch))})`);
    expect(await tab.ch.track({ tab: 1 })).toBe('ok');
    await shows('tracked', [1]);
    proxy.cut(); // the watcher's socket is reset, and its reconnects refused until restore()
    expect(await tab.ch.track({ tab: 2 })).toBe('ok');
    proxy.restore();
    await until(() => watcher.joins.count >= 2, 30_000, 'the watcher to rejoin');
    await shows('re-tracked while the watcher was away', [2]);
    expect(await tab.ch.track({ tab: 3 })).toBe('ok');
    await shows('re-tracked after the rejoin', [3]);
    expect(await tab.ch.untrack()).toBe('ok');
    await shows('untracked', []);
    await proxy.close();
    proxy = undefined;
  }, 90_000);
});
