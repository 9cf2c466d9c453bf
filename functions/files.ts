import { createRoute } from '@hono/zod-openapi';
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
const FileParams = z.object({ canvas_id: z.string().uuid(), file_id: z.string().uuid() });
const CreateFile = z.object({
  filename: z.string().min(1).max(255).openapi({ description: 'shown as the download\'s name; no / \\ (also fullwidth) or control characters, not only dots and spaces' }),
  content_type: z.string().min(3).max(255).openapi({ description: 'type/subtype without parameters, allowed by app.settings allowed_file_types',
    example: 'image/png' }),
  size_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).openapi({ description: 'exactly the bytes you will PUT (at most max_file_bytes)' }),
  checksum: z.string().regex(/^[A-Za-z0-9+/]{22}==$/).optional().openapi({
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
    request: { params: z.object({ canvas_id: z.string().uuid() }), body: json(CreateFile) },
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

/**
 * internal.complete_file as the server: its evidence is our HEAD, so no client may call it (it is
 * service_role's). The transaction carries the caller's claims (the function checks their role and
 * token) with role service_role, and the request's headers for the audit, as callApi sets them.
 *
 * The HEAD is made before the file's row is locked, so that a slow object store holds no lock:
 * made under it, every other writer of the row (another completion, the cleanup job, a deletion of
 * the canvas) waited for the store. The row is then locked and what the HEAD saw judged under the
 * lock (complete_file: pending becomes ready only while it is pending; a file another completion
 * made ready is answered as it is, and nothing is removed). When the bytes are refused they are
 * removed (so that the upload URL, which writes once, If-None-Match: *, can PUT the right ones), but
 * only once a second HEAD, under the lock, shows the object is still the one refused: between the
 * first HEAD and the lock another completion may have removed those bytes and the right ones been
 * PUT (a stale completion removed them, before the lock was taken first: the file ready,
 * acknowledged, with no object behind it). An object that changed is judged again as it now is.
 * Only that path, the refusal of wrong bytes, makes storage calls under the lock.
 */
async function completeAsServer(deps: Deps, c: Context<AppEnv>, storage: ObjectStorage, canvasId: string, fileId: string,
  objectKey: string, status: string) {
  const claims = c.get('claims');
  const incoming = (c.env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming;
  // a ready file needs no HEAD (completing it again answers it); a pending one's object, unlocked
  const seen = status === 'pending' ? await storageCall(c, () => storage.head(objectKey)) : null;
  try {
    return await withRequest(deps.sql, {
      claims: { ...claims, role: 'service_role' },
      headers: {
        'x-forwarded-for': (deps.config.trustProxy ? c.req.header('x-forwarded-for') : undefined) ?? incoming?.socket?.remoteAddress ?? '',
        'user-agent': c.req.header('user-agent') ?? '',
        'x-request-id': c.get('requestId'),
      },
      method: c.req.method,
      path: c.req.path,
    }, async (tx) => {
      // held to the end of the transaction, across the savepoints below (a lock taken inside one
      // that is rolled back would be let go); get_file has checked that the caller may read the
      // canvas, complete_file checks that they may write it
      await tx`select from app.files where file_id = ${fileId} and canvas_id = ${canvasId} and status <> 'deleted' for update`;
      const judge = (head: ObjectHead | null) => tx.savepoint(async (sp) =>
        (await sp`select internal.complete_file(${canvasId}, ${fileId}, ${head?.size ?? null}, ${head?.etag ?? null}) as result`)[0]!.result as { file: unknown });
      let head = seen;
      // at most twice more: under the lock only a completion's removal changes the object, and
      // every completion of this file waits for this one
      for (let judged = 0; ; judged++) {
        try {
          return await judge(head);
        } catch (err) {
          const apiError = err instanceof ApiError ? err : apiErrorFromDatabase(err);
          if (apiError.details.reason !== 'size_mismatch' && apiError.details.reason !== 'checksum_mismatch') throw err;
          const now = await storageCall(c, () => storage.head(objectKey));
          if (now?.size !== head?.size || now?.etag !== head?.etag) {
            if (judged >= 2) throw err; // changing under the lock: nothing is removed
            head = now; // another object (or none) since the first HEAD: judged as it is now
            continue;
          }
          // still the bytes refused: removed, under the lock
          await storageCall(c, () => storage.remove(objectKey));
          throw err;
        }
      }
    });
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
