import type { Sql } from 'postgres';
import type { Logger } from 'pino';
import { monotonicNow } from '../clock.ts';
import { ACCESS_CHANGED } from './access.ts';
import { emitLogicalMessage } from './logical-message.ts';
import { createReplicationStream, type ReplicationStream } from './replication.ts';
import { SLOT_WAIT_WARN_AFTER_MS, SLOT_WAIT_WARN_EVERY_MS, warnSlotWait } from './slot-wait.ts';

/** api.delete_canvas's broadcast on the canvas's topic (sql/rpc/canvas.sql): the last message a deleted canvas's topic gets. */
const CANVAS_DELETED = 'canvas_deleted';

/**
 * The database bus: every row realtime.send wrote to realtime.messages, delivered after commit,
 * in commit order, to the listeners of its topic.
 *
 * Transport: logical decoding (pgoutput, publication `potentia_realtime`, a TEMPORARY slot per
 * gateway process, through postgres.js `subscribe`). Writers pay nothing extra at commit — unlike
 * a `pg_notify` per mutation, which serializes every committing transaction on the notify queue
 * lock (measured by scripts/bench-bus).
 *
 * No gap on reconnect: a temporary slot starts at the WAL position it was created at, so rows
 * committed while the replication connection was down are not in the stream. When the stream
 * (re)starts, the bus reads those rows back from realtime.messages itself (rows inserted since the
 * last known-good watermark minus a margin, for the topics that have listeners), drops the ids it
 * already delivered, and holds stream rows back until that catch-up has been delivered. The
 * watermark never passes the start of a writing transaction still open (horizon()): its rows carry
 * that start as inserted_at, whenever they commit. While the
 * stream is down it polls the table the same way every tick, the watermark moving with each poll;
 * rows committed before the bus started are never delivered (the first catch-up's margin reaches
 * back before the start: they are counted as delivered at start).
 *
 * The same stream carries the realtime cluster's logical messages (prefix CLUSTER_MESSAGE_PREFIX,
 * cluster.ts) to `onClusterMessage` listeners as soon as they are decoded; they have no catch-up
 * (they are in no table): `onStreamState(true)` after a reconnect is the cluster's cue to resync.
 */
export type BusMessage = {
  id: string;
  topic: string;
  event: string;
  extension: string;
  private: boolean;
  payload: unknown;
  /** JSON text of payload, serialized once for all recipients. */
  payloadJson: string;
};

export type BusListener = (message: BusMessage) => void;

/** Prefix of the realtime cluster's logical messages (cluster.ts), carried by the same stream. */
export const CLUSTER_MESSAGE_PREFIX = 'potentia.realtime';

export type DatabaseBus = {
  on(topic: string, listener: BusListener): () => void;
  /** Starts streaming; resolves at once (the slot may take a while: the table poll covers it). */
  start(): Promise<void>;
  /** Resolves once the logical replication stream is up. */
  ready(): Promise<void>;
  stop(): Promise<void>;
  /** Backend pid of the replication connection (tests terminate it). */
  replicationPid(): number | undefined;
  stats(): { delivered: number; caughtUp: number; reconnects: number; lost: number };
  /**
   * Logical messages with prefix CLUSTER_MESSAGE_PREFIX, as the stream decodes them (not held by
   * catch-up), in WAL order; `lsn`: the end of the message's record (what pg_logical_emit_message returned).
   */
  onClusterMessage(listener: (content: Buffer, lsn: bigint) => void): () => void;
  /**
   * The replication stream went up (true: rows and cluster messages flow) or down. `startLsn`
   * (when up): where the new stream begins: a message whose record ends at or before it is not in it.
   */
  onStreamState(listener: (up: boolean, startLsn?: bigint) => void): () => void;
  /** Whether the replication stream is up now. */
  streaming(): boolean;
  /** While the stream is down for a reason retrying does not cure (replication.ts replicationRefusal): that reason. */
  streamRefusal(): string | undefined;
};

