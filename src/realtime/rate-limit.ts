import { monotonicNow } from '../clock.ts';

/**
 * A token bucket: `perSecond` messages per second with bursts up to `burst` (per socket).
 *
 * Counted in thousandths of a token (the refill of a millisecond at one a second): with a whole
 * rate and a clock of whole milliseconds every count is a whole number, exact. Counted in
 * tokens, each refill ((ms / 1000) × rate) was rounded and the sums drifted below the exact value: a message on the limit found 0.9999999999999998 of a token and was refused, and a client
 * pacing itself on the exact bound (@potentia/client's MessagePacer) was refused at 3 a second.
 * The clock is src/clock.ts's monotonic one: on the wall clock, a step back emptied the bucket for
 * the step's length (every message refused, every socket closed past its frame bound).
 */
export class RateLimiter {
  /** Thousandths of a token. */
  private units: number;
  private last: number;

  constructor(private readonly perSecond: number, private readonly burst = perSecond, private readonly now: () => number = monotonicNow) {
    this.units = burst * 1000;
    this.last = now();
  }

  /**
   * Takes `n` tokens (one unless told), all or none; returns 0 when allowed, else the
   * milliseconds until they are available (never, past the burst: the wait of the burst).
   */
  take(n = 1): number {
    const t = this.now();
    this.units = Math.min(this.burst * 1000, this.units + (t - this.last) * this.perSecond);
    this.last = t;
    const need = Math.min(n, this.burst) * 1000;
    if (n <= this.burst && this.units >= need) {
      this.units -= need;
      return 0;
    }
    return Math.max(1, Math.ceil((need - this.units) / this.perSecond));
  }

  /** Whether the bucket has refilled to its burst (then it is the same as a new one). */
  full(): boolean {
    return this.units + (this.now() - this.last) * this.perSecond >= this.burst * 1000;
  }
}

/**
 * Token buckets by key (a user, an address), for limits across sockets. A bucket that has
 * refilled is the same as none, so full ones are dropped whenever the map grows past `maxKeys`:
 * memory follows the callers active in the last burst/perSecond seconds, not every caller seen.
 */
export class KeyedRateLimiter {
  private readonly buckets = new Map<string, RateLimiter>();
  private pruneAt: number;

  constructor(private readonly perSecond: number, private readonly burst = perSecond, private readonly now: () => number = monotonicNow, private readonly maxKeys = 10_000) {
    this.pruneAt = maxKeys;
  }

  /** Takes `n` tokens (one unless told) from `key`'s bucket, all or none: 0 when allowed, else the milliseconds until they are available. */
  take(key: string, n = 1): number {
    let bucket = this.buckets.get(key);
    if (!bucket) {
      if (this.buckets.size >= this.pruneAt) this.prune();
      bucket = new RateLimiter(this.perSecond, this.burst, this.now);
      this.buckets.set(key, bucket);
    }
    return bucket.take(n);
  }

  /** How many keys have a bucket (tests, metrics). */
  get size(): number {
    return this.buckets.size;
  }

  private prune(): void {
    for (const [key, bucket] of this.buckets) if (bucket.full()) this.buckets.delete(key);
    // still many active callers: the next prune waits until the map has grown as much again
    this.pruneAt = this.buckets.size + this.maxKeys;
  }
}

/**
 * The close reason's stable code for a socket, realtime-js's or H1's, that sent more frames than
 * limits.framesPerSecond / frameBurst allow (hub.ts): the code, then the bound.
 */
export const FRAME_RATE_LIMIT_REACHED = 'FrameRateLimitReached';

/** The close reason of such a socket (at most 123 bytes, a close frame's room for one). */
export function frameRateLimitReached(limits: { framesPerSecond: number; frameBurst: number }): string {
  return `${FRAME_RATE_LIMIT_REACHED}: more than ${limits.framesPerSecond} frames per second (bursts of ${limits.frameBurst})`;
}

