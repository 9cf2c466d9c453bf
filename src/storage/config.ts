import { z } from 'zod';
import { envFlag, envInteger, envProblems, envText, envUrl, presentValues } from '../env-values.ts';

/**
 * Where files live (docs/files.md): any S3-compatible endpoint, from the environment.
 *   S3_BUCKET             the bucket (required to use a real endpoint; it must exist)
 *   S3_REGION             its region (default us-east-1; Supabase: the project's region)
 *   S3_ENDPOINT           the endpoint URL; unset = AWS S3 of S3_REGION
 *   S3_FORCE_PATH_STYLE   1/true: https://endpoint/bucket/key (MinIO, Supabase Storage) instead of bucket.endpoint
 *   S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY   static keys (both or neither; neither = the AWS SDK's default chain)
 * Without S3_BUCKET, outside production, POTENTIA_LOCAL_S3_DIR (set by `npm start`) runs the local
 * S3-compatible server in this process (src/storage/local.ts) with its data there, on
 * 127.0.0.1:LOCAL_S3_PORT (default: a free port). Otherwise files are off: the file endpoints answer
 * 503 storage_not_configured, and the cleanup job leaves objects alone.
 */
const StorageEnv = z.object({
  NODE_ENV: z.string().optional(),
  S3_BUCKET: z.string().min(3, { error: 'expected a bucket name of 3 to 63 characters' }).max(63, { error: 'expected a bucket name of 3 to 63 characters' }).optional(),
  S3_REGION: envText(1).default('us-east-1'),
  S3_ENDPOINT: envUrl('http', 'https://<ref>.supabase.co/storage/v1/s3').optional(),
  S3_FORCE_PATH_STYLE: envFlag().optional(),
  S3_ACCESS_KEY_ID: envText(1).optional(),
  S3_SECRET_ACCESS_KEY: envText(1).optional(),
  POTENTIA_LOCAL_S3_DIR: envText(1).optional(),
  LOCAL_S3_PORT: envInteger(0, 65535).default(0),
});

export type S3Config = {
  bucket: string;
  region: string;
  endpoint?: string;
  forcePathStyle: boolean;
  credentials?: { accessKeyId: string; secretAccessKey: string };
};

export type StorageConfig =
  | { kind: 's3'; s3: S3Config }
  | { kind: 'local'; directory: string; port: number; bucket: string }
  | { kind: 'none'; reason: string };

/** The storage the environment asks for; throws on a half-made configuration, naming what is missing. */
export function storageConfig(given: Record<string, string | undefined> = process.env): StorageConfig {
  // blank values count as unset (S3_ENDPOINT= in an env file), as loadConfig reads them
  const env = presentValues(given);
  const parsed = StorageEnv.safeParse(env);
  if (!parsed.success) {
    throw new Error(`invalid storage environment: ${envProblems(parsed.error.issues, env, ['S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'])} ` +
      '(what each S3_* variable takes: docs/files.md, "Configuration")');
  }
  const e = parsed.data;
  if (!e.S3_BUCKET) {
    const stray = ['S3_ENDPOINT', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY'].filter((k) => env[k]);
    if (stray.length) throw new Error(`${stray.join(', ')} set without S3_BUCKET: set S3_BUCKET to the bucket files go to (docs/files.md)`);
    if (e.POTENTIA_LOCAL_S3_DIR && e.NODE_ENV !== 'production') {
      return { kind: 'local', directory: e.POTENTIA_LOCAL_S3_DIR, port: e.LOCAL_S3_PORT, bucket: 'potentia-files' };
    }
    return { kind: 'none', reason: e.NODE_ENV === 'production' ? 'S3_BUCKET is not set' : 'S3_BUCKET is not set (npm start runs a local S3 server)' };
  }
  if (!e.S3_ACCESS_KEY_ID !== !e.S3_SECRET_ACCESS_KEY) {
    throw new Error('set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither (the AWS SDK\'s default credential chain)');
  }
  return {
    kind: 's3',
    s3: {
      bucket: e.S3_BUCKET,
      region: e.S3_REGION,
      endpoint: e.S3_ENDPOINT,
      forcePathStyle: e.S3_FORCE_PATH_STYLE === '1' || e.S3_FORCE_PATH_STYLE === 'true',
      credentials: e.S3_ACCESS_KEY_ID && e.S3_SECRET_ACCESS_KEY
        ? { accessKeyId: e.S3_ACCESS_KEY_ID, secretAccessKey: e.S3_SECRET_ACCESS_KEY } : undefined,
    },
  };
}
