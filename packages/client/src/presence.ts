import { PotentiaError } from './errors.ts';
import type { PresenceEvent } from './protocol.ts';
import { encodeJson, isObject } from './json-value.ts';
import { monotonicNow } from './clock.ts';

/**
 * Presence on one canvas over H1: this user's cursor, selection, typing flag, name and color go
 * out as the `cursor` JSON object of an H1 `presence` frame (typing also as its `typing` flag), at
 * most 1 KB as the server measures it (api.update_presence: the jsonb text), throttled to
 * PRESENCE_SENDS_PER_SECOND and repeated every KEEPALIVE_MS so that the server's idle expiry
 * (120 s) does not remove someone who is just reading. Others arrive as `presence` frames (the
 * server never echoes one's own user) and leave with `presence_leave` (socket closed, or expired);
 * someone not heard from for STALE_MS is dropped as well (a leave missed while offline).
 */

/** A text selection: code-point offsets `start`..`end` in the text under `key` of block `blockId`. */
export type PresenceSelection = { blockId: string; key?: string; start: number; end: number };

/** A pointer position on the canvas, in the app's coordinates. */
export type PresenceCursor = { x: number; y: number };

/**
 * What presence.set() takes: only the fields given change (null clears cursor / selection).
 * `name` and `color` are for others to show (e.g. `hsl(210 70% 45%)`). The server refuses a name
 * with control, invisible or direction-changing characters (or over 100 characters) and a color
 * that is not one plain CSS color (docs/realtime.md, Presence): an `error` frame `invalid_input`,
 * field `cursor.name` / `cursor.color`. Still show a name as text and style with a color only once
 * the browser takes it for one (the demo's peerColor): a server of another version may differ.
 */
export type PresenceInput = {
  cursor?: PresenceCursor | null;
  selection?: PresenceSelection | null;
  typing?: boolean;
  name?: string;
  color?: string;
};

/**
 * Someone else on the canvas, as last heard. `lastSeen` is the local wall-clock time (ms since epoch,
 * Date.now) of their last presence, for display; a step of the wall clock does not make anyone stale.
 */
export type PresencePeer = {
  userId: string;
  name?: string;
  color?: string;
  cursor: PresenceCursor | null;
  selection: PresenceSelection | null;
  typing: boolean;
  lastSeen: number;
};

/** Sends of one's presence per second at most (the socket allows 10 messages per second in all). */
export const PRESENCE_SENDS_PER_SECOND = 4;
/** The server's limit on the presence JSON (api.update_presence). */
export const PRESENCE_MAX_BYTES = 1024;
/**
 * Others kept at most: past it, the one heard from longest ago is dropped. A canvas's people are
 * its members; the bound is for a broken or hostile server sending a new user id in every frame,
 * which grew the map without bound until the stale pruning (150 s later).
 */
export const PRESENCE_MAX_PEERS = 10_000;
/** The longest `name` the server lets through (code points; src/realtime/presence.ts); a longer one is dropped. */
const NAME_MAX = 100;
const KEEPALIVE_MS = 60_000;
const STALE_MS = 150_000;
const PRUNE_EVERY_MS = 15_000;

type Timer = ReturnType<typeof setTimeout>;
const unref = (t: Timer): Timer => {
  (t as { unref?: () => void }).unref?.(); // Node: timers of presence must not keep a process alive
  return t;
};

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

function readCursor(v: unknown): PresenceCursor | null {
  return isObject(v) && finite(v['x']) && finite(v['y']) ? { x: v['x'], y: v['y'] } : null;
}

/** A string of another's presence that the server could have let through (the whole is at most PRESENCE_MAX_BYTES), else undefined. */
function fits(v: unknown, maxCodePoints = PRESENCE_MAX_BYTES): string | undefined {
  return typeof v === 'string' && v.length <= 2 * maxCodePoints && [...v].length <= maxCodePoints ? v : undefined;
}

