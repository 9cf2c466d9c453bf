// A completion (POST .../files/{id}/complete) against a slow object store: it HEADs the object, and
// it held the file's row (FOR UPDATE) during that HEAD, so every other writer of the row (another
// completion, the cleanup job removing an expired upload, a deletion of the canvas) waited for the
// store as long as it took to answer. The HEAD is now made before the row is locked; the row is
// locked only to judge what the HEAD saw (tests/integration/file-complete-race.test.ts: a stale
// HEAD is not acted on). The store here is a real HTTP server standing in for S3 (S3_ENDPOINT,
// path style) that holds each HEAD until the test lets it go: deterministic, no sleep.
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { checkedFetch } from '../helpers/contract.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startHoldingStore, type HoldingStore } from '../helpers/holding-store.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

let store: HoldingStore;
let server: Server;
let database: Database;
let sql: Sql;
let canvasId: string;
let token: string;
const saved = { ...process.env };

beforeAll(async () => {
  store = await startHoldingStore('slow-bucket', (req) => req.method === 'HEAD'); // each HEAD answered by the test
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

describe('a completion waiting for a slow HEAD', () => {
  it('holds no lock on the file row meanwhile: another writer of the row goes on at once', async () => {
    const created = await api('POST', '/files', { filename: 'slow.txt', content_type: 'text/plain', size_bytes: 5 });
    expect(created.status, created.text).toBe(201);
    const fileId = created.body.file_id as string;
    const completing = api('POST', `/files/${fileId}/complete`);
    completing.catch(() => {});
    await until(async () => store.held.length > 0, 10_000, 'the completion\'s HEAD reaching the store');
    expect(store.held[0]!.req.url).toMatch(/^\/slow-bucket\//);

    // while the store has not answered, the row is free: a writer takes it at once (NOWAIT: 55P03 were it held)
    const writer = await reservedTransaction(sql);
    try {
      const locked = await writer.conn`select status from app.files where file_id = ${fileId} for update nowait`
        .then((rows) => rows.length, (err: { code?: string }) => err.code);
      expect(locked).toBe(1);
    } finally {
      await writer.release();
    }

    // the store answers: no object yet, the completion is refused as not uploaded
    store.held.shift()!.res.writeHead(404).end();
    const answer = await completing;
    expect(answer.status, answer.text).toBe(409);
    expect(answer.body.error).toMatchObject({ code: 'conflict', reason: 'not_uploaded' });
  });
});
