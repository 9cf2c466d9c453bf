// A completion (POST .../files/{id}/complete) that refuses the uploaded bytes removes them (so that
// the upload URL, which writes once, may PUT the right ones), once a second HEAD shows the object
// is still the one refused. That second HEAD and the DELETE were made while the file's row was
// locked, inside the request's transaction: a store hanging there held the row (every other
// writer of it waited: another completion, the cleanup job, a deletion of the canvas) and an open
// transaction, until idle_in_transaction_session_timeout ended it (503). The refusal is now decided
// and committed under the lock, with a claim of the removal on the row, and the second HEAD and the
// DELETE are made with no lock and no transaction; a completion refusing the same bytes while the
// claim is held removes nothing (tests/integration/file-complete-race.test.ts: bytes made ready are
// never removed). The store is a real HTTP server standing in for S3 (S3_ENDPOINT, path style)
// that holds each request until the test answers it: deterministic, no sleep.
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { checkedFetch } from '../helpers/contract.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startHoldingStore, type HeldRequest, type HoldingStore } from '../helpers/holding-store.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

type Held = HeldRequest;
let store: HoldingStore;
let server: Server;
let database: Database;
let sql: Sql;
let canvasId: string;
let token: string;
const saved = { ...process.env };

beforeAll(async () => {
  store = await startHoldingStore('slow-bucket'); // each request answered by the test, or at once by store.answering
  Object.assign(process.env, store.env);
  delete process.env.POTENTIA_LOCAL_S3_DIR;
  server = await startTestServer({ validateResponses: true });
  database = testDatabase(3);
  sql = database.sql;
  const fixture = await createCanvas(sql, ['editor']);
  canvasId = fixture.canvasId;
  token = await tokenFor(server, fixture.users.editor!);
});
afterAll(async () => {
  store?.release();
  await server?.stop();
  await database?.close();
  await store?.close();
  process.env = saved;
});

const api = (method: string, path: string, body?: unknown) => checkedFetch(server.url, method, `/api/v1/canvas/${canvasId}${path}`, { token, body });
const seen = (method: string) => store.held.filter((h) => h.req.method === method);
/** The next request of this method the store holds, once it came. */
async function next(method: string, count: number): Promise<Held> {
  await until(async () => seen(method).length >= count, 10_000, `${method} #${count} reaching the store`);
  return seen(method)[count - 1]!;
}
/** An object of 6 bytes: the upload declared 5 (size_mismatch). */
const sixBytes = (h: Held) => h.res.writeHead(200, { 'Content-Length': '6', ETag: '"0123456789abcdef0123456789abcdef"', 'Content-Type': 'text/plain' }).end();

/** Whether a writer takes the file's row at once (NOWAIT: 55P03 were it held), and how many of the server's transactions are open (its pool's application_name). */
async function rowFree(fileId: string): Promise<{ locked: number | string; openTransactions: number }> {
  const writer = await reservedTransaction(sql);
  try {
    const locked = await writer.conn`select status from app.files where file_id = ${fileId} for update nowait`
      .then((rows) => rows.length, (err: { code?: string }) => err.code ?? String(err));
    const [open] = await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
      where datname = current_database() and application_name = 'potentia-server' and state like 'idle in transaction%'`;
    return { locked, openTransactions: open!.n };
  } finally {
    await writer.release();
  }
}

describe('a completion removing refused bytes from a slow store', () => {
  it('holds no row lock and no transaction during the second HEAD and the DELETE; a second refusal meanwhile removes nothing', async () => {
    const created = await api('POST', '/files', { filename: 'wrong.txt', content_type: 'text/plain', size_bytes: 5 });
    expect(created.status, created.text).toBe(201);
    const fileId = created.body.file_id as string;

    const completing = api('POST', `/files/${fileId}/complete`);
    completing.catch(() => {});
    sixBytes(await next('HEAD', 1)); // the first HEAD (no lock): refused, size_mismatch

    // the second HEAD, checking the refused bytes are still there before removing them: held
    const secondHead = await next('HEAD', 2);
    expect(await rowFree(fileId)).toEqual({ locked: 1, openTransactions: 0 });
    sixBytes(secondHead); // still the refused bytes: removed

    const deletion = await next('DELETE', 1);
    expect(deletion.req.url).toMatch(/^\/slow-bucket\/canvas\//);
    expect(await rowFree(fileId)).toEqual({ locked: 1, openTransactions: 0 });

    // another completion (a retry, another tab) sees the same refused bytes while the removal is in
    // flight: refused, and it sends no DELETE of its own (the removal is the first one's)
    const again = api('POST', `/files/${fileId}/complete`);
    sixBytes(await next('HEAD', 3));
    const second = await again;
    expect(second.status, second.text).toBe(409);
    expect(second.body.error).toMatchObject({ code: 'conflict', reason: 'size_mismatch' });

    deletion.res.writeHead(204).end();
    const answer = await completing;
    expect(answer.status, answer.text).toBe(409);
    expect(answer.body.error).toMatchObject({ code: 'conflict', reason: 'size_mismatch', expected: 5, actual: 6 });
    expect(seen('DELETE')).toHaveLength(1);
    expect(seen('HEAD')).toHaveLength(3);
    expect((await sql`select status from app.files where file_id = ${fileId}`)[0]!.status).toBe('pending');
  });

  it('a removal that was answered ends its claim: wrong bytes PUT again are removed by the next completion, not 60 s later', async () => {
    // The claim (a timestamptz, compared for equality) was sent back to release_file_removal as a
    // parameter the driver typed timestamptz, which it serializes through a JavaScript Date: to the
    // millisecond. It never matched the stored microseconds, so no claim was ever released: each
    // lapsed only after 60 s. Until then a completion refusing the object removed nothing (the
    // upload URL, If-None-Match: *, cannot PUT over it), its own re-judging too.
    const created = await api('POST', '/files', { filename: 'twice-wrong.txt', content_type: 'text/plain', size_bytes: 5 });
    expect(created.status, created.text).toBe(201);
    const fileId = created.body.file_id as string;
    const deletes = seen('DELETE').length;
    store.answering = (h) => (h.req.method === 'DELETE' ? h.res.writeHead(204).end() : sixBytes(h));
    try {
      const first = await api('POST', `/files/${fileId}/complete`);
      expect(first.status, first.text).toBe(409);
      expect(seen('DELETE').length - deletes).toBe(1);
      expect((await sql`select removal_claimed_at from app.files where file_id = ${fileId}`)[0]!.removal_claimed_at).toBeNull();
      // the same wrong bytes PUT again (the store answers six bytes again): refused and removed
      const second = await api('POST', `/files/${fileId}/complete`);
      expect(second.status, second.text).toBe(409);
      expect(seen('DELETE').length - deletes).toBe(2);
      expect((await sql`select removal_claimed_at from app.files where file_id = ${fileId}`)[0]!.removal_claimed_at).toBeNull();
    } finally {
      store.answering = null;
    }
  });
});
