import type { WebSocket } from 'ws';
import { frameRateLimitReached, RateLimiter } from './rate-limit.ts';
import { closeFirmly } from './socket-write.ts';

// Not in rate-limit.ts: the edge functions load that module (through admission.ts), and Deno has
// no `ws` (CI's deno check failed on it).

/**
 * One socket's bound on every frame it sends, read or not (limits.framesPerSecond, bursts of
 * `frameBurst`), counted before anything decodes or answers the frame. The first frame past it
 * closes the socket firmly with `closeCode` and the reason frameRateLimitReached (the client
 * reconnects after its backoff); `onPassed` reports it (a log line, the rejection counter) once.
 * From then on nothing the socket sends is read and nothing it queued runs (`passed`).
 */
export class FrameBound {
  private readonly bucket: RateLimiter;
  private closing = false;

  constructor(
    private readonly ws: WebSocket,
    private readonly limits: { framesPerSecond: number; frameBurst: number },
    private readonly closeCode: number,
    private readonly onPassed: () => void,
  ) {
    this.bucket = new RateLimiter(limits.framesPerSecond, limits.frameBurst);
  }

  /** Counts one frame: true when it may be read, false once the socket has passed its bound. */
  admit(): boolean {
    if (this.closing) return false;
    if (this.bucket.take() === 0) return true;
    this.closing = true;
    this.onPassed();
    closeFirmly(this.ws, this.closeCode, frameRateLimitReached(this.limits));
    return false;
  }

  /** Whether the socket passed its bound: it is closing, and what it queued before does not run. */
  get passed(): boolean {
    return this.closing;
  }
}
