// Files through HTTP with the local S3-compatible server (the one npm start runs: the server here
// starts it in-process from POTENTIA_LOCAL_S3_DIR, as scripts/start sets it): an editor uploads
// with a presigned PUT (a real PUT with fetch), completes, a file block refers to the file, a
// viewer downloads the same bytes with a presigned GET, an outsider gets 404 and no URL; wrong
// bytes are refused at completion; the cleanup_files worker task removes the object of a deleted
// block's file and of an upload never completed; without a bucket the endpoints answer 503.
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { OpenAPIHono } from '@hono/zod-openapi';
import type { JobHelpers } from 'graphile-worker';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileRoutes } from '../../functions/files.ts';
import type { Database } from '../../src/db/index.ts';
import { withCommonMiddleware } from '../../src/http/common.ts';
import type { AppEnv } from '../../src/http/env.ts';
import type { Server } from '../../src/server.ts';
import { storageConfig } from '../../src/storage/config.ts';
import { createFileStorage, fileStorage, type ObjectStorage } from '../../src/storage/index.ts';
import { startLocalS3 } from '../../src/storage/local.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { createTaskList } from '../../src/worker/tasks.ts';
import { checkedFetch, expectContract } from '../helpers/contract.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

const run = promisify(execFile);
const dataDir = mkdtempSync(join(tmpdir(), 'potentia-files-'));
const savedEnv = process.env.POTENTIA_LOCAL_S3_DIR;
let server: Server;
let database: Database;
let sql: Sql;
let storage: ObjectStorage;
let canvasId: string;
const tokens: Record<'editor' | 'viewer' | 'outsider', string> = { editor: '', viewer: '', outsider: '' };

beforeAll(async () => {
  process.env.POTENTIA_LOCAL_S3_DIR = dataDir; // what scripts/start exports when S3_BUCKET is unset
  server = await startTestServer({ validateResponses: true });
  database = testDatabase(3);
  sql = database.sql;
  storage = (await fileStorage().get())!;
  const fixture = await createCanvas(sql, ['editor', 'viewer']);
  canvasId = fixture.canvasId;
  tokens.editor = await tokenFor(server, fixture.users.editor!);
  tokens.viewer = await tokenFor(server, fixture.users.viewer!);
  tokens.outsider = await tokenFor(server, await createUser(sql, 'outsider'));
});
afterAll(async () => {
  await server?.stop();
  await fileStorage().close();
  await database?.close();
  rmSync(dataDir, { recursive: true, force: true });
  if (savedEnv === undefined) delete process.env.POTENTIA_LOCAL_S3_DIR; else process.env.POTENTIA_LOCAL_S3_DIR = savedEnv;
});

type Who = keyof typeof tokens;
const api = (who: Who, method: string, path: string, body?: unknown) =>
  checkedFetch(server.url, method, `/api/v1/canvas/${canvasId}${path}`, { token: tokens[who], body });
const md5 = (bytes: Buffer) => createHash('md5').update(bytes).digest('base64');
const put = (upload: { upload_url: string; headers: Record<string, string> }, bytes: Buffer, headers: Record<string, string> = {}) =>
  fetch(upload.upload_url, { method: 'PUT', body: new Uint8Array(bytes), headers: { ...upload.headers, ...headers } });
const objectKey = async (fileId: string) => (await sql`select object_key from app.files where file_id = ${fileId}`)[0]!.object_key as string;
const countFiles = async () => Number((await sql`select count(*) from app.files where canvas_id = ${canvasId}`)[0]!.count);
const fileRow = async (fileId: string) => (await sql`select status, purged_at from app.files where file_id = ${fileId}`)[0]!;

