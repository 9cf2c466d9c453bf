import type { Sql } from 'postgres';
import { expect } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { until } from './wait.ts';

/**
 * A query its pool gives up on while the server still runs it: on `pool` (a createDatabase pool
 * with a short answer timeout) a transaction locks `canvasId`'s row, then runs a statement that
 * sends nothing for a minute, so the driver destroys the connection with ANSWER_TIMEOUT.
 * `running` is called once that statement runs on the server (a test stalls the path there).
 * Returns the backend's pid; `admin` (a direct connection) finds it in pg_stat_activity.
 */
export async function abandonLockingQuery(pool: Database, admin: Sql, canvasId: string, running?: () => void): Promise<number> {
  let pid = 0;
  let failed: unknown = null;
  // the statement's own error: the transaction's is its ROLLBACK's on the destroyed connection
  const outcome = pool.sql.begin(async (tx) => {
    [{ pid }] = await tx`select pg_backend_pid() as pid from app.canvases where canvas_id = ${canvasId} for update` as unknown as [{ pid: number }];
    await tx`select pg_sleep(60)`.catch((err) => { throw (failed = err); });
  }).then(() => null, () => failed);
  await until(async () => pid !== 0 && (await admin`select from pg_stat_activity where pid = ${pid} and wait_event = 'PgSleep'`).length === 1,
    10_000, 'the statement to run on the server');
  running?.();
  expect(await outcome).toMatchObject({ code: 'ANSWER_TIMEOUT' });
  return pid;
}

/**
 * Asserts that backend `pid` ends within `ms` (so its transaction rolled back), that another
 * transaction then takes `canvasId`'s row at once, and that `pool` serves its next query.
 */
export async function expectBackendEnded(pool: Database, admin: Sql, pid: number, canvasId: string, ms: number): Promise<void> {
  await until(async () => (await admin`select from pg_stat_activity where pid = ${pid}`).length === 0, ms,
    `backend ${pid} to end after its client went`);
  const locked = await admin.begin((tx) => tx`select canvas_id from app.canvases where canvas_id = ${canvasId} for update nowait`);
  expect(locked).toHaveLength(1);
  expect((await pool.sql`select 1 as one`)[0]!.one).toBe(1);
}
