import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
import type { GatewayRateLimit } from '../metrics.ts';
import type { DatabaseBus, BusMessage } from './bus.ts';
import type { ChannelKey } from './channel-key.ts';
import type { ClusterNode } from './cluster.ts';
import { DEFAULT_ADMISSION_LIMITS, type Admission, type AdmissionLimits } from './admission.ts';
import { PresenceTracker } from './presence.ts';
import { DEFAULT_MAX_BUFFERED_BYTES } from './socket-write.ts';

/**
 * The gateway's shared state in one process: which local subscribers listen to which sub-topic
 * (`canvas:<id>`), the database bus feeding them, and the presence tracker. Both socket kinds
 * (the Phoenix/realtime-js socket and the H1 sync socket) register here.
 */
export type Subscriber = {
  /** Receives messages written to the database (realtime.send) on the sub-topic. */
  onDatabase(message: BusMessage): void;
};

export type Limits = {
  /** Client messages per second per socket (broadcast, presence; H1: every message). */
  messagesPerSecond: number;
  /** Largest client broadcast payload (bytes of JSON). */
  maxPayloadBytes: number;
  /**
   * Presence a realtime-js socket may have tracked at once, summed over its channels (bytes of
   * each tracked state's JSON). A tracked state is held by every gateway process of the cluster
   * (and sent in each one's presence_sync) for as long as the socket stays; each was bounded
   * (maxPayloadBytes) but their number only by maxChannelsPerSocket and the sockets an address
   * may open: the public anon key made every gateway hold up to 1.6 GiB of presence JSON per
   * address (1000 sockets x 100 channels x 16 KiB), several times that in heap.
   */
  maxPresenceBytesPerSocket: number;
  /** Close sockets that sent nothing (not even a heartbeat) for this long. */
  idleTimeoutMs: number;
  /** Minimum interval between api.update_presence calls per channel. */
  presenceWriteIntervalMs: number;
  /** Unsent bytes a socket may hold before it is dropped as a slow consumer (socket-write.ts). */
  maxBufferedBytes: number;
  /** How long a client's next frame, or an H1 replay, waits for the client to read what it was sent before the socket is dropped (socket-write.ts whenWritable). */
  drainTimeoutMs: number;
  /** Channels one realtime-js socket may have joined at once (Supabase Realtime's max_channels_per_client). */
  maxChannelsPerSocket: number;
  /** phx_join frames per second per socket, in bursts up to maxChannelsPerSocket (a reconnect rejoins every channel at once). */
  joinsPerSecond: number;
  /**
   * Longest name a client sends, in characters: a frame's topic (`realtime:<name>`), join_ref and
   * ref, and a channel's presence key. Each is kept per channel, room, presence (on every gateway
   * of the cluster) or pending reply, so their length bounds what one socket can make the cluster hold.
   */
  maxNameLength: number;
  /** Frames a socket may have waiting to be handled before it stops reading (inbound-queue.ts). */
  maxPendingFrames: number;
  /**
   * Every frame a realtime-js socket sends, whatever its topic and event (heartbeats, frames to
   * topics it never joined, leaves, access_token, frames that do not decode), per second in
   * bursts up to frameBurst; past it the socket is closed (1008, FRAME_RATE_LIMIT_REACHED, rate-limit.ts) and
   * realtime-js reconnects with its backoff. H1 sockets have the same rate (every frame: pings,
   * frames refused as invalid or past messagesPerSecond, binary ones), closed 4429 with the same
   * reason (h1-protocol.ts H1_CLOSE_FRAME_RATE): each frame past messagesPerSecond was answered a
   * refusal, forever, at whatever rate the client sent), in bursts of h1FrameBurst; @potentia/client paces itself below
   * messagesPerSecond and never comes near it. Only joined channels' broadcasts and presence had a
   * rate (messagesPerSecond), so a socket flooding heartbeats was answered as fast as it sent.
   * Set far above what realtime-js sends: the burst holds a reconnect's rejoin of
   * maxChannelsPerSocket channels, each channel's push buffer sent at once when its rejoin is
   * answered (up to REALTIME_JS_PUSH_BUFFER pushes: presence tracks made while offline), an
   * access_token to each (setAuth) and a leave of each (removeAllChannels); the rate,
   * maxChannelsPerSocket refused joins retried each second (realtime-js's first rejoin delay)
   * plus messagesPerSecond. A burst of 500 closed a client that tracked its presence on 5 or more
   * channels while offline, as it rejoined (and its latest tracks were lost with the socket).
   */
  framesPerSecond: number;
  frameBurst: number;
  /**
   * The burst of an H1 socket's frames (framesPerSecond is shared): an H1 client has no push buffer
   * to flush and one canvas per socket, so nothing it sends comes near realtime-js's burst.
   */
  h1FrameBurst: number;
  /**
   * Client broadcasts a realtime-js channel holds while its access is re-checked (access.ts,
   * held-frames.ts), at most this many and this many bytes (payload and event name); past
   * either, the oldest held are dropped and the channel is told once, when the re-check passes
   * (`system` error BROADCASTS_DROPPED). A re-check waiting on a lock can last tens of seconds
   * while the room keeps sending: they were held without bound. Dropping the oldest is what a
   * realtime-js user expects of broadcast, at most once as on Supabase Realtime: the newest
   * cursor is the one that matters, and the channel stays joined. Presence is not dropped: its
   * diffs are folded into one net presence_diff at release (presence.ts PresenceDiffFold).
   */
  maxHeldBroadcasts: number;
  maxHeldBroadcastBytes: number;
  /**
   * Database messages (block_op, presence, canvas events) a realtime-js channel or H1 socket
   * holds while its access is re-checked (and the live deltas an H1 socket's superseded replays
   * hand on to the next resume), at most this many and this many bytes (held-frames.ts
   * heldBytes). None may be dropped silently, and a re-check that concerns everyone on a canvas
   * holds one entry per message in each of its channels for as long as the check lasts (up to
   * ~40 s on a lock): past either bound that channel is ended as a slow consumer would be, with
   * the stable code HELD_MESSAGES_LIMIT_REACHED (realtime-js: `system` error and `phx_error`, it
   * rejoins and the join is authorized again; H1: close 1013, the client resumes from its last
   * canvas_seq and loses nothing). 1024 messages is several times what a busy canvas commits
   * during an ordinary re-check (a few hundred deltas pass); each costs a channel ~120 bytes of
   * bookkeeping (measured), so a re-check of 1,000 channels of one canvas holds at most ~120 MB.
   * 4 MiB is maxBufferedBytes: releasing more at once would drop the socket as a slow consumer
   * anyway (socket-write.ts). The messages themselves are shared by the canvas's channels.
   */
  maxHeldDatabaseMessages: number;
  maxHeldDatabaseBytes: number;
} & AdmissionLimits;

