import type { WebSocket } from 'ws';

/**
 * A socket's inbound work, run one item after another (replies keep the client's order), with
 * backpressure: once `maxPending` items wait, the socket stops reading (`ws.pause()`) until the
 * queue has drained to half, and what the client sends meanwhile waits in its own TCP window.
 * Without it a client that sends faster than its frames are handled (each may wait on the
 * database) grew the gateway's memory without bound, up to a frame's 1 MiB per item.
 */
export class InboundQueue {
  private tail: Promise<void> = Promise.resolve();
  private pending = 0;
  /** The queue is full: set at maxPending, cleared once it has drained to half. */
  private full = false;
  /** Holds (hold()) not yet released: reading stays paused while any is. */
  private holds = 0;
  private paused = false;

  /**
   * `ready`, when given, runs before each item and the item waits for it: false skips the item
   * (the socket is gone). The sockets pass whenWritable: a client's next request waits until its
   * earlier answers have left, so one that never reads cannot make the gateway hold more.
   */
  constructor(private readonly ws: WebSocket, private readonly maxPending: number, private readonly ready?: () => Promise<boolean>) {}

  /** Runs `work` after everything pushed before it; a failure goes to `onError`, and the queue goes on. */
  push(work: () => Promise<unknown>, onError: (err: unknown) => unknown): void {
    this.pending++;
    if (this.pending >= this.maxPending) this.full = true;
    this.update();
    this.tail = this.tail
      .then(async () => { if (!this.ready || await this.ready()) await work(); })
      .catch(async (err) => { await onError(err); })
      .catch(() => {}) // an error handler's own failure must not stop the queue
      .finally(() => {
        this.pending--;
        if (this.pending <= this.maxPending / 2) this.full = false;
        this.update();
      });
  }

  /**
   * Stops reading the socket until `until` settles, whatever the queue holds: for answers given
   * at once, outside the queue (H1's pong and refusals), once they are past the socket's bound.
   */
  hold(until: Promise<unknown>): void {
    this.holds++;
    this.update();
    void until.catch(() => {}).finally(() => {
      this.holds--;
      this.update();
    });
  }

  /** Whether reading is held (hold()) now. */
  get holding(): boolean {
    return this.holds > 0;
  }

  /** Pauses or resumes reading as the queue and the holds ask. */
  private update(): void {
    const pause = this.full || this.holds > 0;
    if (pause === this.paused) return;
    this.paused = pause;
    if (pause) this.ws.pause();
    else this.ws.resume();
  }

  /** Settles once everything pushed so far has run (or been skipped) and answered. */
  idle(): Promise<void> {
    return this.tail;
  }

  /** Items queued or running. */
  get size(): number {
    return this.pending;
  }
}
