import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
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
} & AdmissionLimits;

export const DEFAULT_LIMITS: Limits = {
  messagesPerSecond: 10,
  maxPayloadBytes: 16 * 1024,
  idleTimeoutMs: 60_000,
  presenceWriteIntervalMs: 30_000,
  maxBufferedBytes: DEFAULT_MAX_BUFFERED_BYTES,
  drainTimeoutMs: 30_000,
  maxChannelsPerSocket: 100,
  joinsPerSecond: 10,
  maxNameLength: 255,
  maxPendingFrames: 32,
  ...DEFAULT_ADMISSION_LIMITS, // across one caller's sockets
};

export class Hub {
  /** The cluster's presence view: this process's presences and the other gateway processes'. */
  readonly presence = new PresenceTracker();
  /** This process's node in the realtime cluster (cluster.ts); set by the gateway, null without one. */
  cluster: ClusterNode | null = null;
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

  /** The local peers of channel `key` (never those of the same topic with the other privacy). */
  peersOf<T>(key: ChannelKey): Iterable<T> {
    return (this.peers.get(key) ?? new Set()) as Set<T>;
  }
}