/** The cleanup_files task, as Graphile Worker runs it from the crontab. */
async function runCleanupTask() {
  const tasks = createTaskList({ sql, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 'test', failureThreshold: 3, cooldownMs: 1000 }) });
  const messages: string[] = [];
  const logger = { info: (m: string) => messages.push(m), warn: (m: string) => messages.push(m), debug: () => {}, error: (m: string) => messages.push(m) };
  await tasks.cleanup_files({}, { logger } as unknown as JobHelpers);
  return messages;
}

describe('files: upload, complete, refer, download', () => {
  let fileId: string;
  let blockId: string;
  const bytes = randomBytes(3000);

  it('an editor uploads the bytes to a presigned PUT URL and completes the upload', async () => {
    const started = Date.now();
    const created = await api('editor', 'POST', '/files', { filename: 'Quarterly report é.pdf', content_type: 'application/pdf',
      size_bytes: bytes.length, checksum: md5(bytes) });
    expect(created.status, created.text).toBe(201);
    fileId = created.body.file_id;
    expect(created.body.file).toMatchObject({ file_id: fileId, canvas_id: canvasId, status: 'pending', size_bytes: 3000, checksum: md5(bytes),
      content_type: 'application/pdf', filename: 'Quarterly report é.pdf', completed_at: null });
    expect(created.body.method).toBe('PUT');
    expect(created.body.headers).toEqual({ 'content-type': 'application/pdf', 'content-md5': md5(bytes), 'if-none-match': '*' });
    // short-lived: file_upload_url_seconds (900) from now, and signed so (X-Amz-Expires)
    expect(Date.parse(created.body.expires_at) - started).toBeGreaterThan(899_000);
    expect(Date.parse(created.body.expires_at) - Date.now()).toBeLessThanOrEqual(900_000);
    const url = new URL(created.body.upload_url);
    expect(url.searchParams.get('X-Amz-Expires')).toBe('900');
    expect(url.searchParams.get('X-Amz-SignedHeaders')).toBe('content-length;content-md5;content-type;host;if-none-match');
    expect(created.headers.get('cache-control')).toBe('private, no-store');

    // the signature holds the type and the length: anything else is refused by the storage itself
    expect((await put(created.body, bytes, { 'content-type': 'text/html' })).status).toBe(403);
    expect((await put(created.body, Buffer.concat([bytes, Buffer.from('!')]))).status).toBe(403);
    // not uploaded yet: completion says so, and the file stays pending
    const early = await api('editor', 'POST', `/files/${fileId}/complete`);
    expect(early.status).toBe(409);
    expect(early.body.error).toMatchObject({ code: 'conflict', reason: 'not_uploaded' });

    const uploaded = await put(created.body, bytes);
    expect(uploaded.status).toBe(200);
    const viewerTry = await api('viewer', 'POST', `/files/${fileId}/complete`);
    expect(viewerTry.status).toBe(403);
    const done = await api('editor', 'POST', `/files/${fileId}/complete`);
    expect(done.status, done.text).toBe(200);
    expect(done.body.file).toMatchObject({ file_id: fileId, status: 'ready', checksum: md5(bytes) });
    expect(done.body.file.completed_at).not.toBeNull();
    const again = await api('editor', 'POST', `/files/${fileId}/complete`);
    expect(again.body.file.completed_at).toBe(done.body.file.completed_at);
  });

  it('a file block refers to the file by content.file_id (a pending file is refused)', async () => {
    const created = await api('editor', 'POST', '/mutate', { action: 'create', client_op_id: randomUUID(),
      patch: { type: 'file', content: { file_id: fileId, caption: 'Q3' } } });
    expect(created.status, created.text).toBe(200);
    blockId = created.body.block_id;
    expect(created.body.block.content).toEqual({ file_id: fileId, caption: 'Q3' });

    const pending = await api('editor', 'POST', '/files', { filename: 'later.png', content_type: 'image/png', size_bytes: 10 });
    const refused = await api('editor', 'POST', '/mutate', { action: 'create', client_op_id: randomUUID(),
      patch: { type: 'file', content: { file_id: pending.body.file_id } } });
    expect(refused.status).toBe(400);
    expect(refused.body.error).toMatchObject({ code: 'invalid_input', field: 'patch.content.file_id' });
    // what to do next names the real routes (it said POST /canvas/{id}/files, a path no server serves)
    expect(refused.body.error.message).toBe('content.file_id must be the id (a lower-case uuid) of a completed file of this canvas: '
      + 'POST /api/v1/canvas/{id}/files, PUT the bytes to its upload_url, then POST /api/v1/canvas/{id}/files/{file_id}/complete (docs/files.md)');
  });

  it('a viewer downloads the same bytes through a presigned GET URL', async () => {
    const res = await api('viewer', 'GET', `/files/${fileId}`);
    expect(res.status, res.text).toBe(200);
    expect(res.body.file).toMatchObject({ file_id: fileId, status: 'ready', size_bytes: 3000 });
    expect(res.headers.get('cache-control')).toBe('private, no-store');
    expect(new URL(res.body.download_url).searchParams.get('X-Amz-Expires')).toBe('300');
    const download = await fetch(res.body.download_url);
    expect(download.status).toBe(200);
    expect(Buffer.from(await download.arrayBuffer()).equals(bytes)).toBe(true);
    expect(download.headers.get('content-type')).toBe('application/pdf');
    expect(download.headers.get('content-disposition')).toBe(
      'attachment; filename="Quarterly report _.pdf"; filename*=UTF-8\'\'Quarterly%20report%20%C3%A9.pdf');
    // the URL is the credential: without its signature the storage refuses
    const unsigned = new URL(res.body.download_url);
    unsigned.search = '';
    expect((await fetch(unsigned)).status).toBe(403);
  });

  it('the local bucket refuses what only looks signed or was signed for another object: no read, listing or write', async () => {
    const res = await api('viewer', 'GET', `/files/${fileId}`);
    const signedUrl = new URL(res.body.download_url);
    const { host } = signedUrl;
    const key = signedUrl.pathname; // /potentia-files/canvas/<canvas>/<file>
    // raw HTTP: fetch never sends a fragment. The server's query parse drops `#…`, so a gate
    // that looked for a signature in the raw URL let these through unsigned (anonymous)
    const raw = (method: string, target: string, body = '') => new Promise<string>((resolve, reject) => {
      const socket = connect(Number(signedUrl.port), signedUrl.hostname, () => socket.write(
        `${method} ${target} HTTP/1.1\r\nHost: ${host}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`));
      let answer = '';
      socket.on('data', (d) => { answer += d; });
      socket.on('end', () => resolve(answer));
      socket.on('error', reject);
    });
    const attempts: Array<[string, string]> = [
      ['GET', key], ['GET', `${key}#&Signature=1`], ['GET', `${key}?x=1#&X-Amz-Algorithm=AWS4-HMAC-SHA256`],
      ['GET', '/potentia-files?list-type=2#&Signature=1'], ['GET', '/potentia-files#&X-Amz-Algorithm=1'], ['GET', '/#&Signature=1'],
      ['PUT', `${key}#&Signature=1`], ['PUT', '/potentia-files/planted&Signature=1'], ['DELETE', `${key}#&Signature=1`],
    ];
    for (const [method, target] of attempts) {
      const answer = await raw(method, target, method === 'PUT' ? 'planted' : '');
      expect(answer.split('\r\n')[0], `${method} ${target}`).toBe('HTTP/1.1 403 Forbidden');
      expect(answer, `${method} ${target}`).toContain('<Code>AccessDenied</Code>');
    }
    // a presigned URL moved to another object (another canvas's key, say) no longer matches its signature
    const moved = new URL(signedUrl);
    moved.pathname = key.replace(fileId, randomUUID());
    expect((await fetch(moved)).status).toBe(403);
    // the object is intact, and nothing was planted
    const download = await fetch(signedUrl);
    expect(download.status).toBe(200);
    expect(Buffer.from(await download.arrayBuffer()).equals(bytes)).toBe(true);
    expect(await storage.head('planted&Signature=1')).toBeNull();
  });

  it('an outsider gets 404 and no URL, for the download and every other file endpoint', async () => {
    for (const [method, path] of [['GET', `/files/${fileId}`], ['POST', `/files/${fileId}/complete`]] as const) {
      const res = await api('outsider', method, path);
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(res.body.error.code).toBe('not_found');
      expect(res.text).not.toMatch(/https?:\/\/|X-Amz|canvas\//);
    }
    const upload = await api('outsider', 'POST', '/files', { filename: 'x.png', content_type: 'image/png', size_bytes: 1 });
    expect(upload.status).toBe(404);
    expect(upload.text).not.toContain('upload_url');
    const anonymous = await checkedFetch(server.url, 'GET', `/api/v1/canvas/${canvasId}/files/${fileId}`);
    expect(anonymous.status).toBe(401);
  });

  it('limits: size (max_file_bytes), type (allowed_file_types), a viewer may not upload', async () => {
    const big = await api('editor', 'POST', '/files', { filename: 'big.png', content_type: 'image/png', size_bytes: 52428801 });
    expect(big.status).toBe(413);
    expect(big.body.error).toMatchObject({ code: 'payload_too_large', field: 'size_bytes', limit: 52428800 });
    const html = await api('editor', 'POST', '/files', { filename: 'page.html', content_type: 'text/html', size_bytes: 10 });
    expect(html.status).toBe(400);
    expect(html.body.error).toMatchObject({ code: 'invalid_input', field: 'content_type' });
    const badChecksum = await api('editor', 'POST', '/files', { filename: 'a.png', content_type: 'image/png', size_bytes: 1, checksum: 'abc' });
    expect(badChecksum.body.error).toMatchObject({ code: 'invalid_input', field: 'checksum' });
    // says what the value is, not only a regular expression
    expect(badChecksum.body.error.message).toBe('checksum: the base64 MD5 of the bytes (24 characters ending in ==, '
      + 'as openssl md5 -binary FILE | base64 prints), or no checksum');
    const viewer = await api('viewer', 'POST', '/files', { filename: 'v.png', content_type: 'image/png', size_bytes: 1 });
    expect(viewer.status).toBe(403);
  });

  it('a filename that names a directory where it is saved (., .., dots and spaces, a fullwidth slash) is refused, nothing recorded', async () => {
    for (const filename of ['..', '.', '. .', '\u2024\u2024', '..\uff0fetc\uff0fpasswd', 'a\uff3cb', '\u202etxt.exe', 'a\u0085b']) {
      const before = await countFiles();
      const res = await api('editor', 'POST', '/files', { filename, content_type: 'text/plain', size_bytes: 1 });
      expect(res.status, JSON.stringify(filename)).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'invalid_input', field: 'filename' });
      expect(res.text).not.toContain('upload_url');
      expect(await countFiles()).toBe(before);
    }
    const dotted = await api('editor', 'POST', '/files', { filename: '..notes.v2.txt', content_type: 'text/plain', size_bytes: 1 });
    expect(dotted.status, dotted.text).toBe(201);
  });

  it('deleting the block deletes the file at once, and the cleanup_files task removes its object', async () => {
    const key = await objectKey(fileId);
    const deleted = await api('editor', 'POST', '/mutate', { action: 'delete', block_id: blockId, client_op_id: randomUUID(), base_version: 1 });
    expect(deleted.status, deleted.text).toBe(200);
    expect((await api('viewer', 'GET', `/files/${fileId}`)).status).toBe(404);
    expect(await storage.head(key)).toMatchObject({ size: 3000 }); // the object waits for the job
    await runCleanupTask();
    expect(await storage.head(key)).toBeNull();
    expect(await fileRow(fileId)).toMatchObject({ status: 'deleted', purged_at: expect.any(Date) });
  });
});