export type BusOptions = {
  databaseUrl: string;
  /** Pool for catch-up queries (the server's). */
  sql: Sql;
  logger?: Logger;
  publication?: string;
  /** How far behind the watermark the catch-up reads (a writer's inserted_at is its transaction start). */
  catchUpMarginMs?: number;
  /** How long delivered ids are remembered for de-duplication. */
  dedupeWindowMs?: number;
  /** Health check / outage poll interval. */
  tickMs?: number;
  /** Silence of the live stream (nothing received, not even a keepalive) after which a probe message is written. */
  probeAfterMs?: number;
  /** How long after a probe was written, with nothing received since, the stream counts as stalled and is restarted. */
  stallMs?: number;
  /** How long the stream may be down with its slot waiting for open transactions before they are logged (slot-wait.ts). */
  slotWaitWarnAfterMs?: number;
};

/**
 * A logical walsender's wait events when it is not decoding: idle for more WAL (it has sent all
 * there was), or blocked writing to its client (the path carries nothing). Any other (none: on the
 * CPU; WALRead, ReorderBufferRead/Write: reading WAL or spilled changes) is work in progress. Read
 * where its sent position is hidden from the bus's role (busyBeforeProbe).
 */
const WALSENDER_NOT_DECODING = new Set(['WalSenderWaitForWAL', 'WalSenderMain', 'WalSenderWriteData']);

/** Prefix of the bus's own probe messages (tick): decoded like any logical message, delivered to nobody. */
const PROBE_MESSAGE_PREFIX = 'potentia.realtime.probe';
const EMPTY = new Uint8Array(0);

/**
 * What a bus reads at start ($1 the start, $2 the margin in seconds): the id of every row of
 * realtime.messages inserted since the start minus the margin, whatever its topic (they count as
 * delivered: a catch-up reads that far back). By time, through two indexes that hold every row
 * between them: Supabase's replay index the private broadcasts (every canvas delta, presence,
 * access change), messages_inserted_at_other_index the rest (sql/realtime/messages_index.sql; not
 * made on Supabase's own realtime schema, where that half is a scan of its rows). Read by
 * `inserted_at >=` alone it was a scan of today's whole partition at every process start.
 */
export const MARGIN_BEFORE_START = `
  select id::text from realtime.messages
  where extension = 'broadcast' and private is true and inserted_at >= $1::timestamp - make_interval(secs => $2)
  union all
  select id::text from realtime.messages
  where (extension <> 'broadcast' or private is not true) and inserted_at >= $1::timestamp - make_interval(secs => $2)`;

