import { storageConfig, type StorageConfig } from './config.ts';
import { startLocalS3, type LocalS3 } from './local.ts';
import { s3Storage, type ObjectStorage } from './s3.ts';

export type { ObjectStorage } from './s3.ts';

/**
 * The bucket files go to, as configured (src/storage/config.ts): a real S3-compatible endpoint,
 * the local server (started in this process at the first use, then shared by the HTTP routes and
 * the in-process worker), or none.
 */
export type FileStorage = {
  readonly config: StorageConfig;
  /** The storage; null when files are off (S3_BUCKET unset outside `npm start`): answer 503 storage_not_configured. */
  get(log?: (message: string) => void): Promise<ObjectStorage | null>;
  /** Stops the local server, if one was started. */
  close(): Promise<void>;
};

export function createFileStorage(config: StorageConfig): FileStorage {
  let ready: Promise<ObjectStorage | null> | undefined;
  let local: LocalS3 | undefined;
  return {
    config,
    get(log) {
      if (config.kind === 'none') return Promise.resolve(null);
      if (config.kind === 's3') return (ready ??= Promise.resolve(s3Storage(config.s3)));
      ready ??= startLocalS3(config).then((server) => {
        local = server;
        log?.(`files: local S3-compatible server (s3rver) at ${server.url}, bucket ${config.bucket}, data in ${config.directory} ` +
          '(S3_BUCKET etc. use a real one: docs/files.md)');
        return s3Storage(server.s3);
      }, (err: unknown) => {
        ready = undefined; // a port in use, an unwritable directory: the next use tries again
        throw err;
      });
      return ready;
    },
    async close() {
      await local?.close();
      local = undefined;
      ready = undefined;
    },
  };
}

let shared: FileStorage | undefined;

/** This process's storage, from process.env (read once; a half-made S3 configuration throws here, naming what is missing). */
export function fileStorage(): FileStorage {
  return (shared ??= createFileStorage(storageConfig(process.env)));
}
