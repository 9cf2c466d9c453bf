// Two completions of one upload (POST .../files/{id}/complete: a client's retry after a timeout,
// two tabs) with the object replaced in between. A completion HEADs the object, then asks the
// database, and removes the object when the database refuses what the HEAD saw (so that the upload
// URL, which writes once, may PUT again). The HEAD was made before the file's row was locked: a
// completion that HEADed the wrong bytes, then waited, was refused after the right bytes had been
// PUT and completed by another completion, and removed them: the file was ready (acknowledged 200)
// with no object behind it, its download a 404 for good. (The HEAD was then made under the row's
// lock, which stalled other writers of the row on a slow store; it is again made before the lock,
// and a refusal is acted on only once a second HEAD still sees the refused bytes:
// tests/integration/file-complete-slow-head.test.ts; that HEAD and the DELETE are made after the
// refusal committed, under a removal claim on the row: file-complete-slow-removal.test.ts.) Deterministic without a sleep: a
// transaction holds the file's row while the object is replaced (as an earlier refused completion
// does: removed here with the storage's own client, then PUT again through the upload URL).
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { fileStorage, type ObjectStorage } from '../../src/storage/index.ts';
import { checkedFetch } from '../helpers/contract.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

const dataDir = mkdtempSync(join(tmpdir(), 'potentia-file-race-'));
const savedEnv = process.env.POTENTIA_LOCAL_S3_DIR;
let server: Server;
let database: Database;
let sql: Sql;
let storage: ObjectStorage;
let canvasId: string;
let token: string;

beforeAll(async () => {
  process.env.POTENTIA_LOCAL_S3_DIR = dataDir; // what scripts/start exports when S3_BUCKET is unset
  server = await startTestServer({ validateResponses: true });
  database = testDatabase(3);
  sql = database.sql;
  storage = (await fileStorage().get())!;
  const fixture = await createCanvas(sql, ['editor']);
  canvasId = fixture.canvasId;
  token = await tokenFor(server, fixture.users.editor!);
});
afterAll(async () => {
  await server?.stop();
  await fileStorage().close();
  await database?.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (savedEnv === undefined) delete process.env.POTENTIA_LOCAL_S3_DIR; else process.env.POTENTIA_LOCAL_S3_DIR = savedEnv;
});

const api = (method: string, path: string, body?: unknown) => checkedFetch(server.url, method, `/api/v1/canvas/${canvasId}${path}`, { token, body });
const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('base64');
const put = (upload: { upload_url: string; headers: Record<string, string> }, bytes: Buffer) =>
  fetch(upload.upload_url, { method: 'PUT', body: new Uint8Array(bytes), headers: upload.headers });
const waiting = async () => (await sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
  where datname = current_database() and cardinality(pg_blocking_pids(pid)) > 0`)[0]!.n;

describe('a completion that saw the wrong bytes, answered after the right ones were completed', () => {
  it('removes nothing: the file is ready and its object is the right bytes, downloadable', async () => {
    const right = Buffer.from(`the right bytes ${randomUUID()}`);
    const wrong = Buffer.from(right.toString().replace('right', 'wrong'));
    expect(wrong.length).toBe(right.length);
    const created = await api('POST', '/files', { filename: 'race.txt', content_type: 'text/plain', size_bytes: right.length, checksum: md5(right) });
    expect(created.status, created.text).toBe(201);
    const fileId = created.body.file_id as string;
    const key = (await sql`select object_key from app.files where file_id = ${fileId}`)[0]!.object_key as string;
    expect((await put(created.body, wrong)).status).toBe(200);

    const holder = await reservedTransaction(sql);
    let first: Awaited<ReturnType<typeof api>>;
    try {
      await holder.conn`select from app.files where file_id = ${fileId} for update`;
      // the first completion: its HEAD sees the wrong bytes, then it waits for the row
      const stale = api('POST', `/files/${fileId}/complete`);
      stale.catch(() => {});
      await holder.waitedFor('the first completion waiting for the file row');
      // the wrong bytes removed (as a refused completion removes them) and the right ones PUT
      await storage.remove(key);
      expect((await put(created.body, right)).status).toBe(200);
      // the second completion: its HEAD sees the right bytes
      const fresh = api('POST', `/files/${fileId}/complete`);
      fresh.catch(() => {});
      await until(async () => (await waiting()) >= 2, 10_000, 'the second completion waiting for the file row');
      await holder.end('rollback');
      const [answer, second] = await Promise.all([stale, fresh]);
      first = answer;
      expect(second.status, second.text).toBe(200);
      expect(second.body.file).toMatchObject({ status: 'ready', checksum: md5(right) });
    } finally {
      await holder.release();
    }
    expect((await storage.head(key))?.etag).toBe(`"${createHash('md5').update(right).digest('hex')}"`);
    const download = await api('GET', `/files/${fileId}`);
    expect(download.status).toBe(200);
    const got = await fetch(download.body.download_url);
    expect(got.status).toBe(200);
    expect(Buffer.from(await got.arrayBuffer())).toEqual(right);
    // the first, refused on what its HEAD saw, HEADs again once it holds the row: the right bytes, the same answer
    expect(first.status, first.text).toBe(200);
    expect(first.body.file).toMatchObject({ status: 'ready' });
  });
});
