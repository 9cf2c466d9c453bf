import pg from 'pg';
import { PG_KEEPALIVE } from '../db/index.ts';
import type { ConnectionUrls } from '../db/pooling.ts';

type ConnectCallback = (err: Error | undefined, client: pg.PoolClient | undefined, done: (release?: any) => void) => void;

/**
 * The longest wait between two tries to open Graphile Worker's LISTEN client (the first waits
 * 100 ms, then twice as long each time, with jitter), about its default poll interval: new jobs
 * are heard again within that of the database answering.
 */
export const LISTEN_RETRY_MAX_MS = 2000;

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
  /** Waits before the next try to open the LISTEN client, and whom to tell if the pool ends meanwhile. */
  readonly #listenRetries = new Map<NodeJS.Timeout, ConnectCallback>();

  constructor(urls: ConnectionUrls, opts: { max: number; applicationName: string }) {
    super({ connectionString: urls.pooled, max: opts.max, application_name: opts.applicationName, ...PG_KEEPALIVE });
    // first of the connect listeners: a client's connection errors are coded before anyone sees them
    this.on('connect', watchClient);
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
    if (callback && callback.name === 'listenForChanges') return this.#connectListen(callback, 0);
    if (callback) {
      super.connect((err, client, done) => callback(err, client, client ? releaseReadOnly(client, done) : done));
      return;
    }
    return super.connect().then((client) => {
      client.release = releaseReadOnly(client, client.release.bind(client));
      return client;
    });
  }

  /**
   * Opens the LISTEN client, trying again until a connection opens (or the pool ends), at most
   * LISTEN_RETRY_MAX_MS apart. Graphile Worker (0.17, main.js listenForChanges) waits
   * `50 * e^attempts` ms, up to its MAX_DELAY of 60 s, before each new try and counts every failed
   * one: across a restart's 20-30 s of refused connections its wait grew to 20-55 s, and new jobs
   * waited for the poll meanwhile. No option bounds it (MAX_DELAY is a constant of main.js), so the
   * refused tries never reach it: it sees one failure per lost connection, and `attempts` back to
   * 0 at each successful LISTEN.
   */
  #connectListen(callback: ConnectCallback, attempt: number): void {
    const handOver: ConnectCallback = (err, client, done) => {
      if (!err || this.ending) return callback(err, client, done);
      const delay = Math.min(LISTEN_RETRY_MAX_MS, 100 * 2 ** attempt) * (0.5 + Math.random() / 2);
      const timer = setTimeout(() => {
        this.#listenRetries.delete(timer);
        this.#connectListen(callback, attempt + 1);
      }, delay);
      this.#listenRetries.set(timer, callback);
    };
    if (this.listenPool) this.listenPool.connect(handOver);
    else super.connect((err, client, done) => handOver(err, client, client ? releaseReadOnly(client, done) : done));
  }

  /** Whether `client` is one of the direct LISTEN clients (always true without a pooler). */
  isDirect(client: object): boolean {
    return !this.listenPool || this.#direct.has(client);
  }

  override async end(): Promise<void> {
    // a LISTEN client still being tried for: Graphile Worker hears the pool ended (it has stopped by now)
    for (const [timer, callback] of this.#listenRetries) {
      clearTimeout(timer);
      callback(new Error('the worker queue pool ended'), undefined, () => {});
    }
    this.#listenRetries.clear();
    await Promise.all([super.end(), this.listenPool?.end()]);
  }
}

const READ_ONLY_SESSION_END = "select pg_terminate_backend(pg_backend_pid()) where current_setting('default_transaction_read_only')::bool";

/** Clients that answered 25006 (read_only_sql_transaction) since they were handed out. */
const refusedReadOnly = new WeakSet<object>();

/**
 * A session opened while the database was read-only (a failover's demoted primary, a standby,
 * default_transaction_read_only on the database) keeps that setting for its life, and pg's pool
 * keeps a client for as long as it is used (Graphile Worker polls every 2 s): every job fetch on it
 * was refused long after the database was writable again. A client that answered 25006 is released
 * with an error, which makes the pool close it and open a new session for the next caller; the
 * same rule as the postgres.js pools' (patches/postgres+3.4.9.patch).
 */
function releaseReadOnly(client: pg.PoolClient, release: (err?: any) => void): (err?: any) => void {
  return (err?: any) => {
    const readOnly = refusedReadOnly.has(client);
    refusedReadOnly.delete(client);
    if (!readOnly || err) return release(err);
    // behind a transaction pooler the setting is the pooler's server session's, which outlives this
    // client: it ends itself too while read-only by default (not a hot standby's), as in the patch
    client.query(READ_ONLY_SESSION_END).catch(() => {})
      .finally(() => release(new Error('the session refused a write as read-only (25006): replaced')));
  };
}

/** Clients whose connection failed: the error they emitted said so ('error' is pg's event for a dead connection). */
const lostClients = new WeakSet<object>();

/**
 * Watches a new client (the pool's first 'connect' listener, so before anyone else sees it) and
 * wraps its `query` once, promise and callback forms alike, so that every error it answers is
 * noted: a 25006 answer marks the client for replacement (releaseReadOnly); pg's connection errors
 * that carry no code (its own 'Connection terminated unexpectedly', 'Client has encountered a
 * connection error and is not queryable') get postgres.js's code for the same, CONNECTION_CLOSED,
 * so the worker tells a lost connection by the error's code (isConnectionFailure,
 * src/db/faults.ts) and never by its text. A pg client emits 'error' only for its connection (a
 * socket error, an unexpected end, the server's FATAL while it was idle); a query on such a client
 * fails with an uncoded error too.
 */
function watchClient(client: pg.PoolClient): void {
  const codeLoss = (err: unknown) => {
    if (err instanceof Error && (err as { code?: unknown }).code === undefined) (err as { code?: string }).code = 'CONNECTION_CLOSED';
  };
  client.prependListener('error', (err: Error) => {
    lostClients.add(client);
    codeLoss(err);
  });
  const note = (err: any) => {
    if (lostClients.has(client)) codeLoss(err);
    if (err?.code === '25006') refusedReadOnly.add(client);
  };
  const query = client.query.bind(client) as (...args: any[]) => any;
  (client as any).query = (...args: any[]) => {
    const last = args.length - 1;
    if (typeof args[last] === 'function') {
      const cb = args[last];
      args[last] = (err: any, res: any) => { note(err); cb(err, res); };
    }
    const result = query(...args);
    if (result && typeof result.then === 'function') result.then(undefined, note);
    return result;
  };
}
