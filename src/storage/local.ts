import { randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { S3Config } from './config.ts';

/**
 * The local S3-compatible server of `npm start` and the tests: npm @20minutes/s3rver (s3rver's
 * maintained fork, MIT; README "Files" says why this one), in this process, on 127.0.0.1 only,
 * objects on disk under `directory`. It checks AWS Signature V4 on every request, presigned URLs
 * included (expiry and signed headers: a PUT with another type or length is refused), answers
 * HEAD with the size and the MD5 ETag, and serves GET with response-content-disposition, as S3 does
 * (patches/@20minutes+s3rver+4.0.4.patch: its V4 query canonicalization, as AWS encodes), and
 * refuses a conditional PUT (If-None-Match: *) to an existing object with 412 PreconditionFailed,
 * as S3 does (the patch: s3rver ignored it), so an upload URL writes once.
 * It does not verify Content-MD5 on PUT nor keep x-amz-checksum-* values, which is why completion
 * compares the ETag (src/storage/s3.ts, sql/files/files.sql).
 * Private like a real bucket: s3rver lets unsigned requests through as anonymous, so the patch
 * makes its authentication refuse them (403 AccessDenied), deciding on the query it parses and
 * checks the signature against. A gate here that looked for a signature in the raw URL was passed
 * by one that only seemed signed (`/bucket/key#&Signature=1`: s3rver's query drops the fragment,
 * and read, listed or wrote the bucket unsigned). Its key pair is made up per process and
 * s3rver's published default (S3RVER/S3RVER) is revoked, so only this process signs for it.
 */
export type LocalS3 = { url: string; s3: S3Config; close(): Promise<void> };

// the demo app uploads from the browser: its origin must be allowed to PUT with these headers
const CORS = `<CORSConfiguration><CORSRule><AllowedOrigin>*</AllowedOrigin><AllowedMethod>PUT</AllowedMethod>
<AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedHeader>*</AllowedHeader>
<ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>600</MaxAgeSeconds></CORSRule></CORSConfiguration>`;

export async function startLocalS3(opts: { directory: string; port?: number; bucket: string; host?: string }): Promise<LocalS3> {
  const [{ default: S3rver }, { default: AWSAccount }] = await Promise.all([
    import('@20minutes/s3rver'), import('@20minutes/s3rver/lib/models/account.js')]);
  const credentials = { accessKeyId: `potentia-${randomBytes(6).toString('hex')}`, secretAccessKey: randomBytes(24).toString('base64url') };
  AWSAccount.DUMMY_ACCOUNT.createKeyPair(credentials.accessKeyId, credentials.secretAccessKey);
  AWSAccount.DUMMY_ACCOUNT.revokeAccessKey('S3RVER');
  mkdirSync(opts.directory, { recursive: true });
  const host = opts.host ?? '127.0.0.1';
  const s3rver = new S3rver({
    silent: true, directory: opts.directory,
    // path-style only (http://127.0.0.1:port/bucket/key): no DNS for bucket subdomains needed
    vhostBuckets: false,
    configureBuckets: [{ name: opts.bucket, configs: [CORS] }],
  });
  await s3rver.configureBuckets();
  const http = createServer(s3rver.callback());
  await new Promise<void>((resolve, reject) => {
    http.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'EADDRINUSE'
      // as main.ts says of PORT: what is wrong and what to do, not listen's bare EADDRINUSE
      ? Object.assign(new Error(`LOCAL_S3_PORT ${opts.port} on ${host} is in use (another npm start?): stop that process, or set LOCAL_S3_PORT `
        + 'to a free port (unset: any free port)'), { code: err.code })
      : err));
    http.listen(opts.port ?? 0, host, () => resolve());
  });
  const url = `http://${host}:${(http.address() as AddressInfo).port}`;
  return {
    url,
    s3: { bucket: opts.bucket, region: 'us-east-1', endpoint: url, forcePathStyle: true, credentials },
    async close() {
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
      s3rver.logger.close();
    },
  };
}