describe('files: an upload URL writes once', () => {
  it('a second PUT to it after a successful one is refused (412 PreconditionFailed) and overwrites nothing, as Supabase Storage refuses a duplicate', async () => {
    const first = Buffer.from('the first bytes, kept.');
    const second = Buffer.from('other bytes, same size'); // the same length: only the condition stands in the way
    // no checksum declared, so the URL signs no MD5: any bytes of the declared length would do
    const created = await api('editor', 'POST', '/files', { filename: 'once.txt', content_type: 'text/plain', size_bytes: first.length });
    expect(created.status, created.text).toBe(201);
    const key = await objectKey(created.body.file_id);
    // the condition is signed: a PUT that leaves it out is refused before anything is written
    const { 'if-none-match': _, ...unconditional } = created.body.headers as Record<string, string>;
    expect((await fetch(created.body.upload_url, { method: 'PUT', body: new Uint8Array(first), headers: unconditional })).status).toBe(403);
    expect(await storage.head(key)).toBeNull();
    expect((await put(created.body, first)).status).toBe(200);
    for (const bytes of [second, first]) {
      const again = await put(created.body, bytes);
      expect(again.status).toBe(412);
      expect(await again.text()).toMatch(/<Code>PreconditionFailed<\/Code>/);
    }
    expect((await storage.head(key))?.etag).toBe(`"${createHash('md5').update(first).digest('hex')}"`);
    // after completion too: the ready file's bytes stay what was completed
    const done = await api('editor', 'POST', `/files/${created.body.file_id}/complete`);
    expect(done.body.file).toMatchObject({ status: 'ready', checksum: md5(first) });
    expect((await put(created.body, second)).status).toBe(412);
    const download = await api('viewer', 'GET', `/files/${created.body.file_id}`);
    expect(Buffer.from(await (await fetch(download.body.download_url)).arrayBuffer())).toEqual(first);
  });
});

