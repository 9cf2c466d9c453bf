import { randomUUID } from 'node:crypto';
import { RealtimeClient, type RealtimeChannel } from '@supabase/realtime-js';
import postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateCluster } from '../../scripts/lib/private-cluster.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { addMember, createCanvas } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1, type H1Conn } from '../helpers/h1.ts';
import { startMigratedCluster } from '../helpers/migrated-cluster.ts';
import { sleep, until } from '../helpers/wait.ts';

// PostgreSQL restarted under a production-shaped deployment: two API + gateway processes
// (`--role all`, WORKER_MODE=external) and two worker processes (`--role worker`) on a private
// cluster, writers mutating over HTTP on both APIs, an H1 and a realtime-js subscriber (with
// presence) on each gateway.
// - A fast shutdown (`pg_ctl stop -m fast`, what `systemctl restart postgresql` does) completes
//   while the gateways stream: a walsender exits only once its client confirmed exactly what it
//   was sent, and the bus confirmed one byte more, so the server never shut down.
// - While the server is down every process stays up: /health 200, /ready 503, a mutation 503 with
//   Retry-After; after it is back every process is ready again by itself.
// - Every mutation answered 200 is in the log exactly once, canvas_seq has no gap, every subscriber
//   on both gateways receives every operation once and in order, presence is whole again on both,
//   and the workers embed every block's final content.
// - The same for pg_terminate_backend of every backend at once (a failover's or an operator's
//   purge of connections) under load, and for one backend, then one walsender, killed with
//   SIGKILL (the server's crash-restart).
// - After each, every gateway streams from one temporary replication slot and no other is left.

const config = loadConfig();
let cluster: PrivateCluster;
let admin: postgres.Sql;
let apis: PotentiaProcess[] = [];
let workers: PotentiaProcess[] = [];
const clients: RealtimeClient[] = [];
const sockets: H1Conn[] = [];

beforeAll(async () => {
  cluster = await startMigratedCluster();
  admin = postgres(cluster.url('potentia'), { max: 2, onnotice: () => {} });
  await admin`update app.settings set value = '100000' where key = 'mutations_per_minute'`;
  await admin`update app.endpoint_limits set max_hits = 100000`;
  const env = { DATABASE_URL: cluster.url('potentia'), NODE_ENV: 'development', WORKER_POLL_INTERVAL_MS: '500', WORKER_HEARTBEAT_MS: '500',
                WORKER_STALE_MS: '3000', EMBED_DEBOUNCE_MS: '100', EMBED_MAX_WAIT_MS: '1000' };
  const start = async (role: string, extra: Record<string, string> = {}) =>
    startPotentiaProcess({ ...env, ...extra, POTENTIA_ROLE: role, PORT: '0' });
  apis = await Promise.all([start('all', { WORKER_MODE: 'external' }), start('all', { WORKER_MODE: 'external' })]);
  workers = await Promise.all([start('worker'), start('worker')]);
}, 180_000);

afterAll(async () => {
  for (const s of sockets) s.ws.terminate();
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await Promise.all([...apis, ...workers].map((p) => p.stop()));
  await admin?.end({ timeout: 1 });
  await cluster?.destroy();
}, 90_000);

const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const all = () => [...apis, ...workers];

async function status(url: string, init: RequestInit = {}): Promise<{ status: number; retryAfter: string | null; body: any }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(15_000) });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json().catch(() => null) };
}