function readSelection(v: unknown): PresenceSelection | null {
  if (!isObject(v) || fits(v['blockId']) === undefined || !finite(v['start']) || !finite(v['end'])) return null;
  if (v['key'] !== undefined && fits(v['key']) === undefined) return null;
  return { blockId: v['blockId'] as string, ...(typeof v['key'] === 'string' ? { key: v['key'] } : {}), start: v['start'], end: v['end'] };
}

const utf8 = new TextEncoder();

/**
 * Bytes of `value` as Postgres prints it as jsonb (what the server's 1 KB limit measures): like
 * JSON, with a space after every `:` and `,`. Numbers in exponent form are counted generously.
 */
export function jsonbTextBytes(value: unknown): number {
  if (value === null || value === undefined) return 4;
  if (typeof value === 'string') return utf8.encode(JSON.stringify(value)).length;
  if (typeof value === 'number') {
    const s = JSON.stringify(value);
    return /e/i.test(s) ? s.length + 310 : s.length;
  }
  if (typeof value === 'boolean') return value ? 4 : 5;
  if (Array.isArray(value)) return 2 + value.reduce<number>((n, v, i) => n + (i ? 2 : 0) + jsonbTextBytes(v), 0);
  if (isObject(value)) {
    const entries = Object.entries(value).filter(([, v]) => v !== undefined);
    return 2 + entries.reduce((n, [k, v], i) => n + (i ? 2 : 0) + jsonbTextBytes(k) + 2 + jsonbTextBytes(v), 0);
  }
  return 4;
}

/**
 * `canvas.presence`: set() yours, others() theirs, subscribe() to changes of theirs. Created by
 * Canvas; `send` hands the H1 payload to the socket (which sends it when live and again after a
 * reconnect).
 */
export class CanvasPresence {
  private state: { cursor: PresenceCursor | null; selection: PresenceSelection | null; typing: boolean; name?: string; color?: string } | null = null;
  private readonly peers = new Map<string, PresencePeer>();
  /** When each peer was last heard, on the monotonic clock (clock.ts): what pruning reads, never lastSeen (the wall clock, for display). */
  private readonly heardAt = new Map<string, number>();
  private readonly listeners = new Set<(others: PresencePeer[]) => void>();
  private lastSentAt = 0;
  private sendTimer: Timer | null = null;
  private keepaliveTimer: Timer | null = null;
  private pruneTimer: Timer | null = null;
  private closed = false;

  /** @internal Canvas makes it: `send` gets the H1 `cursor` object and `typing`; `report` gets listener errors. */
  constructor(
    private readonly send: (cursor: Record<string, unknown>, typing: boolean) => void,
    private readonly report: (err: unknown) => void,
  ) {}

  /**
   * Changes your presence (fields not given stay as they were) and sends it to the others,
   * throttled to a few per second (the latest state always goes out). Before connect() it is
   * kept and sent once connected. Throws PotentiaError `invalid_input`, changing nothing, when
   * the whole would exceed 1 KB (field `presence`) or holds a value JSON cannot carry (NaN, a
   * BigInt: field `presence.cursor.x`, json-value.ts).
   */
  set(input: PresenceInput): void {
    if (this.closed) return;
    const prev = this.state ?? { cursor: null, selection: null, typing: false };
    const next = {
      cursor: input.cursor !== undefined ? (input.cursor ? { x: input.cursor.x, y: input.cursor.y } : null) : prev.cursor,
      selection: input.selection !== undefined ? (input.selection ? { ...input.selection } : null) : prev.selection,
      typing: input.typing ?? prev.typing,
      ...((input.name ?? prev.name) !== undefined ? { name: input.name ?? prev.name } : {}),
      ...((input.color ?? prev.color) !== undefined ? { color: input.color ?? prev.color } : {}),
    };
    // a cursor at NaN would go out as null; a BigInt would throw at every later send
    const encoded = encodeJson(next, 'presence');
    if (!('text' in encoded)) throw new PotentiaError('invalid_input', encoded.message, encoded.field);
    const bytes = jsonbTextBytes(next);
    if (bytes > PRESENCE_MAX_BYTES) {
      throw new PotentiaError('invalid_input', `presence is ${bytes} bytes as JSON, more than ${PRESENCE_MAX_BYTES}`, 'presence');
    }
    this.state = next;
    this.schedule();
  }

