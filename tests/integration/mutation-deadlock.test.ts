// A mutation chosen as a deadlock's victim: another transaction holds the block's row and then
// asks for the canvas row the mutation holds, so PostgreSQL rolls one of them back (40P01). The
// mutation's own handler catches it: its work is undone and a resend can succeed, so the answer is
// 503 `unavailable` with Retry-After (the client resends with the same client_op_id), never a
// 500 `internal`, nothing is written, and the resend is applied once.
import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { sleep } from '../helpers/wait.ts';

describe('a mutation that is a deadlock victim', () => {
  let db: Database;
  let server: Server;
  let holder: postgres.Sql;

  beforeAll(async () => {
    db = testDatabase(2);
    server = await startTestServer();
    holder = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  });
  afterAll(async () => {
    await holder?.end();
    await server?.stop();
    await db?.close();
  });

  it('is answered 503 unavailable with Retry-After, writes nothing, and its resend is applied once', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const made = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'a' } } });
    expect(made.status).toBe('success');
    const blockId = made.block_id!;
    const token = await tokenFor(server, users.owner!);
    const clientOpId = randomUUID();
    const send = () => fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ block_id: blockId, action: 'update', client_op_id: clientOpId, base_version: 1, patch: { content: { text: 'b' } } }),
    });

    // the other transaction holds the block's row, the mutation takes the canvas row and waits for
    // the block's; then the other asks for the canvas row: a cycle, and the mutation waited first,
    // so its deadlock check (after deadlock_timeout) finds it and rolls it back
    let sent: Promise<Response> | undefined;
    await holder.begin(async (tx) => {
      const [{ pid }] = await tx`select pg_backend_pid() as pid from app.blocks where block_id = ${blockId} for update` as unknown as [{ pid: number }];
      sent = send();
      for (let waiting = 0; waiting === 0;) {
        await sleep(20);
        [{ waiting }] = await db.sql`select count(*)::int as waiting from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))` as unknown as [{ waiting: number }];
      }
      // granted once the mutation's attempt is rolled back; this transaction then commits, as a
      // real one would, before the mutation records its rejected attempt (which reads the canvas row)
      await tx`select from app.canvases where canvas_id = ${canvasId} for update`;
    });
    const answer = await sent!;

    expect(answer.status).toBe(503);
    expect(answer.headers.get('retry-after')).toBe('1');
    const body = await answer.json() as { error: { code: string; message: string; retry_after?: number } };
    expect(body.error.code).toBe('unavailable');
    expect(body.error.retry_after).toBe(1);
    expect(body.error.message).toContain('deadlock');
    const [unchanged] = await db.sql`select version, content from app.blocks where block_id = ${blockId}`;
    expect(unchanged).toEqual({ version: 1, content: { text: 'a' } });

    // the client's resend with the same client_op_id: applied, once
    const again = await send();
    expect(again.status).toBe(200);
    expect(await again.json()).toMatchObject({ status: 'success', version: 2 });
    const [applied] = await db.sql`select count(*)::int as n from app.block_operations
                                   where client_op_id = ${clientOpId} and status = 'success'`;
    expect(applied!.n).toBe(1);
    const [after] = await db.sql`select version, content from app.blocks where block_id = ${blockId}`;
    expect(after).toEqual({ version: 2, content: { text: 'b' } });
  }, 30_000);
});