describe('files: completion checks what was uploaded', () => {
  it('a wrong checksum is refused (the local server does not verify Content-MD5 itself; the ETag tells)', async () => {
    const declared = Buffer.from('the bytes I meant');
    const other = Buffer.from('other bytes, same size');
    const created = await api('editor', 'POST', '/files', { filename: 'notes.txt', content_type: 'text/plain',
      size_bytes: other.length, checksum: md5(declared) });
    expect((await put(created.body, other)).status).toBe(200);
    const refused = await api('editor', 'POST', `/files/${created.body.file_id}/complete`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'conflict', reason: 'checksum_mismatch', expected: md5(declared), actual: md5(other) });
    expect((await fileRow(created.body.file_id)).status).toBe('pending');
    expect(await storage.head(await objectKey(created.body.file_id))).toBeNull(); // removed: the URL may PUT the right bytes
    expect((await api('viewer', 'GET', `/files/${created.body.file_id}`)).body.error).toMatchObject({ code: 'conflict', reason: 'not_ready' });
  });

  it('a wrong size is refused and its object removed, so the upload URL (which writes once) may PUT again and complete', async () => {
    const bytes = Buffer.from('exactly these twenty-nine b.');
    const created = await api('editor', 'POST', '/files', { filename: 'size.txt', content_type: 'text/plain', size_bytes: bytes.length });
    // a storage that ignored the signed length would keep other bytes at the key: sign such a PUT ourselves
    const longer = Buffer.concat([bytes, Buffer.from('++')]);
    const rogue = await storage.presignPut(await objectKey(created.body.file_id), { contentType: 'text/plain', size: longer.length, expiresIn: 60 });
    expect((await put({ upload_url: rogue.url, headers: rogue.headers }, longer)).status).toBe(200);
    const refused = await api('editor', 'POST', `/files/${created.body.file_id}/complete`);
    expect(refused.status).toBe(409);
    expect(refused.body.error).toMatchObject({ code: 'conflict', reason: 'size_mismatch', expected: bytes.length, actual: longer.length });
    expect(await storage.head(await objectKey(created.body.file_id))).toBeNull();
    expect((await put(created.body, bytes)).status).toBe(200);
    const done = await api('editor', 'POST', `/files/${created.body.file_id}/complete`);
    expect(done.status).toBe(200);
    expect(done.body.file).toMatchObject({ status: 'ready', checksum: md5(bytes) }); // none declared: the ETag's
  });
});