/** A canvas with four writers (two on each API) and an H1 and a realtime-js subscriber on each gateway. */
async function scene() {
  const { canvasId, workspaceId, users } = await createCanvas(admin);
  const writers = [users.owner!];
  for (let i = 0; i < 3; i++) writers.push(await addMember(admin, users.owner!, workspaceId, 'editor', `writer${i}`));
  const watchers = [await addMember(admin, users.owner!, workspaceId, 'viewer', 'watcher0'), await addMember(admin, users.owner!, workspaceId, 'viewer', 'watcher1')];
  const h1 = await Promise.all(apis.map(async (api, i) => {
    const conn = await openH1(api.url, canvasId, await token(watchers[i]!), '&since_seq=0');
    sockets.push(conn);
    await conn.next((m) => m.type === 'resumed');
    return conn;
  }));
  const broadcasts: number[][] = [[], []];
  const channels: RealtimeChannel[] = [];
  for (const [i, api] of apis.entries()) {
    const client = new RealtimeClient(`${api.url.replace(/^http/, 'ws')}/realtime/v1`, {
      params: { apikey: await token(watchers[i]!) }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
    });
    clients.push(client);
    const channel = client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: `watcher${i}` } } })
      .on('broadcast', { event: 'block_op' }, (m) => broadcasts[i]!.push(Number(m.payload.server_seq)))
      .on('presence', { event: 'sync' }, () => {});
    await new Promise<void>((resolve, reject) => channel.subscribe((s, err) => {
      if (s === 'SUBSCRIBED') resolve();
      else if (s !== 'CLOSED') reject(err ?? new Error(s));
    }));
    expect(await channel.track({ watcher: i })).toBe('ok');
    channels.push(channel);
  }
  const presenceKeys = () => channels.map((ch) => Object.keys(ch.presenceState()).sort());
  await until(() => presenceKeys().every((k) => k.length === 2), 20_000, 'both presences on both gateways');

  const acks: { clientOpId: string; serverSeq: number; canvasSeq: number }[] = [];
  const refusals = new Map<string, number>(); // what a resent operation was answered, by status
  let stop = false;
  let failure: unknown;
  const loops = writers.map(async (userId, w) => {
    const bearer = await token(userId);
    const url = `${apis[w % 2]!.url}/api/v1/canvas/${canvasId}/mutate`;
    let block: { id: string; version: number } | null = null;
    try {
      for (let k = 0; !stop; k++) {
        const op = block === null || k % 3 === 0
          ? { action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: `w${w} k${k}` } } }
          : { action: 'update', client_op_id: randomUUID(), block_id: block.id, base_version: block.version, patch: { content: { text: `w${w} k${k}` } } };
        for (;;) {
          let answer: Awaited<ReturnType<typeof status>> | null = null;
          try {
            answer = await status(url, { method: 'POST', headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' }, body: JSON.stringify(op) });
          } catch {
            refusals.set('no answer', (refusals.get('no answer') ?? 0) + 1);
          }
          if (answer?.status === 200) {
            block = { id: answer.body.block_id, version: answer.body.version };
            acks.push({ clientOpId: op.client_op_id, serverSeq: Number(answer.body.server_seq), canvasSeq: Number(answer.body.canvas_seq) });
            break;
          }
          if (answer) {
            const key = `${answer.status} ${answer.body?.error?.code} retry-after ${answer.retryAfter}`;
            refusals.set(key, (refusals.get(key) ?? 0) + 1);
          }
          await sleep(100);
        }
      }
    } catch (err) {
      failure ??= err;
    }
  });
  const answered = (n: number) => () => {
    if (failure !== undefined) throw failure;
    return acks.length >= n;
  };
  return {
    canvasId, h1, broadcasts, presenceKeys, acks, refusals, answered,
    async stopWriters() {
      stop = true;
      await Promise.all(loops);
      if (failure !== undefined) throw failure;
    },
  };
}

/** Every answered operation in the log once; every subscriber got every one, in order, once; presence whole; blocks embedded; processes well. */
async function verify(s: Awaited<ReturnType<typeof scene>>) {
  await s.stopWriters();
  // the only refusal a resent operation met: 503 unavailable, Retry-After 1 (never a 500, never no answer)
  expect([...s.refusals.keys()].filter((k) => k !== '503 unavailable retry-after 1')).toEqual([]);
  const log = await admin`select client_op_id, server_seq, canvas_seq from app.block_operations
                          where canvas_id = ${s.canvasId} and status = 'success' order by canvas_seq`;
  const byOp = new Map(log.map((row) => [row.client_op_id as string, row]));
  expect(byOp.size).toBe(log.length);
  for (const ack of s.acks) {
    const row = byOp.get(ack.clientOpId);
    expect(row, `answered ${ack.clientOpId} is in the log`).toBeDefined();
    expect([Number(row!.server_seq), Number(row!.canvas_seq)]).toEqual([ack.serverSeq, ack.canvasSeq]);
  }
  expect(log.length).toBe(s.acks.length);
  expect(log.map((row) => Number(row.canvas_seq))).toEqual(log.map((_, i) => i + 1));
  const seqs = log.map((row) => Number(row.server_seq));
  const subscribers = [['H1 on gateway 1', () => deltaSeqs(s.h1[0]!)], ['H1 on gateway 2', () => deltaSeqs(s.h1[1]!)],
    ['realtime-js on gateway 1', () => s.broadcasts[0]!], ['realtime-js on gateway 2', () => s.broadcasts[1]!]] as const;
  for (const [name, got] of subscribers) {
    await until(() => seqs.every((q) => got().includes(q)), 30_000, `every operation delivered to ${name}`);
    expect(got(), name).toEqual(seqs);
  }
  await until(() => s.presenceKeys().every((k) => k.join() === 'watcher0,watcher1'), 30_000, 'both presences on both gateways again');
  await until(async () => {
    const [row] = await admin<{ n: number }[]>`select count(*)::int as n from app.blocks
                                               where canvas_id = ${s.canvasId} and embedded_hash is distinct from content_hash`;
    return row!.n === 0;
  }, 60_000, "the workers to embed every block's final content", 250);
  for (const p of all()) {
    await until(async () => (await status(`${p.url}/ready`)).status === 200, 30_000, `${p.url}/ready to say 200 again`);
    expect(p.exited()).toBeNull();
    expect(p.output()).not.toMatch(/unhandled|uncaught|BUG/i);
  }
  // each gateway ready again streams from one temporary slot of its own; none left from before
  // (a slot outliving its stream pins WAL until the disk fills)
  const slots = await admin`select slot_type, temporary, active from pg_replication_slots order by slot_name`;
  expect(slots.map((row) => ({ ...row }))).toEqual(apis.map(() => ({ slot_type: 'logical', temporary: true, active: true })));
}

