import { randomUUID } from 'node:crypto';
import { RealtimeClient } from '@supabase/realtime-js';
import postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateCluster } from '../../scripts/lib/private-cluster.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { addMember, createCanvas, mutate } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1 } from '../helpers/h1.ts';
import { startMigratedCluster } from '../helpers/migrated-cluster.ts';
import { awayFromWindowEdge, sleep, until } from '../helpers/wait.ts';

// PostgreSQL itself crashing under load: `pg_ctl stop -m immediate` on a private cluster (every
// backend killed, no checkpoint; the next start runs crash recovery), what production sees on an
// OOM kill of the postmaster or a host reset, while one `npm start` process (API, realtime gateway
// and worker in one) serves mutations from four writers, and an H1 and a realtime-js subscriber
// stay connected. Each writer resends an unanswered operation with the same client_op_id until it
// is answered, as a client does.
// Asserted: every operation answered 200 is in the log exactly once after recovery (none lost,
// none applied twice), the canvas's canvas_seq runs 1..N with no gap, each block's version counts
// its operations, both subscribers receive every one of them in order, once, the worker embeds
// every block's final content, and the process never exits.
// The per-user rate-limit slots are UNLOGGED (sql/rpc/endpoint_limits.sql): recovery empties them,
// so every user's minute starts over (at most one more minute's worth), and the limit still
// refuses above it.

const config = loadConfig();
let cluster: PrivateCluster;
let admin: postgres.Sql;
let server: PotentiaProcess;
let realtime: RealtimeClient | undefined;

beforeAll(async () => {
  cluster = await startMigratedCluster();
  admin = postgres(cluster.url('potentia'), { max: 2, onnotice: () => {} });
  // the load is what is measured here, not the limits: both far above it (the per-user limit is set
  // again for its own check at the end)
  await admin`update app.settings set value = '100000' where key = 'mutations_per_minute'`;
  await admin`update app.endpoint_limits set max_hits = 100000`;
  server = await startPotentiaProcess({ DATABASE_URL: cluster.url('potentia'), WORKER_MODE: 'inprocess', NODE_ENV: 'development' });
}, 120_000);

afterAll(async () => {
  realtime?.disconnect();
  await server?.stop();
  await admin?.end({ timeout: 1 });
  await cluster?.destroy();
}, 60_000);

type Ack = { clientOpId: string; serverSeq: number; canvasSeq: number; blockId: string; version: number };

let resent = 0;
/** POST one operation until the server answers it (503, a reset connection or a timeout is resent as is). */
async function sendUntilAnswered(url: string, token: string, op: Record<string, unknown>): Promise<{ status: number; body: any }> {
  for (;;) {
    try {
      const res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify(op), signal: AbortSignal.timeout(5_000) });
      const body = await res.json();
      if (res.status !== 503 && res.status !== 504) return { status: res.status, body };
    } catch {
      // the connection went with the database's: resend
    }
    resent++;
    await sleep(100);
  }
}

/** `query`, resent while the connection it was given was one the crash closed. */
async function afterReconnect<T>(query: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await query();
    } catch (err) {
      if (attempt >= 5) throw err;
      await sleep(200);
    }
  }
}

