import { monotonicNow } from './clock.ts';

/**
 * How much later than it was sent the server may read one of a socket's messages, compared with
 * the others (its event loop busy with the burst before it, a scheduling pause). The pacer keeps
 * this much refill in reserve until its bucket has been full this long; at the default 10 messages
 * a second that is half a message: paced sends go out 50 ms later, at the same rate.
 */
export const READ_LAG_MS = 50;

/**
 * The client's mirror of an H1 socket's message bucket on the server (src/realtime/h1-socket.ts,
 * `limiter`: `rate` messages a second, bursts of as many, full when the socket opens). The server
 * takes one token for every message it reads — `resume`, `mutate`, `presence` and `ping` alike;
 * the resume the upgrade URL carries (`since_canvas_seq`) is no message and takes none — and
 * refuses one without a token (`rate_limited`). So the client takes one here for every message it
 * sends, and sends none without one: a client at its pacing is never refused. A paced message may
 * go out on the exact bound (the server's bucket holds exactly one token when it reads it): the
 * server counts exactly (thousandths of a token, whole milliseconds), where its sums of fractions
 * once rounded below the bound (0.9999999999999998 of a token, at 3 a second).
 *
 * The server counts refill by when it reads a message, this mirror by when it is sent: a message
 * read late leaves the server less refill than the mirror counts. After a resume and a burst (the
 * last of the burst read a few ms after it was sent) the next paced message went out when the
 * mirror had 1.01 tokens and the server 0.98, and was refused. Since both buckets were last equal
 * (full: the mirror has been full READ_LAG_MS), the server's can be short of the mirror's by the
 * difference of two messages' read delays, at most READ_LAG_MS of refill and at most the refill
 * the mirror counted since: that much is kept in reserve. An idle client still sends a full burst
 * at once, and a paced one the same rate, READ_LAG_MS later.
 */
export class MessagePacer {
  private tokens: number;
  private at: number;
  /** When the bucket is (or was) full again after the last take: -Infinity while none was taken. */
  private fullAt = -Infinity;
  /** When the two buckets were last known equal: the first take since the mirror was full READ_LAG_MS. */
  private equalAt = -Infinity;

  /** A full bucket, as the server's is on a new socket. */
  constructor(private readonly rate: number, private readonly now: () => number = monotonicNow) {
    this.tokens = rate;
    this.at = now();
  }

  /** Takes a token for one message: 0 when it may be sent now, else the milliseconds until it may. */
  take(): number {
    const now = this.now();
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.at) / 1000) * this.rate);
    this.at = now;
    const settledAt = this.fullAt + READ_LAG_MS;
    if (now >= settledAt) this.equalAt = now; // the server's is full too: equal from here
    const reserve = (Math.min(READ_LAG_MS, now - this.equalAt) / 1000) * this.rate;
    if (this.tokens >= 1 + reserve) {
      this.tokens -= 1;
      this.fullAt = now + ((this.rate - this.tokens) / this.rate) * 1000;
      return 0;
    }
    // the full reserve from READ_LAG_MS after equalAt; it may be more than the bucket holds (a
    // rate of 1 a second): then wait until the bucket has been full READ_LAG_MS
    const need = 1 + (READ_LAG_MS / 1000) * this.rate;
    const untilNeed = need <= this.rate ? Math.max(((need - this.tokens) / this.rate) * 1000, this.equalAt + READ_LAG_MS - now) : Infinity;
    return Math.max(1, Math.ceil(Math.min(untilNeed, settledAt - now)));
  }
}
