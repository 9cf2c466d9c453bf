// Concurrency of api.upsert_block_atomic on real connections (each client its own backend,
// released together by a barrier inside its open transaction, so they truly race).
//
// Connection budget: the spec asks for 100 concurrent clients, and a stock Debian PostgreSQL has
// max_connections = 100 (3 of them reserved for superusers) while other test files, psql
// sessions and other engineers' runs may hold a few. So the test opens at most
//   min(100, 90, max_connections - reserved - connected now - 10)
// connections (`freeConnections`) and runs the 100 clients as one racing wave of that size plus
// a second racing wave for the remainder, every client editing from the same base version. The
// remainder starts only after the first wave has finished, so it still sees base_version 1 as
// stale: the contract (one success, everyone else a conflict carrying the current block) is the
// same for both waves. It refuses to run below 20 connections rather than test nothing.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TransactionSql } from 'postgres';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { withRequest } from '../../src/db/request.ts';
import { testDatabase } from '../helpers/db.ts';
import {
  addMember, barrier, callAs, claimsFor, createCanvas, freeConnections, mutate, type MutationResult,
} from '../helpers/fixtures.ts';

const CLIENTS = 100;
const SAME_OP_CLIENTS = 20;

type Op = { canvasId: string; blockId: string | null; action: 'create' | 'update' | 'move' | 'delete';
  clientOpId: string; baseVersion: number | null; patch: Record<string, unknown> };

async function upsert(tx: TransactionSql, op: Op): Promise<MutationResult> {
  const [row] = await tx`
    select api.upsert_block_atomic(${op.canvasId}::uuid, ${op.blockId}::uuid, ${op.action}, ${op.clientOpId},
                                   ${op.baseVersion}::int, ${tx.json(op.patch as any)}::jsonb) as result`;
  return row!.result as MutationResult;
}

