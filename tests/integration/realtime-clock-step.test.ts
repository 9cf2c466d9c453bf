import { join } from 'node:path';
import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';
import { clockOffMs, steppedClock } from '../helpers/fake-clock.ts';
import { metricValue } from '../helpers/metrics.ts';

// A gateway whose host clock steps FORWARD (NTP correcting a clock that was behind, a VM resumed,
// an operator's `date -s`) while realtime-js clients are joined to it. The gateway runs under
// libfaketime (LD_PRELOAD, Debian's libfaketime package, installed by scripts/setup): its wall
// clock (Date.now, the HTTP Date header) reads a file's offset, its monotonic clock is left alone.
// The step (3 min) is longer than the sockets' idle timeout (60 s, checked every 15 s) and the
// bus's stall probe (2.5 s of silence), shorter than the cluster's freshness window (5 min).
//
// Seen failing before every in-process interval was timed on src/clock.ts's monotonic clock:
// phoenix-socket.ts measured a socket's silence on the wall clock, so the first idle check after
// the step found every socket silent for 3 min and terminated them all at once (realtime-js
// reported CHANNEL_ERROR, reconnected and joined again: closes [1, 1, 1]). Then the clock steps
// back to where it was: before, rate-limit.ts refilled its buckets by the negative interval, so a
// socket's frame bucket was 3 min short and its next frame (the broadcast) closed it.
//
// No timed wait: a silent raw socket opened after the step is terminated by the idle timeout only
// after 60 s of its own silence, by then every socket's idle check (every 15 s) has run since the
// step at least three times.

const config = loadConfig();
const db = testDatabase(2);
const clock = steppedClock();
const LOSSES = 'potentia_realtime_replication_stream_losses_total';
let gateway: PotentiaProcess | undefined;
const clients: RealtimeClient[] = [];
const raw: WebSocket[] = [];

beforeAll(async () => {
  gateway = await startPotentiaProcess({ WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', DATABASE_URL: testDatabaseUrl(),
    ...clock.env });
}, 120_000);

afterAll(async () => {
  for (const ws of raw) ws.terminate();
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await gateway?.stop();
  await db.close();
  clock.remove();
}, 30_000);

it('a step of the wall clock forward past the idle timeout, then back, ends no socket and refuses no message; the stream is not taken for lost', { timeout: 240_000 }, async () => {
  await until(async () => (await fetch(`${gateway!.url}/ready`).then((r) => r.status, () => 0)) === 200, 60_000, 'the gateway ready (its stream up)');
  const { canvasId, users } = await createCanvas(db.sql);
  // valid long after the step: the token's exp is compared with the gateway's wall clock, as it must be
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 24 * 3600 });
  // heartbeats every 45 s (under the idle timeout): the step comes before a client's first one, so
  // each socket's last frame was its join, before the step
  const closes = [0, 0, 0];
  const connect = (i: number) => {
    const c = new RealtimeClient(`${gateway!.url.replace(/^http/, 'ws')}/realtime/v1`, {
      params: { apikey: token }, transport: WebSocket as any, heartbeatIntervalMs: 45_000, timeout: 10_000,
    });
    c.stateChangeCallbacks.close.push([`clock-step-${i}`, () => { closes[i]!++; }]);
    clients.push(c);
    return c;
  };
  // every status each channel's subscribe callback saw: a socket ended shows CHANNEL_ERROR, then SUBSCRIBED again
  const statuses: string[][] = [[], [], []];
  const deltas: number[][] = [[], []];
  const broadcasts: unknown[] = [];
  const canvasChannels = [0, 1].map((i) => connect(i).channel(`canvas:${canvasId}`, { config: { private: true } })
    .on('broadcast', { event: 'block_op' }, (m) => deltas[i]!.push(Number(m.payload.canvas_seq))));
  const room = `room:clock-step-${process.pid}`;
  const sender = connect(2).channel(room, { config: { broadcast: { self: false } } });
  const receiver = canvasChannels[0]!.socket.channel(room, { config: { broadcast: { self: false } } })
    .on('broadcast', { event: 'ping' }, (m) => broadcasts.push(m.payload));
  const join = (ch: typeof sender, i: number) => new Promise<string>((resolve) => {
    ch.subscribe((status) => {
      statuses[i]!.push(status);
      if (status !== 'CLOSED') resolve(status);
    });
  });
  expect(await Promise.all([join(canvasChannels[0]!, 0), join(canvasChannels[1]!, 1), join(sender, 2)])).toEqual(['SUBSCRIBED', 'SUBSCRIBED', 'SUBSCRIBED']);
  expect((await subscribed(receiver)).status).toBe('SUBSCRIBED');
  const create = async () => (await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).canvas_seq!;
  const before = [Number(await create())];
  await until(() => deltas.every((d) => d.length === 1), 15_000, 'the first delta on both sockets');
  const lossesBefore = await metricValue(gateway!.url, LOSSES);
  expect(lossesBefore).toBe(0);

  clock.step('+3m');
  await until(async () => (await clockOffMs(gateway!.url)) > 170_000, 20_000, 'the gateway\'s clock 3 min ahead');

  // a silent socket opened now: terminated by the idle timeout after 60 s of its own silence
  const witness = new WebSocket(`${gateway!.url.replace(/^http/, 'ws')}/realtime/v1/websocket?apikey=${token}&vsn=1.0.0`);
  raw.push(witness);
  await new Promise((resolve, reject) => { witness.once('open', resolve); witness.once('error', reject); });
  await until(() => witness.readyState === WebSocket.CLOSED, 150_000, 'the silent witness socket ended by the idle timeout', 200);

  // every realtime-js socket is still the one it joined on, and still receives
  const after = [Number(await create())];
  sender.send({ type: 'broadcast', event: 'ping', payload: { after: 'step' } });
  await until(() => deltas.every((d) => d.length === 2) && broadcasts.length === 1, 15_000, 'the delta and the broadcast sent after the step');
  expect({ closes, statuses, deltas, broadcasts }).toEqual({
    closes: [0, 0, 0],
    statuses: [['SUBSCRIBED'], ['SUBSCRIBED'], ['SUBSCRIBED']],
    deltas: [[...before, ...after], [...before, ...after]],
    broadcasts: [{ after: 'step' }],
  });

  // and back (to the test's clock): a rate limit's bucket refilled by a negative interval held
  // every message (and frame: the socket closed) back for the step's length
  clock.step('+0');
  await until(async () => Math.abs(await clockOffMs(gateway!.url)) < 10_000, 20_000, 'the gateway\'s clock back');
  after.push(Number(await create()));
  sender.send({ type: 'broadcast', event: 'ping', payload: { after: 'step back' } });
  await until(() => deltas.every((d) => d.length === 3) && broadcasts.length === 2, 15_000, 'the delta and the broadcast sent after the step back');
  expect({ closes, statuses, deltas, broadcasts }).toEqual({
    closes: [0, 0, 0],
    statuses: [['SUBSCRIBED'], ['SUBSCRIBED'], ['SUBSCRIBED']],
    deltas: [[...before, ...after], [...before, ...after]],
    broadcasts: [{ after: 'step' }, { after: 'step back' }],
  });

  // the bus did not take its stream for stalled or lost
  expect(await metricValue(gateway!.url, LOSSES)).toBe(lossesBefore);
  expect(gateway!.output()).not.toMatch(/replication stream stalled/);
  expect(gateway!.exited()).toBeNull();
});
