import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

/** A request the store holds, unanswered until the test answers `res`. */
export type HeldRequest = { req: IncomingMessage; res: ServerResponse };

/**
 * A real HTTP server standing in for S3 (path style) that holds each request it is given until the
 * test answers it: a slow or hanging object store, deterministic, no sleep. `env` is the storage
 * configuration that points a server started after it at the store (src/storage/index.ts reads it
 * once, at the server's start).
 */
export type HoldingStore = {
  /** Every held request, in the order they came. */
  readonly held: HeldRequest[];
  /** When set, called with each request as it is held (a store that answers some at once). */
  answering: ((h: HeldRequest) => void) | null;
  readonly env: Record<string, string>;
  /** Answers 404 to every request still held (so that a server stopping is not kept waiting by one). */
  release(): void;
  /** Releases what is still held, then stops listening. */
  close(): Promise<void>;
};

/** Starts the store; requests `hold` refuses are answered 501 at once (default: every one is held). */
export async function startHoldingStore(bucket: string, hold: (req: IncomingMessage) => boolean = () => true): Promise<HoldingStore> {
  const held: HeldRequest[] = [];
  const server = createServer((req, res) => {
    req.resume();
    if (!hold(req)) return void res.writeHead(501).end();
    held.push({ req, res });
    store.answering?.({ req, res });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const store: HoldingStore = {
    held,
    answering: null,
    env: { S3_BUCKET: bucket, S3_ENDPOINT: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, S3_FORCE_PATH_STYLE: 'true',
      S3_ACCESS_KEY_ID: 'test', S3_SECRET_ACCESS_KEY: 'test-secret', S3_REGION: 'us-east-1' },
    release: () => {
      for (const { res } of held) if (!res.writableEnded) res.writeHead(404).end();
    },
    close: async () => {
      store.release();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  return store;
}
