import { type RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { until } from '../helpers/wait.ts';

// The realtime cluster's dead-node rule (src/realtime/cluster.ts) when a gateway cannot send its
// own messages: a node is dead once silent and once this node's own heartbeats, sent after it went
// silent, came back on the stream. A gateway whose pool is down (its replication stream up) has no
// heartbeat to come back, and it showed a killed gateway's users for as long as its pool was down.
// Past sendOutageMs without a send it falls back to silence alone.
//
// Three gateway processes: A's pool (DATABASE_URL) goes through a TCP proxy that the test cuts,
// its replication stream (DIRECT_DATABASE_URL) does not; B stays up; C is killed with SIGKILL.

const config = loadConfig();
const db = testDatabase(2);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
/** cluster.ts defaults: heartbeat every 2 s, dead after 7 s of silence, swept every 0.5 s, send outage 2 × 7 s. */
const HEARTBEAT_MS = 2000;
const DEAD_AFTER_MS = 7000;
const SEND_OUTAGE_MS = 2 * DEAD_AFTER_MS;
const SWEEP_MS = HEARTBEAT_MS / 4;

const env = { WORKER_MODE: 'off', NODE_ENV: 'development' };
const realtime = realtimeClients({ timeoutMs: 10_000 });
let proxy: TcpProxy;
let a: PotentiaProcess;
let b: PotentiaProcess;
let c: PotentiaProcess;

/** Waits until `n` gateway replication streams are streaming. */
async function streaming(n: number): Promise<void> {
  await until(async () => (await db.sql`select from pg_stat_replication r join pg_stat_activity s using (pid)
                                        where s.datname = current_database() and s.application_name = 'potentia-realtime-bus'
                                          and r.state = 'streaming'`).length >= n, 60_000, `${n} gateway streams`, 50);
}

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432));
  const pooled = databaseUrlThrough(proxy, direct);
  [a, b, c] = await Promise.all([
    startPotentiaProcess({ ...env, DATABASE_URL: pooled, DIRECT_DATABASE_URL: direct.toString() }),
    startPotentiaProcess({ ...env, DATABASE_URL: direct.toString() }),
    startPotentiaProcess({ ...env, DATABASE_URL: direct.toString() }),
  ]);
  await streaming(3);
}, 120_000);

afterAll(async () => {
  proxy?.restore();
  await realtime.disconnectAll();
  await Promise.all([a, b, c].map((g) => g?.stop()));
  await proxy?.close();
  await db.close();
}, 30_000);

const keys = (ch: RealtimeChannel) => Object.keys(ch.presenceState()).sort();

it(`a gateway that cannot send drops a killed gateway's presences within ${SEND_OUTAGE_MS + SWEEP_MS} ms of its last send, and keeps the living ones`, { timeout: 120_000 }, async () => {
  const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
  const channel = async (g: PotentiaProcess, user: string) => {
    const ch = realtime.connect(g.url, await token(user), '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: user } } });
    ch.on('presence', { event: 'sync' }, () => {});
    return ch;
  };
  const onA = await channel(a, users.owner!);
  const onB = await channel(b, users.editor!);
  const onC = await channel(c, users.viewer!);
  let leftAt: number | null = null;
  onA.on('presence', { event: 'leave' }, (p) => { if (p.key === users.viewer) leftAt ??= Date.now(); });
  for (const ch of [onA, onB, onC]) expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  expect(await onB.track({ name: 'editor' })).toBe('ok');
  expect(await onC.track({ name: 'viewer' })).toBe('ok');
  await until(() => keys(onA).length === 2, 10_000, 'B\'s and C\'s presences on A');
  const outputBefore = a.output().length;

  // A's pool goes: every cluster message it sends fails from now on (its stream stays up: it
  // still hears B's heartbeats); then C dies
  const cutAt = Date.now();
  proxy.cut();
  c.child.kill('SIGKILL');

  await until(() => leftAt !== null, SEND_OUTAGE_MS + SWEEP_MS + 5000, 'C\'s presence leaving A');
  // A's last send was at most a heartbeat before the cut: not before the fallback could apply ...
  expect(leftAt! - cutAt).toBeGreaterThanOrEqual(SEND_OUTAGE_MS - HEARTBEAT_MS - 500);
  // ... and within it (+1 s for the frame's trip to the client on a loaded machine)
  expect(leftAt! - cutAt).toBeLessThanOrEqual(SEND_OUTAGE_MS + SWEEP_MS + 1000);
  expect(a.output().slice(outputBefore)).toMatch(/realtime cluster messages cannot be sent/);
  // B, alive, is heard all along: still shown
  await new Promise((r) => setTimeout(r, 2 * HEARTBEAT_MS));
  expect(keys(onA)).toEqual([users.editor]);
  expect(a.exited()).toBeNull();
});
