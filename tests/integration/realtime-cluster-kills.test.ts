import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { CLUSTER_MESSAGE_PREFIX } from '../../src/realtime/bus.ts';
import { decodeMessage, encodeFrame, encodeMessage, readHead } from '../../src/realtime/cluster.ts';
import { clusterKeys } from '../../src/realtime/cluster-key.ts';
import { clusterMessagesInWal } from '../helpers/cluster-wal.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors } from '../helpers/fixtures.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { processTcpSockets } from '../helpers/sockets.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

// "Nothing acknowledged is ever lost", across the realtime cluster (src/realtime/cluster.ts): REST
// broadcasts (POST /realtime/v1/api/broadcast, 202) to a private canvas channel, sent to one
// gateway process, reach realtime-js subscribers on another whose replication stream is lost,
// counted per message id. A gateway's stream is a temporary slot made again where the WAL is, so
// what the others sent while it was down is in none of its streams: it asks them to send it again.
//
// It asked each node for its broadcasts after the last number it had heard of it, so a node it had
// not heard of when its stream was lost (started meanwhile, or whose first heartbeat had not come
// by yet) was asked nothing: all it sent meanwhile was lost. Seen: the first case lost 20 of 20
// every run; the second (the attack: every pool connection and walsender of the gateways
// terminated every 50 ms, the receiver's walsender already while the sender starts) lost in 4
// rounds of 5 (150, 45, 30 and 155 of about 150). Now a node asks for stretches of WAL its streams
// did not carry, of every node, including one heard of later (src/realtime/cluster-gaps.ts).
//
// And a broadcast whose statement had gone into the WAL while the receiver's stream was down, but
// whose answer had not reached its gateway when the receiver's request came, was not in that
// gateway's sent log yet: it answered the request without it, and the broadcast, acknowledged
// right after, was never sent again. Made to happen every time by a proxy in front of the sending
// gateway's pool that holds the answer to that one statement (seen failing: 1 of 1 lost, every
// run); now a request waits for the statement in flight.

const config = loadConfig();
const db = testDatabase(3);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development', POTENTIA_ROLE: 'gateway' };
const realtime = realtimeClients({ timeoutMs: 10_000 });
/** [sender, receiver]: the receiver starts first, the sender in the first case */
const gateways: PotentiaProcess[] = [];
let anon = '';
let proxy: AnswerHoldProxy;

/**
 * A loopback proxy in front of Postgres that holds back the answer to one statement: armed with
 * a marker (text its parameters carry, raw or hex-encoded as a bytea), Postgres's answers on the
 * connection that sends it are kept from the client until release(). Otherwise bytes pass unchanged.
 */
type AnswerHoldProxy = { port: number; hold(marker: string): Promise<void>; release(): void; close(): void };
async function startAnswerHoldProxy(upstreamPort: number): Promise<AnswerHoldProxy> {
  let armed: { markers: Buffer[]; held: () => void } | null = null;
  let releases: (() => void)[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: upstreamPort });
    sockets.add(client).add(upstream);
    let holding: { chunks: Buffer[]; held: () => void } | null = null;
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.on('data', (chunk: Buffer) => {
      if (armed && armed.markers.some((m) => chunk.includes(m))) {
        holding = { chunks: [], held: armed.held };
        armed = null;
        const h = holding;
        releases.push(() => {
          if (holding !== h) return;
          holding = null;
          for (const c of h.chunks) client.write(c);
        });
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!holding) return void client.write(chunk);
      holding.chunks.push(chunk);
      holding.held(); // Postgres answered: the statement ran
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    hold: (marker) => new Promise<void>((held) => {
      armed = { markers: [Buffer.from(marker), Buffer.from(Buffer.from(marker).toString('hex'))], held };
    }),
    release() {
      for (const r of releases.splice(0)) r();
    },
    close() {
      server.close();
      for (const s of sockets) s.destroy();
    },
  };
}

