// A mutation that waits too long for a lock (another transaction holds app.blocks: a migration's
// DDL, an operator's LOCK) is refused with the stable timeout answer, the same words whether the
// wait ended inside the mutation's own handler (its lock_timeout, caught there and logged as a
// failed operation) or outside it (statement_timeout): 504 `timeout`, "the database did not finish
// in time: retry shortly", never Postgres's own message, and nothing applied. Released, the same
// client_op_id is applied once.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';

const config = loadConfig();
const db = testDatabase(4);
let proc: PotentiaProcess;

beforeAll(async () => {
  proc = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off' });
}, 60_000);
afterAll(async () => {
  await proc?.stop();
  await db.close();
});

const STABLE = { code: 'timeout', message: 'the database did not finish in time: retry shortly' };

describe('a mutation kept waiting on a lock', () => {
  it('is answered 504 timeout in the stable words, over a single and a batch mutation, and applies nothing', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const post = (body: unknown) => fetch(`${proc.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    }).then(async (res) => ({ status: res.status, body: await res.json() as Record<string, any> }));
    const single = { action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } };
    const batch = { ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }] };

    const holder = await reservedTransaction(db.sql);
    let answers: { status: number; body: Record<string, any> }[];
    try {
      await holder.conn`lock table app.blocks in access exclusive mode`;
      answers = [await post(single), await post(batch)];
    } finally {
      await holder.release();
    }
    const seen = answers.map((a) => ({ status: a.status, code: a.body.error?.code ?? a.body.results?.[0]?.error?.code,
      message: a.body.error?.message ?? a.body.results?.[0]?.error?.message }));
    expect(seen).toEqual([{ status: 504, ...STABLE }, { status: 504, ...STABLE }]);
    const applied = await db.sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(applied[0]!.n).toBe(0);

    // the lock gone, the same operation is applied once
    const again = await post(single);
    expect(again.status).toBe(200);
    const ops = await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${single.client_op_id} and status = 'success'`;
    expect(ops[0]!.n).toBe(1);
  });
});