/**
 * What a realtime-js channel keeps of its pushes while it is not joined (its MAX_PUSH_BUFFER_SIZE;
 * broadcasts go over HTTP instead), all sent at once when its join is answered.
 */
export const REALTIME_JS_PUSH_BUFFER = 100;

export const DEFAULT_LIMITS: Limits = {
  messagesPerSecond: 10,
  maxPayloadBytes: 16 * 1024,
  // four states of the largest size, or 100 channels of ~650 bytes (a name, a color and a cursor are ~100)
  maxPresenceBytesPerSocket: 64 * 1024,
  idleTimeoutMs: 60_000,
  presenceWriteIntervalMs: 30_000,
  maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES,
  drainTimeoutMs: 30_000,
  maxChannelsPerSocket: 100,
  joinsPerSecond: 10,
  maxNameLength: 255,
  maxPendingFrames: 32,
  framesPerSecond: 120,
  frameBurst: 100 * (REALTIME_JS_PUSH_BUFFER + 4), // maxChannelsPerSocket x (push buffer, join, access_token, leave, one spare)
  h1FrameBurst: 500,
  maxHeldBroadcasts: 256,
  maxHeldBroadcastBytes: 1024 * 1024,
  maxHeldDatabaseMessages: 1024,
  maxHeldDatabaseBytes: DEFAULT_MAX_BUFFERED_BYTES,
  ...DEFAULT_ADMISSION_LIMITS, // across one caller's sockets
};

