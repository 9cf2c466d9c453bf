import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateCluster } from '../../scripts/lib/private-cluster.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { deltaSeqs, openH1, type H1Conn } from '../helpers/h1.ts';
import { startMigratedCluster } from '../helpers/migrated-cluster.ts';
import { until } from '../helpers/wait.ts';

// An H1 replay (a client's `resume`, or the fill of a gap the gateway saw in the live stream) whose
// database work fails: PostgreSQL is down. Live deltas are held while a replay runs, so a failed
// one left the socket holding every later delta for ever: open, answering pings, and silent, the
// client none the wiser (a delta never came to show it a gap). Now the socket answers `error`
// `unavailable` and closes (1011): the client reconnects and resumes from its last canvas_seq.
// A private cluster (stopped and started here) under one `npm start` process.

const config = loadConfig();
let cluster: PrivateCluster;
let admin: postgres.Sql;
let server: PotentiaProcess;
const sockets: H1Conn[] = [];

beforeAll(async () => {
  cluster = await startMigratedCluster();
  admin = postgres(cluster.url('potentia'), { max: 1, onnotice: () => {} });
  server = await startPotentiaProcess({ DATABASE_URL: cluster.url('potentia'), WORKER_MODE: 'off', NODE_ENV: 'development',
    PORT: '0' });
}, 120_000);

afterAll(async () => {
  for (const s of sockets) s.ws.terminate();
  await server?.stop();
  await admin?.end({ timeout: 1 });
  await cluster?.destroy();
}, 60_000);

describe('an H1 replay whose database work fails', () => {
  it('is answered unavailable and the socket closes, never left open holding the deltas; resumed again, nothing is missing', async () => {
    const { canvasId, users } = await createCanvas(admin);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const mutate = async () => {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }), signal: AbortSignal.timeout(15_000),
      });
      await res.arrayBuffer();
      return res.status;
    };
    const h1 = await openH1(server.url, canvasId, token, '&since_canvas_seq=0');
    sockets.push(h1);
    await h1.next((m) => m.type === 'resumed');
    expect(await mutate()).toBe(200);
    await h1.next((m) => m.type === 'delta' && m.canvas_seq === 1);

    await cluster.stop('fast', 30);
    h1.send({ type: 'resume', since_canvas_seq: 1 });
    expect(await h1.next((m) => m.type === 'error')).toMatchObject({ type: 'error', code: 'unavailable' });
    await cluster.start();
    await until(async () => (await mutate()) === 200, 30_000, 'a mutation to be served again');
    // the delta it committed reaches this socket, or the socket is closed so the client resumes;
    // the failed replay held it, and the socket stayed open and silent
    const outcome = await Promise.race([
      h1.next((m) => m.type === 'delta' && m.canvas_seq === 2, 30_000).then(() => 'delta', () => 'open and silent'),
      h1.closed.then(({ code }) => `closed ${code}`),
    ]);
    expect(outcome).toBe('closed 1011');
    expect(deltaSeqs(h1).length).toBe(1);

    // the client reconnects and resumes from its last canvas_seq: every operation, once, in order
    const again = await openH1(server.url, canvasId, token, '&since_canvas_seq=1');
    sockets.push(again);
    await again.next((m) => m.type === 'resumed');
    const [log] = await admin`select count(*)::int as n from app.block_operations where canvas_id = ${canvasId} and status = 'success'`;
    const canvasSeqs = again.inbox.flatMap((m) => (m.type === 'delta' ? [m.canvas_seq] : []));
    expect(canvasSeqs).toEqual(Array.from({ length: log!.n - 1 }, (_, i) => i + 2));
    expect(server.exited()).toBeNull();
    expect(server.output()).not.toMatch(/unhandled|uncaught|BUG/i);
  }, 120_000);
});
