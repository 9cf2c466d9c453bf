import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { decodeMessage, encodeFrame, encodeMessage } from '../../src/realtime/cluster.ts';
import { clusterKeys } from '../../src/realtime/cluster-key.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// Cluster messages a database user emits itself (src/realtime/cluster.ts). pg_logical_emit_message
// is granted to PUBLIC: any role that can run SQL (here the API role `authenticated`, as a DBA's
// script, a reporting login or an extension would) writes messages under the cluster's prefix,
// and every gateway reads them. A `sync_request` naming no gateway (`to` null: the presence
// request every gateway sends after its stream reconnects) but carrying `lost` (the stretches of
// WAL a gateway asks one gateway for, by its id) made every gateway send again every broadcast of
// its last 60 s (up to 32 MiB) to a node that does not exist: one message of a few bytes, from a
// role that knows no gateway's id, wrote that much WAL per gateway, as often as it was sent.
// Seen failing: 20 of the gateway's 20 broadcasts sent again to the forged node. Now a request
// for broadcasts is answered only when it names this gateway (as every gateway's requests do).
// Since the cluster's messages are authenticated (a MAC under a key the gateways share,
// realtime-cluster-mac.test.ts), such a role cannot write one any gateway reads; the message here
// is signed with the gateways' key (derived from their JWT secret, this test's too), as a gateway
// of another version with the same key could write it: a request naming no gateway is still not
// answered.

const config = loadConfig();
const db = testDatabase(3);
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' };
const realtime = realtimeClients({ timeoutMs: 10_000 });
const slot = `h_forged_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
let gateway: PotentiaProcess;
let anon = '';

beforeAll(async () => {
  anon = await apiKey(config.auth.jwtSecret, 'anon');
  gateway = await startPotentiaProcess(env);
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await gateway?.stop();
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
});

/** Every cluster frame in the WAL since the slot was made (test_decoding prints a message's bytes after `content:`). */
async function clusterFrames() {
  return (await clusterMessagesInWal(db.sql, slot)).flatMap((content) => decodeMessage(content));
}

async function restBroadcast(topic: string, payloads: Record<string, unknown>[]) {
  const res = await fetch(`${gateway.url}/realtime/v1/api/broadcast`, {
    method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' },
    body: JSON.stringify({ messages: payloads.map((payload) => ({ topic, event: 'n', payload })) }),
  });
  expect({ status: res.status, body: res.status === 202 ? '' : await res.text() }).toEqual({ status: 202, body: '' });
}

it('a sync_request for broadcasts naming no gateway, emitted by a database user, makes no gateway send its broadcasts again', async () => {
  const topic = `forged-${randomUUID()}`;
  const marks = new Set<string>();
  const ch = realtime.connect(gateway.url, anon, '2.0.0').channel(topic)
    .on('broadcast', { event: 'mark' }, (m) => { marks.add((m.payload as { id: string }).id); });
  expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  // the gateway's sent log: 20 broadcasts
  for (let k = 0; k < 2; k++) await restBroadcast(topic, Array.from({ length: 10 }, (_, i) => ({ i: 10 * k + i })));
  await db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`;

  // an API role, not the gateway's: it knows no gateway's id
  const forged = randomUUID();
  const mark = randomUUID();
  const content = encodeMessage([
    encodeFrame({ type: 'sync_request', node: forged, to: null, lost: [['0/1', 'FFFFFFFF/FFFFFFFF']], req: 1 }),
    // then a broadcast of its own, to a public room: seen by the subscriber once the gateway handled the request
    encodeFrame({ type: 'broadcast', node: forged, key: `public:${topic}`, event: 'mark', encoding: 'json' }, Buffer.from(JSON.stringify({ id: mark }))),
  ], clusterKeys({ jwtSecret: config.auth.jwtSecret })!.sign, forged, 1n);
  await db.sql.begin(async (tx) => {
    await tx`set local role authenticated`;
    await tx`select pg_logical_emit_message(false, 'potentia.realtime', ${content}::bytea), pg_current_xact_id()`;
  });
  await until(() => marks.has(mark), 20_000, 'the forged message handled by the gateway');
  // a broadcast of the gateway's own after that: whatever it sent for the request went out before it
  const after = randomUUID();
  await restBroadcast(topic, [{ after }]);
  await until(async () => (await clusterFrames()).some((f) => f.header.type === 'broadcast' && f.body.toString().includes(after)), 20_000, 'the later broadcast in the WAL');

  const resent = (await clusterFrames()).filter((f) => f.header.type === 'broadcast' && f.header.to === forged);
  expect(resent.length).toBe(0);
}, 120_000);
