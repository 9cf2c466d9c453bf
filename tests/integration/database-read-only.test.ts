// The database takes no writes for a while: a primary demoted in a failover that the pooler or DNS
// has not followed yet, a hot standby, a provider's read-only mode when its disk fills (Postgres
// answers SQLSTATE 25006, "cannot execute INSERT in a read-only transaction"). Made here as a
// provider does it: default_transaction_read_only on the database, the process's connections
// ended so that they reconnect under it. Every request that writes was answered 500 internal, as
// a bug of the server; it is the database's state, which passes: 503 unavailable with Retry-After,
// nothing applied, and the same mutation resent once it is writable again is applied once.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';

const config = loadConfig();
const db = testDatabase(2);
let proc: PotentiaProcess;

beforeAll(async () => {
  proc = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off' });
}, 60_000);
afterAll(async () => {
  await proc?.stop();
  await db.close();
});

describe('a database that is read-only for a while', () => {
  it('answers writes 503 unavailable with Retry-After (not 500 internal), and applies the resent mutation once after', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const token = await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 });
    const op = { action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } };
    const post = () => fetch(`${proc.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(op),
    }).then(async (res) => ({ status: res.status, retryAfter: res.headers.get('retry-after'), code: (await res.json() as any).error?.code }));

    // one connection that stays writable: it turns the mode on and off (and would reset it whatever failed)
    const admin = await db.sql.reserve();
    let answer: Awaited<ReturnType<typeof post>>;
    try {
      await admin`set default_transaction_read_only = off`;
      await admin.unsafe('alter database "' + (await admin`select current_database() as d`)[0]!.d + '" set default_transaction_read_only = on');
      await terminateBackends(admin as never, proc.pid, ['potentia-server']);
      answer = await post();
    } finally {
      await admin.unsafe('alter database "' + (await admin`select current_database() as d`)[0]!.d + '" reset default_transaction_read_only');
      // its connections made meanwhile keep the read-only default: ended, they reconnect writable
      await terminateBackends(admin as never, proc.pid, ['potentia-server']);
      admin.release();
    }
    expect(answer).toEqual({ status: 503, retryAfter: '1', code: 'unavailable' });
    expect((await db.sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`)[0]!.n).toBe(0);

    // writable again: the resend is applied, once (a first attempt may meet a connection ended above: 503 again)
    let again = await post();
    if (again.status === 503) again = await post();
    expect(again.status).toBe(200);
    expect((await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${op.client_op_id} and status = 'success'`)[0]!.n).toBe(1);
  });
});
