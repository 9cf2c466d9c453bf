import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { CanvasSync, type MutationOutcome } from '../../packages/client/src/canvas-sync.ts';
import type { DeltaMessage } from '../../packages/client/src/protocol.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { databaseClientPorts, startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { sleep, until } from '../helpers/wait.ts';
import { freePort } from '../helpers/free-port.ts';

// The H1 client (packages/client/src/canvas-sync.ts) while what is behind the socket dies: every
// Postgres backend of the server process is terminated (pg_terminate_backend, as a managed
// Postgres's restart or failover does) several times, and the server process itself is killed
// (SIGKILL) and started again on the same port, all while a writer streams mutations and a reader
// follows the canvas. The protocol's promise (docs/realtime.md, the client's README): every
// mutation answered once and applied once (resent with its client_op_id), every delta applied
// once and in canvas_seq order, the reader ending on the server's state.

const config = loadConfig();
const db = testDatabase(2);
let server: PotentiaProcess;
let port: number;
const env = () => ({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', LOG_LEVEL: 'warn', PORT: String(port), POTENTIA_PROFILE: 'development' });
const faults: unknown[] = [];
const onFault = (err: unknown) => void faults.push(err);


/** Terminates every backend of this database the server process holds (its pool, its replication stream). */
async function killServerBackends(): Promise<number> {
  const ports = databaseClientPorts(server.pid);
  if (ports.length === 0) return 0;
  const rows = await db.sql<{ done: boolean }[]>`
    select pg_terminate_backend(pid) as done from pg_stat_activity
    where datname = current_database() and client_port = any(${ports}) and pid <> pg_backend_pid()`;
  return rows.filter((r) => r.done).length;
}

beforeAll(async () => {
  process.on('uncaughtException', onFault);
  process.on('unhandledRejection', onFault);
  port = await freePort();
  server = await startPotentiaProcess(env());
}, 90_000);
afterAll(async () => {
  process.off('uncaughtException', onFault);
  process.off('unhandledRejection', onFault);
  await server?.stop();
  await db.close();
});

describe('CanvasSync while Postgres backends and the server process are killed', () => {
  it('a writer streaming mutations and a reader following: each op answered and applied once, the reader on the server\'s state with no delta twice', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const url = `http://127.0.0.1:${port}`;
    const writerToken = await signAccessToken(config.auth.jwtSecret, { sub: users.editor! });
    const readerToken = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! });
    const errors: unknown[] = [];
    const opts = { url, canvasId, WebSocket, reconnectDelayMs: () => 100, heartbeatMs: 1000, resumeTimeoutMs: 5000, onError: (e: unknown) => void errors.push(e) };
    const writer = new CanvasSync({ ...opts, token: () => writerToken });
    const applied: number[] = [];
    let snapshots = 0;
    const reader = new CanvasSync({
      ...opts, token: () => readerToken,
      onChange: (_b, delta: DeltaMessage | null) => void (delta ? applied.push(delta.canvas_seq) : snapshots++),
    });
    try {
      await Promise.all([writer.join(), reader.join()]);
      const snapshotsAtJoin = snapshots;
      const outcomes = new Map<string, MutationOutcome[]>();
      const all: Promise<void>[] = [];
      const kills: string[] = [];
      let n = 0;
      const issue = (): void => {
        const id = `kill-${canvasId}-${n++}`;
        outcomes.set(id, []);
        all.push(writer.mutate({ action: 'create', patch: { type: 'text', content: { text: id } } }, id).then((o) => void outcomes.get(id)!.push(o)));
      };
      /** A burst just before a kill: some of it is in flight (sent, unanswered) when the kill lands. */
      const burst = () => { for (let k = 0; k < 5; k++) issue(); };
      for (let i = 0; i < 60; i++) {
        issue();
        if (i === 10 || i === 25 || i === 40) {
          burst();
          await sleep(2);
          const inFlight = [...outcomes.values()].filter((o) => o.length === 0).length;
          kills.push(`backends@${i}: ${await killServerBackends()} killed, ${inFlight} unanswered`);
        }
        if (i === 50) {
          burst();
          await sleep(2);
          const inFlight = [...outcomes.values()].filter((o) => o.length === 0).length;
          server.child.kill('SIGKILL');
          await server.stop();
          server = await startPotentiaProcess(env());
          kills.push(`process@${i}: ${inFlight} unanswered`);
        }
        await sleep(60);
      }
      const N = n;
      await Promise.race([Promise.all(all), sleep(60_000)]);
      const unanswered = [...outcomes].filter(([, o]) => o.length === 0).map(([id]) => id);
      expect(unanswered, `kills: ${kills.join(', ')}`).toEqual([]);
      for (const [id, o] of outcomes) {
        expect(o, id).toHaveLength(1);
        expect(o[0]!.type, `${id}: ${JSON.stringify(o[0])}`).toBe('ack');
      }
      // the database applied each op once
      const rows = await db.sql<{ client_op_id: string; n: number }[]>`
        select client_op_id, count(*)::int as n from app.block_operations
        where canvas_id = ${canvasId} and status = 'success' group by client_op_id`;
      expect(rows.filter((r) => r.n !== 1)).toEqual([]);
      expect(rows.length).toBe(N);
      // the reader ends on the server's state, each delta applied once and in order
      const [row] = await db.sql<{ last: number }[]>`select coalesce(max(canvas_seq), 0)::int as last from app.block_operations where canvas_id = ${canvasId}`;
      const last = row!.last;
      await until(() => reader.canvasSeq === last, 30_000, `the reader at canvas_seq ${last}`);
      const blocks = await db.sql<{ block_id: string }[]>`select block_id from app.blocks where canvas_id = ${canvasId} order by block_id`;
      expect([...reader.blocks.keys()].sort()).toEqual(blocks.map((b) => b.block_id));
      expect(new Set(applied).size).toBe(applied.length);
      expect(applied).toEqual([...applied].sort((a, b) => a - b));
      if (snapshots === snapshotsAtJoin) expect(applied).toEqual(Array.from({ length: last }, (_, k) => k + 1));
      expect(faults).toEqual([]);
      expect(errors.filter((e) => !(e instanceof Error && /token\(\)|socket/.test(e.message)))).toEqual([]);
    } finally {
      writer.close();
      reader.close();
    }
  }, 150_000);
});
