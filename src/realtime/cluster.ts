import { createHmac, randomUUID, timingSafeEqual, type KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import { runAgainOnLostConnection } from '../db/faults.ts';
import { CLUSTER_MESSAGE_PREFIX, type DatabaseBus } from './bus.ts';
import type { ChannelKey } from './channel-key.ts';
import { ClusterGaps } from './cluster-gaps.ts';
import type { ClusterKeys } from './cluster-key.ts';
import { emitLogicalMessage } from './logical-message.ts';
import type { MetaCallers, NodePresence, PresenceDiff, PresenceState, PresenceTracker } from './presence.ts';
import { formatLsn, parseLsn } from './replication.ts';

/**
 * The realtime cluster: every gateway process is a node (random id per process start), and the
 * nodes exchange client broadcasts and presence through Postgres alone — no broker.
 *
 * Send: a non-transactional logical message with prefix 'potentia.realtime' through the server
 * pool (emitLogicalMessage, logical-message.ts): no table row, decoded as soon as its WAL is
 * flushed. A node's messages go out one statement at a time (those queued meanwhile are batched
 * into the next), so every node sees them in the order they were sent. Each statement is numbered
 * (Replay, below). A statement whose connection was lost (a terminated backend, a restart, a reset
 * network) is run again, the same bytes, on another connection (runAgainOnLostConnection,
 * src/db/faults.ts: up to CONNECTION_RETRIES more times, past the pool's connections the same fault
 * ended, each drawn dead in turn; not when no session can be opened, nor
 * after answer_timeout): it may have landed (a non-transactional message is written whether or not
 * its answer comes back), and then every node drops the second copy for its number; or not, and
 * the second is the one read. Its callers hear only the last attempt's outcome (a REST broadcast
 * 202, a socket's `ack` ok). Before numbers it was not run again, since it could deliver twice: a
 * REST broadcast whose statement lost its connection was answered 503 (delivered all the same when
 * it had landed), and a node's presence and heartbeats in it were dropped.
 *
 * Receive: the bus's logical replication stream (pgoutput `messages 'true'`, bus.ts) carries every
 * node's messages to every node; a node ignores its own.
 *
 * Privileges: sending needs EXECUTE on pg_logical_emit_message (granted to PUBLIC by default);
 * receiving needs nothing beyond what the bus already needs (REPLICATION on DATABASE_URL's role).
 * So any role that runs SQL on the database can write under the prefix too.
 *
 * Authentication: every message carries an HMAC-SHA256 of its other bytes (version byte, node id,
 * number and send time, frames) under a key every gateway of the deployment shares (cluster-key.ts: REALTIME_CLUSTER_SECRET, else
 * derived from JWT_SECRET, with JWT_SECONDARY_SECRET's accepted too). A node drops a message with
 * no MAC or one of no key it accepts before it reads anything else of it (verifyMessage), so a
 * forgery makes no node, presence, broadcast or request; it is counted (onRejected: the metric
 * potentia_realtime_cluster_messages_rejected_total) and logged at warn at most every 10 s (what
 * came within those 10 s when they are over).
 * Before, any role could write client broadcasts into any room (private ones included), make up
 * nodes with presences, and have every node send its broadcasts again (a sync_request under a new
 * number). Nodes with different keys (a differing secret, a rolling restart that changes it, a
 * node from before authentication, numbers or send times) ignore each other: two clusters on one
 * database, each counting the other's messages.
 *
 * Replay: a genuine message written again passes its MAC (capturing one takes reading the WAL:
 * REPLICATION or superuser, a role that reads every row anyway). So every message carries, under
 * the MAC, its node's id and a number one above the node's previous statement's (from 1 at every
 * start: a node's id is new each start); every node keeps, per node, the number of the last
 * message of it read, and drops one numbered at or below it (`replayed`, counted and logged like
 * the MAC's rejections). A genuine message is never below: a node's statements reach every node
 * in the order sent, and a stream that reconnects starts at a new slot's position, after all the
 * lost one delivered, so no node reads a node's earlier statement after a later one (it misses
 * some instead: a number may skip, which is no reason to drop). The first message read of a node
 * may have any number (the node ran before this one listened). Numbers are u64, read as bigint,
 * and kept after a node is dropped or left (up to MAX_NUMBERED_NODES): a dead node's message
 * written again is dropped too. Before, a live broadcast written again was delivered again (not
 * deduplicated by seq) and an old presence_sync/diff showed old presences (until the next sync,
 * or for a dead node 7 s). Numbers alone left a node this one never read a message of (gone
 * before it started, or before its first message came): one of its captured messages was read
 * once, at any time later (a dead node's broadcast delivered once, its presence shown until it
 * was taken for dead again); Freshness (below) bounds that to the window. A statement run again
 * (above) is dropped as `replayed` when its first run had landed: one per such loss.
 *
 * Freshness: every message carries, under the MAC, its node's wall clock (ms) when the statement
 * was encoded, and every node drops one sent more than `freshnessMs` before or after its own clock
 * (`stale`, counted and logged like the others, with the node and the age: the words say to check
 * the hosts' clocks, NTP), its own messages included. What is left: within the window, a captured
 * message of a node this one never read is still read once (as above, but only up to
 * `freshnessMs` after it was sent). The window (default 5 min, REALTIME_CLUSTER_FRESHNESS_MS) is
 * what a genuine message may take from its stamp to a node's stream, plus the clocks' skew:
 * broadcasts sent again for a gap (replayTo) and every heartbeat, sync and request are new
 * statements, stamped when sent; a statement run again after a lost connection (above) is the same
 * bytes, the same stamp, up to CONNECTION_RETRIES more attempts (each bounded by the pool's
 * answer_timeout, 20 s: a minute at worst); a stream that reconnects starts at a new slot, where the
 * WAL is, so no catch-up reads old messages; a walsender decoding a large transaction's commit
 * holds every message behind it (Liveness, below: seconds, minutes for a bulk load). Clocks kept
 * by NTP differ by milliseconds. A stream lagging by more than the window drops every node's
 * messages, this node's own heartbeats too, so none is taken for dead for it (sweep); the
 * broadcasts it drops are lost (they were in its stream: no gap asks for them). A node whose clock
 * is off by more than the window reads no other and none reads it: two clusters, each side's
 * `stale` counter rising, the log naming the node and its age. Before, a captured message of a
 * node gone was read once by a node started at any time later.
 *
 * Message kinds: `broadcast` (a client broadcast: channel key, event, payload as JSON text or raw
 * bytes), `presence_diff` (joins/leaves of a node's local presences on one channel),
 * `presence_sync` (a node's full local presence; on request, after this node's stream
 * (re)connects, and every `syncIntervalMs`), `sync_request` (after this node's stream (re)connects
 * — it may have missed messages — and when it hears a node it does not know), `heartbeat` (every
 * `heartbeatMs`), `leave` (graceful stop).
 *
 * Presence across a stream's loss: a node whose stream comes back asks every node for its
 * presence (`sync_request`) and sends its own (`presence_sync`). Both are needed when two nodes'
 * streams were down together: the diffs each sent meanwhile reached neither, and the request of
 * the one back first came while the other's stream was still down, so only the later one's own
 * sync tells the first what it missed. Whichever of two nodes is back last, its messages reach the
 * other: each node's view of every other is whole once the last stream is back.
 *
 * Liveness: a node not heard from (any message counts) for more than `deadAfterMs` is dead: its
 * presences leave this node's view (presence_diff leaves to local channels). Checked every
 * `heartbeatMs / 4`, so a killed node's presences leave between `deadAfterMs - heartbeatMs` and
 * `deadAfterMs + heartbeatMs / 4` after it died (defaults 2 s / 7 s: 5 to 7.5 s). While this node's
 * own stream is down nobody can be heard, so nobody is declared dead; when it is back, every known
 * node gets a fresh `deadAfterMs`. Nor is silence counted that the stream has not carried yet: a
 * walsender decoding a large transaction's commit (a bulk load, a restore) sends nothing for
 * seconds, every node's heartbeats wait behind it in the WAL, and every node took every other for
 * dead (all remote presences left, and joined again once it was through). So a node is dead only
 * once this node's own heartbeats, sent more than `deadAfterMs - 2 * heartbeatMs` after it was
 * last heard, have come back on the stream: the stream delivered the WAL where its next
 * heartbeats belonged, and they were not there. That also holds while this node's own messages
 * cannot be sent (its pool is down), but for a bounded time: a node that cannot send has no
 * heartbeat to witness the stream with, and it kept a dead node's presences for the whole outage.
 * Once none of its messages has been sent for `sendOutageMs` (default 2 × deadAfterMs, 14 s), it
 * falls back to silence alone: a node dead before or during the outage leaves by
 * max(death + deadAfterMs, last send + sendOutageMs) + heartbeatMs / 4. The price: a stall of the
 * stream (above) during such an outage drops nodes that are alive; they come back when heard, with
 * their presence at their next `presence_sync` (this node cannot ask for it).
 *
 * Broadcasts across a stream's loss: the stream of a node is a TEMPORARY slot, made again where
 * the WAL is when it reconnects, so the client broadcasts other nodes sent while it was down (a
 * terminated walsender, a restarted server, a cut network: from the loss to the new slot) were in
 * no stream of it: its subscribers never got them, though their senders had answered `ok` / 202.
 * So each node keeps its own broadcasts sent in the last `replayMs` (`sentLog`, at most
 * REPLAY_MAX_BYTES), each with the LSN its message was emitted at (the end of its record). A node
 * knows what its streams did not carry as a stretch of WAL: after the last cluster message the
 * lost stream delivered (or where the node began listening, for its first stream), up to the new
 * slot's start (its consistent point). It asks every node, each alone, for its broadcasts in those
 * stretches (`sync_request` with `lost`), and each sends them again addressed `to` it alone with
 * their original LSN, then says so in a heartbeat (`answered`); asked again every 2 ×
 * `heartbeatMs` until it did. A node heard for the first time later (started meanwhile, or whose
 * first messages had not come by when the stream was lost) is asked too. The asking node delivers
 * a resent broadcast whose LSN lies in such a stretch, once (later than the broadcasts sent after
 * the loss, so out of their order): exact at both ends, none the streams carried is delivered
 * again (cluster-gaps.ts). A broadcast whose statement had not answered yet when a request came
 * is logged once it does, before the request is answered (replayTo). A node sends again to one
 * node for one request at a time (one repeated meanwhile is answered when asked again).
 * A statement run again after its answer was lost (above) lands twice; a node whose stream was lost
 * between the copies read the first, and the second lies in its stretch (the sender logged the
 * broadcast at the copy it heard of): so a resent broadcast carries the number of the message it
 * was first sent in (`msg`), and a node drops it when it had read that message, or a later one of
 * its node, before the stretch opened (cluster-gaps.ts admitResent).
 * Before, a node asked each node for its broadcasts after the last number (`seq`) it had heard
 * of it: a node it had not heard of when its stream was lost was asked nothing.
 *
 * Encoding: one logical message = version byte 4, the 32-byte MAC (above), the sending node's id
 * (its UUID's 16 bytes), its message number (u64, big-endian), its send time (ms since the epoch,
 * u64, big-endian), then frames of [u32 header length][u32 body length][header JSON][body], every
 * one of that node; the body is a broadcast's payload (JSON text or the raw bytes of a binary
 * broadcast), empty otherwise. The MAC covers all but itself. (Version 1, before authentication,
 * had no MAC; version 2, before numbers, no node id nor number; version 3, before send times, no
 * send time; all are dropped as unsigned: gateways of two versions are two clusters.)
 */
export type ClusterPayload = { json: string } | { binary: Buffer };

export type ClusterOptions = {
  sql: Sql;
  /** What this node signs its messages with, and what it reads others' under (cluster-key.ts; see Authentication above). */
  keys: ClusterKeys;
  /** A message under the prefix dropped unread: no MAC (`unsigned`), a MAC of no accepted key (`bad_mac`), a number not above its node's last (`replayed`), or a send time outside the freshness window (`stale`). */
  onRejected?(reason: RejectReason): void;
  bus: DatabaseBus;
  presence: PresenceTracker;
  logger?: Logger;
  /** A client broadcast another node accepted, for this node's subscribers of `key`. */
  onBroadcast(key: ChannelKey, event: string, payload: ClusterPayload): void;
  /** How another node's presence changed this node's view of `key`. */
  onPresenceDiff(key: ChannelKey, diff: PresenceDiff): void;
  /** Another node was dropped: taken for dead (silent), or it said `leave` (after its presences left this node's view). */
  onNodeGone?(node: string): void;
  /**
   * Another node, which had taken this one for dead while it was alive (silent past deadAfterMs: a
   * stall, a loaded machine), heard it again: the caller records its durable presence sessions
   * again, which that node removed when it dropped this one (onNodeGone there).
   */
  onHeardAgain?(): void;
  heartbeatMs?: number;
  deadAfterMs?: number;
  /** After this long without sending a message, silence alone is death (see above). */
  sendOutageMs?: number;
  /** How long a node keeps its sent broadcasts to send again to a node whose stream was lost (see above; default 60 s). */
  replayMs?: number;
  syncIntervalMs?: number;
  /** How far a message's send time may be from this node's clock, either way, before it is dropped as `stale` (see Freshness above; default DEFAULT_FRESHNESS_MS, 5 min). */
  freshnessMs?: number;
};

export type ClusterNode = {
  readonly id: string;
  /** Dead-node bound in ms (see above): a node silent for longer is dropped. */
  readonly deadAfterMs: number;
  start(): Promise<void>;
  /** Sends `leave` (waits for it, at most 2 s) and stops. */
  stop(): Promise<void>;
  /** Resolves once the message was emitted (the cluster accepted it for fan-out); rejects if not. */
  publishBroadcast(key: ChannelKey, event: string, payload: ClusterPayload): Promise<void>;
  /** Publishes a local presence change (best effort: the periodic sync repairs a lost one). */
  publishPresenceDiff(key: ChannelKey, diff: PresenceDiff): void;
  /** Ids of the other nodes currently alive. */
  nodes(): string[];
  /**
   * Resolves true once this node has heard every node alive at or after the call, by the proof
   * sweep takes a silent node for dead on (Liveness above): more than `deadAfterMs` since, and
   * one of its own heartbeats, sent more than `coveredMs` after it, back on the stream (a stream
   * that comes back starts the count again); so a node not in nodes() then was dead all along, or
   * was dropped since. False when the node stops first. Never while the stream is down or this
   * node cannot send (no proof: it waits).
   */
  whenCovered(): Promise<boolean>;
  stats(): { sent: number; received: number; sendFailures: number; dead: number; rejected: number };
};

/**
 * Why a message under the prefix was dropped unread: `unsigned`, no MAC of this version's format
 * (anything else under the prefix, or a gateway of an older version); `bad_mac`, a MAC of no key
 * this node accepts; `replayed`, signed but numbered at or below the last message this node read
 * of its node (a message written again, or a statement its node ran again after it had landed);
 * `stale`, signed but sent more than `freshnessMs` before or after this node's clock (a message
 * written again later, a clock off, or a stream that lags behind the WAL by more than that).
 */
export type RejectReason = 'unsigned' | 'bad_mac' | 'replayed' | 'stale';

type Header =
  /**
   * seq: the sender's broadcast number (absent from nodes before it); to: a broadcast sent again
   * to that node alone, lsn: where it was first sent (the end of that message's record), msg: the
   * number of the message it was first sent in (decimal)
   */
  | { type: 'broadcast'; node: string; key: ChannelKey; event: string; encoding: 'json' | 'binary'; seq?: number; to?: string; lsn?: string; msg?: string }
  /** callers: who tracked each meta (by phx_ref) of the joins / the state, for the bound per caller of a presence key (absent from nodes before it) */
  | { type: 'presence_diff'; node: string; key: ChannelKey; joins: PresenceState; leaves: PresenceState; callers?: MetaCallers }
  | { type: 'presence_sync'; node: string; state: NodePresence; callers?: MetaCallers }
  | { type: 'sync_request'; node: string; to: string | null;
      /** the stretches of WAL (from, to] the asking node's streams did not carry (cluster-gaps.ts); req: the asking's number */
      lost?: [string, string][]; req?: number;
      /** the asking node had taken `to` for dead (silent): it dropped its presences, and its durable sessions were removed (onHeardAgain) */
      dropped?: true;
      /** nodes before `lost` asked with this (node id → the last broadcast seq heard of it); ignored */
      since?: Record<string, number> }
  | { type: 'heartbeat'; node: string; /** the sender's clock (monotonicNow(), read by itself alone) when it queued it (its own echo measures the stream) */ sent?: number;
      /** the last broadcast seq the sender had given (nodes before `lost`; ignored) */ seq?: number;
      /** node id → the number of its last `lost` request the sender has sent its broadcasts again for */ answered?: Record<string, number> }
  | { type: 'leave'; node: string };

/**
 * 1: no MAC (before authentication); 2: a MAC after the version byte (before message numbers);
 * 3: a MAC, then the sending node's id and its message number (before send times); 4: those, then
 * the send time. Only 4 is read.
 */
const VERSION = 4;
/** HMAC-SHA256's length, after the version byte. */
const MAC_BYTES = 32;
/** The sending node's id (a UUID's 16 bytes), after the MAC. */
const NODE_AT = 1 + MAC_BYTES;
/** The node's message number (u64, big-endian), after its id. */
const NUMBER_AT = NODE_AT + 16;
/** When the node sent it: its wall clock in ms since the epoch (u64, big-endian), after the number. */
const SENT_AT = NUMBER_AT + 8;
/** The bytes before the first frame. */
const HEAD_BYTES = SENT_AT + 8;
/** How far a message's send time may be from the receiver's clock, either way, by default (see Freshness above). */
export const DEFAULT_FRESHNESS_MS = 5 * 60_000;
/** Nodes whose last message number this node remembers (the oldest heard is forgotten first). */
const MAX_NUMBERED_NODES = 10_000;
/** What a gateway logs of the messages it dropped, by reason (reject): what happened, and what to do. */
const REJECT_WORDS: Record<RejectReason, string> = {
  unsigned: 'realtime cluster messages without a valid MAC ignored: a database role other than this deployment\'s gateways writes under the cluster\'s prefix, '
    + 'or a gateway of another version runs (docs/realtime.md, "Cluster")',
  bad_mac: 'realtime cluster messages without a valid MAC ignored: a database role other than this deployment\'s gateways writes under the cluster\'s prefix, '
    + 'or a gateway runs with another key (REALTIME_CLUSTER_SECRET, else JWT_SECRET, must be the same on every gateway; docs/realtime.md, "Cluster")',
  replayed: 'realtime cluster messages written again ignored (numbered at or below the last read of their node): a role that reads the WAL writes captured messages again, '
    + 'or a gateway ran a statement again after its connection was lost once it had landed (one per such loss; docs/realtime.md, "Cluster")',
  stale: 'realtime cluster messages sent too long before or after this gateway\'s clock ignored (ageMs: how old by this clock, negative from the future; node: whose): '
    + 'check the hosts\' clocks (NTP): a gateway whose messages every other one drops, or that drops every other one\'s, has a clock off by more than freshnessMs '
    + '(REALTIME_CLUSTER_FRESHNESS_MS); its own messages dropped too (own: true) is this gateway\'s stream lagging behind the WAL by more than that; '
    + 'a few of a node gone is a role that reads the WAL writing captured messages again (docs/realtime.md, "Cluster")',
};
/*
 * Clocks: the node's own intervals (a peer's silence, the echo of its heartbeats, the outage bound, gaps,
 * the replay log's age, the rejection warning's 10 s) are timed on src/clock.ts's monotonic clock,
 * so a step of the host's wall clock (NTP correcting it, `date -s`) moves none of them. Only a message's send time (Freshness)
 * is the wall clock: it is compared with another host's. Before, a step forward of more than
 * sendOutageMs (14 s) took every peer for dead at once (`cannot be sent`, then `node silent`, its
 * presences dropped, then asked again: 5 of 5 steps of 60 s, within the window), one of more than
 * deadAfterMs every peer not heard before its own heartbeat's echo; a step back kept a peer that
 * went silent alive for the step's length (past the window: its presences shown while all its
 * messages were dropped as stale) and held the rejection warning back as long.
 */
/** Messages dropped for their MAC are logged at most this often (with their count meanwhile), never one by one. */
const REJECT_WARN_EVERY_MS = 10_000;
/** Frames per statement at most; the rest go in the next one. */
const MAX_BATCH_FRAMES = 256;
const MAX_BATCH_BYTES = 4 * 1024 * 1024;
/** The bytes of payload a node keeps of its sent broadcasts, to send again (see Broadcasts across a stream's loss). */
const REPLAY_MAX_BYTES = 32 * 1024 * 1024;

/** lsn: the end of the record of the message it went out in (0 until it did), msg: that message's number */
type Sent = { seq: number; at: number; key: ChannelKey; event: string; encoding: 'json' | 'binary'; body: Buffer; lsn: bigint; msg: bigint };

type Pending = { frame: Buffer; resolve(): void; reject(err: unknown): void; /** a broadcast of this node's own, logged once emitted */ sent?: Sent };

/** How often a node sends its whole presence (`presence_sync`) unasked, by default. */
export const DEFAULT_SYNC_INTERVAL_MS = 30_000;

export function createClusterNode(opts: ClusterOptions): ClusterNode {
  const id = randomUUID();
  const heartbeatMs = opts.heartbeatMs ?? 2000;
  const deadAfterMs = opts.deadAfterMs ?? 3 * heartbeatMs + 1000;
  const syncIntervalMs = opts.syncIntervalMs ?? DEFAULT_SYNC_INTERVAL_MS;
  const stats = { sent: 0, received: 0, sendFailures: 0, dead: 0, rejected: 0 };
  /** this node's message numbers: the last one given (one per statement, in the signed head) */
  let messageNumber = 0n;
  /**
   * node id → the number of the last message of it this node read: a message numbered at or
   * below it is dropped (`replayed`). Kept after the node is dropped or left (a replay of a dead
   * node's message would make it again), up to MAX_NUMBERED_NODES.
   */
  const lastNumber = new Map<string, bigint>();
  /**
   * rejected messages not logged yet (reject), by reason: how many, and the details of the last
   * one (a stale message's node and age); when the last warning was
   */
  let unwarned: Partial<Record<RejectReason, { count: number; details: object }>> = {};
  let warnedAt = 0;
  /** logs what reject held back once REJECT_WARN_EVERY_MS has passed, so a burst's tail is logged too */
  let warnTimer: NodeJS.Timeout | null = null;
  /** node id → when last heard (this node's clock) */
  const peers = new Map<string, number>();
  /** This node's clock when it sent the newest of its own heartbeats that came back on the stream (sweep). */
  let echoedAt = 0;
  /** How much of a node's silence the stream must have carried before it is dead (sweep). */
  const coveredMs = Math.max(heartbeatMs, deadAfterMs - 2 * heartbeatMs);
  const sendOutageMs = opts.sendOutageMs ?? 2 * deadAfterMs;
  /** whenCovered's callers: since when (this node's clock) they need every live node heard */
  const coverWaiters = new Set<{ since: number; resolve(covered: boolean): void }>();
  /** This node's clock when one of its statements last emitted its messages (sweep). */
  let sentAt = 0;
  let blind = false;
  /** nodes that said `leave`: anything later from them is ignored */
  const left = new Set<string>();
  /** nodes this one took for dead (silent), each until heard again: told so in its sync_request (onHeardAgain) */
  const silenced = new Set<string>();
  const replayMs = opts.replayMs ?? 60_000;
  const freshnessMs = opts.freshnessMs ?? DEFAULT_FRESHNESS_MS;
  /** this node's broadcast numbers: the last one given */
  let seq = 0;
  /** this node's broadcasts emitted in the last replayMs, oldest first, and their bytes */
  let sentLog: (Sent | null)[] = [];
  let sentLogBytes = 0;
  /** sentLog's entries before this one are dropped (null), until it is compacted (logSent) */
  let sentLogHead = 0;
  /** what this node's streams did not carry, and which nodes owe it their broadcasts in it */
  const gaps = new ClusterGaps(2 * replayMs, 2 * heartbeatMs);
  /** the end of the last cluster message this node's streams delivered (or where it began listening) */
  let covered = 0n;
  /** started while the stream was up: what it delivered before this node listened is unknown until its first message */
  let coveredUnsure = false;
  /** node id → the number of its last `lost` request this node answered (sent its broadcasts again) */
  const answered = new Map<string, number>();
  /** nodes this node is sending broadcasts again to now (replayTo) */
  const replaying = new Set<string>();
  let pending: Pending[] = [];
  let flushing: Promise<void> | null = null;
  /** the statement emitting a batch now, settled (either way) once it answered */
  let inFlight: Promise<void> | null = null;
  let serverVersion = 0; // server_version_num, read at start (emitLogicalMessage)
  let stopped = true;
  let streamUp = false;
  let syncTimer: NodeJS.Timeout | null = null;
  const timers: NodeJS.Timeout[] = [];
  const offs: (() => void)[] = [];

  function enqueue(header: Header, body?: Uint8Array, sent?: Sent): Promise<void> {
    if (stopped && header.type !== 'leave') return Promise.reject(new Error('the realtime cluster node is stopped'));
    return new Promise<void>((resolve, reject) => {
      pending.push({ frame: encodeFrame(header, body), resolve, reject, sent });
      flushing ??= flush().finally(() => { flushing = null; });
    });
  }

  /** One statement at a time, so this node's messages reach every node in the order they were queued. */
  async function flush(): Promise<void> {
    while (pending.length > 0) {
      let bytes = HEAD_BYTES;
      let n = 0;
      while (n < pending.length && n < MAX_BATCH_FRAMES && (n === 0 || bytes + pending[n]!.frame.length <= MAX_BATCH_BYTES)) bytes += pending[n++]!.frame.length;
      const batch = pending.slice(0, n);
      pending = pending.slice(n);
      const number = ++messageNumber;
      // stamped now: every receiver drops it once it is more than freshnessMs from its clock
      // (Freshness above); run again after a lost connection, it keeps this stamp (the same bytes)
      const content = encodeMessage(batch.map((p) => p.frame), opts.keys.sign, id, number, Date.now(), bytes);
      let settle!: () => void;
      inFlight = new Promise<void>((r) => { settle = r; });
      try {
        // run again, the same bytes, when its connection was lost: it may have landed (a
        // non-transactional message is written whether or not the answer came back), and then
        // every node drops the second copy (its number is not above the first's); it may not have
        // (a reset before the server read it, a backend terminated before it ran), and then the
        // second is the one read. Before numbers, it was not run again: a REST broadcast was
        // answered 503, a socket's `ack` an error, presence and heartbeats dropped
        const lsn = parseLsn(await runAgainOnLostConnection(() => emitLogicalMessage(opts.sql, CLUSTER_MESSAGE_PREFIX, content, serverVersion), { pooled: opts.sql.options.max }));
        sentAt = monotonicNow();
        stats.sent += batch.length;
        for (const p of batch) {
          if (p.sent) logSent(p.sent, lsn, number);
          p.resolve();
        }
      } catch (err) {
        stats.sendFailures++;
        for (const p of batch) p.reject(err);
        // what the others missed of our presence comes back with the next sync
        if (!stopped) syncSoon(heartbeatMs);
      } finally {
        inFlight = null;
        settle();
      }
    }
  }

  function logSent(entry: Sent, lsn: bigint, msg: bigint): void {
    entry.lsn = lsn;
    entry.msg = msg;
    sentLog.push(entry);
    sentLogBytes += entry.body.length;
    const horizon = monotonicNow() - replayMs;
    while (sentLogHead < sentLog.length && (sentLog[sentLogHead]!.at < horizon || sentLogBytes > REPLAY_MAX_BYTES)) {
      sentLogBytes -= sentLog[sentLogHead]!.body.length;
      sentLog[sentLogHead++] = null;
    }
    // compacted once half of it is dropped: O(1) a broadcast. A copy of the whole log whenever one
    // expired cost a gateway sending n a second n x 60 n entries copied a second (at 1,000 a second,
    // 60,000 entries: most of a core)
    if (sentLogHead > 0 && 2 * sentLogHead >= sentLog.length) {
      sentLog = sentLog.slice(sentLogHead);
      sentLogHead = 0;
    }
  }

  /**
   * Sends `to` again this node's logged broadcasts first sent in the stretches of WAL `lost` (its
   * streams did not carry them); once all were emitted, says so in a heartbeat (`answered`: the
   * node stops asking). One that could not be emitted says nothing: the node asks again. The
   * statement in flight when the request came is waited for first: its broadcasts may lie in a
   * stretch (they went into the WAL before the request) though they are logged only once it
   * answers; every statement after it comes after the request, after every stretch it names.
   */
  async function replayTo(to: string, lost: [bigint, bigint][], req: number): Promise<void> {
    // one replay to a node at a time: a request repeated (every 2 x heartbeatMs) while the answer
    // to it waited (the statement in flight, a pool whose connections are all busy) queued one more
    // copy of every broadcast asked for each time; one that comes meanwhile goes unanswered, and
    // the node asks it again (it asks until a heartbeat names its latest request)
    if (replaying.has(to)) return;
    replaying.add(to);
    try {
      await replay(to, lost, req);
    } finally {
      replaying.delete(to);
    }
  }

  async function replay(to: string, lost: [bigint, bigint][], req: number): Promise<void> {
    if (inFlight) await inFlight;
    if (stopped) return;
    const sends = sentLog.filter((e): e is Sent => e !== null && lost.some(([from, upTo]) => e.lsn > from && e.lsn <= upTo))
      .map((e) => enqueue({ type: 'broadcast', node: id, key: e.key, event: e.event, encoding: e.encoding, seq: e.seq, to, lsn: formatLsn(e.lsn), msg: String(e.msg) }, e.body));
    try {
      await Promise.all(sends);
      // (answers to two requests may end in either order: the later request's is the one that counts)
      answered.set(to, Math.max(req, answered.get(to) ?? 0));
      heartbeat();
    } catch (err) {
      opts.logger?.debug({ err, to }, 'realtime cluster broadcasts not sent again; the node will ask again');
    }
  }

  /** Asks each node that owes this node broadcasts it missed (cluster-gaps.ts) and was not asked lately. */
  function askDue(): void {
    if (stopped) return;
    for (const r of gaps.due(monotonicNow())) void quiet(enqueue({ type: 'sync_request', node: id, to: r.node, lost: r.lost, req: r.req }));
  }

  function heartbeat(): void {
    if (stopped) return;
    void quiet(enqueue({ type: 'heartbeat', node: id, sent: monotonicNow(), ...(answered.size > 0 ? { answered: Object.fromEntries(answered) } : {}) }));
  }

  const quiet = (p: Promise<void>) => p.catch((err) => opts.logger?.debug({ err }, 'realtime cluster message not sent'));

  function sendSync(): void {
    if (stopped) return;
    void quiet(enqueue({ type: 'presence_sync', node: id, state: opts.presence.localSnapshot(), callers: opts.presence.localCallers() }));
  }

  /** Coalesces sync requests arriving together (every node asks at once after a restart). */
  function syncSoon(delayMs = 50): void {
    if (syncTimer || stopped) return;
    syncTimer = setTimeout(() => {
      syncTimer = null;
      sendSync();
    }, delayMs);
    syncTimer.unref();
  }

  function forward(diffs: Map<ChannelKey, PresenceDiff>): void {
    for (const [key, diff] of diffs) opts.onPresenceDiff(key, diff);
  }

  function drop(node: string): void {
    peers.delete(node);
    gaps.drop(node);
    answered.delete(node);
    forward(opts.presence.dropRemote(node));
    opts.onNodeGone?.(node);
  }

  function onMessage(content: Buffer, lsn: bigint): void {
    if (stopped) return;
    // the stream was up before this node listened: what it carried before this message, this node never had
    if (coveredUnsure) {
      coveredUnsure = false;
      gaps.open(covered, lsn - 1n, peers.keys(), monotonicNow(), lastNumber);
    }
    if (lsn > covered) covered = lsn;
    // nothing of a message is read before its MAC is checked: a forged one makes no node, presence or request
    const unauthentic = verifyMessage(content, opts.keys.accept);
    if (unauthentic) return reject(unauthentic);
    // a node's statements reach every node in the order it sent them, each under a number above
    // the last: one at or below the last read of its node is a genuine message written again (a
    // role that read it from the WAL, or its node's statement run again after a lost connection)
    const { node, number, sent } = readHead(content);
    // sent too long before (or after) this node's clock: a message captured and written again later
    // (numbers do not catch one of a node this one never read), or a clock off. This node's own
    // too: a stream that lags by more than the window drops everyone's, so its own heartbeats
    // witness no silence of the others (sweep) and nobody is taken for dead for it
    const ageMs = Date.now() - sent;
    if (Math.abs(ageMs) > freshnessMs) return reject('stale', { node, ageMs, own: node === id });
    if (node !== id && !numbered(node, number)) return reject('replayed');
    let frames: { header: Header; body: Buffer }[];
    try {
      frames = decodeMessage(content, node);
    } catch (err) {
      opts.logger?.warn({ err }, 'realtime cluster message malformed; ignored');
      return;
    }
    for (const { header, body } of frames) {
      if (header.node === id) {
        if (header.type === 'heartbeat' && typeof header.sent === 'number') echoedAt = Math.max(echoedAt, header.sent);
        continue;
      }
      if (left.has(header.node)) continue;
      stats.received++;
      try {
        handle(header, body);
      } catch (err) {
        opts.logger?.error({ err, type: header.type }, 'realtime cluster message handling failed');
      }
    }
  }

  /**
   * Whether `number` is above the last message number read of `node`, noting it if so. The first
   * message read of a node may have any number (the node ran before this one listened: it started
   * earlier, or this one's stream was down). A stream that reconnects starts at a new slot's
   * position, after all the lost one delivered: no node's earlier statement comes after a later.
   */
  function numbered(node: string, number: bigint): boolean {
    const last = lastNumber.get(node);
    if (last !== undefined && number <= last) return false;
    if (last === undefined && lastNumber.size >= MAX_NUMBERED_NODES) lastNumber.delete(lastNumber.keys().next().value!);
    lastNumber.set(node, number);
    return true;
  }

  /**
   * Counts a message dropped unread; logs them at warn at most every REJECT_WARN_EVERY_MS (a flood
   * must not flood the log). `stale`: which node's message, how old by this node's clock (negative:
   * from the future), and whether it is this node's own, for the log (which clock is off).
   */
  function reject(reason: RejectReason, stale?: { node: string; ageMs: number; own: boolean }): void {
    stats.rejected++;
    opts.onRejected?.(reason);
    unwarned[reason] = { count: (unwarned[reason]?.count ?? 0) + 1, details: stale ? { ...stale, freshnessMs } : {} };
    // (the monotonic clock: on the wall clock, a step back held every warning back for the step's
    // length, the stale warning that says to check the clocks included)
    const wait = warnedAt + REJECT_WARN_EVERY_MS - monotonicNow();
    if (wait <= 0) return warnRejected();
    // held back: logged when the interval is over, with whatever else came meanwhile (before, a
    // burst's last count waited for another rejection, which might never come)
    if (warnTimer === null && !stopped) {
      warnTimer = setTimeout(() => { warnTimer = null; warnRejected(); }, wait);
      warnTimer.unref();
    }
  }

  /**
   * Logs what reject counted since the last warning: a line per reason, each with its own words
   * (what to do differs: a key, the clocks) and its count (`rejected: {reason: count}`). Before,
   * one line carried every reason's count in the words of the last message's reason: a stale
   * message followed by a bad MAC within 10 s never said to check the clocks.
   */
  function warnRejected(): void {
    for (const [reason, { count, details }] of Object.entries(unwarned) as [RejectReason, { count: number; details: object }][]) {
      opts.logger?.warn({ rejected: { [reason]: count }, reason, ...details, rejectedTotal: stats.rejected }, REJECT_WORDS[reason]);
    }
    unwarned = {};
    warnedAt = monotonicNow();
  }

  function handle(h: Header, body: Buffer): void {
    if (h.type === 'leave') {
      left.add(h.node);
      if (left.size > 10_000) left.delete(left.values().next().value!);
      return drop(h.node);
    }
    const known = peers.has(h.node);
    peers.set(h.node, monotonicNow());
    if (!known) {
      // a node we did not know (new, or dropped while it was silent): ask for its presence, and
      // for its broadcasts in what our streams did not carry (it may have sent some then)
      // (one taken for dead is asked even with its presence at hand: it records its durable sessions again)
      const dropped = silenced.delete(h.node);
      if (h.type !== 'presence_sync' || dropped) void quiet(enqueue({ type: 'sync_request', node: id, to: h.node, ...(dropped ? { dropped: true as const } : {}) }));
      gaps.heard(h.node, monotonicNow());
      askDue();
    }
    switch (h.type) {
      case 'broadcast':
        if (h.to !== undefined) {
          // sent again: to another node, or to this one for a stretch its streams missed (once)
          if (h.to !== id || typeof h.seq !== 'number' || h.lsn === undefined
            || !gaps.admitResent(h.node, h.seq, parseLsn(h.lsn), monotonicNow(), h.msg === undefined ? undefined : BigInt(h.msg))) return;
        }
        return opts.onBroadcast(h.key, h.event, h.encoding === 'binary' ? { binary: body } : { json: body.toString('utf8') });
      case 'presence_diff': {
        const diff = opts.presence.applyRemoteDiff(h.node, h.key, { joins: h.joins, leaves: h.leaves }, h.callers);
        if (diff) opts.onPresenceDiff(h.key, diff);
        return;
      }
      case 'presence_sync':
        return forward(opts.presence.replaceRemote(h.node, h.state, h.callers));
      case 'sync_request':
        if (h.to !== null && h.to !== id) return;
        if (!h.lost) {
          // the asker had taken this node for dead, and removed its durable sessions (onHeardAgain)
          if (h.to === id && h.dropped === true) opts.onHeardAgain?.();
          return syncSoon();
        }
        // a request for broadcasts names the node it asks (every node's does): one naming none is a
        // forgery (any database role may emit messages under the prefix), which had every node send
        // its whole log again at once
        if (h.to !== id) return;
        // a request this node has answered already (a node asks again every 2 x heartbeatMs until
        // a heartbeat names it, so the repeat may cross the answer in the WAL; what it lost later
        // is a new request with a higher number): the broadcasts went out once, and the heartbeat
        // naming the request follows them; sent again, each went into the WAL twice
        if (typeof h.req === 'number' && h.req <= (answered.get(h.node) ?? 0)) return;
        void replayTo(h.node, h.lost.map(([from, upTo]) => [parseLsn(from), parseLsn(upTo)]), h.req ?? 0);
        return;
      case 'heartbeat': {
        const req = h.answered?.[id];
        if (typeof req === 'number') gaps.answered(h.node, req);
        return;
      }
    }
  }

  function onStream(up: boolean, startLsn?: bigint): void {
    streamUp = up;
    if (!up || stopped) return;
    // silence while we could not listen proves nothing; and we may have missed messages
    const now = monotonicNow();
    for (const node of peers.keys()) peers.set(node, now);
    for (const w of coverWaiters) w.since = now;
    // what no stream carried: from the end of the last message the lost one delivered to the new
    // one's start; every node owes its broadcasts in it, asked of each alone until its heartbeat
    // says it answered (cluster-gaps.ts)
    if (startLsn !== undefined) {
      gaps.open(covered, startLsn, peers.keys(), now, lastNumber);
      covered = startLsn;
      coveredUnsure = false;
    }
    // the others' presence, asked of them; and ours, told to them: a node whose stream was down
    // too missed our diffs, and its own request, sent when its stream came back before ours, was
    // in no stream of ours (it kept our presence stale until the next periodic sync, 30 s)
    void quiet(enqueue({ type: 'sync_request', node: id, to: null }));
    syncSoon();
    askDue();
  }

  function sweep(): void {
    if (stopped || !streamUp) return;
    const now = monotonicNow();
    // no heartbeat of ours sent for that long: none can come back to witness the stream (see above)
    const cannotSend = now - sentAt > sendOutageMs;
    if (cannotSend !== blind) {
      blind = cannotSend;
      if (blind) opts.logger?.warn({ sentMsAgo: Math.round(now - sentAt) }, 'realtime cluster messages cannot be sent; a node silent for long enough is taken for dead without this node\'s heartbeats');
      else opts.logger?.info('realtime cluster messages are sent again; a silent node is taken for dead once this node\'s own heartbeat shows the stream delivered its silence');
    }
    askDue();
    for (const [node, at] of peers) {
      // silent for long enough, and across WAL the stream has delivered (see above)
      if (now - at <= deadAfterMs || (!blind && echoedAt - at <= coveredMs)) continue;
      stats.dead++;
      opts.logger?.warn({ node, silentMs: Math.round(now - at) }, 'realtime cluster node silent; dropping its presences');
      silenced.add(node);
      if (silenced.size > 10_000) silenced.delete(silenced.values().next().value!);
      drop(node);
    }
    // the same proof for nodes never heard: silent since `since` for long enough, across WAL delivered
    for (const w of coverWaiters) {
      if (blind || now - w.since <= deadAfterMs || echoedAt - w.since <= coveredMs) continue;
      coverWaiters.delete(w);
      w.resolve(true);
    }
  }

  return {
    id,
    deadAfterMs,
    async start() {
      if (!stopped) return;
      // where this node begins listening: what its first stream does not carry after it, it asks for
      const [{ v, lsn }] = (await opts.sql`select current_setting('server_version_num')::int as v, pg_current_wal_insert_lsn()::text as lsn`) as unknown as [{ v: number; lsn: string }];
      serverVersion = v;
      covered = parseLsn(lsn);
      // (listened to from the next line on: a stream up already may have delivered messages after `lsn` to nobody)
      coveredUnsure = opts.bus.streaming();
      stopped = false;
      sentAt = monotonicNow(); // the outage bound counts from here until the first send
      offs.push(opts.bus.onClusterMessage(onMessage), opts.bus.onStreamState(onStream));
      timers.push(setInterval(heartbeat, heartbeatMs));
      timers.push(setInterval(sweep, Math.max(50, Math.floor(heartbeatMs / 4))));
      timers.push(setInterval(sendSync, syncIntervalMs));
      for (const t of timers) t.unref();
      heartbeat();
      if (opts.bus.streaming()) onStream(true);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const t of timers.splice(0)) clearInterval(t);
      if (warnTimer) clearTimeout(warnTimer);
      warnTimer = null;
      warnRejected();  // the held-back counts, now
      if (syncTimer) clearTimeout(syncTimer);
      syncTimer = null;
      for (const off of offs.splice(0)) off();
      for (const w of coverWaiters) w.resolve(false);
      coverWaiters.clear();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        quiet(enqueue({ type: 'leave', node: id })),
        new Promise<void>((r) => { timer = setTimeout(r, 2000); }),
      ]).finally(() => clearTimeout(timer));
    },
    publishBroadcast(key, event, payload) {
      const n = ++seq;
      const encoding = 'binary' in payload ? 'binary' : 'json';
      const body = 'binary' in payload ? payload.binary : Buffer.from(payload.json, 'utf8');
      return enqueue({ type: 'broadcast', node: id, key, event, encoding, seq: n }, body, { seq: n, at: monotonicNow(), key, event, encoding, body, lsn: 0n, msg: 0n });
    },
    publishPresenceDiff(key, diff) {
      if (stopped) return;
      const callers = opts.presence.callersOf(diff.joins);
      void quiet(enqueue({ type: 'presence_diff', node: id, key, joins: diff.joins, leaves: diff.leaves, ...(Object.keys(callers).length > 0 ? { callers } : {}) }));
    },
    nodes: () => [...peers.keys()],
    whenCovered: () => (stopped ? Promise.resolve(false)
      : new Promise<boolean>((resolve) => { coverWaiters.add({ since: monotonicNow(), resolve }); })),
    stats: () => ({ ...stats }),
  };
}