/** A logical slot of the test's own (test_decoding), to read the cluster's messages in the WAL: made by the last case. */
const slot = `kills_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
type Frame = ReturnType<typeof decodeMessage>[number];
/** Every cluster frame in the WAL since the slot was made (test_decoding prints a message's bytes after `content:`). */
async function clusterFrames() {
  return (await clusterMessages()).flatMap((content) => decodeMessage(content));
}

/** Every cluster message's content in the WAL since the slot was made. */
const clusterMessages = () => clusterMessagesInWal(db.sql, slot);

const streams = async () => (await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
  where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`)[0]!.n;

beforeAll(async () => {
  anon = await apiKey(config.auth.jwtSecret, 'anon');
  proxy = await startAnswerHoldProxy(Number(new URL(testDatabaseUrl()).port || 5432));
  gateways[1] = await startPotentiaProcess(env);
  await until(async () => (await streams()) === 1, 60_000, 'the receiving gateway\'s stream');
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all(gateways.map((g) => g?.stop()));
  proxy?.close();
  await db.sql`select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = ${slot}`.catch(() => {});
  await db.close();
});

/** A private canvas channel subscribed on the receiving gateway (its owner), the ids it got, and its editors' REST senders to gateway 1. */
async function room(sender = () => gateways[0]!) {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 4);
  const topic = `canvas:${canvasId}`;
  const got = new Set<string>();
  /** ids delivered more than once (a resend admitted beside the stream's own delivery, or twice) */
  const twice = new Set<string>();
  const ch = realtime.connect(gateways[1]!.url, await token(users[0]!), '2.0.0').channel(topic, { config: { private: true } })
    .on('broadcast', { event: 'n' }, (m) => {
      const id = (m.payload as { id: string }).id;
      if (got.has(id)) twice.add(id);
      got.add(id);
    });
  expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  const acked: string[] = [];
  const statuses: Record<number, number> = {};
  let inFlight = 0;
  /** Sends 5 messages as editor `k`; their ids count as acknowledged when answered 202 (503: not acknowledged). */
  const send = async (k: number, ids = Array.from({ length: 5 }, () => randomUUID())) => {
    inFlight++;
    const res = await fetch(`${sender().url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: anon, authorization: `Bearer ${await token(users[1 + k]!)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: ids.map((id) => ({ topic, event: 'n', payload: { id }, private: true })) }),
    }).catch(() => ({ status: 0 })).finally(() => { inFlight--; });
    statuses[res.status] = (statuses[res.status] ?? 0) + 1;
    if (res.status === 202) acked.push(...ids);
  };
  const lost = () => acked.filter((id) => !got.has(id));
  /** Every acknowledged id delivered on the receiving gateway, once (waits for the resends; fails naming what is missing or twice). */
  const allDelivered = async () => {
    try {
      await until(() => lost().length === 0, 30_000, 'every acknowledged broadcast on the receiving gateway');
    } finally {
      expect({ lost: lost().length, twice: twice.size, of: acked.length, statuses }).toEqual({ lost: 0, twice: 0, of: acked.length, statuses });
    }
  };
  return { got, acked, send, allDelivered, statuses, get inFlight() { return inFlight; } };
}

it('broadcasts of a gateway started while the receiving gateway\'s stream is down reach its subscribers', async () => {
  const r = await room();
  // the receiver's stream lost, and held down: a new slot waits for every transaction with an xid
  const tx = await reservedTransaction(db.sql);
  try {
    await tx.conn`select pg_current_xact_id()`;
    await db.sql`select pg_terminate_backend(pid) from pg_stat_activity
                 where datname = current_database() and application_name = 'potentia-realtime-bus'`;
    await until(async () => (await streams()) === 0, 20_000, 'the receiver\'s stream down');
    // a gateway the receiver never heard of: it sends (its pool works; its own stream waits too)
    // (its pool through the proxy, for the last case; its stream direct)
    const proxied = databaseUrlThrough(proxy, testDatabaseUrl());
    gateways[0] = await startPotentiaProcess({ ...env, DATABASE_URL: proxied, DIRECT_DATABASE_URL: testDatabaseUrl() });
    for (let i = 0; i < 4; i++) await r.send(i);
    expect(r.acked.length).toBe(20);
    expect(r.got.size).toBe(0);
  } finally {
    await tx.release();
  }
  await until(async () => (await streams()) === 2, 60_000, 'both streams');
  await r.allDelivered();
}, 120_000);