export function createDatabaseBus(opts: BusOptions): DatabaseBus {
  const publication = opts.publication ?? 'potentia_realtime';
  const marginMs = opts.catchUpMarginMs ?? 60_000;
  const dedupeMs = Math.max(opts.dedupeWindowMs ?? 10 * 60_000, marginMs * 3);
  /**
   * What the watermark may move to: now, or the start of the oldest transaction of this database
   * that has written something and is still open, if earlier. A row's inserted_at is its
   * transaction's start, so a transaction longer than the margin (a DBA's script of mutations, a
   * bulk import through the api functions) that committed while the stream was down, or while a
   * new slot was being created (which waits for it to end), had its messages behind the next
   * catch-up's reach: never delivered. Held back at most dedupeMs - 2 margins (a transaction open
   * for hours must not make every poll re-read hours, nor reach past what de-duplication remembers).
   * A role that is neither a superuser nor in pg_read_all_stats (the processes' login role in
   * potentia_app, the documented owner) is shown the xact_start and backend_type of its own role's
   * sessions only; another role's writing transaction (a DBA's script, a migration) shows its
   * backend_xid alone. Its start unknown, it holds the watermark back as far as it may go: before,
   * it was left out, and its messages were never delivered.
   */
  const horizon = () => opts.sql`greatest(localtimestamp - make_interval(secs => ${Math.max(0, dedupeMs - 2 * marginMs) / 1000}),
    least(localtimestamp, (select min(coalesce(xact_start, '-infinity'))::timestamp from pg_stat_activity
                           where datname = current_database() and pid <> pg_backend_pid()
                             and (backend_type = 'client backend' or backend_type is null) and backend_xid is not null)))::text`;
  const listeners = new Map<string, Set<BusListener>>();
  const delivered = new Map<string, number>(); // id → time delivered (insertion-ordered)
  const stats = { delivered: 0, caughtUp: 0, reconnects: 0, lost: 0 };

  let stream: ReplicationStream | null = null;
  let watermark: string | null = null; // DB localtimestamp text: everything inserted before (minus margin) was streamed
  let candidate: { at: string; epoch: number } | null = null;
  let epoch = 0; // bumps on every (re)start of the stream
  let catchingUp: Promise<void> | null = null;
  let held: BusMessage[] = [];
  let timer: NodeJS.Timeout | null = null;
  let ticking = false;
  let stopped = false;
  let subscribedOnce = false;
  let streamUp = false;
  // Every time here is src/clock.ts's monotonic clock: on the wall clock, a step back held the
  // stall probe off (and kept the stream `flowing`, its watermark moving) for the step's length, and
  // a step forward made a listener's seed (clock) count rows committed after it as delivered and
  // forgot every delivered id past the de-duplication window at once.
  let downSince = monotonicNow(); // when the stream last went down (or the bus started)
  let slotWaitWarnedAt = 0;
  let serverVersion = 0; // server_version_num, read at start (emitLogicalMessage)
  const probeAfterMs = opts.probeAfterMs ?? 2500;
  const stallMs = opts.stallMs ?? 3000;
  let lastActivity = 0; // monotonicNow() of the last thing the live stream delivered
  let probe: { at: number; epoch: number; lsn: string } | null = null;
  let markReady!: () => void;
  const ready = new Promise<void>((r) => { markReady = r; });
  const clusterListeners = new Set<(content: Buffer, lsn: bigint) => void>();
  const streamListeners = new Set<(up: boolean, startLsn?: bigint) => void>();
  const notifyStream = (up: boolean, startLsn?: bigint) => {
    for (const l of streamListeners) {
      try {
        l(up, startLsn);
      } catch (err) {
        opts.logger?.error({ err }, 'realtime stream state listener failed');
      }
    }
  };

  function remember(id: string): boolean {
    if (delivered.has(id)) return false;
    const now = monotonicNow();
    delivered.set(id, now);
    // forget ids older than the window (Map keeps insertion order)
    for (const [old, at] of delivered) {
      if (now - at <= dedupeMs && delivered.size < 200_000) break;
      delivered.delete(old);
    }
    return true;
  }

  function dispatch(message: BusMessage): void {
    if (!remember(message.id)) return;
    stats.delivered++;
    const set = listeners.get(message.topic);
    if (!set) return;
    for (const listener of set) {
      try {
        listener(message);
      } catch (err) {
        opts.logger?.error({ err, topic: message.topic }, 'realtime listener failed');
      }
    }
  }

  function fromRow(row: Record<string, any>): BusMessage {
    const payload = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload ?? null;
    return {
      id: String(row.id),
      topic: String(row.topic),
      event: String(row.event ?? ''),
      extension: String(row.extension ?? 'broadcast'),
      private: row.private === true || row.private === 't',
      payload,
      payloadJson: JSON.stringify(payload),
    };
  }

  function onStreamRow(row: Record<string, unknown>): void {
    if (stopped) return;
    const message = fromRow(row);
    if (message.event === 'authorization_probe') return;
    if (catchingUp) held.push(message);
    else dispatch(message);
  }

  /**
   * A topic first listened to while the stream is down (a channel joined during an outage, or
   * while a new slot waits) has its rows already in the table counted as delivered before a poll
   * reads it: a poll reads listened topics alone, so it was sent up to a margin (60 s) of messages
   * committed before its join, as live ones. One query for that topic, once (seed()), instead of
   * every poll reading the ids of every other topic's rows over the margin (tens of thousands a
   * tick on a busy cluster, while the database is in trouble). Only rows whose transaction began
   * before the listener did are counted: one begun after it is delivered, whenever it commits.
   * When the listener began, in the database's clock, is bounded from below by the last poll's
   * clock (clock): its localtimestamp plus the time since its answer came.
   */
  const seeds = new Map<string, { before: { db: string; ms: number }; done: Promise<void> }>();
  let clock: { db: string; local: number } | null = null;

  function seed(topic: string, before: { db: string; ms: number }): Promise<void> {
    return (async () => {
      const from = watermark;
      if (from === null) return; // not started: start() counts what is there
      const rows = await opts.sql`
        select id::text from realtime.messages
        where topic = ${topic}
          and inserted_at >= ${from}::timestamp - make_interval(secs => ${marginMs / 1000})
          and inserted_at < ${before.db}::timestamp + make_interval(secs => ${before.ms / 1000})`;
      for (const row of rows) remember(row.id as string);
    })();
  }

  async function catchUp(): Promise<void> {
    // the seeds first: a topic is read only once what was there before its listener is counted
    for (const [topic, s] of seeds) {
      if (listeners.has(topic)) {
        try {
          await s.done;
        } catch {
          if (seeds.get(topic) !== s) continue;
          s.done = seed(topic, s.before);
          await s.done; // failing, the catch-up fails and is run again
        }
      }
      if (seeds.get(topic) === s) seeds.delete(topic);
    }
    const topics = [...listeners.keys()];
    const since = watermark;
    const [{ now, at }] = (await opts.sql`select ${horizon()} as now, localtimestamp::text as at`) as unknown as [{ now: string; at: string }];
    clock = { db: at, local: monotonicNow() };
    if (since && topics.length > 0) {
      const rows = await opts.sql`
        select id::text, topic, event, extension, private, payload, inserted_at
        from realtime.messages
        where inserted_at >= ${since}::timestamp - make_interval(secs => ${marginMs / 1000})
          and topic = any(${topics}) and event is distinct from 'authorization_probe'
        order by inserted_at, id`;
      const messages = orderCatchUp(rows.map(fromRow));
      for (const m of messages) {
        if (delivered.has(m.id)) continue;
        stats.caughtUp++;
        dispatch(m);
      }
    }
    // A poll while the stream is down saw everything committed before it began: the next one
    // reads from here (minus the margin). Kept where it was, the watermark stayed at the start of
    // the outage, each poll read more, and past the de-duplication window (10 min) every message
    // since was delivered again. After a stream (re)start it moves once the stream has stayed up
    // across a tick (tick()).
    watermark = since === null || !streamUp ? now : since;
  }

  /** Catch-ups run one at a time (stream restart, outage polls). */
  let chain: Promise<void> = Promise.resolve();
  const serialCatchUp = () => {
    const next = chain.then(() => catchUp());
    chain = next.catch(() => {}); // a failed catch-up must not fail every later one
    return next;
  };

  function onUp(startLsn: bigint): void {
    if (stopped) return;
    markReady();
    epoch++;
    candidate = null;
    streamUp = true;
    lastActivity = monotonicNow();
    probe = null;
    if (subscribedOnce) stats.reconnects++;
    subscribedOnce = true;
    notifyStream(true, startLsn);
    const run = (async () => {
      for (let attempt = 0; !stopped; attempt++) {
        try {
          await serialCatchUp();
          return;
        } catch (err) {
          opts.logger?.warn({ err }, 'realtime bus catch-up failed; retrying');
          await new Promise((r) => setTimeout(r, Math.min(2000, 100 * 2 ** attempt)));
        }
      }
    })().finally(() => {
      const pending = held;
      held = [];
      catchingUp = null;
      for (const m of pending) dispatch(m);
    });
    catchingUp = run;
  }

  function onDown(): void {
    if (!streamUp) return;
    streamUp = false;
    downSince = monotonicNow();
    slotWaitWarnedAt = 0;
    epoch++;
    stats.lost++;
    notifyStream(false);
  }

  /**
   * Every tick: while the stream is down (start-up, where creating the slot waits for every
   * transaction running in the cluster, and after a dropped connection until the new slot exists)
   * the bus polls the table instead, so delivery only slows down. While it is up, the walsender
   * must still be listed (a half-open TCP connection is noticed here, not after the keepalive
   * timeout), and the watermark advances once the stream has stayed up across a whole tick.
   *
   * Listed is not flowing: a connection whose packets stop (a partition of that one path, a
   * stateful firewall or NAT that lost it, a proxy that hangs) keeps its walsender listed until
   * wal_sender_timeout (60 s by default) ends it, and the gateway delivered nothing meanwhile while
   * its /ready said 200. So once the stream has been silent for probeAfterMs (the cluster's
   * heartbeats alone arrive every 2 s), the bus writes a logical message of its own through the
   * pool; if nothing at all has arrived on the stream stallMs after that, the stream is restarted
   * (and polled meanwhile, as after any loss), unless its walsender has not reached the probe yet
   * and is not blocked writing (busyBeforeProbe: decoding a large transaction sends nothing for
   * seconds).
   */
  async function tick(): Promise<void> {
    // one at a time: the interval does not wait for a tick's queries, and a slow or stalled pool
    // (up to answer_timeout, 20 s) otherwise piled one more query (a poll queued on the catch-up
    // chain, a probe write) on it every tickMs, each taking a pool connection
    if (stopped || catchingUp || ticking) return;
    ticking = true;
    try {
      if (!streamUp) {
        await serialCatchUp();
        await explainSlotWait();
        return;
      }
      const pid = stream?.pid();
      const [r] = (await opts.sql`select ${horizon()} as now,
                                         ${pid ?? null}::int is null or exists (select from pg_stat_replication where pid = ${pid ?? null}::int) as up`) as unknown as [{ now: string; up: boolean }];
      if (!r.up) {
        stream?.restart('walsender backend is gone');
        return;
      }
      if (await stalled()) return;
      // moves only while the stream delivers: a silent one may be stalled, and what it did not
      // deliver must stay within the next catch-up's reach
      const flowing = monotonicNow() - lastActivity < probeAfterMs;
      if (candidate && candidate.epoch === epoch && flowing) watermark = candidate.at;
      candidate = { at: r.now, epoch };
    } catch (err) {
      opts.logger?.debug({ err }, 'realtime bus tick failed');
    } finally {
      ticking = false;
    }
  }

  /**
   * While the stream is down and its new slot waits for open transactions (slot-wait.ts), says so,
   * naming them: after SLOT_WAIT_WARN_AFTER_MS, then every SLOT_WAIT_WARN_EVERY_MS.
   */
  async function explainSlotWait(): Promise<void> {
    const pid = stream?.pendingPid();
    const now = monotonicNow();
    if (pid === undefined || now - downSince < (opts.slotWaitWarnAfterMs ?? SLOT_WAIT_WARN_AFTER_MS) || now - slotWaitWarnedAt < SLOT_WAIT_WARN_EVERY_MS) return;
    if (await warnSlotWait(opts.sql, pid, now - downSince, opts.logger)) slotWaitWarnedAt = now;
  }

  /** True when the live stream was found stalled (and restarted); writes a probe when it is silent. */
  async function stalled(): Promise<boolean> {
    const now = monotonicNow();
    if (!streamUp || now - lastActivity < probeAfterMs) return false;
    if (probe && probe.epoch === epoch && lastActivity < probe.at) {
      if (now - probe.at < stallMs) return false;
      // Silent is not stalled when the walsender has not reached the probe yet: decoding a large
      // transaction's commit (a bulk load, a restore, a migration: 2 million rows took seconds)
      // sends nothing until it is done, the probe waits behind it in the WAL, and a restart only
      // threw the work away (a new slot, the stream down, the cluster's messages lost meanwhile).
      // The path is stalled when the walsender got past the probe (it wrote it to a socket that
      // carried nothing) or is blocked writing to the socket; still decoding before it, it is busy.
      if (await busyBeforeProbe(probe, stream?.pid())) return false;
      if (!probe || probe.epoch !== epoch || lastActivity >= probe.at) return false;
      const reason = `nothing received for ${monotonicNow() - lastActivity} ms, though a probe was written ${monotonicNow() - probe.at} ms ago`;
      opts.logger?.warn({ reason }, 'realtime replication stream stalled: a probe written through the pool did not come through; reconnecting');
      probe = null;
      stream?.restart(reason);
      return true;
    }
    const sent = { at: now, epoch };
    const lsn = await emitLogicalMessage(opts.sql, PROBE_MESSAGE_PREFIX, EMPTY, serverVersion);
    // counts once written: a probe the pool could not write proves nothing about the stream
    if (sent.epoch === epoch) probe = { ...sent, lsn };
    return false;
  }

  /**
   * Whether the stream's walsender is still working through the WAL before `probe` (its sent
   * position short of the probe's LSN) and not blocked writing to this gateway (wait event
   * WalSenderWriteData: the path carries nothing). A role that is neither a superuser nor in
   * pg_read_all_stats (the processes' login role in potentia_app, the documented owner) is shown
   * no sent_lsn, not even of its own walsender, but its wait event (pg_stat_activity shows a role
   * its own sessions): working (on the CPU, or reading WAL or spilled changes) rather than idle
   * for more WAL (WalSenderWaitForWAL, WalSenderMain: it got past the probe and sent it) or
   * blocked writing, it is busy. Before, such a role's stream was restarted by every bulk load.
   * The walsender gone (the tick restarts that) counts as not busy.
   */
  async function busyBeforeProbe(p: { lsn: string }, pid: number | undefined): Promise<boolean> {
    if (pid === undefined) return false;
    const [row] = (await opts.sql`select r.sent_lsn < ${p.lsn}::pg_lsn as behind, a.wait_event
                                  from pg_stat_replication r left join pg_stat_activity a on a.pid = r.pid
                                  where r.pid = ${pid}::int`) as unknown as [{ behind: boolean | null; wait_event: string | null } | undefined];
    if (!row || row.behind === false || row.wait_event === 'WalSenderWriteData') return false;
    if (row.behind === null && row.wait_event !== null && WALSENDER_NOT_DECODING.has(row.wait_event)) return false;
    opts.logger?.debug({ waitEvent: row.wait_event, sentLsnShown: row.behind !== null }, 'realtime replication stream silent: its walsender is still decoding the WAL before the probe');
    return true;
  }

  return {
    on(topic, listener) {
      let set = listeners.get(topic);
      if (!set) {
        listeners.set(topic, (set = new Set()));
        // first listened to while a poll or a catch-up may read it: its rows so far are not news
        if (!stopped && clock && watermark !== null && (!streamUp || catchingUp)) {
          const s = { before: { db: clock.db, ms: Math.max(0, monotonicNow() - clock.local) }, done: Promise.resolve() };
          s.done = seed(topic, s.before);
          s.done.catch(() => {}); // retried by the next catch-up
          seeds.set(topic, s);
        }
      }
      set.add(listener);
      return () => {
        set!.delete(listener);
        if (set!.size === 0 && listeners.get(topic) === set) listeners.delete(topic);
      };
    },
    async start() {
      stopped = false;
      downSince = monotonicNow();
      // everything inserted from now on is delivered: by the table poll until the slot exists.
      // What was committed before now is not: a catch-up reads from the watermark minus the
      // margin, so those rows count as delivered already (a fresh gateway sent the last minute's
      // messages to its first subscribers as live ones).
      // (the horizon: a writing transaction open now may commit its older inserted_at after the start)
      const [{ now, version, at }] = (await opts.sql`select ${horizon()} as now, current_setting('server_version_num')::int as version,
                                                            localtimestamp::text as at`) as unknown as [{ now: string; version: number; at: string }];
      clock = { db: at, local: monotonicNow() };
      serverVersion = version;
      const before = await opts.sql.unsafe(MARGIN_BEFORE_START, [now, marginMs / 1000]);
      for (const row of before) remember(String(row.id));
      watermark = now;
      stream = createReplicationStream({
        databaseUrl: opts.databaseUrl,
        publication,
        logger: opts.logger,
        onInsert: (table, row) => { if (table === 'realtime.messages') onStreamRow(row); },
        messagePrefixes: [CLUSTER_MESSAGE_PREFIX],
        onMessage: (_prefix, content, transactional, lsn) => {
          // the cluster writes only non-transactional messages (logical-message.ts); a transactional
          // one under its prefix is someone else's, and its LSN is where it was written, not where
          // the stream was: read, it could close the cluster's first gap short (cluster.ts onMessage)
          if (stopped || transactional) return;
          for (const l of clusterListeners) l(content, lsn);
        },
        onUp,
        onDown,
        onActivity: () => { lastActivity = monotonicNow(); },
      });
      stream.start();
      timer = setInterval(() => void tick(), opts.tickMs ?? 500);
      timer.unref();
    },
    ready: () => ready,
    async stop() {
      stopped = true;
      if (timer) clearInterval(timer);
      await stream?.stop();
      stream = null;
      streamUp = false;
      listeners.clear();
    },
    replicationPid() {
      return stream?.pid();
    },
    stats() {
      return { ...stats };
    },
    onClusterMessage(listener) {
      clusterListeners.add(listener);
      return () => { clusterListeners.delete(listener); };
    },
    onStreamState(listener) {
      streamListeners.add(listener);
      return () => { streamListeners.delete(listener); };
    },
    streaming: () => streamUp,
    streamRefusal: () => stream?.refusal(),
  };
}