/**
 * One logical message of encoded frames (encodeFrame), `bytes` long in all, from `node` under its
 * message number `number`, sent at `sent` (ms since the epoch, the node's clock), signed with
 * `key`: the version byte, HMAC-SHA256 under `key` of everything else (the version byte, the
 * node's id, the number, the send time and the frames), the node's id (its UUID's 16 bytes), the
 * number (u64, big-endian), the send time (u64, big-endian), the frames. Every frame is `node`'s.
 * What verifyMessage checks, readHead and decodeMessage read.
 */
export function encodeMessage(frames: Buffer[], key: KeyObject, node: string, number: bigint, sent = Date.now(),
  bytes = HEAD_BYTES + frames.reduce((n, f) => n + f.length, 0)): Buffer {
  const out = Buffer.concat([Buffer.from([VERSION]), Buffer.alloc(HEAD_BYTES - 1), ...frames], bytes);
  const uuid = Buffer.from(node.replace(/-/g, ''), 'hex');
  if (uuid.length !== 16) throw new Error(`a cluster node id is a UUID: ${node}`);
  uuid.copy(out, NODE_AT);
  out.writeBigUInt64BE(number, NUMBER_AT);
  out.writeBigUInt64BE(BigInt(sent), SENT_AT);
  mac(out, key).copy(out, 1);
  return out;
}

