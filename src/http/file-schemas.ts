import { z } from '@hono/zod-openapi';
import { Int, Timestamp, Uuid } from './schemas.ts';

/**
 * The bodies of the file endpoints (functions/files.ts; internal.file_json in sql/files/files.sql),
 * closed like the rest of src/http/schemas.ts so the response check of the test runs holds them.
 */
export const FileSchema = z.object({
  file_id: Uuid,
  canvas_id: Uuid,
  filename: z.string().openapi({ description: 'as uploaded: the download is an attachment of this name' }),
  content_type: z.string().openapi({ description: 'type/subtype, lower case (app.settings allowed_file_types)' }),
  size_bytes: Int,
  checksum: z.string().nullable().openapi({ description: 'base64 MD5 of the bytes (as Content-MD5): declared, or from the ETag at completion' }),
  status: z.enum(['pending', 'ready']).openapi({ description: 'pending until completed; only a ready file is downloadable' }),
  uploaded_by: Uuid.nullable(),
  created_at: Timestamp,
  completed_at: Timestamp.nullable(),
}).strict().openapi('File');

export const FileUpload = z.object({
  file_id: Uuid,
  upload_url: z.string().url().openapi({ description: 'presigned: PUT the bytes here, with `headers`, before expires_at' }),
  method: z.literal('PUT'),
  headers: z.record(z.string(), z.string()).openapi({
    description: 'send these with the PUT (content-type; content-md5 when a checksum was given; if-none-match: *): they are signed into the URL, ' +
      'as is the length, so other bytes, another type or length are refused by the storage, and so is a second PUT once the object '
      + 'exists (412 PreconditionFailed: the URL writes once)' }),
  expires_at: Timestamp,
  file: FileSchema,
}).strict().openapi('FileUpload');

export const FileCompleted = z.object({ file: FileSchema }).strict().openapi('FileCompleted');

export const FileDownload = z.object({
  file: FileSchema,
  download_url: z.string().url().openapi({ description: 'presigned GET of the bytes (Content-Disposition: attachment; filename), until expires_at' }),
  expires_at: Timestamp,
}).strict().openapi('FileDownload');

/** 409 of completion and download: why the file is not (yet) what was asked. */
export const FileConflict = z.object({
  error: z.object({
    code: z.literal('conflict'),
    message: z.string(),
    reason: z.enum(['not_uploaded', 'size_mismatch', 'checksum_mismatch', 'not_ready']).openapi({
      description: 'not_uploaded: no object at the upload URL yet; size_mismatch / checksum_mismatch: the object is not what was ' +
        'declared (PUT again, then complete); not_ready: the upload is not completed' }),
    expected: z.union([Int, z.string()]).optional().openapi({ description: 'size_mismatch: bytes declared; checksum_mismatch: MD5 declared' }),
    actual: z.union([Int, z.string()]).optional().openapi({ description: 'what the HEAD of the object found' }),
  }).strict(),
}).strict().openapi('FileConflict');
