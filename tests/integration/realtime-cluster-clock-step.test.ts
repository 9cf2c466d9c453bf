import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';
import { clockOffMs, steppedClock } from '../helpers/fake-clock.ts';

// A gateway whose host clock is stepped (NTP correcting a wrong clock, an operator's `date -s`)
// while it runs. g2 runs under libfaketime (LD_PRELOAD, Debian's libfaketime package, installed
// by scripts/setup): its wall clock (Date.now, the HTTP Date header) reads a file's offset, its
// monotonic clock (timers) is left alone. The clock steps back 10 min, more than the freshness
// window (REALTIME_CLUSTER_FRESHNESS_MS, 5 min): docs/realtime.md (Cluster, Freshness) says such a
// gateway reads no other and none reads it (two clusters), each side's `stale` counter rising and
// its log naming the other node and its age.
//
// Seen failing before the cluster's intervals (a peer's silence, the warning's 10 s) were taken on
// the monotonic clock: g2 measured its peers' silence on its wall clock, so after the step g1 was
// heard "10 min in the future" and was not taken for dead for 10 min (its presences shown though
// g2 read none of its messages); and g2 had logged a warning before the step (an unsigned message,
// as a rolling upgrade's older gateways write), so the next one was held back until its wall
// clock passed that warning's 10 s again: the stale warning that says to check the clocks came
// 10 min late.

const STALE_WORDS = 'check the hosts\' clocks (NTP)';
const db = testDatabase(2);
const env = { WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', DATABASE_URL: testDatabaseUrl() };
const clock = steppedClock();
let g1: PotentiaProcess | undefined;
let g2: PotentiaProcess | undefined;

beforeAll(async () => {
  g1 = await startPotentiaProcess(env);
  g2 = await startPotentiaProcess({ ...env, ...clock.env });
}, 120_000);

afterAll(async () => {
  await Promise.all([g1?.stop(), g2?.stop()]);
  await db.close();
  clock.remove();
});

/** `g`'s potentia_realtime_cluster_nodes: the other gateways it hears. */
async function nodes(g: PotentiaProcess): Promise<number> {
  const text = await (await fetch(`${g.url}/metrics`)).text();
  return Number(/^potentia_realtime_cluster_nodes (\d+)$/m.exec(text)?.[1] ?? -1);
}

it('a gateway whose clock steps back by more than the window takes its peers for dead and says to check the clocks, at once', async () => {
  await until(async () => (await nodes(g1!)) === 1 && (await nodes(g2!)) === 1, 60_000, 'g1 and g2 hearing each other');
  // a warning of g2's before the step: something under the cluster's prefix without a MAC
  await db.sql`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${Buffer.from('not a cluster message')}::bytea)`;
  await until(() => g2!.output().includes('without a valid MAC ignored'), 20_000, 'g2\'s warning of the unsigned message');

  clock.step('-10m');
  await until(async () => (await clockOffMs(g2!.url)) < -9 * 60_000, 20_000, 'g2\'s clock 10 min back');

  // g2 reads none of g1's messages now (from 10 min in its future): g1 is silent to it, and is
  // dropped once g2's own heartbeats show its stream carried that silence (7 s); g1 likewise
  await until(async () => (await nodes(g2!)) === 0, 60_000, 'g2 taking g1 for dead');
  await until(async () => (await nodes(g1!)) === 0, 60_000, 'g1 taking g2 for dead');
  // and each says why, within the warning's 10 s
  await until(() => g2!.output().includes(STALE_WORDS), 30_000, 'g2\'s stale warning');
  const warning = g2!.output().split('\n').find((l) => l.includes(STALE_WORDS))!;
  const logged = JSON.parse(warning.slice(warning.indexOf('{'))) as { ageMs: number; own: boolean; reason: string };
  expect({ reason: logged.reason, own: logged.own, minutesFromTheFuture: Math.round(-logged.ageMs / 60_000) })
    .toEqual({ reason: 'stale', own: false, minutesFromTheFuture: 10 });
  await until(() => g1!.output().includes(STALE_WORDS), 30_000, 'g1\'s stale warning');
  expect({ g1: g1!.exited(), g2: g2!.exited() }).toEqual({ g1: null, g2: null });
}, 240_000);