/**
 * Rows read back from the table come in insertion-start order (a row's inserted_at is its
 * transaction's start, not its commit); canvas operations carry their commit order (server_seq,
 * taken under the canvas lock), so within a topic those are put back in server_seq order in the
 * slots they occupy. Access changes (access.ts) go first: a mutation that started before a
 * member's removal and committed after it sorts before the removal, and would reach the removed
 * member's socket; first, the re-check they start holds the batch's deliveries (a delta committed
 * just before the removal is then not sent to the member who lost access: closed, not open).
 * But a canvas's deletion (reason canvas_deleted) goes last: it closes the canvas for everyone, and
 * nothing can commit to its topic after it (a mutation waiting for the canvas lock is refused, the
 * canvas gone), so what the batch holds for its topic was committed while every subscriber still had
 * access, and is delivered, the `canvas_deleted` broadcast among it, before the re-check closes
 * the channels (as on the stream, where the deletion's access change is its transaction's last
 * message: sql/realtime/access.sql). First, the re-check dropped them all. The `canvas_deleted`
 * broadcast itself goes just before it, after the rest: api.delete_canvas sends it last, but rows
 * of one transaction share their inserted_at and their ids are random, so the read back cannot
 * tell its place among its transaction's other messages.
 */
export function orderCatchUp(all: BusMessage[]): BusMessage[] {
  const closesCanvas = (m: BusMessage) => m.event === ACCESS_CHANGED && (m.payload as { reason?: unknown } | null)?.reason === 'canvas_deleted';
  const last = (m: BusMessage) => m.event === CANVAS_DELETED || closesCanvas(m);
  const messages = [...all.filter((m) => m.event === ACCESS_CHANGED && !closesCanvas(m)), ...all.filter((m) => m.event !== ACCESS_CHANGED && !last(m)),
    ...all.filter((m) => m.event === CANVAS_DELETED), ...all.filter(closesCanvas)];
  const byTopic = new Map<string, number[]>();
  messages.forEach((m, i) => {
    if (seqOf(m) === null) return;
    const list = byTopic.get(m.topic) ?? [];
    list.push(i);
    byTopic.set(m.topic, list);
  });
  const out = messages.slice();
  for (const slots of byTopic.values()) {
    const sorted = slots.map((i) => messages[i]!).sort((a, b) => Number(seqOf(a)! - seqOf(b)!));
    slots.forEach((slot, k) => { out[slot] = sorted[k]!; });
  }
  return out;
}

function seqOf(m: BusMessage): bigint | null {
  const p = m.payload as { server_seq?: unknown } | null;
  if (p && typeof p === 'object' && (typeof p.server_seq === 'number' || typeof p.server_seq === 'string')) {
    try {
      return BigInt(p.server_seq);
    } catch {
      return null;
    }
  }
  return null;
}
