import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { withRequest } from '../../src/db/request.ts';
import { apiErrorFromDatabase } from '../../src/http/errors.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { claimsFor, createCanvas } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// Tenant isolation of the mutation log (issue 12), through HTTP on the in-process server: a
// user who is not a member of canvas A POSTs a 200 KB mutation to it. The answer is 404 and
// nothing of it lands in A's operation log or anywhere A's viewer can read; the attempt is
// audited once in app.system_audit, bounded and without the payload. Members' own rejected
// attempts are still logged in A.

let server: Server;
let database: Database;
let sql: Sql;
let canvasA: string;
let viewer: string;
let outsider: string;
let outsiderCanvas: string;

const BIG = 'x'.repeat(200 * 1024);

beforeAll(async () => {
  server = await startTestServer();
  database = testDatabase(3);
  sql = database.sql;
  const a = await createCanvas(sql, ['viewer']);
  canvasA = a.canvasId;
  viewer = a.users.viewer!;
  const b = await createCanvas(sql);
  outsider = b.users.owner!;
  outsiderCanvas = b.canvasId;
});
afterAll(async () => {
  await server?.stop();
  await database?.close();
});

/** POST /api/v1/canvas/{id}/mutate as `userId`. */
async function postMutate(userId: string, canvasId: string, body: unknown, headers: Record<string, string> = {}) {
  const token = await tokenFor(server, userId);
  const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as any };
}

/** Rows of canvas A's operation log: all of them (admin pool, no RLS) and those A's viewer reads under RLS. */
async function logOfA() {
  const [all] = await sql`select count(*)::int as n from app.block_operations where canvas_id = ${canvasA}`;
  const visible = await withRequest(sql, { claims: claimsFor(viewer) }, async (tx) => {
    const [row] = await tx`select count(*)::int as n from app.block_operations where canvas_id = ${canvasA}`;
    return row!.n as number;
  });
  return { all: all!.n as number, visible };
}

describe('an outsider mutating canvas A through HTTP', () => {
  it('gets 404 not_found, writes nothing A\'s viewer can read, and is audited once without the payload', async () => {
    const clientOpId = `inject-${randomUUID()}`;
    const before = await logOfA();
    expect(before.visible).toBe(before.all); // the viewer reads A's whole log, so a leak would show

    const res = await postMutate(outsider, canvasA,
      { action: 'create', client_op_id: clientOpId, patch: { type: 'text', content: { t: BIG } } },
      { 'user-agent': 'intruder/1.0' });
    expect(res.status, JSON.stringify(res.body)).toBe(404);
    expect(res.body.error.code).toBe('not_found');

    expect(await logOfA()).toEqual(before);
    const [leaked] = await sql`select count(*)::int as n from app.block_operations where client_op_id = ${clientOpId}`;
    expect(leaked!.n).toBe(0);

    const audit = await sql`
      select user_id, action, status, details, client_op_id, host(ip) as ip, user_agent,
             octet_length(a::text) as bytes, strpos(a::text, 'xxxxxxxxxx') as payload_at
      from app.system_audit a where client_op_id = ${clientOpId}`;
    expect(audit).toHaveLength(1);
    expect(audit[0]).toMatchObject({
      user_id: outsider, action: 'block.create', status: 'failed', client_op_id: clientOpId,
      ip: '127.0.0.1', user_agent: 'intruder/1.0', payload_at: 0,
      details: { canvas_id: canvasA, caller_role: 'none', error: { code: 'not_found', field: 'canvas_id' } },
    });
    expect(audit[0]!.bytes).toBeLessThan(1024);
  });

  it('a batch: 404, and nothing in A\'s log', async () => {
    const clientOpId = `inject-batch-${randomUUID()}`;
    const before = await logOfA();
    const res = await postMutate(outsider, canvasA,
      { ops: [{ action: 'create', client_op_id: clientOpId, patch: { type: 'text', content: { t: BIG } } }] });
    expect(res.status, JSON.stringify(res.body)).toBe(404);
    expect(res.body.error.code).toBe('not_found');
    expect(await logOfA()).toEqual(before);
    const [audit] = await sql`select count(*)::int as n, max(strpos(a::text, 'xxxxxxxxxx')) as payload_at
                              from app.system_audit a where client_op_id = ${clientOpId}`;
    expect(audit).toEqual({ n: 1, payload_at: 0 });
  });

  it('A\'s viewer cannot read the system audit at all', async () => {
    const attempt = withRequest(sql, { claims: claimsFor(viewer) }, (tx) => tx`select count(*) from app.system_audit`);
    await expect(attempt).rejects.toMatchObject({ code: '42501' });
  });
});

describe('a member\'s rejected attempt through HTTP', () => {
  it('is still logged in A, with its patch, and A\'s viewer reads it', async () => {
    const clientOpId = `viewer-try-${randomUUID()}`;
    const before = await logOfA();
    const res = await postMutate(viewer, canvasA, { action: 'create', client_op_id: clientOpId, patch: { type: 'text', content: { t: 'mine' } } });
    expect(res.status, JSON.stringify(res.body)).toBe(403);
    expect(res.body.error.code).toBe('forbidden');
    expect(await logOfA()).toEqual({ all: before.all + 1, visible: before.visible + 1 });
    const [row] = await sql`select status, error_code, actor_id, patch from app.block_operations where client_op_id = ${clientOpId}`;
    expect(row).toEqual({ status: 'failed', error_code: 'forbidden', actor_id: viewer, patch: { type: 'text', content: { t: 'mine' } } });
  });
});

describe('base_version beyond int4', () => {
  it('is invalid_input over HTTP, single op and batch', async () => {
    const single = await postMutate(outsider, outsiderCanvas,
      { action: 'update', block_id: randomUUID(), client_op_id: `big-${randomUUID()}`, base_version: 3_000_000_000, patch: { content: {} } });
    expect(single.status, JSON.stringify(single.body)).toBe(400);
    expect(single.body.error.code).toBe('invalid_input');
    const batch = await postMutate(outsider, outsiderCanvas,
      { ops: [{ action: 'update', block_id: randomUUID(), client_op_id: `big-${randomUUID()}`, base_version: 3_000_000_000, patch: { content: {} } }] });
    expect(batch.status, JSON.stringify(batch.body)).toBe(400);
    expect(batch.body.error.code).toBe('invalid_input');
  });

  it('called directly: the int4 cast fails with 22003, which the HTTP mapping answers as invalid_input', async () => {
    const attempt = withRequest(sql, { claims: claimsFor(outsider) }, (tx) =>
      tx`select api.upsert_block_atomic(${outsiderCanvas}::uuid, ${randomUUID()}::uuid, 'update', ${`big-${randomUUID()}`}, ${'3000000000'}, '{"content":{}}'::jsonb)`);
    const err = await attempt.then(() => null, (e: unknown) => e);
    expect(err).toMatchObject({ code: '22003' });
    expect(apiErrorFromDatabase(err).code).toBe('invalid_input');
  });

  it('in a batch called directly: a result naming base_version', async () => {
    const result = await withRequest(sql, { claims: claimsFor(outsider) }, async (tx) => {
      const ops = [{ action: 'update', block_id: randomUUID(), client_op_id: `big-${randomUUID()}`, base_version: 3_000_000_000, patch: { content: {} } }];
      const [row] = await tx`select api.upsert_blocks_atomic(${outsiderCanvas}::uuid, ${tx.json(ops)}) as result`;
      return row!.result;
    });
    expect(result).toMatchObject({ status: 'failed', failed_index: 0, error: { code: 'invalid_input', field: 'base_version' } });
  });
});
