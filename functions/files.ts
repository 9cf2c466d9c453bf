import { createRoute } from '@hono/zod-openapi';
import { Uuid } from '../src/http/schemas.ts';
import type { Context } from 'hono';
import { withRequest } from '../src/db/request.ts';
import type { AppEnv, Deps } from '../src/http/env.ts';
import { ApiError, apiErrorFromDatabase } from '../src/http/errors.ts';
import { FileCompleted, FileConflict, FileDownload, FileUpload } from '../src/http/file-schemas.ts';
import { requireAuth } from '../src/http/middleware.ts';
import { bearerSecurity, createRouter, ErrorSchema, responses, z } from '../src/http/openapi.ts';
import { callApi } from '../src/http/rpc.ts';
import { fileStorage, type FileStorage, type ObjectStorage } from '../src/storage/index.ts';
import type { ObjectHead } from '../src/storage/s3.ts';

/**
 * Files on S3-compatible storage (F1-F3; docs/files.md), mounted at /api/v1/canvas beside the
 * canvas routes, served by the Node server (not an edge function: it presigns with the AWS SDK).
 * The database decides (sql/files/files.sql); this layer talks to the bucket: it presigns the
 * short-lived PUT and GET URLs for the objects the database names, and HEADs an object before
 * the database may mark its file ready. The bytes never pass through this server.
 */
const FileParams = z.object({ canvas_id: Uuid, file_id: Uuid });
// a refusal says what the value is (the default names only the regular expression)
const checksumForm = 'the base64 MD5 of the bytes (24 characters ending in ==, as openssl md5 -binary FILE | base64 prints), or no checksum';
const CreateFile = z.object({
  filename: z.string().min(1).max(255).openapi({ description: 'shown as the download\'s name; no / \\ (also fullwidth) or control characters, not only dots and spaces' }),
  content_type: z.string().min(3).max(255).openapi({ description: 'type/subtype without parameters, allowed by app.settings allowed_file_types',
    example: 'image/png' }),
  size_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).openapi({ description: 'exactly the bytes you will PUT (at most max_file_bytes)' }),
  checksum: z.string({ error: checksumForm }).regex(/^[A-Za-z0-9+/]{22}==$/, { error: checksumForm }).optional().openapi({
    description: 'base64 MD5 of the bytes (the Content-MD5 value): signed into the PUT, and compared with the object\'s ETag at completion' }),
}).strict();

const json = <T extends z.ZodTypeAny>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });
const errorBody = (description: string, schema: z.ZodTypeAny) => ({ description, content: { 'application/json': { schema } } });
/** The shared answers, plus 503 storage_not_configured (no bucket) beside the database's unavailable. */
const fileResponses = <S extends 200 | 201>(status: S, description: string, schema: z.ZodTypeAny, conflict?: string) => ({
  ...responses(status, description, schema as never, conflict ? { conflict: { description: conflict, schema: FileConflict } } : {}),
  503: errorBody('storage_not_configured: this server has no bucket (S3_BUCKET); unavailable: the database or the storage did not ' +
    'answer (retry_after)', ErrorSchema),
});
const route = <T extends Parameters<typeof createRoute>[0]>(r: T) => createRoute({ security: bearerSecurity, tags: ['files'], ...r });

const routes = {
  create: route({ method: 'post', path: '/{canvas_id}/files', operationId: 'createFileUpload',
    summary: 'F1: start an upload: a pending file and a presigned PUT URL (editors and above)',
    request: { params: z.object({ canvas_id: Uuid }), body: json(CreateFile) },
    responses: fileResponses(201, 'the pending file, and where and how to PUT its bytes', FileUpload) }),
  complete: route({ method: 'post', path: '/{canvas_id}/files/{file_id}/complete', operationId: 'completeFileUpload',
    summary: 'F2: finish an upload: the object is checked (HEAD: size, MD5 ETag) and the file becomes ready (editors and above)',
    request: { params: FileParams },
    responses: fileResponses(200, 'the ready file (completing a ready file again answers it)', FileCompleted,
      'not_uploaded, size_mismatch or checksum_mismatch: the file stays pending; PUT again (while the URL lasts), then complete') }),
  download: route({ method: 'get', path: '/{canvas_id}/files/{file_id}', operationId: 'getFileDownload',
    summary: 'F3: a presigned GET URL of a ready file (any member; others get 404 and no URL)',
    request: { params: FileParams },
    responses: fileResponses(200, 'the file and a short-lived download URL', FileDownload, 'not_ready: the upload is not completed') }),
};

type FileRow = { file: { file_id: string; filename: string; content_type: string; size_bytes: number; checksum: string | null; status: string } };