describe('files: cleanup of uploads never completed', () => {
  it('a pending upload older than file_pending_expiry_minutes loses its object and is marked deleted', async () => {
    const bytes = randomBytes(64);
    const created = await api('editor', 'POST', '/files', { filename: 'abandoned.png', content_type: 'image/png', size_bytes: bytes.length });
    expect((await put(created.body, bytes)).status).toBe(200);
    const fresh = await api('editor', 'POST', '/files', { filename: 'in-progress.png', content_type: 'image/png', size_bytes: bytes.length });
    expect((await put(fresh.body, bytes)).status).toBe(200);
    const key = await objectKey(created.body.file_id);
    await sql`update app.files set created_at = now() - interval '61 minutes' where file_id = ${created.body.file_id}`;
    await runCleanupTask();
    expect(await storage.head(key)).toBeNull();
    expect(await fileRow(created.body.file_id)).toMatchObject({ status: 'deleted', purged_at: expect.any(Date) });
    // an upload still within its time is left alone
    expect(await storage.head(await objectKey(fresh.body.file_id))).toMatchObject({ size: 64 });
    expect((await fileRow(fresh.body.file_id)).status).toBe('pending');
    const late = await api('editor', 'POST', `/files/${created.body.file_id}/complete`);
    expect(late.status).toBe(404);
  });
});