  /** Your presence as last set (null before the first set()). */
  mine(): PresenceInput | null {
    return this.state ? { ...this.state } : null;
  }

  /** Everyone else on the canvas, in the order they were first heard. */
  others(): PresencePeer[] {
    return [...this.peers.values()].map((p) => ({ ...p }));
  }

  /** Calls `listener` with others() whenever someone's presence changes or someone leaves. Returns the unsubscribe function. */
  subscribe(listener: (others: PresencePeer[]) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** @internal An H1 presence frame of someone else. */
  receive(event: PresenceEvent): void {
    if (this.closed) return;
    if (event.type === 'presence_leave') {
      this.heardAt.delete(event.user_id);
      if (this.peers.delete(event.user_id)) this.emit();
      return;
    }
    const c = isObject(event.cursor) ? event.cursor : {};
    const name = fits(c['name'], NAME_MAX), color = fits(c['color'], NAME_MAX);
    const peer: PresencePeer = {
      userId: event.user_id,
      ...(name !== undefined ? { name } : {}),
      ...(color !== undefined ? { color } : {}),
      cursor: readCursor(c['cursor']),
      selection: readSelection(c['selection']),
      typing: event.typing === true || c['typing'] === true,
      lastSeen: Date.now(),
    };
    this.peers.set(peer.userId, peer); // a known peer keeps its place: order of first appearance
    this.heardAt.delete(peer.userId); // heardAt in the order heard: the first is the one heard from longest ago
    this.heardAt.set(peer.userId, monotonicNow());
    if (this.peers.size > PRESENCE_MAX_PEERS) {
      const oldest = this.heardAt.keys().next().value;
      if (oldest !== undefined) {
        this.heardAt.delete(oldest);
        this.peers.delete(oldest);
      }
    }
    this.startPrune();
    this.emit();
  }

  /** @internal Stops timers; others are forgotten. */
  close(): void {
    this.closed = true;
    for (const t of [this.sendTimer, this.keepaliveTimer, this.pruneTimer]) if (t) clearTimeout(t);
    this.sendTimer = this.keepaliveTimer = this.pruneTimer = null;
    this.heardAt.clear();
    if (this.peers.size) {
      this.peers.clear();
      this.emit();
    }
  }

  private schedule(): void {
    if (this.sendTimer) return; // the pending send will carry the latest state
    const wait = this.lastSentAt + 1000 / PRESENCE_SENDS_PER_SECOND - monotonicNow();
    if (wait <= 0) return this.flush();
    this.sendTimer = setTimeout(() => {
      this.sendTimer = null;
      this.flush();
    }, wait);
  }

  private flush(): void {
    if (this.closed || !this.state) return;
    this.lastSentAt = monotonicNow();
    const { typing, ...rest } = this.state;
    try {
      this.send({ ...rest, typing }, typing);
    } catch (err) {
      this.report(err);
    }
    if (this.keepaliveTimer) clearTimeout(this.keepaliveTimer);
    this.keepaliveTimer = unref(setTimeout(() => {
      this.keepaliveTimer = null;
      this.flush();
    }, KEEPALIVE_MS));
  }

  private startPrune(): void {
    if (this.pruneTimer || this.closed) return;
    this.pruneTimer = unref(setTimeout(() => {
      this.pruneTimer = null;
      const before = this.peers.size;
      const now = monotonicNow();
      for (const id of this.peers.keys()) {
        if (now - (this.heardAt.get(id) ?? now) > STALE_MS) {
          this.peers.delete(id);
          this.heardAt.delete(id);
        }
      }
      if (this.peers.size !== before) this.emit();
      if (this.peers.size) this.startPrune();
    }, PRUNE_EVERY_MS));
  }

  private emit(): void {
    if (this.listeners.size === 0) return;
    const others = this.others();
    for (const l of [...this.listeners]) {
      try {
        l(others);
      } catch (err) {
        this.report(err);
      }
    }
  }
}