describe('PostgreSQL restarts under two API + gateway processes and two workers', () => {
  it('shuts down fast while the gateways stream, answers 503 while down, and loses, repeats and misses nothing after', async () => {
    const s = await scene();
    await until(s.answered(30), 30_000, '30 answered mutations before the restart');
    // with the bus confirming one byte past what it was sent, no walsender ever exited and this failed
    await cluster.stop('fast', 30);
    const [canvasUrl, bearer] = [`/api/v1/canvas/${s.canvasId}/mutate`, `Bearer ${await token(randomUUID())}`];
    for (let round = 0; round < 2; round++) {
      for (const p of all()) {
        expect((await status(`${p.url}/health`)).status, `${p.url}/health while down`).toBe(200);
        expect((await status(`${p.url}/ready`)).status, `${p.url}/ready while down`).toBe(503);
      }
      for (const api of apis) {
        const answer = await status(api.url + canvasUrl, { method: 'POST', headers: { authorization: bearer, 'content-type': 'application/json' },
          body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }) });
        expect([answer.status, answer.body?.error?.code, answer.retryAfter]).toEqual([503, 'unavailable', '1']);
      }
      await sleep(2_000);
    }
    const before = s.acks.length;
    await cluster.start();
    await until(s.answered(before + 30), 60_000, '30 more answered mutations after the restart');
    await verify(s);
  }, 240_000);

  it('comes back from pg_terminate_backend of every backend at once under load', async () => {
    const s = await scene();
    await until(s.answered(20), 30_000, '20 answered mutations before');
    // the processes reconnect lazily and with backoff (after the restart above, after each purge):
    // purge once their pools, walsenders and LISTEN clients are back, else the count below races them
    const connected = async () => (await admin<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
                                                               where pid <> pg_backend_pid() and backend_type in ('client backend', 'walsender')`)[0]!.n;
    for (let i = 0; i < 3; i++) {
      await until(async () => (await connected()) > 8, 60_000, 'the four processes connected (pools, walsenders, LISTEN clients)', 200);
      const [row] = await admin<{ n: number }[]>`select count(pg_terminate_backend(pid))::int as n from pg_stat_activity
                                                 where pid <> pg_backend_pid() and backend_type in ('client backend', 'walsender')`;
      expect(row!.n).toBeGreaterThan(8); // the pools, walsenders and LISTEN clients of all four processes
      const before = s.acks.length;
      await until(s.answered(before + 10), 60_000, `10 more answered mutations after purge ${i + 1}`);
    }
    await verify(s);
  }, 240_000);

  it('comes back from a backend killed with SIGKILL, and from its walsender alone killed so, under load', async () => {
    // SIGKILL of any backend makes the postmaster reset every other one and run crash recovery,
    // without a shutdown (what the OOM killer does to one backend): unlike pg_ctl, the server
    // never refuses connections as shutting down, it drops them all at once and comes back by itself
    const s = await scene();
    const backend = (type: string) => admin<{ pid: number }[]>`select pid from pg_stat_activity
      where datname = current_database() and backend_type = ${type} and pid <> pg_backend_pid()
        and application_name like 'potentia-%' limit 1`;
    for (const type of ['client backend', 'walsender']) {
      await until(async () => (await backend(type)).length === 1, 60_000, `a ${type} of the processes`, 200);
      const [row] = await backend(type);
      const before = s.acks.length;
      process.kill(row!.pid, 'SIGKILL');
      await until(s.answered(before + 20), 60_000, `20 more answered mutations after the ${type} was killed`);
    }
    await verify(s);
  }, 240_000);
});
