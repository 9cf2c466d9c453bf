import { randomUUID } from 'node:crypto';
import { type RealtimeChannel } from '@supabase/realtime-js';
import postgres from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { withRequest } from '../../src/db/request.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { claimsFor, createCanvas } from '../helpers/fixtures.ts';
import { realtimeClients } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// docs/realtime.md: `canvas_deleted` reaches open channels before the live re-check closes them.
// On the replication stream the deletion's access change is its transaction's last message. While
// the stream is down (lost, or a new slot waiting for an open transaction) the gateway polls
// realtime.messages, and a polled batch put every access change first: the deletion's re-check
// then held and dropped the rest of the batch, the `canvas_deleted` broadcast and the deltas
// committed before it, and realtime-js saw only its channel closed.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(3);
const realtime = realtimeClients();
let server: Server;

beforeAll(async () => {
  server = await startServer(config);
  await server.gateway!.bus.ready();
}, 120_000);
afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
});

it('a canvas deleted while the gateway polls: realtime-js gets the deltas before it and canvas_deleted, then the channel closes', { timeout: 60_000 }, async () => {
  const { canvasId, users } = await createCanvas(db.sql, ['editor']);
  const events: string[] = [];
  let closed = false;
  const token = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
  const channel: RealtimeChannel = realtime.connect(server.url, token, '1.0.0').channel(`canvas:${canvasId}`, { config: { private: true } })
    .on('broadcast', { event: 'block_op' }, (m) => events.push(`block_op ${m.payload.action}`))
    .on('broadcast', { event: 'canvas_deleted' }, () => events.push('canvas_deleted'))
    .on('system', {}, (p) => events.push(`system ${p.status}`));
  const subscribed = new Promise<string>((resolve) => channel.subscribe((status) => {
    if (status === 'CLOSED' || status === 'CHANNEL_ERROR') closed = true;
    else resolve(status);
  }));
  expect(await subscribed).toBe('SUBSCRIBED');

  // the stream lost, and its new slot made to wait by a transaction holding an xid (in another
  // database: a slot waits for every running transaction of the cluster), so the gateway polls
  const other = new URL(testDatabaseUrl());
  other.pathname = '/postgres';
  const holder = postgres(other.toString(), { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((r) => { release = r; });
  let holding = false;
  const held = holder.begin(async (tx) => {
    await tx`select txid_current()`;
    holding = true;
    await released;
  });
  try {
    await until(() => holding, 5_000, 'the transaction holding an xid');
    const bus = server.gateway!.bus;
    await db.sql`select pg_terminate_backend(${bus.replicationPid()!}::int)`;
    await until(() => !bus.streaming(), 10_000, 'the stream lost');

    // one transaction, as a script of the owner's would: a block made, then the canvas deleted
    await withRequest(db.sql, { claims: claimsFor(users.owner!) }, async (tx) => {
      await tx`select api.upsert_block_atomic(${canvasId}::uuid, null, 'create', ${randomUUID()}, null, '{"type":"text"}'::jsonb)`;
      await tx`select api.delete_canvas(${canvasId}::uuid)`;
    });
    await until(() => closed, 20_000, 'the channel closed by the re-check');
    expect(bus.streaming()).toBe(false); // all of it came by the poll
    expect(events).toEqual(['block_op create', 'canvas_deleted', 'system error']);
  } finally {
    release();
    await held.catch(() => {});
    await holder.end();
  }
});