export function fileRoutes(deps: Deps, files: FileStorage = fileStorage()) {
  const app = createRouter();
  // npm start's local S3 server starts with the routes, not at the first upload (its URL in the log)
  if (files.config.kind === 'local') files.get((message) => deps.logger.info(message)).catch((err) => deps.logger.error({ err }, 'files: the local S3 server did not start'));
  // only these paths: mounted beside the canvas routes, a '*' here would verify their tokens twice
  app.use('/:canvas_id/files', requireAuth(deps));
  app.use('/:canvas_id/files/*', requireAuth(deps));

  app.openapi(routes.create, async (c) => {
    const storage = await requireStorage(deps, files);
    const { canvas_id } = c.req.valid('param');
    const { filename, content_type, size_bytes, checksum } = c.req.valid('json');
    const created = await callApi<FileRow & { object_key: string; upload_url_seconds: number }>(deps, c, 'F1', 'create_file',
      [canvas_id, filename, content_type, size_bytes, checksum ?? null]);
    const { file } = created;
    const signedAt = Date.now();
    const { url, headers } = await storageCall(c, () => storage.presignPut(created.object_key, {
      contentType: file.content_type, size: file.size_bytes, contentMd5: file.checksum, expiresIn: created.upload_url_seconds }));
    noStore(c);
    return c.json({ file_id: file.file_id, upload_url: url, method: 'PUT' as const, headers,
      expires_at: new Date(signedAt + created.upload_url_seconds * 1000).toISOString(), file }, 201);
  });

  app.openapi(routes.complete, async (c) => {
    const storage = await requireStorage(deps, files);
    const { canvas_id, file_id } = c.req.valid('param');
    // members only, and the object's key (an outsider learns nothing: 404, and no HEAD is made)
    const found = await callApi<FileRow & { object_key: string }>(deps, c, 'F2', 'get_file', [canvas_id, file_id]);
    return c.json(await completeAsServer(deps, c, storage, canvas_id, file_id, found.object_key, found.file.status), 200);
  });

  app.openapi(routes.download, async (c) => {
    const storage = await requireStorage(deps, files);
    const { canvas_id, file_id } = c.req.valid('param');
    const found = await callApi<FileRow & { object_key: string; download_url_seconds: number }>(deps, c, 'F3', 'get_file', [canvas_id, file_id]);
    if (found.file.status !== 'ready') {
      throw new ApiError('conflict', 'this file\'s upload is not completed yet: nothing to download', { reason: 'not_ready' });
    }
    const signedAt = Date.now();
    const url = await storageCall(c, () => storage.presignGet(found.object_key, {
      filename: found.file.filename, contentType: found.file.content_type, expiresIn: found.download_url_seconds }));
    noStore(c);
    return c.json({ file: found.file, download_url: url, expires_at: new Date(signedAt + found.download_url_seconds * 1000).toISOString() }, 200);
  });
  return app;
}

/** The bucket, or 503: storage_not_configured without one, unavailable when the local server could not start. */
async function requireStorage(deps: Deps, files: FileStorage): Promise<ObjectStorage> {
  let storage: ObjectStorage | null;
  try {
    storage = await files.get((message) => deps.logger.info(message));
  } catch (err) {
    deps.logger.error({ err }, 'files: the storage did not start');
    throw new ApiError('unavailable', 'file storage is unavailable: retry shortly', { retry_after: 1 });
  }
  if (!storage) {
    throw new ApiError('storage_not_configured',
      'files are not available: this server has no S3-compatible storage configured (S3_BUCKET; see docs/files.md)');
  }
  return storage;
}

/** A storage request; its failure (network, credentials, a 5xx) is a 503 to retry, logged with the cause. */
async function storageCall<T>(c: Context<AppEnv>, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (err) {
    c.get('log').error({ err }, 'files: storage request failed');
    throw new ApiError('unavailable', 'file storage did not answer: retry shortly', { retry_after: 1 });
  }
}

/** How long the storage calls of a removal (the second HEAD and the DELETE) may take in all; the row's claim lasts 60 s. */
const REMOVAL_DEADLINE_MS = 15_000;

/**
 * internal.complete_file as the server: its evidence is our HEAD, so no client may call it (it is
 * service_role's). Each transaction carries the caller's claims (the function checks their role
 * and token) with role service_role, and the request's headers for the audit, as callApi sets them.
 *
 * No storage call is made while the file's row is locked or a transaction is open: a slow or
 * hanging object store would hold the row (every other writer of it waited: another completion,
 * the cleanup job, a deletion of the canvas) and the transaction, until
 * idle_in_transaction_session_timeout ended it. The object is HEADed first; then, in a
 * transaction, the row is locked and what the HEAD saw judged (complete_file: pending becomes
 * ready only while it is pending; a file another completion made ready is answered as it is).
 *
 * Refused bytes are removed (so that the upload URL, which writes once, If-None-Match: *, can PUT
 * the right ones), with two guards, since the row is no longer locked by then:
 * - the refusal claims the removal on the row (internal.claim_file_removal) and commits; a
 *   completion refusing while another's claim is held removes nothing. So the object has one
 *   remover at a time, and its DELETE is sent once (no retry): a second DELETE of the same bytes,
 *   landing after the right ones were PUT (possible once the first landed) and completed, would
 *   remove bytes a completion made ready;
 * - the claimant HEADs again and removes the object only if it is still the one refused: between
 *   the first HEAD and the lock another completion may have removed those bytes and the right
 *   ones been PUT. An object that changed is judged again, as it now is (a new transaction).
 * The right bytes can only be PUT once the refused ones are gone, that is once the claimant's one
 * DELETE landed, so a completion making them ready meanwhile needs no claim. The claim is released
 * once the DELETE was answered (or none was sent); after a DELETE with no answer (the store failed
 * or the deadline passed) it is left to lapse, so that no other completion removes the object
 * while that DELETE may still land.
 */