describe('files: without a bucket', () => {
  it('answers 503 storage_not_configured (production without S3_BUCKET, or any server without one)', async () => {
    const app = withCommonMiddleware(new OpenAPIHono<AppEnv>(), server.deps) as OpenAPIHono<AppEnv>;
    app.route('/api/v1/canvas', fileRoutes(server.deps, createFileStorage(storageConfig({ NODE_ENV: 'production', POTENTIA_LOCAL_S3_DIR: dataDir }))));
    for (const [method, path, body] of [['POST', `/api/v1/canvas/${canvasId}/files`, { filename: 'a.png', content_type: 'image/png', size_bytes: 1 }],
      ['POST', `/api/v1/canvas/${canvasId}/files/${randomUUID()}/complete`, undefined],
      ['GET', `/api/v1/canvas/${canvasId}/files/${randomUUID()}`, undefined]] as const) {
      const res = await app.request(path, { method, headers: { authorization: `Bearer ${tokens.editor}`, 'content-type': 'application/json' },
        body: body && JSON.stringify(body) });
      const text = await res.text();
      expectContract(method, path, { status: res.status, headers: res.headers, text });
      expect(res.status).toBe(503);
      expect(JSON.parse(text).error.code).toBe('storage_not_configured');
    }
  });

  it('reads its configuration from S3_* and refuses a half-made one, naming what is missing', () => {
    expect(storageConfig({ S3_BUCKET: 'files', S3_REGION: 'eu-central-1', S3_ENDPOINT: 'https://ref.storage.supabase.co/storage/v1/s3',
      S3_FORCE_PATH_STYLE: 'true', S3_ACCESS_KEY_ID: 'id', S3_SECRET_ACCESS_KEY: 'secret' })).toEqual({ kind: 's3', s3: {
      bucket: 'files', region: 'eu-central-1', endpoint: 'https://ref.storage.supabase.co/storage/v1/s3', forcePathStyle: true,
      credentials: { accessKeyId: 'id', secretAccessKey: 'secret' } } });
    expect(() => storageConfig({ S3_ENDPOINT: 'http://127.0.0.1:9000' })).toThrow(/S3_ENDPOINT set without S3_BUCKET/);
    expect(() => storageConfig({ S3_BUCKET: 'files', S3_ACCESS_KEY_ID: 'id' })).toThrow(/S3_SECRET_ACCESS_KEY/);
    expect(() => storageConfig({ S3_BUCKET: 'x' })).toThrow(/^invalid storage environment: S3_BUCKET: .*docs\/files\.md, "Configuration"/);
    expect(storageConfig({ POTENTIA_LOCAL_S3_DIR: '/tmp/x' })).toMatchObject({ kind: 'local', directory: '/tmp/x' });
    expect(storageConfig({ NODE_ENV: 'production', POTENTIA_LOCAL_S3_DIR: '/tmp/x' }).kind).toBe('none');
    expect(storageConfig({}).kind).toBe('none');
  });

  it('a LOCAL_S3_PORT in use is named with what to do (the log had listen\'s bare EADDRINUSE)', async () => {
    const taken = createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    const { port } = taken.address() as AddressInfo;
    try {
      await expect(startLocalS3({ directory: dataDir, port, bucket: 'potentia-files' })).rejects.toThrow(
        `LOCAL_S3_PORT ${port} on 127.0.0.1 is in use (another npm start?): stop that process, or set LOCAL_S3_PORT to a free port (unset: any free port)`);
    } finally {
      await new Promise((resolve) => taken.close(resolve));
    }
  });
});