export class Hub {
  /** The cluster's presence view: this process's presences and the other gateway processes'. */
  readonly presence = new PresenceTracker();
  /** This process's node in the realtime cluster (cluster.ts); set by the gateway, null without one. */
  cluster: ClusterNode | null = null;
  /** A node id for sessions when there is no cluster (a hub made alone): its sessions go with their rows' expiry. */
  private readonly aloneNode = randomUUID();
  /** How many durable presence session ids this process gave (newPresenceSession). */
  private presenceSessionsMade = 0;
  /** What records each live durable presence session of this process again (recordSessionsAgain). */
  private readonly sessionRecorders = new Set<() => void>();
  private readonly subscribers = new Map<string, { set: Set<Subscriber>; off: () => void }>();
  /**
   * Local peers for client broadcasts and presence diffs (not from the database), per ChannelKey:
   * the private and the public channel of one topic name are separate rooms.
   */
  private readonly peers = new Map<ChannelKey, Set<unknown>>();

  constructor(
    readonly sql: Sql,
    /** Mutations' connections, one per canvas in flight (src/db/canvas-lanes.ts). */
    readonly lanes: CanvasLanes,
    readonly bus: DatabaseBus,
    readonly logger: Logger,
    readonly limits: Limits,
    /** Sockets and channel authorizations per caller across this process's sockets. */
    readonly admission: Admission,
    /**
     * The development profile (POTENTIA_PROFILE=development): an endpoint limit H1 shares with
     * HTTP (a resume's snapshot counts as H4) is relaxed as the HTTP handlers relax it (docs/limits.md).
     */
    readonly relaxedEndpointLimits = false,
    /** Told of every refusal by a rate limit, by its label (potentia_rate_limit_rejections_total{endpoint}). */
    readonly rateLimited: (endpoint: GatewayRateLimit) => void = () => {},
  ) {}

  /** Listens to database messages of `subTopic` (both private and public rows; the subscriber filters). */
  subscribe(subTopic: string, subscriber: Subscriber): () => void {
    let entry = this.subscribers.get(subTopic);
    if (!entry) {
      const set = new Set<Subscriber>();
      const off = this.bus.on(subTopic, (m) => {
        for (const s of set) s.onDatabase(m);
      });
      entry = { set, off };
      this.subscribers.set(subTopic, entry);
    }
    entry.set.add(subscriber);
    const e = entry;
    return () => {
      e.set.delete(subscriber);
      if (e.set.size === 0 && this.subscribers.get(subTopic) === e) {
        e.off();
        this.subscribers.delete(subTopic);
      }
    };
  }

  /** Adds `peer` to channel `key`'s room; returns the leave function. */
  join<T>(key: ChannelKey, peer: T): () => void {
    let set = this.peers.get(key);
    if (!set) this.peers.set(key, (set = new Set()));
    set.add(peer);
    const s = set;
    return () => {
      s.delete(peer);
      if (s.size === 0 && this.peers.get(key) === s) this.peers.delete(key);
    };
  }

  /**
   * A new durable presence session id of this process, never given before by it (presence-sessions.ts):
   * a channel's tracking period, an H1 socket; '<node>/<n>', the node this process's cluster node id,
   * what the other gateways remove its sessions by.
   */
  newPresenceSession(): string {
    return `${this.cluster?.id ?? this.aloneNode}/${++this.presenceSessionsMade}`;
  }

  /**
   * Registers `record`, which writes a live durable presence session of this process again (its
   * last api.update_presence); returns its removal, for when the session leaves.
   */
  onRecordSessionsAgain(record: () => void): () => void {
    this.sessionRecorders.add(record);
    return () => this.sessionRecorders.delete(record);
  }

  /**
   * Records every live durable presence session of this process again: another gateway took this
   * one for dead while it was alive (silent past deadAfterMs: stopped, starved) and removed its
   * sessions (presence-sessions.ts removeNodePresenceSessions), and with the last of a user's their
   * row (presence_leave). Before, they stayed gone until the socket or channel wrote presence again.
   */
  recordSessionsAgain(): void {
    for (const record of [...this.sessionRecorders]) record();
  }

  /** The local peers of channel `key` (never those of the same topic with the other privacy). */
  peersOf<T>(key: ChannelKey): Iterable<T> {
    return (this.peers.get(key) ?? new Set()) as Set<T>;
  }
}
