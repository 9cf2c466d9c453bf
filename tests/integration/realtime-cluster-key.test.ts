import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';

// An operator whose gateways sign the realtime cluster's messages with different keys (one with
// REALTIME_CLUSTER_SECRET set, the others deriving theirs from JWT_SECRET: docs/realtime.md,
// "Cluster") sees every gateway count the others' messages as bad_mac and warn the same words.
// Before, nothing said which gateway was the odd one out, nor whom each one heard: no metric or
// log named the key (or where it came from) or the nodes a gateway read. Now each gateway logs its
// key's source and fingerprint at start, and /metrics shows them
// (potentia_realtime_cluster_key_info) and the other gateways it hears
// (potentia_realtime_cluster_nodes). The secret itself appears nowhere.

const db = testDatabase(1);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway', LOG_LEVEL: 'info' };
const secret = randomBytes(36).toString('base64');
/** a and b: the key derived from JWT_SECRET (the development default); odd: REALTIME_CLUSTER_SECRET */
let a: PotentiaProcess;
let b: PotentiaProcess;
let odd: PotentiaProcess;

const metrics = async (g: PotentiaProcess) => (await fetch(`${g.url}/metrics`)).text();
const value = (text: string, series: string) => Number(new RegExp(`^${series.replace(/[{}"]/g, '\\$&')} (\\d+)$`, 'm').exec(text)?.[1] ?? NaN);
/** [source, fingerprint] of a gateway's potentia_realtime_cluster_key_info */
const keyInfo = (text: string) => /^potentia_realtime_cluster_key_info\{source="([^"]+)",fingerprint="([0-9a-f]+)"\} 1$/m.exec(text)?.slice(1, 3);

const streams = async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
  where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n;

beforeAll(async () => {
  [a, b, odd] = await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env), startPotentiaProcess({ ...env, REALTIME_CLUSTER_SECRET: secret })]);
  await until(async () => (await streams()) === 3, 60_000, 'the three gateways\' streams');
}, 120_000);

afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop(), odd?.stop()]);
  await db.close();
});

it('each gateway names its cluster key\'s source and fingerprint (never the secret) and the gateways it hears: the odd one out is seen', async () => {
  // a and b hear each other; each has also read (and rejected) the odd one's messages, and it theirs
  await until(async () => {
    const [ma, mb, mo] = await Promise.all([metrics(a), metrics(b), metrics(odd)]);
    return value(ma, 'potentia_realtime_cluster_nodes') === 1 && value(mb, 'potentia_realtime_cluster_nodes') === 1
      && [ma, mb, mo].every((m) => value(m, 'potentia_realtime_cluster_messages_rejected_total{reason="bad_mac"}') > 0);
  }, 30_000, 'a and b hearing each other, and every gateway rejecting the other key\'s messages');
  const [ma, mb, mo] = await Promise.all([metrics(a), metrics(b), metrics(odd)]);
  // the odd one has read a's and b's messages (rejected), and hears nobody
  expect(value(mo, 'potentia_realtime_cluster_nodes')).toBe(0);
  const [ka, kb, ko] = [keyInfo(ma), keyInfo(mb), keyInfo(mo)];
  expect({ a: ka?.[0], b: kb?.[0], odd: ko?.[0], sameAB: ka?.[1] === kb?.[1], oddDiffers: ko?.[1] !== ka?.[1] })
    .toEqual({ a: 'JWT_SECRET', b: 'JWT_SECRET', odd: 'REALTIME_CLUSTER_SECRET', sameAB: true, oddDiffers: true });
  // the same fingerprint in each one's log at start, beside where it came from
  for (const [g, [source, fingerprint]] of [[a, ka!], [odd, ko!]] as const) {
    expect(g.output()).toMatch(new RegExp(`"clusterKey":\\{"source":"${source}","fingerprint":"${fingerprint}"`));
  }
  // the secret, and the key derived from it, appear in no log and no /metrics
  for (const text of [odd.output(), mo, a.output(), ma]) {
    expect(text).not.toContain(secret);
    expect(text).not.toContain(Buffer.from(secret).toString('hex'));
  }
}, 60_000);