describe('docs/files.md', () => {
  // the walkthrough a reader copies: its ```sh block run by bash as written (curl, openssl, jq),
  // with only the server's address, the canvas and TOKEN filled in
  it('the curl walkthrough runs as written: uploaded, ready, shown by a block, downloadable as report.pdf', async () => {
    const doc = readFileSync(join(new URL('../..', import.meta.url).pathname, 'docs/files.md'), 'utf8');
    const block = /```sh\n([\s\S]*?)```/.exec(doc)![1]!;
    // pasted as it stands, the block must parse: a placeholder such as `CANVAS=<canvas id>` is a
    // redirection to bash, and the line setting API, CANVAS and AUTH failed with a syntax error
    await run('bash', ['-n', '-c', block]).catch((err: { stderr?: string }) => { throw new Error(`docs/files.md's walkthrough does not parse as written: ${err.stderr}`); });
    const line = 'API=http://127.0.0.1:54321/api/v1; CANVAS=00000000-0000-4000-8000-00000000d003;';
    expect(block).toContain(line);
    const fixture = await createCanvas(sql, ['editor']);
    const script = block.replace(line, `API=${server.url}/api/v1; CANVAS=${fixture.canvasId};`);
    const cwd = mkdtempSync(join(tmpdir(), 'potentia-files-doc-'));
    try {
      writeFileSync(join(cwd, 'report.pdf'), randomBytes(2048));
      const { stdout } = await run('bash', ['-e', '-o', 'pipefail', '-c', script], {
        cwd, env: { ...process.env, TOKEN: await tokenFor(server, fixture.users.editor!) }, timeout: 60_000,
      }).catch((err: { stderr?: string; message: string }) => { throw new Error(`docs/files.md's walkthrough failed (jq: apt-get install jq): ${err.stderr ?? err.message}`); });
      expect(stdout).toMatch(/"status":"ready"/);
      expect(stdout).toMatch(/"status": ?"success"/);
      const download = /"download_url":"([^"]+)"/.exec(stdout)?.[1];
      expect(download, stdout).toBeDefined();
      const got = await fetch(download!);
      expect(got.status).toBe(200);
      expect(got.headers.get('content-disposition')).toMatch(/^attachment; filename="report\.pdf"/);
      expect(Buffer.from(await got.arrayBuffer())).toEqual(readFileSync(join(cwd, 'report.pdf')));
    } finally {
      rmSync(cwd, { recursive: true, force: true });
    }
  }, 90_000);
});
