import type { ReservedSql, Sql } from 'postgres';
import { isConnectionFailure } from './faults.ts';

/**
 * Canvas lanes: this process's mutations of one canvas go down ONE pooled connection, in the order
 * they arrived, up to `depth` of them on the wire at once (pipelined), instead of each on a
 * connection of its own.
 *
 * Why: writers on a canvas are serialized by its row, locked until COMMIT (canvas_seq is commit
 * order: docs/mutations.md). With a connection per request, 16 concurrent mutations of one canvas
 * are 16 backends queued on that row; each hand-off goes through the lock manager (the tuple lock,
 * then the holder's transaction id, for every waiter) and runs the next mutation on a backend whose
 * caches went cold while it slept: the holder's locked section took ~3× as long with 15 waiters as
 * alone (docs/performance.md). Down one connection the next mutation is already in the backend's
 * socket when the previous one commits: no waiter, no hand-off, one warm backend. Other processes'
 * lanes on the same canvas still queue on the row, so ordering stays the database's guarantee, as
 * before; in addition, one process's mutations of a canvas now apply in the order they arrived.
 *
 * Lifecycle: a lane reserves its connection for its first request and releases it after its last
 * one is answered; there is nothing to start or stop. Every request not yet sent waits in the
 * lane's queue, in arrival order, and only the head of the queue is sent: nothing overtakes it. A
 * connection failure stops the lane's sending: the requests that were on the wire fail (their
 * outcome is unknown: the caller answers 503 and the client resends by client_op_id); once they
 * have, the lane reserves a new connection for the ones still queued, which were never sent (and
 * stay ahead of any that arrived meanwhile). After TURNS requests the lane gives its connection
 * back the same way (once they are answered) and queues for another, behind the pool's other
 * callers: a hot canvas does not keep a connection for ever.
 */
export class CanvasLanes {
  readonly #sql: Sql;
  readonly #depth: number;
  readonly #lanes = new Map<string, Lane>();

  /** `depth`: how many of a lane's requests may be on the wire at once (default 8). */
  constructor(sql: Sql, opts: { depth?: number } = {}) {
    const depth = opts.depth ?? DEFAULT_DEPTH;
    if (!Number.isInteger(depth) || depth < 1) throw new RangeError(`lane depth must be a whole number >= 1, got ${depth}`);
    this.#sql = sql;
    this.#depth = depth;
  }

  /** Lanes open now (one per canvas with a request in flight in this process). */
  get size(): number {
    return this.#lanes.size;
  }

  /**
   * Runs `send` on the lane of `key` (a canvas id) once it is this request's turn. `send` must
   * write all its statements to `conn` synchronously (before its first await): statements of the
   * lane's requests reach the server in the order the requests arrived.
   */
  run<T>(key: string, send: (conn: ReservedSql) => Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let lane = this.#lanes.get(key);
      if (lane === undefined) {
        lane = new Lane();
        this.#lanes.set(key, lane);
      }
      lane.queue.push({ send, resolve: resolve as (value: unknown) => void, reject });
      this.#pump(key, lane);
    });
  }

  /**
   * Sends what the lane may send now, in arrival order; reserves a connection when it has none;
   * closes the lane when it has nothing left. Every request that is not on the wire is in
   * `lane.queue`, so nothing can overtake it: not a request that arrives while the lane changes
   * connection (after a failure, or to give the pool's connection up for a turn).
   */
  #pump(key: string, lane: Lane): void {
    if (lane.pumping) return; // re-entered from a send: the loop below takes the new request in its turn
    lane.pumping = true;
    try {
      const conn = lane.conn;
      if (conn === null) {
        // a new connection only once the last one has answered everything it was sent: what goes
        // down the new one cannot commit before what went down the old one
        if (lane.reserving || lane.onWire > 0) return;
        if (lane.queue.length === 0) {
          if (this.#lanes.get(key) === lane) this.#lanes.delete(key);
          return;
        }
        lane.reserving = true;
        this.#sql.reserve().then((reserved) => {
          lane.reserving = false;
          lane.conn = reserved;
          lane.turns = 0;
          this.#pump(key, lane);
        }, (err: unknown) => {
          // the connection could not be reserved (pool ended, server unreachable): the requests
          // that waited for it fail; the lane is no use (the next request tries a new one)
          lane.reserving = false;
          if (this.#lanes.get(key) === lane) this.#lanes.delete(key);
          for (const request of lane.queue.splice(0)) request.reject(err);
        });
        return;
      }
      while (lane.queue.length > 0 && lane.onWire < this.#depth && !lane.closing) {
        const request = lane.queue.shift()!;
        lane.onWire++;
        // a canvas busy without pause would keep the connection from every other caller of the
        // pool: after TURNS requests the lane gives it back once answered, and queues for another
        if (++lane.turns >= TURNS) lane.closing = true;
        let answer: Promise<unknown>;
        try {
          answer = request.send(conn);
        } catch (err) {
          answer = Promise.reject(err);
        }
        answer.then((value) => {
          request.resolve(value);
          this.#answered(key, lane, conn);
        }, (err: unknown) => {
          // the connection failed: the requests on the wire fail with it; the ones still queued
          // were never sent and go down a new connection once those have failed
          if (isConnectionFailure(err)) lane.closing = true;
          request.reject(err);
          this.#answered(key, lane, conn);
        });
      }
    } finally {
      lane.pumping = false;
    }
  }

  #answered(key: string, lane: Lane, conn: ReservedSql): void {
    lane.onWire--;
    if (lane.onWire === 0 && lane.conn === conn && (lane.closing || lane.queue.length === 0)) {
      lane.conn = null;
      lane.closing = false;
      conn.release();
    }
    this.#pump(key, lane);
  }
}

/** Enough to keep the next mutations in the backend's socket; more only lengthens the queue there. */
const DEFAULT_DEPTH = 8;

/**
 * How many requests a lane sends down one connection before it gives it back to the pool (once
 * they are answered) and queues for a connection again, behind whoever waits for one: the price,
 * one round trip with nothing on the wire per TURNS requests of a canvas that never pauses.
 */
const TURNS = 64;

type Request = { send: (conn: ReservedSql) => Promise<unknown>; resolve: (value: unknown) => void; reject: (err: unknown) => void };

class Lane {
  /** The connection, while the lane holds one. */
  conn: ReservedSql | null = null;
  /** Waiting for the pool to reserve a connection. */
  reserving = false;
  /** Sends nothing more down `conn`: it failed, or the lane's turns on it are used up. */
  closing = false;
  /** Requests sent down `conn` since it was reserved. */
  turns = 0;
  /** Requests sent (or being sent) and not yet answered. */
  onWire = 0;
  /** Requests not sent yet, in arrival order. */
  readonly queue: Request[] = [];
  /** Inside #pump (a send that calls run again is taken by the running loop). */
  pumping = false;
}
