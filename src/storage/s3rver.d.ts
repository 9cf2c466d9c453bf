// The parts of @20minutes/s3rver (s3rver's maintained fork, plain JavaScript without types) that
// src/storage/local.ts uses.
declare module '@20minutes/s3rver' {
  export type S3rverOptions = {
    address?: string;
    port?: number;
    silent?: boolean;
    directory: string;
    resetOnClose?: boolean;
    allowMismatchedSignatures?: boolean;
    vhostBuckets?: boolean;
    /** Buckets created at run() when missing, each with its configuration documents (CORS, website) as XML. */
    configureBuckets?: { name: string; configs: (string | Buffer)[] }[];
  };
  export default class S3rver {
    constructor(options: S3rverOptions);
    /** Creates the configureBuckets buckets (when missing) and applies their configuration. */
    configureBuckets(): Promise<void>;
    /** The Koa request handler, for a server of one's own. */
    callback(): (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void;
    readonly logger: { close(): void };
  }
}

// Its signing accounts: the key pairs the server accepts (S3RVER/S3RVER unless changed).
declare module '@20minutes/s3rver/lib/models/account.js' {
  type Account = { createKeyPair(accessKeyId: string, secretAccessKey: string): void; revokeAccessKey(accessKeyId: string): void };
  const AWSAccount: { DUMMY_ACCOUNT: Account };
  export default AWSAccount;
}
