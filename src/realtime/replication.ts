import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { LogicalReplicationService, PgoutputPlugin, type Pgoutput } from 'pg-logical-replication';
import type { Logger } from 'pino';
import { monotonicNow } from '../clock.ts';
import { PG_KEEPALIVE } from '../db/index.ts';

/**
 * One logical replication stream (pgoutput) of a publication, kept up for as long as it runs:
 * a `pg` replication connection with its own TEMPORARY slot (dropped by Postgres with the
 * connection, so a dead gateway never pins WAL), parsed by pg-logical-replication.
 *
 * Every way the connection can end — terminated backend (57P01), server restart, network loss,
 * a slot that cannot be created — ends in `onDown` and a reconnect with exponential backoff and
 * jitter; nothing is thrown to the caller and no promise is left unhandled. A temporary slot
 * starts at the WAL position where it was created, so rows committed while the stream was down
 * are not in the next stream: `onUp` is the caller's cue to read them back (bus.ts does).
 */
export type ReplicationEvents = {
  /** A row inserted into a published table, in commit order; values parsed by pg's type parsers. */
  onInsert(table: string, row: Record<string, unknown>): void;
  /** A `pg_logical_emit_message` whose prefix is in `messagePrefixes`; `lsn`: its record's end (what the function returned to its caller). */
  onMessage?(prefix: string, content: Buffer, transactional: boolean, lsn: bigint): void;
  /**
   * The stream is live (START_REPLICATION answered); called again after every reconnect.
   * `startLsn`: its slot's consistent point, a record boundary: a record ending at or before it is
   * in no part of this stream, one ending after it is (non-transactional messages, as decoded).
   */
  onUp(startLsn: bigint): void;
  /** The stream ended; a reconnect is scheduled. */
  onDown(err: unknown): void;
  /** Anything arrived on the live stream (a change, a logical message, a keepalive): it flows. */
  onActivity?(): void;
};

export type ReplicationOptions = ReplicationEvents & {
  databaseUrl: string;
  publication: string;
  applicationName?: string;
  /** Prefixes of logical messages to deliver (pgoutput `messages 'true'`); none: messages off. */
  messagePrefixes?: string[];
  logger?: Logger;
  /** Reconnect delay after the n-th consecutive failure (ms). */
  backoffMs?: (attempt: number) => number;
};

export type ReplicationStream = {
  start(): void;
  stop(): Promise<void>;
  /** Backend pid of the live walsender, undefined while down. */
  pid(): number | undefined;
  /** Backend pid of the walsender still creating its slot (connected, not yet streaming), else undefined. */
  pendingPid(): number | undefined;
  /** Ends the current connection and reconnects (the caller found it dead by other means). */
  restart(reason: string): void;
  /** While the last attempt was refused for a reason retrying does not cure (replicationRefusal): that reason; else undefined. */
  refusal(): string | undefined;
};

/** The longest wait between two attempts of the stream (the backoff's cap): a database back is tried within it. */
export const RECONNECT_BACKOFF_MAX_MS = 5000;
const defaultBackoff = (n: number) => Math.min(RECONNECT_BACKOFF_MAX_MS, 100 * 2 ** n) * (0.5 + Math.random() / 2);

/**
 * pg-logical-replication opens a fresh `pg` replication connection in its (private) `client()`
 * for every subscribe; a temporary slot must be created on that same connection, before
 * START_REPLICATION, so this subclass adds exactly that step. Its timer that confirms the stream's
 * position once a second (checkStandbyStatus) runs on the monotonic clock: a change of the library
 * itself, patches/pg-logical-replication+2.5.0.patch (applied at install, postinstall), which says
 * why; a private method overridden here would have been bypassed without a word by a release that
 * renamed or reshaped it, where a patch that no longer applies fails the install.
 */
// @ts-expect-error `client` is private in the typings; the library calls this.client() on subscribe
class TemporarySlotService extends LogicalReplicationService {
  slotName = '';
  backendPid: number | undefined;
  /** The slot's consistent point (CREATE_REPLICATION_SLOT's answer): where its stream begins. */
  startLsn = 0n;
  /** Bytes came in on the connection (part of a message, maybe: see connect's onActivity). */
  onBytes?: () => void;
  override async client(): Promise<[pg.Client, unknown]> {
    // The library's client(), but with the client's 'error' listener added before connect(), not
    // after: a walsender terminated as its startup completed sends ReadyForQuery and its FATAL
    // 57P01 in one read, both parsed before connect()'s continuation runs, so the FATAL found no
    // active query and no listener, and an EventEmitter's 'error' without one throws: pg_terminate_backend
    // of a reconnecting walsender ended the whole gateway process (exit 1, "Unhandled 'error' event").
    await this.stop();
    const client = new pg.Client({ ...this.clientConfig, replication: 'database' } as pg.ClientConfig);
    const self = this as unknown as { _client: pg.Client | null; _connection: unknown };
    self._client = client;
    client.on('error', (e) => this.emit('error', e));
    await client.connect();
    self._connection = (client as unknown as { connection: unknown }).connection;
    (self._connection as { stream: NodeJS.EventEmitter }).stream.on('data', () => this.onBytes?.());
    this.backendPid = (client as unknown as { processID?: number }).processID;
    const created = await client.query(`CREATE_REPLICATION_SLOT ${this.slotName} TEMPORARY LOGICAL pgoutput NOEXPORT_SNAPSHOT`);
    this.startLsn = parseLsn(String((created.rows[0] as { consistent_point: string }).consistent_point));
    return [client, self._connection];
  }

