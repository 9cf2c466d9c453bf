import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

// A track on a private canvas channel waits for the database twice before it is applied (the
// RLS check of presence, then api.update_presence). A socket that closes meanwhile ends its
// channels at once (their presences untracked: none yet), and the track, once the database
// answered, was applied all the same: a meta of a channel that no longer exists, which nothing
// ever untracks. Every member saw it for good (and every gateway of the cluster, through
// presence_sync), and it counted against its caller's PRESENCE_KEY_MAX_METAS under the key until
// the gateway restarted: a client sending a track and closing its socket at once left one per
// socket. A real gateway process; real @supabase/realtime-js clients; the database write held by
// a lock on app.presence, so that the socket closes while the track waits for it.

const config = loadConfig();
const db = testDatabase(2);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development' };
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });

let gateway: PotentiaProcess;
const clients: RealtimeClient[] = [];

beforeAll(async () => {
  gateway = await startPotentiaProcess(env);
}, 120_000);

afterAll(async () => {
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await gateway?.stop();
  await db.close();
});

async function join(userId: string, canvasId: string, key: string): Promise<{ client: RealtimeClient; ch: RealtimeChannel }> {
  const client = new RealtimeClient(`${gateway.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: await token(userId) }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const ch = client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } }).on('presence', { event: 'sync' }, () => {});
  const status = await new Promise<string>((resolve) => ch.subscribe((s) => { if (s !== 'CLOSED') resolve(s); }));
  expect(status).toBe('SUBSCRIBED');
  return { client, ch };
}

/** A member's view: presence key → the `tab` of each of its metas, sorted. */
const view = (ch: RealtimeChannel) => Object.fromEntries(Object.entries(ch.presenceState()).sort()
  .map(([key, metas]) => [key, (metas as { tab?: unknown }[]).map((m) => m.tab).sort()]));

/** The realtime-js sockets open on the gateway (potentia_realtime_sockets{protocol="phoenix"}). */
async function phoenixSockets(): Promise<number> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('potentia_realtime_sockets{protocol="phoenix"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** Backends of this database running api.update_presence (waiting for the lock, or not yet done). */
async function presenceWrites(waiting: boolean): Promise<number> {
  const [r] = await db.sql`select count(*)::int as n from pg_stat_activity
                           where datname = current_database() and state = 'active' and query like '%api.update_presence%'
                             and pid <> pg_backend_pid() and (not ${waiting} or wait_event_type = 'Lock')`;
  return r!.n;
}

// (A channel closed by its token's expiry or by lost access takes the same path in the gateway, but
// its update_presence cannot be held past the close here: the expiry comes 5 s after exp and the
// statement's timeout (5 s) first; the access change waits for the same lock.)
it('a track whose socket closed while it waited for the database is never applied: no member shows it, a new member is not sent it, its durable row is cleared', async () => {
  const before = await phoenixSockets();
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const watcher = await join(users.editor!, canvasId, 'watcher');
  expect(await watcher.ch.track({ tab: 'watcher' })).toBe('ok');
  await until(() => JSON.stringify(view(watcher.ch)) === JSON.stringify({ watcher: ['watcher'] }), 10_000, 'the watcher to show itself');

  const leaver = await join(users.owner!, canvasId, 'owner');
  const lock = await db.sql.reserve();
  try {
    await lock`begin`;
    await lock`lock table app.presence in exclusive mode`;
    // the owner's first track: its durable write waits for the lock
    void leaver.ch.track({ tab: 'owner' });
    await until(async () => (await presenceWrites(true)) === 1, 10_000, 'the owner\'s update_presence to wait for the lock');
    // the socket closes while the track waits; the gateway has ended it once its count drops
    await leaver.client.disconnect();
    await until(async () => (await phoenixSockets()) === before + 1, 10_000, 'the gateway to count the owner\'s socket closed');
  } finally {
    await lock`commit`;
    lock.release();
  }
  await until(async () => (await presenceWrites(false)) === 0, 10_000, 'the owner\'s update_presence to finish');

  // a later change on the same gateway: the watcher has every diff before it
  expect(await watcher.ch.track({ tab: 'watcher 2' })).toBe('ok');
  await until(() => JSON.stringify(view(watcher.ch).watcher) === JSON.stringify(['watcher 2']), 10_000, 'the watcher\'s re-track');
  expect(view(watcher.ch)).toEqual({ watcher: ['watcher 2'] });

  // a member joining now is sent the room as the gateway holds it
  const late = await join(users.editor!, canvasId, 'late');
  await until(() => view(late.ch).watcher !== undefined, 10_000, 'the late member to show the watcher');
  expect(view(late.ch)).toEqual({ watcher: ['watcher 2'] });

  // what it wrote is cleared, as a close clears it (the row of a user who left, no longer 'active')
  await until(async () => (await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.owner!}`).length === 0,
    10_000, 'the owner\'s app.presence row to be cleared');
}, 120_000);
