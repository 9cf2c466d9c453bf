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
 * one is answered; there is nothing to start or stop. A connection failure retires the lane: the
 * requests that were on the wire fail (their outcome is unknown: the caller answers 503 and the
 * client resends by client_op_id), the ones still waiting here were never sent and go down a new lane.
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
  async run<T>(key: string, send: (conn: ReservedSql) => Promise<T>): Promise<T> {
    let lane = this.#lanes.get(key);
    if (lane === undefined) {
      lane = new Lane(this.#sql.reserve());
      this.#lanes.set(key, lane);
    }
    lane.members++;
    try {
      const conn = await lane.conn;
      if (lane.onWire < this.#depth && lane.waiting.length === 0) lane.onWire++;
      else await new Promise<void>((resolve) => lane.waiting.push(resolve)); // the slot is handed over
      try {
        // never sent: a request behind a failed one goes down a fresh lane (its turn is kept: the
        // slots are handed on in order, so the retired lane's waiters re-enter in arrival order)
        if (lane.retired) return await this.run(key, send);
        return await send(conn);
      } catch (err) {
        if (isConnectionFailure(err)) this.#retire(key, lane);
        throw err;
      } finally {
        const next = lane.waiting.shift();
        if (next) next();
        else lane.onWire--;
      }
    } catch (err) {
      // the connection could not be reserved (pool ended, server unreachable): the lane is no use
      if (!lane.reserved) this.#retire(key, lane);
      throw err;
    } finally {
      if (--lane.members === 0) {
        this.#retire(key, lane);
        lane.conn.then((conn) => conn.release(), () => {});
      }
    }
  }

  #retire(key: string, lane: Lane): void {
    lane.retired = true;
    if (this.#lanes.get(key) === lane) this.#lanes.delete(key);
  }
}

/** Enough to keep the next mutations in the backend's socket; more only lengthens the queue there. */
const DEFAULT_DEPTH = 8;

class Lane {
  /** Requests that entered the lane and have not left it. */
  members = 0;
  /** Requests sent (or being sent) on the connection and not yet answered. */
  onWire = 0;
  /** Requests waiting for a slot, in arrival order. */
  readonly waiting: Array<() => void> = [];
  retired = false;
  reserved = false;
  readonly conn: Promise<ReservedSql>;

  constructor(conn: Promise<ReservedSql>) {
    this.conn = conn.then((c) => {
      this.reserved = true;
      return c;
    });
    this.conn.catch(() => {}); // observed by every member; never an unhandled rejection
  }
}