  /**
   * Confirms `lsn` itself. The library reports `lsn + 1` as written, flushed and applied; a
   * keepalive's LSN is the walsender's send position (already "last byte + 1"), so it confirmed
   * one byte more than it was sent. A walsender asked to stop (a fast or smart shutdown of the
   * server) exits only once its client confirmed exactly what it sent (walsender.c WalSndDone:
   * `sentPtr == flush`), so every gateway held every shutdown of the server forever: `pg_ctl stop`
   * timed out, a restart never happened, until someone killed the server.
   */
  override async acknowledge(lsn: string, ping = false): Promise<boolean> {
    const before = lsnMinusOne(lsn);
    return before === null ? false : super.acknowledge(before, ping);
  }
}

/** `lsn` (`X/Y`, hexadecimal, as pg_lsn prints it) as a number. */
export function parseLsn(lsn: string): bigint {
  const m = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  if (!m) throw new Error(`not an LSN: ${lsn}`);
  return (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`);
}

/** An LSN as pg_lsn prints it (`X/Y`, hexadecimal). */
export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

/** `lsn` (`X/Y`, hexadecimal) minus one byte, in the same notation; null for 0/0. */
export function lsnMinusOne(lsn: string): string | null {
  const [hi, lo] = lsn.split('/');
  const value = (BigInt(`0x${hi}`) << 32n) | BigInt(`0x${lo}`);
  if (value === 0n) return null;
  const prev = value - 1n;
  return `${(prev >> 32n).toString(16).toUpperCase()}/${(prev & 0xffffffffn).toString(16).toUpperCase()}`;
}

export function createReplicationStream(opts: ReplicationOptions): ReplicationStream {
  const backoff = opts.backoffMs ?? defaultBackoff;
  const prefixes = new Set(opts.messagePrefixes ?? []);
  let service: TemporarySlotService | null = null;
  let live = false;
  let stopped = true;
  let failures = 0;
  let retry: NodeJS.Timeout | null = null;
  /** The refusal of the last attempt, when it is one retrying does not cure; when it was last logged, and the attempts refused since. */
  let refused: { refusal: Refusal; loggedAt: number; since: number } | null = null;

  /**
   * Logs a failed attempt. A refusal that retrying does not cure (a setting someone must change):
   * at error once, with what to do, then at most once per REFUSAL_LOG_EVERY_MS while it lasts (the
   * stream is retried every few seconds: each attempt logged, the log was flooded); the attempts
   * between at debug. Anything else: at warn when a live stream ended or the first attempt after
   * failed, else at debug.
   */
  function logFailure(err: unknown, wasLive: boolean): void {
    const refusal = replicationRefusal(err);
    const now = monotonicNow();
    if (refusal && refused?.refusal === refusal && now - refused.loggedAt < REFUSAL_LOG_EVERY_MS) {
      refused.since++;
      opts.logger?.debug({ err: errText(err), attempt: failures }, 'realtime replication stream attempt failed; reconnecting');
    } else if (refusal) {
      const again = refused?.refusal === refusal ? { refusedSinceLastLogged: refused.since + 1 } : {};
      opts.logger?.error({ err: errText(err), hint: refusal.hint, attempt: failures, ...again },
        `realtime replication stream refused: ${refusal.reason}; retrying (logged again at most once a minute while it lasts)`);
      refused = { refusal, loggedAt: now, since: 0 };
    } else if (wasLive || failures === 1) {
      opts.logger?.warn({ err: errText(err) }, 'realtime replication stream ended; reconnecting');
    } else {
      opts.logger?.debug({ err: errText(err), attempt: failures }, 'realtime replication stream attempt failed; reconnecting');
    }
    if (!refusal) refused = null;
  }

  function connect(): void {
    retry = null;
    if (stopped) return;
    const s = new TemporarySlotService(
      { connectionString: opts.databaseUrl, application_name: opts.applicationName ?? 'potentia-realtime-bus', ...PG_KEEPALIVE },
      // Acknowledged once a second (checkStandbyStatus's timer, from the last LSN seen), not after every
      // message: auto mode sends a standby status update per Begin, Insert and Commit — three or
      // more writes per delta in each gateway, each one parsed by its walsender. The slot is
      // temporary and never resumed from (bus.ts catches up from the table), so the position only
      // has to advance often enough that the slot does not pin WAL.
      // timeoutSeconds 1: the timer ticks every second and confirms when nothing was confirmed for
      // timeoutSeconds, so every tick; more would let the slot lag the stream that much longer
      { acknowledge: { auto: false, timeoutSeconds: 1 } },
    );
    s.slotName = `potentia_bus_${randomBytes(6).toString('hex')}`;
    // the stream carries something as soon as bytes come in, not once a whole message has: one
    // logical message of hundreds of MiB (any role may write one: pg_logical_emit_message is
    // PUBLIC's, and pgoutput sends every prefix) took seconds to arrive, the walsender waiting
    // to write it meanwhile, and the bus took that for a stall and restarted the stream
    s.onBytes = () => { if (service === s) opts.onActivity?.(); };
    service = s;
    let ended = false;
    const end = (err: unknown) => {
      if (ended) return;
      ended = true;
      const wasLive = live && service === s;
      if (service === s) {
        service = null;
        live = false;
      }
      s.removeAllListeners('data');
      s.destroy().catch(() => {});
      if (stopped) return;
      failures++;
      logFailure(err, wasLive);
      opts.onDown(err);
      retry = setTimeout(connect, backoff(failures - 1));
      retry.unref();
    };
    s.on('error', end);
    // a keepalive asking for a reply (wal_sender_timeout would end the stream without one)
    s.on('heartbeat', (lsn: string, _ts: number, shouldRespond: boolean) => {
      if (service === s) opts.onActivity?.();
      if (shouldRespond && service === s) s.acknowledge(lsn).catch(() => {});
    });
    s.on('start', () => {
      if (service !== s || stopped) return;
      live = true;
      failures = 0;
      refused = null;
      opts.onUp(s.startLsn);
    });
    s.on('data', (_lsn: string, msg: Pgoutput.Message) => {
      if (service !== s) return;
      try {
        opts.onActivity?.();
        if (msg.tag === 'insert') opts.onInsert(`${msg.relation.schema}.${msg.relation.name}`, msg.new);
        else if (msg.tag === 'message' && prefixes.has(msg.prefix)) opts.onMessage?.(msg.prefix, Buffer.from(msg.content), msg.transactional, msg.messageLsn ? parseLsn(msg.messageLsn) : 0n);
      } catch (err) {
        opts.logger?.error({ err }, 'realtime replication handler failed');
      }
    });
    const plugin = new PgoutputPlugin({ protoVersion: 1, publicationNames: [opts.publication], messages: prefixes.size > 0 });
    // resolves when the copy stream ends, rejects when the connection fails: either way, down
    s.subscribe(plugin, s.slotName).then(() => end(new Error('replication stream closed')), end);
  }

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      failures = 0;
      connect();
    },
    async stop() {
      stopped = true;
      if (retry) clearTimeout(retry);
      retry = null;
      const s = service;
      service = null;
      live = false;
      await s?.destroy().catch(() => {});
    },
    pid: () => (live ? service?.backendPid : undefined),
    pendingPid: () => (live ? undefined : service?.backendPid),
    restart(reason) {
      const s = service;
      if (!s || stopped) return;
      s.emit('error', new Error(reason));
    },
    refusal: () => (live ? undefined : refused?.refusal.reason),
  };
}

function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** How often a refusal that lasts is logged again (at error), at most. */
export const REFUSAL_LOG_EVERY_MS = 60_000;

/** A refusal of the stream that retrying does not cure: `reason`, a sentence for /ready (never the database's text); `hint`, what to do, for the log. */
type Refusal = { match: RegExp; reason: string; hint: string };

const REFUSALS: readonly Refusal[] = [
  // PgBouncer refuses a walsender session: DATABASE_URL is a transaction pooler and the stream
  // needs DIRECT_DATABASE_URL (README, "Connection pooling"); the log said only PgBouncer's words
  { match: /unsupported startup parameter: replication/,
    reason: 'the replication stream\'s URL is a transaction pooler: set DIRECT_DATABASE_URL to PostgreSQL itself',
    hint: 'the URL of the replication stream is a transaction pooler, which refuses replication: set DIRECT_DATABASE_URL to PostgreSQL itself '
      + '(README, "Connection pooling"); until then deltas are polled, and other gateways\' presence and broadcasts do not arrive' },
  // PostgreSQL's wal_level below logical (CREATE_REPLICATION_SLOT, SQLSTATE 55000): read only at
  // the server's start, so a restart is part of the fix. The stream is retried meanwhile and
  // comes up once PostgreSQL runs with it; before, the log said PostgreSQL's words once, at warn
  { match: /requires wal_level >= logical/,
    reason: 'PostgreSQL\'s wal_level is not logical: run ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL',
    hint: 'PostgreSQL\'s wal_level is not logical, and the realtime stream (logical decoding) needs it: as a superuser run '
      + 'ALTER SYSTEM SET wal_level = logical, then restart PostgreSQL (wal_level is read at server start only: a reload is not enough; '
      + 'max_replication_slots and max_wal_senders must also cover every gateway, docs/self-hosting.md "Database"). The stream is tried '
      + 'again until then; deltas are polled meanwhile, and other gateways\' presence and broadcasts do not arrive' },
];

/** The refusal `err` is, when it is one retrying does not cure (REFUSALS). */
export function replicationRefusal(err: unknown): Refusal | undefined {
  const text = errText(err);
  return REFUSALS.find((r) => r.match.test(text));
}