async function completeAsServer(deps: Deps, c: Context<AppEnv>, storage: ObjectStorage, canvasId: string, fileId: string,
  objectKey: string, status: string) {
  const claims = c.get('claims');
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  const context = {
    claims: { ...claims, role: 'service_role' },
    headers: {
      'x-forwarded-for': (deps.config.trustProxy ? c.req.header('x-forwarded-for') : undefined) ?? incoming?.socket?.remoteAddress ?? '',
      'user-agent': c.req.header('user-agent') ?? '',
      'x-request-id': c.get('requestId'),
    },
    method: c.req.method,
    path: c.req.path,
  };
  type Judged = { file: unknown } | { refused: unknown; claim: string | null };
  const judge = (head: ObjectHead | null) => withRequest(deps.sql, context, async (tx): Promise<Judged> => {
    // held to the end of the transaction, across the savepoint below (a lock taken inside one that
    // is rolled back would be let go); get_file has checked that the caller may read the canvas,
    // complete_file checks that they may write it
    await tx`select from app.files where file_id = ${fileId} and canvas_id = ${canvasId} and status <> 'deleted' for update`;
    try {
      return await tx.savepoint(async (sp) =>
        (await sp`select internal.complete_file(${canvasId}, ${fileId}, ${head?.size ?? null}, ${head?.etag ?? null}) as result`)[0]!.result as { file: unknown });
    } catch (err) {
      const reason = (err instanceof ApiError ? err : apiErrorFromDatabase(err)).details.reason;
      if (reason !== 'size_mismatch' && reason !== 'checksum_mismatch') throw err;
      // refused: the removal claimed, committed with nothing else (the text keeps the microseconds)
      const [row] = await tx<{ claim: string | null }[]>`select internal.claim_file_removal(${fileId})::text as claim`;
      return { refused: err, claim: row!.claim };
    }
  });
  // the claim goes back as text, cast in SQL: a parameter the driver types timestamptz is sent
  // through a JavaScript Date, to the millisecond, and never equalled the stored microseconds (no
  // claim was released: each lapsed after 60 s, and refused bytes PUT again meanwhile stayed)
  const release = (claim: string) => withRequest(deps.sql, context, (tx) =>
    tx`select internal.release_file_removal(${fileId}, ${claim}::text::timestamptz)`).catch((err: unknown) => {
    c.get('log').warn({ err }, 'files: a removal claim was not released (it lapses after 60 s)');
  });

  try {
    // a ready file needs no HEAD (completing it again answers it); a pending one's object, unlocked
    let head = status === 'pending' ? await storageCall(c, () => storage.head(objectKey)) : null;
    // judged at most three times: the object changes only once the refused bytes are removed and
    // others PUT, and each removal is claimed
    for (let judged = 0; ; judged++) {
      const outcome = await judge(head);
      if (!('refused' in outcome)) return outcome;
      const { refused, claim } = outcome;
      if (claim === null) throw refused; // another completion is removing these bytes
      const deadline = AbortSignal.timeout(REMOVAL_DEADLINE_MS);
      let now: ObjectHead | null;
      try {
        now = await storageCall(c, () => storage.head(objectKey, { signal: deadline }));
      } catch (err) {
        await release(claim); // nothing was removed
        throw err;
      }
      if (now?.size !== head?.size || now?.etag !== head?.etag) {
        await release(claim);
        if (judged >= 2) throw refused; // changing while judged: nothing is removed
        head = now; // another object (or none) since the first HEAD: judged as it is now
        continue;
      }
      // still the bytes refused: removed, by one DELETE; the claim lapses if it has no answer
      await storageCall(c, () => storage.remove(objectKey, { signal: deadline, once: true }));
      await release(claim);
      throw refused;
    }
  } catch (err) {
    const apiError = err instanceof ApiError ? err : apiErrorFromDatabase(err);
    if (apiError.code === 'internal') c.get('log').error({ err }, 'complete_file failed');
    throw apiError;
  }
}

/** Presigned URLs are credentials for a while: never cached on the way. */
function noStore(c: Context<AppEnv>) {
  c.header('Cache-Control', 'private, no-store');
}