/** Terminates, every 50 ms until stop(), the receiver's walsender (`all` false) or every pool connection and walsender of the gateways (`all` true). */
function killer() {
  let stop = false;
  let all = false;
  let kills = 0;
  const done = (async () => {
    while (!stop) {
      const ports = processTcpSockets(gateways[1]!.pid).map((s) => s.localPort);
      const [row] = await db.sql<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
        where datname = current_database() and pid <> pg_backend_pid() and application_name like 'potentia%'
          and application_name <> 'potentia-test' and backend_type in ('client backend', 'walsender')
          and (${all} or (backend_type = 'walsender' and client_port = any(${ports}::int[])))`;
      kills += row!.n;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return {
    all() { all = true; },
    get kills() { return kills; },
    async stop() { stop = true; await done; },
  };
}

// CLUSTER_KILL_ROUNDS=N repeats the round (1 in CI)
const rounds = Number(process.env.CLUSTER_KILL_ROUNDS ?? 1);

it.each(Array.from({ length: rounds }, (_, i) => [i]))(
  'broadcasts of a gateway just started, acknowledged while every pool connection and walsender is terminated every 50 ms, reach the other gateway (round %i)', async () => {
    let sender: PotentiaProcess | undefined;
    const r = await room(() => sender!);
    // the receiver's stream cycling before the sender starts: the sender's first heartbeat may not come by
    const kill = killer();
    try {
      try {
        sender = await startPotentiaProcess(env);
        kill.all();
        let stop = false;
        const senders = [0, 1, 2, 3].map(async (k) => {
          while (!stop) {
            await r.send(k);
            await new Promise((resolve) => setTimeout(resolve, 40));
          }
        });
        // as long as the senders need for 150 acknowledged messages (30 requests answered 202; the
        // others 503, a backend terminated under their statement): about 2 s on an idle machine (3-10
        // answered 503), the round 21-26 s with pgbench and two busy loops beside it (34-64 answered
        // 503). A 30 s bound failed CI twice
        await until(() => r.acked.length >= 150, 90_000, '150 acknowledged broadcasts').catch((err: Error) => {
          throw new Error(`${err.message}: ${r.acked.length} acknowledged, answers ${JSON.stringify(r.statuses)}, `
            + `${r.inFlight} requests unanswered, ${kill.kills} backends terminated`);
        }).finally(() => { stop = true; });
        await Promise.all(senders);
      } finally {
        await kill.stop();
      }
      expect(kill.kills).toBeGreaterThan(10);
      await until(async () => (await streams()) === gateways.filter(Boolean).length + 1, 60_000, 'every gateway\'s stream back');
      await r.allDelivered();
    } finally {
      // whatever failed above: a sender left running on the test database is a node of every later test's cluster
      await sender?.stop();
    }
  }, 240_000);

it('a broadcast in the WAL before the receiver\'s stream came back, but not yet answered to its gateway when the receiver asked, is sent again', async () => {
  const r = await room();
  // the receiver has heard of the sender (it asks it by name)
  await r.send(0);
  await r.allDelivered();
  // a public room on the sender: a marker sent by the receiver arrives there after the receiver's requests
  const markers = new Set<string>();
  const markerTopic = `marker-${randomUUID()}`;
  const onSender = realtime.connect(gateways[0]!.url, anon, '2.0.0').channel(markerTopic)
    .on('broadcast', { event: 'm' }, (m) => { markers.add((m.payload as { id: string }).id); });
  expect((await subscribed(onSender)).status).toBe('SUBSCRIBED');
  const streamUp = async () => /^potentia_realtime_replication_stream_up 1$/m.test(await (await fetch(`${gateways[1]!.url}/metrics`)).text());

  // the receiver's stream lost and held down (its walsender alone: the sender's stream goes on)
  const ports = processTcpSockets(gateways[1]!.pid).map((s) => s.localPort);
  const tx = await reservedTransaction(db.sql);
  let sending: Promise<void> | undefined;
  const id = randomUUID();
  try {
    await tx.conn`select pg_current_xact_id()`;
    const [terminated] = await db.sql<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where datname = current_database() and backend_type = 'walsender' and client_port = any(${ports}::int[])`;
    expect(terminated!.n).toBe(1);
    await until(async () => !(await streamUp()), 20_000, 'the receiver\'s stream down');
    // the broadcast goes into the WAL; its answer is held
    const held = proxy.hold(id);
    sending = r.send(1, [id]);
    await held;
  } finally {
    await tx.release();
  }
  try {
    // the receiver's new stream starts after the broadcast; its requests go out, then its marker,
    // which the sender hears after them
    await until(streamUp, 60_000, 'the receiver\'s stream back');
    const marker = randomUUID();
    const res = await fetch(`${gateways[1]!.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic: markerTopic, event: 'm', payload: { id: marker } }] }),
    });
    expect(res.status).toBe(202);
    await until(() => markers.has(marker), 20_000, 'the receiver\'s marker on the sender');
  } finally {
    proxy.release();
    await sending;
  }
  expect(r.acked).toContain(id);
  await r.allDelivered();
}, 120_000);

// A request repeated (every 4 s, until the sender's heartbeat says it answered) while the sender's
// answer waits (here its statement in flight, held; a pool whose connections are all busy does
// the same) queued one more copy of every broadcast asked for each time: when the statement
// answered, each went out again as many times as the request had come (memory and WAL growing
// with the wait, by up to the 32 MiB log per request). Seen failing: each of the broadcasts sent
// again twice. Now a sender replays to a node one request at a time; one that comes meanwhile is
// asked again later, if it still needs to be.
it('a request repeated while the sender\'s answer waits for its statement in flight sends the broadcasts again once', async () => {
  const r = await room();
  await r.send(0);
  await r.allDelivered();
  const streamUp = async () => /^potentia_realtime_replication_stream_up 1$/m.test(await (await fetch(`${gateways[1]!.url}/metrics`)).text());
  const ports = processTcpSockets(gateways[1]!.pid).map((s) => s.localPort);
  const tx = await reservedTransaction(db.sql);
  let sending: Promise<void> | undefined;
  const id = randomUUID();
  try {
    await tx.conn`select pg_current_xact_id()`;
    const [terminated] = await db.sql<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
      where datname = current_database() and backend_type = 'walsender' and client_port = any(${ports}::int[])`;
    expect(terminated!.n).toBe(1);
    await until(async () => !(await streamUp()), 20_000, 'the receiver\'s stream down');
    // broadcasts the receiver's streams do not carry, then one whose answer is held: the sender's statements wait behind it
    for (let k = 1; k < 3; k++) await r.send(k);
    const held = proxy.hold(id);
    sending = r.send(3, [id]);
    await held;
  } finally {
    await tx.release();
  }
  try {
    // the slot waits for no transaction now; the receiver's stream comes back and asks, and asks again 4 s later
    await db.sql`select pg_create_logical_replication_slot(${slot}, 'test_decoding')`;
    await until(streamUp, 60_000, 'the receiver\'s stream back');
    await until(async () => (await clusterFrames()).filter((f) => f.header.type === 'sync_request' && f.header.lost).length >= 2,
      30_000, 'the receiver\'s request, twice, while the sender\'s statement is held');
  } finally {
    proxy.release();
    await sending;
  }
  await r.allDelivered();
  // the sender's answer (its heartbeat) is in the WAL after everything it sent again
  await until(async () => (await clusterFrames()).some((f) => f.header.type === 'heartbeat' && Object.keys(f.header.answered ?? {}).length > 0),
    30_000, 'the sender\'s answer');
  const times = new Map<number, number>();
  for (const f of await clusterFrames()) {
    if (f.header.type === 'broadcast' && f.header.to !== undefined) times.set(f.header.seq!, (times.get(f.header.seq!) ?? 0) + 1);
  }
  expect(times.size).toBeGreaterThanOrEqual(10);
  expect([...times.values()].filter((n) => n > 1).length).toBe(0);
}, 120_000);

// A request repeated after the sender had answered it, before the heartbeat naming it reached the
// asking node (its stream behind by more than the 4 s between requests: seen with pgbench and two
// busy loops beside this file), had every broadcast it named sent again: each went into the WAL
// twice (the receiver drops the copy, so only the WAL and the fan-out work grew). Made to happen
// every time: the previous case's request written into the WAL again after the answer, as a new
// message of its node (a number above its last: written again as is, the message itself would be
// dropped unread as replayed). Seen failing: all 11 sent again. Now a node ignores a request whose
// number it has answered.
it('a request repeated after the sender answered it sends nothing again', async () => {
  // the previous case's request: the last asking for lost stretches that its node answered (a
  // heartbeat of it names the request) by sending broadcasts again (the receiver may also be
  // asking a node gone since; a node may ask for a stretch that held none of the other's)
  const frames = await clusterFrames();
  const requests = frames.map((f) => f.header).filter((h) => h.type === 'sync_request' && h.lost) as { node: string; to: string; req: number }[];
  const answered = (r: (typeof requests)[number]) => frames.some((f) => f.header.type === 'heartbeat' && f.header.node === r.to
    && f.header.answered?.[r.node] === r.req);
  const resentTo = (node: string) => frames.filter((f) => f.header.type === 'broadcast' && f.header.to === node).length;
  const request = requests.filter((r) => answered(r) && resentTo(r.node) > 0).at(-1);
  expect(request).toBeDefined();
  const { node: receiver, to: sender, req } = request!;
  const before = resentTo(receiver);
  expect(before).toBeGreaterThanOrEqual(10);
  // the same request again, as the cluster writes it, signed with the gateways' key (derived from
  // their JWT secret, this test's too): a message without it is dropped before it is read; and
  // numbered far above the receiver's last message (the sender drops one at or below the last it
  // read of the receiver; the receiver's own, meanwhile, stay below it and are dropped: this is
  // the file's last case)
  const numbers = (await clusterMessages()).map(readHead).filter((h) => h.node === receiver).map((h) => h.number);
  const number = numbers.reduce((a, b) => (b > a ? b : a), 0n) + 1_000_000n;
  const message = encodeMessage([encodeFrame(request as Frame['header'])], clusterKeys({ jwtSecret: config.auth.jwtSecret })!.sign, receiver, number);
  await db.sql`select pg_logical_emit_message(false, ${CLUSTER_MESSAGE_PREFIX}, ${message}::bytea)`; // as the cluster writes them
  // two of the sender's heartbeats after it: it has read it (its stream is up) and would have answered by then
  const seen = frames.length;
  await until(async () => {
    const now = await clusterFrames();
    const at = now.findIndex((f, i) => i >= seen && f.header.type === 'sync_request' && f.header.node === receiver && f.header.req === req);
    return at >= 0 && now.slice(at).filter((f) => f.header.type === 'heartbeat' && f.header.node === sender).length >= 2;
  }, 30_000, 'two heartbeats of the sender after the repeated request');
  const after = (await clusterFrames()).filter((f) => f.header.type === 'broadcast' && f.header.to === receiver).length;
  expect(after - before).toBe(0);
}, 60_000);
