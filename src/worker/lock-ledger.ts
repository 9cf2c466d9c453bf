import type { Worker, WorkerEvents } from 'graphile-worker';

/** Heartbeat marks kept: a get_job in flight for longer than this many heartbeats is stuck anyway. */
const MARKS = 4;

/**
 * Which job locks of this worker pool are still in use, for internal.release_orphaned_locks
 * (sql/jobs/workers.sql), which frees the others: locks whose outcome could not be recorded, or
 * whose get_job answer was lost to a terminated connection.
 *
 * A lock is in use while its job is a worker's active job (a patch to Graphile Worker keeps it
 * active until its outcome is recorded or given up, so no late completion acts on a released
 * job). But a get_job in flight may have locked a job no worker shows yet. So each heartbeat's
 * database clock reading is marked with when its answer arrived here: a get_job started after
 * that locks its job after that reading. Only locks older than the latest mark that precedes
 * every get_job in flight are released. (Graphile Worker's local queue would hold locked jobs
 * no worker runs yet; Potentia leaves it off.)
 */
export class LockLedger {
  readonly #workers = new Set<Worker>();
  /** Workers inside get_job, and when it started (performance.now()). */
  readonly #fetching = new Map<Worker, number>();
  #marks: { at: number; db: Date }[] = [];

  constructor(events: WorkerEvents) {
    events.on('worker:create', ({ worker }) => { this.#workers.add(worker); });
    events.on('worker:stop', ({ worker }) => {
      this.#workers.delete(worker);
      this.#fetching.delete(worker);
    });
    events.on('worker:getJob:start', ({ worker }) => { this.#fetching.set(worker, performance.now()); });
    const fetched = ({ worker }: { worker: Worker }) => { this.#fetching.delete(worker); };
    events.on('job:start', fetched);
    events.on('worker:getJob:empty', fetched);
    events.on('worker:getJob:error', fetched);
  }

  /** Records `db`, a database clock reading (clock_timestamp()) whose answer has just arrived. */
  mark(db: Date) {
    this.#marks = [...this.#marks.slice(1 - MARKS), { at: performance.now(), db }];
  }

  /**
   * The jobs the pool's workers hold now, and the time before which every lock the pool took has
   * reached a worker (null until a mark precedes every get_job in flight).
   */
  inUse(): { running: string[]; lockedBefore: Date | null } {
    const firstFetch = Math.min(...this.#fetching.values());
    let lockedBefore: Date | null = null;
    for (const m of this.#marks) if (m.at < firstFetch) lockedBefore = m.db;
    const running = [...this.#workers].flatMap((w) => w.getActiveJob()?.id ?? []);
    return { running, lockedBefore };
  }
}
