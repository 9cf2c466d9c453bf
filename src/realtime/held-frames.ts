import type { BusMessage } from './bus.ts';

/**
 * What one channel (or H1 socket) holds while its access is re-checked (AccessGate, access.ts),
 * bounded by kind. A re-check can wait on a lock for tens of seconds, and meanwhile every member
 * of the room keeps sending: held as they came, the frames grew without bound.
 *
 * - `kept`: database messages. None may be dropped silently (they are the canvas's record; a
 *   client counts on every `block_op`), so past `maxKept` messages or `maxKeptBytes` keep()
 *   refuses and the holder ends the channel instead (HELD_MESSAGES_LIMIT_REACHED): the client
 *   rejoins or resumes and reads what it missed from the database.
 * - `droppable`: client broadcasts (cursors, selections). Broadcast is at most once, as on
 *   Supabase Realtime, and only the newest of a stream of cursors matters: past `maxDroppable`
 *   frames or `maxDroppableBytes` the oldest are dropped, and counted (`dropped`).
 * - `latest`: one entry per slot, the last given (presence: one net diff of the room's changes,
 *   presence.ts PresenceDiffFold), so a slot costs one entry however often it changed.
 *
 * `release()` gives back what is left in arrival order.
 */
export type HeldLimits = {
  /** Client broadcasts held at most; older ones are dropped first. */
  maxDroppable: number;
  /** Bytes (payload and event name) of the client broadcasts held at most; older ones are dropped first. */
  maxDroppableBytes: number;
  /** Database messages held at most; one more is refused (the channel ends). */
  maxKept: number;
  /** Bytes of the database messages held at most (heldBytes); past them one is refused. */
  maxKeptBytes: number;
};

/**
 * The stable code of a channel (realtime-js: `system` error, then `phx_error`) or H1 socket (close
 * reason, close code 1013) ended because more database messages arrived during an access re-check
 * than it may hold (hub.ts maxHeldDatabaseMessages / maxHeldDatabaseBytes).
 */
export const HELD_MESSAGES_LIMIT_REACHED = 'HeldMessagesLimitReached';

// measured once per message, for every channel that holds it
const sizes = new WeakMap<BusMessage, number>();

/** A database message's size as held (maxKeptBytes): its payload's JSON in UTF-8, event and topic. */
export function heldBytes(message: BusMessage): number {
  let bytes = sizes.get(message);
  if (bytes === undefined) {
    bytes = Buffer.byteLength(message.payloadJson) + message.event.length + message.topic.length;
    sizes.set(message, bytes);
  }
  return bytes;
}

type Entry = { seq: number; send: () => void; bytes: number };

/** What one channel or H1 socket holds during a re-check, within HeldLimits (see above). */
export class HeldFrames {
  private seq = 0;
  private readonly kept: Entry[] = [];
  private keptBytes = 0;
  private droppable: Entry[] = [];
  private head = 0; // droppable[0 .. head) were dropped
  private droppableBytes = 0;
  private readonly latest = new Map<string, Entry>();
  /** Client broadcasts dropped since the holding began. */
  dropped = 0;

  constructor(private readonly limits: HeldLimits) {}

  /** Holds `send` (a database message of `bytes`); false, holding nothing, when it would pass maxKept or maxKeptBytes. */
  keep(send: () => void, bytes: number): boolean {
    if (this.kept.length >= this.limits.maxKept || this.keptBytes + bytes > this.limits.maxKeptBytes) return false;
    this.kept.push({ seq: this.seq++, send, bytes });
    this.keptBytes += bytes;
    return true;
  }

  /** Holds `send`; past the limits the oldest droppable frames go (a frame alone over the bytes, itself). */
  keepDroppable(send: () => void, bytes: number): void {
    if (bytes > this.limits.maxDroppableBytes) {
      this.dropped++;
      return;
    }
    this.droppable.push({ seq: this.seq++, send, bytes });
    this.droppableBytes += bytes;
    while (this.droppable.length - this.head > this.limits.maxDroppable || this.droppableBytes > this.limits.maxDroppableBytes) {
      this.droppableBytes -= this.droppable[this.head]!.bytes;
      this.droppable[this.head++] = undefined as never; // let the frame go now
      this.dropped++;
    }
    // compact once half of the array is dropped entries: memory follows what is held
    if (this.head > 64 && this.head * 2 > this.droppable.length) {
      this.droppable = this.droppable.slice(this.head);
      this.head = 0;
    }
  }

  /** Holds `send` in `slot`, replacing what the slot held; it keeps the position of the slot's first entry. */
  keepLatest(slot: string, send: () => void): void {
    const entry = this.latest.get(slot);
    if (entry) entry.send = send;
    else this.latest.set(slot, { seq: this.seq++, send, bytes: 0 });
  }

  /** What is held, in arrival order. */
  release(): Array<() => void> {
    const all = [...this.kept, ...this.droppable.slice(this.head), ...this.latest.values()];
    all.sort((a, b) => a.seq - b.seq);
    return all.map((e) => e.send);
  }
}