describe('PostgreSQL crashes and recovers under load', () => {
  it('loses no answered mutation, applies none twice, delivers every delta to H1 and realtime-js, embeds every block, keeps the process serving, and starts the rate-limit minute over', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(admin);
    const writerIds = [users.owner!];
    for (let i = 0; i < 4; i++) writerIds.push(await addMember(admin, users.owner!, workspaceId, 'editor', `editor${i}`));
    const bystander = writerIds.pop()!; // mutates only before the crash
    const token = (id: string) => signAccessToken(config.auth.jwtSecret, { sub: id }, { expiresInSeconds: 600 });
    const url = `${server.url}/api/v1/canvas/${canvasId}/mutate`;

    const h1 = await openH1(server.url, canvasId, await token(writerIds[0]!), '&since_seq=0');
    await h1.next((m) => m.type === 'resumed');

    const broadcast: number[] = [];
    realtime = new RealtimeClient(`${server.url.replace(/^http/, 'ws')}/realtime/v1`, {
      params: { apikey: await token(bystander) }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
    });
    const channel = realtime.channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, (m) => broadcast.push(Number(m.payload.server_seq)));
    await new Promise<void>((resolve, reject) => channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status !== 'CLOSED') reject(err ?? new Error(status));
    }));

    for (let i = 0; i < 3; i++) {
      const r = await mutate(admin, bystander, canvasId, { action: 'create', patch: { type: 'text' } });
      expect(r.status).toBe('success');
    }
    const [before] = await admin<{ n: number }[]>`select count(*)::int as n from app.rate_limit_slots where user_id = ${bystander}`;
    expect(before!.n).toBeGreaterThanOrEqual(3); // the window may have turned between them: at least 3 in all

    const acks: Ack[] = [];
    let stop = false;
    let failure: unknown;
    const writers = writerIds.map(async (userId, w) => {
      const bearer = await token(userId);
      let block: { id: string; version: number } | null = null;
      try {
        for (let k = 0; !stop; k++) {
          const op = block === null || k % 3 === 0
            ? { action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { w, k } } }
            : { action: 'update', client_op_id: randomUUID(), block_id: block.id, base_version: block.version, patch: { content: { k } } };
          const { status, body } = await sendUntilAnswered(url, bearer, op);
          if (status !== 200) throw new Error(`writer ${w}: ${status} ${JSON.stringify(body)}`);
          block = { id: body.block_id, version: body.version };
          acks.push({ clientOpId: op.client_op_id, serverSeq: Number(body.server_seq), canvasSeq: Number(body.canvas_seq),
            blockId: body.block_id, version: body.version });
        }
      } catch (err) {
        failure ??= err;
      }
    });
    const answered = (n: number) => () => {
      if (failure !== undefined) throw failure;
      return acks.length >= n;
    };

    await until(answered(40), 30_000, '40 answered mutations before the crash');
    const crashedAt = acks.length;
    await cluster.stop('immediate');
    await sleep(1_500);
    await cluster.start();
    // recovery emptied the UNLOGGED slots: the bystander, who has not mutated since, holds none
    expect(await afterReconnect(() => admin`select count(*)::int as n from app.rate_limit_slots where user_id = ${bystander}`))
      .toEqual([{ n: 0 }]);
    await until(answered(crashedAt + 40), 60_000, '40 more answered mutations after recovery');
    stop = true;
    await Promise.all(writers);
    if (failure !== undefined) throw failure;
    expect(resent, 'operations in flight when the server crashed, resent').toBeGreaterThan(0);

    // every answered operation is in the log exactly once, with the numbers it was answered with
    const log = await admin`select client_op_id, server_seq, canvas_seq from app.block_operations
                            where canvas_id = ${canvasId} and status = 'success' order by canvas_seq`;
    const byOp = new Map(log.map((row) => [row.client_op_id as string, row]));
    expect(byOp.size).toBe(log.length);
    for (const ack of acks) {
      const row = byOp.get(ack.clientOpId);
      expect(row, `answered ${ack.clientOpId} is in the log`).toBeDefined();
      expect([Number(row!.server_seq), Number(row!.canvas_seq)]).toEqual([ack.serverSeq, ack.canvasSeq]);
    }
    expect(log.length).toBe(acks.length + 3); // each writer resent until answered; the bystander's 3
    expect(log.map((row) => Number(row.canvas_seq))).toEqual(log.map((_, i) => i + 1));
    // each block's version counts its applied operations
    const versions = await admin`select b.block_id, b.version, count(o.*)::int as ops from app.blocks b
                                 join app.block_operations o on o.block_id = b.block_id and o.status = 'success'
                                 where b.canvas_id = ${canvasId} group by b.block_id, b.version`;
    for (const v of versions) expect(v.version).toBe(v.ops);

    // both subscribers, connected through the crash, receive every applied operation, in order, once
    const seqs = log.map((row) => Number(row.server_seq));
    for (const [name, got] of [['H1', () => deltaSeqs(h1)], ['realtime-js', () => broadcast]] as const) {
      await until(() => seqs.every((s) => got().includes(s)), 30_000, `every applied operation delivered to the ${name} subscriber`);
      expect(got(), name).toEqual([...got()].sort((a, b) => a - b));
      expect(new Set(got()).size, name).toBe(got().length);
    }
    h1.ws.terminate();
    // the worker, through the same crash, embeds every block's final content
    await until(async () => {
      const [row] = await admin<{ n: number }[]>`select count(*)::int as n from app.blocks
                                                 where canvas_id = ${canvasId} and embedded_hash is distinct from content_hash`;
      return row!.n === 0;
    }, 60_000, "the worker to embed every block's final content", 250);

    // after recovery the limit still holds: two more allowed in this minute, the third refused
    await awayFromWindowEdge(60, 5_000);
    const [taken] = await admin<{ n: number }[]>`select count(*)::int as n from app.rate_limit_slots
                                       where user_id = ${bystander} and window_start = internal.rate_window_start(60)`;
    await admin`update app.settings set value = ${String(taken!.n + 2)} where key = 'mutations_per_minute'`;
    const bearer = await token(bystander);
    const create = () => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } });
    expect((await sendUntilAnswered(url, bearer, create())).status).toBe(200);
    expect((await sendUntilAnswered(url, bearer, create())).status).toBe(200);
    const refused = await sendUntilAnswered(url, bearer, create());
    expect([refused.status, refused.body.error?.code]).toEqual([429, 'rate_limited']);

    expect(server.exited()).toBeNull();
    const health = await fetch(`${server.url}/health`);
    expect(health.status).toBe(200);
    expect(server.output()).not.toMatch(/unhandled|uncaught/i);
  }, 150_000);
});