/** The MAC of a message: over its version byte and all after the MAC (node, number, send time, frames). */
function mac(content: Buffer, key: KeyObject): Buffer {
  return createHmac('sha256', key).update(content.subarray(0, 1)).update(content.subarray(NODE_AT)).digest();
}

/** Why `content` is not a message signed with one of `keys` (undefined: it is); reads nothing of its frames. */
export function verifyMessage(content: Buffer, keys: readonly KeyObject[]): RejectReason | undefined {
  if (content.length < HEAD_BYTES || content[0] !== VERSION) return 'unsigned';
  const given = content.subarray(1, NODE_AT);
  return keys.some((key) => timingSafeEqual(mac(content, key), given)) ? undefined : 'bad_mac';
}

/** The node a message (of this version, HEAD_BYTES long at least) is from, its number there, and when the node sent it (ms since the epoch, its clock). */
export function readHead(content: Buffer): { node: string; number: bigint; sent: number } {
  const hex = content.toString('hex', NODE_AT, NUMBER_AT);
  const node = `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  // (a u64 past 2^53 ms is 285,000 years away: read as a Number, it is far outside any window)
  return { node, number: content.readBigUInt64BE(NUMBER_AT), sent: Number(content.readBigUInt64BE(SENT_AT)) };
}

/** A frame: its header's and body's lengths (4 bytes each), the header's JSON, the body. */
export function encodeFrame(header: Header, body?: Uint8Array): Buffer {
  const h = Buffer.from(JSON.stringify(header), 'utf8');
  const b = body ?? Buffer.alloc(0);
  const out = Buffer.allocUnsafe(8 + h.length + b.length);
  out.writeUInt32BE(h.length, 0);
  out.writeUInt32BE(b.length, 4);
  h.copy(out, 8);
  out.set(b, 8 + h.length);
  return out;
}

const KEY = /^(private|public):/;
const isLsn = (v: unknown): v is string => typeof v === 'string' && /^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(v);
const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Every frame of one logical message; throws on anything malformed, or on a frame of another node
 * than the head's. Does not check its MAC nor its number: a node reads only what verifyMessage
 * and its numbering passed.
 */
export function decodeMessage(content: Buffer, headNode?: string): { header: Header; body: Buffer }[] {
  if (content.length < HEAD_BYTES || content[0] !== VERSION) throw new Error(`unknown cluster message version ${content[0]}`);
  // (the head's node when the caller has read it already: onMessage)
  const node = headNode ?? readHead(content).node;
  const out: { header: Header; body: Buffer }[] = [];
  let o = HEAD_BYTES;
  while (o < content.length) {
    if (o + 8 > content.length) throw new Error('truncated cluster frame');
    const hl = content.readUInt32BE(o);
    const bl = content.readUInt32BE(o + 4);
    if (o + 8 + hl + bl > content.length) throw new Error('truncated cluster frame');
    const header = JSON.parse(content.subarray(o + 8, o + 8 + hl).toString('utf8')) as Header;
    const body = content.subarray(o + 8 + hl, o + 8 + hl + bl);
    o += 8 + hl + bl;
    if (!valid(header)) throw new Error('invalid cluster frame header');
    // (a node's number covers its frames only: one of another node's would pass under it)
    if (header.node !== node) throw new Error('a cluster frame of another node than its message\'s');
    out.push({ header, body });
  }
  return out;
}

function valid(h: unknown): h is Header {
  if (!isObject(h) || typeof h.node !== 'string' || !h.node) return false;
  const keyOk = typeof h.key === 'string' && KEY.test(h.key);
  switch (h.type) {
    case 'broadcast':
      return keyOk && typeof h.event === 'string' && (h.encoding === 'json' || h.encoding === 'binary')
        && (h.seq === undefined || Number.isSafeInteger(h.seq)) && (h.to === undefined || typeof h.to === 'string')
        && (h.lsn === undefined || isLsn(h.lsn)) && (h.msg === undefined || (typeof h.msg === 'string' && /^\d{1,20}$/.test(h.msg)));
    case 'presence_diff':
      return keyOk && validState(h.joins) && validState(h.leaves) && validCallers(h.callers);
    case 'presence_sync':
      return isObject(h.state) && Object.entries(h.state).every(([k, s]) => KEY.test(k) && validState(s)) && validCallers(h.callers);
    case 'sync_request':
      return (h.to === null || typeof h.to === 'string') && (h.req === undefined || Number.isSafeInteger(h.req))
        && (h.lost === undefined || (Array.isArray(h.lost) && h.lost.every((g: unknown) => Array.isArray(g) && g.length === 2 && isLsn(g[0]) && isLsn(g[1]))));
    case 'heartbeat':
      return (h.seq === undefined || Number.isSafeInteger(h.seq))
        && (h.answered === undefined || (isObject(h.answered) && Object.values(h.answered).every((n) => Number.isSafeInteger(n))));
    case 'leave':
      return true;
    default:
      return false;
  }
}

function validCallers(c: unknown): c is MetaCallers | undefined {
  return c === undefined || (isObject(c) && Object.values(c).every((v) => typeof v === 'string'));
}

function validState(s: unknown): s is PresenceState {
  return isObject(s) && Object.values(s).every((p) => isObject(p) && Array.isArray(p.metas) && p.metas.every((m: unknown) => isObject(m) && typeof m.phx_ref === 'string'));
}
