// A Potentia process that stops in the middle of a request's transaction without its connection
// closing: frozen (SIGSTOP here; a paused VM, a stalled host), or cut off from the database by a
// partition. A killed process's sockets are closed by its kernel and its backends roll back at
// once; a frozen one's are not, and its backend waited "idle in transaction" for the COMMIT,
// holding the transaction's locks until TCP gave up, hours later: here a canvas rename's lock on
// the canvas row, which every writer of that canvas needs (each answered 503 after its statement
// timeout). Now every request transaction carries idle_in_transaction_session_timeout
// (IDLE_IN_TRANSACTION_TIMEOUT_MS): the server ends it, its locks go, nothing of it is committed,
// and the process, resumed, answers the request 503 (the client resends) and keeps serving.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { IDLE_IN_TRANSACTION_TIMEOUT_MS } from '../../src/db/request.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

const config = loadConfig();
const db = testDatabase(3);
let server: PotentiaProcess;

beforeAll(async () => {
  server = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development',
    PORT: '0' });
}, 90_000);

afterAll(async () => {
  if (server) process.kill(server.pid, 'SIGCONT');
  await server?.stop();
  await db.close();
}, 30_000);

/** The backends of the process's pool in `state` (its pool connects as potentia-server). */
const backends = (state: string) => db.sql`select pid from pg_stat_activity
  where application_name = 'potentia-server' and state = ${state} and datname = current_database()`;

describe('a process frozen in the middle of a request transaction', () => {
  it('does not keep its locks: the server ends the idle transaction, nothing of it is committed, and the process answers 503 and serves on', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const rename = (title: string) => fetch(`${server.url}/api/v1/canvas/${canvasId}`, {
      method: 'PATCH', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ title }), signal: AbortSignal.timeout(60_000),
    }).then(async (res) => [res.status, ((await res.json()) as { error?: { code: string } }).error?.code ?? 'ok']);

    // the canvas row held here, so the process's rename waits for it inside its transaction
    const holder = await db.sql.reserve();
    let frozen = false;
    try {
      await holder`begin`;
      await holder`select from app.canvases where canvas_id = ${canvasId} for share`;
      const renamed = rename('renamed by a frozen process');
      await until(async () => (await db.sql`select from pg_stat_activity where application_name = 'potentia-server'
        and wait_event_type = 'Lock' and datname = current_database()`).length === 1, 20_000, 'the rename to wait for the canvas row');
      process.kill(server.pid, 'SIGSTOP');
      frozen = true;
      await holder`commit`;
      // the rename's UPDATE ran; its COMMIT never comes: the backend idles in the transaction, the row locked
      await until(async () => (await backends('idle in transaction')).length === 1, 20_000, 'the rename to be idle in its transaction');
      // the server ends it (it held the lock until TCP gave up, hours later)
      await until(async () => (await backends('idle in transaction')).length === 0, IDLE_IN_TRANSACTION_TIMEOUT_MS + 20_000,
        'the server to end the frozen transaction');
      const [free] = await db.sql`select count(*)::int as n from (select from app.canvases where canvas_id = ${canvasId} for update skip locked) r`;
      expect(free!.n, 'the canvas row is free for other writers').toBe(1);
      const [row] = await db.sql`select title from app.canvases where canvas_id = ${canvasId}`;
      expect(row!.title).not.toBe('renamed by a frozen process');

      process.kill(server.pid, 'SIGCONT');
      frozen = false;
      expect(await renamed).toEqual([503, 'unavailable']);
      expect(await rename('renamed')).toEqual([200, 'ok']);
      expect(server.exited()).toBeNull();
    } finally {
      if (frozen) process.kill(server.pid, 'SIGCONT');
      await holder`rollback`.catch(() => {});
      holder.release();
    }
  }, 90_000);
});
