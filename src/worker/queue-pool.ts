import pg from 'pg';
import { PG_KEEPALIVE } from '../db/index.ts';
import type { ConnectionUrls } from '../db/pooling.ts';

type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: any) => void) => void;

/**
 * Graphile Worker's pg pool. Graphile Worker 0.17 takes one pool for two kinds of use:
 *   - job queries (get/complete/fail jobs, cron, lock resets): one statement or transaction
 *     each, which a transaction pooler carries fine (with `noPreparedStatements`);
 *   - one client it keeps for as long as it runs, to LISTEN "jobs:insert" and start a job as soon
 *     as it is added (main.js: `pgPool.connect(listenForChanges)`).
 * Behind a transaction pooler the LISTEN lands on whichever server connection ran it and the
 * notifications go nowhere (our local PgBouncer even UNLISTENs at once, with DISCARD ALL), so new
 * jobs would wait for the next poll. So when DATABASE_URL is a pooler, the LISTEN client comes
 * from a small pool on the direct URL and everything else goes through the pooler.
 */
export class QueuePool extends pg.Pool {
  /** Direct connections for the LISTEN client; unset when DATABASE_URL is direct anyway. */
  readonly listenPool?: pg.Pool;
  readonly #direct = new WeakSet<object>();

  constructor(urls: ConnectionUrls, opts: { max: number; applicationName: string }) {
    super({ connectionString: urls.pooled, max: opts.max, application_name: opts.applicationName, ...PG_KEEPALIVE });
    if (urls.transactionPooler) {
      // two: Graphile takes a new client after an error, sometimes before the old one is released
      this.listenPool = new pg.Pool({ connectionString: urls.direct, max: 2, application_name: `${opts.applicationName}-listen`, ...PG_KEEPALIVE });
      // the caller's (and Graphile's) error and connect handlers see these clients too
      this.listenPool.on('error', (err, client) => this.emit('error', err, client));
      this.listenPool.on('connect', (client) => {
        this.#direct.add(client);
        this.emit('connect', client);
      });
    }
  }

  override connect(): Promise<pg.PoolClient>;
  override connect(callback: ConnectCallback): void;
  override connect(callback?: ConnectCallback): Promise<pg.PoolClient> | void {
    // Graphile Worker's LISTEN client, by the name of the callback it passes (see above); the
    // worker warns when a LISTEN client is not a direct one (runtime.ts, pool:listen:success)
    if (callback && this.listenPool && callback.name === 'listenForChanges') return this.listenPool.connect(callback);
    return callback ? super.connect(callback) : super.connect();
  }

  /** Whether `client` is one of the direct LISTEN clients (always true without a pooler). */
  isDirect(client: object): boolean {
    return !this.listenPool || this.#direct.has(client);
  }

  override async end(): Promise<void> {
    await Promise.all([super.end(), this.listenPool?.end()]);
  }
}