describe('upsert_block_atomic under concurrent clients', () => {
  let db: Database;   // setup and checks
  let wide: Database; // one connection per racing client
  let wave = 0;

  beforeAll(async () => {
    db = testDatabase(4);
    wave = Math.min(CLIENTS, 90, await freeConnections(db.sql, 10));
    if (wave < SAME_OP_CLIENTS) {
      throw new Error(`only ${wave} free connections on the test server; the concurrency tests need at least ${SAME_OP_CLIENTS}`);
    }
    wide = createDatabase(testDatabaseUrl(), { max: wave, applicationName: 'potentia-test-concurrency' });
  });
  afterAll(async () => {
    await wide?.close();
    await db?.close();
  });

  /**
   * Runs `ops` as racing clients: each opens its transaction, then all call the RPC at once. Up to
   * 90 of them queue on one canvas row, each holding it through its writes and COMMIT: on a loaded
   * 2-core machine the last one waits longer than a request's default statement_timeout (5 s),
   * which this test is not about, so the race's requests allow 60 s.
   */
  async function race(ops: Array<{ userId: string; op: Op }>) {
    const gate = barrier(ops.length);
    return Promise.all(ops.map(({ userId, op }) =>
      withRequest(wide.sql, { claims: claimsFor(userId), statementTimeoutMs: 60_000 }, async (tx) => {
        const [{ pid }] = (await tx`select pg_backend_pid() as pid`) as unknown as [{ pid: number }];
        await gate.wait();
        return { pid, result: await upsert(tx, op) };
      })));
  }

  it(`${CLIENTS} clients updating one block from the same base version: one success, the rest conflicts`, async () => {
    const { workspaceId, canvasId, users } = await createCanvas(db.sql);
    // one editor per client: distinct people, so nothing but the canvas and block locks serializes them
    const editors: string[] = [];
    for (let i = 0; i < CLIENTS; i++) editors.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `editor${i}`));
    const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'base' } } });
    expect(created).toMatchObject({ status: 'success', version: 1 });
    const blockId = created.block_id!;

    const ops = editors.map((userId, i) => ({
      userId,
      op: { canvasId, blockId, action: 'update' as const, clientOpId: `race-${i}-${randomUUID()}`, baseVersion: 1,
            patch: { content: { text: `from client ${i}`, client: i } } },
    }));
    const first = await race(ops.slice(0, wave));
    expect(new Set(first.map((r) => r.pid)).size).toBe(wave); // every client of the wave on its own backend
    const rest = ops.length > wave ? await race(ops.slice(wave)) : [];
    const results = [...first, ...rest].map((r) => r.result);

    // exactly one success; everyone else a conflict carrying the winner's block (version 2)
    const winners = results.flatMap((r, i) => (r.status === 'success' ? [i] : []));
    expect(winners).toHaveLength(1);
    const w = winners[0]!;
    const winnerContent = ops[w]!.op.patch.content;
    expect(results[w]).toMatchObject({ status: 'success', version: 2, block: { block_id: blockId, version: 2, content: winnerContent } });
    // everyone else a conflict carrying the winner's block; or, where its wait for the canvas
    // lock passed the RPC's lock_timeout (3 s: up to 90 racers queue on one canvas row, and on a
    // loaded 2-core machine the last ones wait longer), the documented retryable answer: failed,
    // code timeout, which wrote nothing
    const others = results.filter((_, i) => i !== w);
    const timedOut = others.filter((r) => r.status === 'failed');
    expect(timedOut.map((r) => r.error?.code)).toEqual(timedOut.map(() => 'timeout'));
    for (const r of timedOut) expect(r).toMatchObject({ server_seq: null, canvas_seq: null });
    const conflicts = others.filter((r) => r.status !== 'failed');
    expect(conflicts.map((r) => r.status)).toEqual(conflicts.map(() => 'conflict'));
    expect(conflicts.length).toBeGreaterThan(0);
    for (const r of conflicts) {
      expect(r.server_seq).toBeNull();
      expect(r.error?.code).toBe('conflict');
      expect(r.version).toBe(2);
      expect(r.block).toMatchObject({ block_id: blockId, version: 2, content: winnerContent });
    }

    // the stored block is the winner's, at version 2
    const [block] = await db.sql`select content, version from app.blocks where block_id = ${blockId}`;
    expect(block).toEqual({ content: winnerContent, version: 2 });

    // the log: exactly one success, the conflicts and the timeouts for these op ids, nothing else, nothing twice
    const rows = await db.sql`
      select client_op_id, actor_id, status, server_seq, base_version, new_version from app.block_operations
      where client_op_id in ${db.sql(ops.map((o) => o.op.clientOpId))}`;
    expect(rows).toHaveLength(CLIENTS);
    expect(new Set(rows.map((r) => r.client_op_id)).size).toBe(CLIENTS);
    const successRows = rows.filter((r) => r.status === 'success');
    expect(successRows).toHaveLength(1);
    expect(successRows[0]).toMatchObject({
      client_op_id: ops[w]!.op.clientOpId, actor_id: ops[w]!.userId, base_version: 1, new_version: 2,
    });
    expect(Number(successRows[0]!.server_seq)).toBe(Number(results[w]!.server_seq));
    expect(rows.filter((r) => r.status === 'conflict')).toHaveLength(conflicts.length);
    expect(rows.filter((r) => r.status === 'failed')).toHaveLength(timedOut.length);

    // the replay log of the canvas holds the create and that one update, and the watermark agrees
    const changes = await callAs(db.sql, users.owner!, 'get_canvas_changes', [canvasId, 0, 1000]);
    expect(changes.changes.map((c: any) => [c.action, c.version])).toEqual([['create', 1], ['update', 2]]);
    expect(Number(changes.watermark)).toBe(Number(results[w]!.server_seq));
  });

  describe(`one client_op_id sent from ${SAME_OP_CLIENTS} connections at once is applied once`, () => {
    const kinds = ['update', 'create with a client-chosen block_id', 'create with a server-assigned block_id', 'delete'] as const;

    it.each(kinds)('%s', async (kind) => {
      const { canvasId, users } = await createCanvas(db.sql, ['editor']);
      const editor = users.editor!;
      const before = (await mutate(db.sql, editor, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'v1' } } }));
      expect(before.status).toBe('success');
      const clientOpId = `retry-${randomUUID()}`;
      const op: Op = kind === 'update'
        ? { canvasId, blockId: before.block_id!, action: 'update', clientOpId, baseVersion: 1, patch: { content: { text: 'v2' } } }
        : kind === 'delete'
          ? { canvasId, blockId: before.block_id!, action: 'delete', clientOpId, baseVersion: 1, patch: {} }
          : { canvasId, blockId: kind.includes('client-chosen') ? randomUUID() : null, action: 'create', clientOpId,
              baseVersion: null, patch: { type: 'text', content: { text: 'new' } } };

      const results = (await race(Array.from({ length: SAME_OP_CLIENTS }, () => ({ userId: editor, op })))).map((r) => r.result);

      // every caller gets the original result: success, the same server_seq, version and block id
      const statuses = results.map((r) => r.status);
      expect(statuses, JSON.stringify(results.find((r) => r.status !== 'success'))).toEqual(Array(SAME_OP_CLIENTS).fill('success'));
      expect(new Set(results.map((r) => r.server_seq)).size).toBe(1);
      expect(new Set(results.map((r) => r.block_id)).size).toBe(1);
      expect(new Set(results.map((r) => r.version)).size).toBe(1);

      // applied once: one success row, the other attempts logged as duplicates
      const rows = await db.sql`
        select status, count(*)::int as n from app.block_operations
        where actor_id = ${editor} and client_op_id = ${clientOpId} group by status order by status`;
      expect(rows).toEqual([{ status: 'duplicate', n: SAME_OP_CLIENTS - 1 }, { status: 'success', n: 1 }]);

      // and the canvas shows exactly one effect
      const blocks = await db.sql`select block_id, version from app.blocks where canvas_id = ${canvasId} order by created_at`;
      const applied = await db.sql`select count(*)::int as n from app.block_operations where canvas_id = ${canvasId} and status = 'success'`;
      expect(applied[0]!.n).toBe(2); // the setup create + this op
      if (kind === 'update') expect(blocks).toEqual([{ block_id: before.block_id, version: 2 }]);
      if (kind === 'delete') expect(blocks).toEqual([]);
      if (kind.startsWith('create')) {
        expect(blocks).toHaveLength(2);
        expect(blocks[1]!.block_id).toBe(results[0]!.block_id);
      }
    });
  });
});
