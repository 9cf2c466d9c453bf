import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client, S3ServiceException } from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { S3Config } from './config.ts';

// The SDK warns once per process that its releases after January 2027 need Node 22; this
// repository runs Node 20 with the SDK its lockfile pins, so the notice is for whoever upgrades
// (README, docs/files.md), not for every server log.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** What a HEAD of an object says: its size and ETag (the hex MD5 of a single-part upload, quoted). */
export type ObjectHead = { size: number; etag: string | null; contentType: string | null };

/** The four object operations files need, on one bucket of any S3-compatible endpoint. */
export type ObjectStorage = {
  readonly bucket: string;
  /** A URL to PUT exactly these bytes, once: content-type, content-length, (when given) content-md5 and If-None-Match: * are signed into it. */
  presignPut(key: string, opts: { contentType: string; size: number; contentMd5?: string | null; expiresIn: number }):
    Promise<{ url: string; headers: Record<string, string> }>;
  /** A URL to GET the object, answered with this type and as an attachment named `filename`. */
  presignGet(key: string, opts: { filename: string; contentType: string; expiresIn: number }): Promise<string>;
  /** null when there is no such object. `signal` abandons the request (rejecting with its reason). */
  head(key: string, opts?: { signal?: AbortSignal }): Promise<ObjectHead | null>;
  /**
   * Removes the object; removing a missing object succeeds (S3's DeleteObject semantics). `once`:
   * one request, never sent again after a failure (a DELETE that landed but whose answer was lost,
   * sent again, would remove what was PUT since). `signal` abandons the request.
   */
  remove(key: string, opts?: { signal?: AbortSignal; once?: boolean }): Promise<void>;
};

export function s3Storage(cfg: S3Config): ObjectStorage {
  const options = {
    region: cfg.region,
    endpoint: cfg.endpoint,
    forcePathStyle: cfg.forcePathStyle,
    credentials: cfg.credentials,
    // The SDK's default adds a CRC32 of the (empty) request body to presigned PUT URLs, which S3
    // then checks against the real body and refuses (aws-sdk-js-v3 #6810); checksums only where an
    // operation requires them. Our integrity check is the signed Content-MD5 and the HEAD's ETag.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 2,
  } as const;
  const client = new S3Client(options);
  let onceClient: S3Client | undefined; // for remove({once}): the same, without the SDK's retry
  const Bucket = cfg.bucket;
  return {
    bucket: Bucket,
    async presignPut(key, { contentType, size, contentMd5, expiresIn }) {
      // If-None-Match: * (S3's conditional write): the PUT creates the object or is refused, 412
      // PreconditionFailed with nothing written, so the URL uploads once and cannot replace the bytes
      // while it lasts (Supabase Storage's signed upload URL refuses a second upload the same way)
      const command = new PutObjectCommand({ Bucket, Key: key, ContentType: contentType, ContentLength: size, ContentMD5: contentMd5 ?? undefined,
        IfNoneMatch: '*' });
      const url = await getSignedUrl(client, command, {
        expiresIn,
        // signed, so the PUT must carry exactly these: the declared type, length and MD5, and the condition
        signableHeaders: new Set(['content-type', 'content-length', 'if-none-match', ...(contentMd5 ? ['content-md5'] : [])]),
      });
      // content-length is set by every HTTP client from the body itself (browsers forbid setting it)
      return { url, headers: { 'content-type': contentType, ...(contentMd5 ? { 'content-md5': contentMd5 } : {}), 'if-none-match': '*' } };
    },
    async presignGet(key, { filename, contentType, expiresIn }) {
      return getSignedUrl(client, new GetObjectCommand({
        Bucket, Key: key, ResponseContentType: contentType, ResponseContentDisposition: contentDisposition(filename),
      }), { expiresIn });
    },
    async head(key, opts) {
      try {
        const res = await client.send(new HeadObjectCommand({ Bucket, Key: key }), { abortSignal: opts?.signal });
        return { size: res.ContentLength ?? 0, etag: res.ETag ?? null, contentType: res.ContentType ?? null };
      } catch (err) {
        if (err instanceof S3ServiceException && err.$metadata.httpStatusCode === 404) return null;
        throw err;
      }
    },
    async remove(key, opts) {
      const sender = opts?.once ? (onceClient ??= new S3Client({ ...options, maxAttempts: 1 })) : client;
      await sender.send(new DeleteObjectCommand({ Bucket, Key: key }), { abortSignal: opts?.signal });
    },
  };
}

/** `attachment` with the name in ASCII (quotes and backslashes dropped) and in full as RFC 5987 filename*. */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]/g, '_').replace(/["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename).replace(/['()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`)}`;
}
