import type { Job, Worker, WorkerEvents } from 'graphile-worker';

/** Heartbeat marks kept: a get_job in flight for longer than this many heartbeats is stuck anyway. */
const MARKS = 4;

/**
 * How long a job whose outcome could not be recorded is remembered after it ended, unless a
 * heartbeat released its lock first: its lock is released well within it; one that outlives it
 * was not this worker's any more (the outcome reached the database despite the error, or another
 * worker recovered the lock).
 */
const UNRECORDED_KEPT_MS = 10 * 60_000;

/**
 * "job:complete" as patches/graphile-worker+0.17.3.patch emits it: `recorded` says whether the
 * job's outcome reached the database. Absent (an unpatched Graphile Worker), it counts as not.
 */
type JobComplete = { job: Job; recorded?: boolean };

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
 *
 * It also says which of those locks are on jobs that started here: a released lock on one that
 * never did was an answer of get_job lost with its connection, and the attempt get_job charged
 * goes back (as Graphile Worker's returnJobs does for jobs it took and never started). A job that
 * ran keeps its lock after it ended only when its outcome could not be recorded (the patch says
 * so with "job:complete"; a recorded outcome leaves no lock), so those and the running ones are
 * all it names: within the concurrency plus the unrecorded outcomes, whatever the job
 * throughput. (Graphile Worker's completeJobBatchDelay would answer before recording; Potentia
 * leaves it off too.)
 */
export class LockLedger {
  readonly #workers = new Set<Worker>();
  /** Workers inside get_job, and when it started (performance.now()). */
  readonly #fetching = new Map<Worker, number>();
  #marks: { at: number; db: Date }[] = [];
  /** Jobs that ran here and whose outcome could not be recorded: id → when it ended (performance.now()). */
  readonly #unrecorded = new Map<string, number>();

  constructor(events: WorkerEvents) {
    events.on('worker:create', ({ worker }) => { this.#workers.add(worker); });
    events.on('worker:stop', ({ worker }) => {
      this.#workers.delete(worker);
      this.#fetching.delete(worker);
    });
    events.on('worker:getJob:start', ({ worker }) => { this.#fetching.set(worker, performance.now()); });
    const fetched = ({ worker }: { worker: Worker }) => { this.#fetching.delete(worker); };
    events.on('job:start', (e) => {
      fetched(e);
      // running, it is named with the running ones; a lock released and taken again starts afresh
      this.#unrecorded.delete(e.job.id);
    });
    events.on('job:complete', ({ job, recorded }: JobComplete) => {
      if (recorded !== true) this.#unrecorded.set(job.id, performance.now());
    });
    // a worker that fails to release its job ends without "job:complete": that job ran, and its
    // outcome was not recorded (the worker's active job is still set while this is emitted)
    events.on('worker:fatalError', ({ worker }) => {
      const job = worker.getActiveJob();
      if (job) this.#unrecorded.set(job.id, performance.now());
    });
    events.on('worker:getJob:empty', fetched);
    events.on('worker:getJob:error', fetched);
  }

  /** Records `db`, a database clock reading (clock_timestamp()) whose answer has just arrived. */
  mark(db: Date) {
    this.#marks = [...this.#marks.slice(1 - MARKS), { at: performance.now(), db }];
  }

  /**
   * Forgets the jobs in `ids`, whose locks a heartbeat released, if they ended before `asOf`
   * (performance.now() when that heartbeat read inUse()): no lock of theirs is left here. One
   * that ended since ran again after the release, and its new lock is still to be released.
   */
  released(ids: string[], asOf: number) {
    for (const id of ids) {
      const ended = this.#unrecorded.get(id);
      if (ended !== undefined && ended < asOf) this.#unrecorded.delete(id);
    }
  }

  /**
   * The jobs the pool's workers hold now, the time before which every lock the pool took has
   * reached a worker (null until a mark precedes every get_job in flight), and the jobs that
   * started here and may still hold a lock: the running ones and those whose outcome was not
   * recorded.
   */
  inUse(): { running: string[]; lockedBefore: Date | null; started: string[] } {
    const firstFetch = Math.min(...this.#fetching.values());
    let lockedBefore: Date | null = null;
    for (const m of this.#marks) if (m.at < firstFetch) lockedBefore = m.db;
    const running = [...this.#workers].flatMap((w) => w.getActiveJob()?.id ?? []);
    const now = performance.now();
    for (const [id, ended] of this.#unrecorded) if (now - ended > UNRECORDED_KEPT_MS) this.#unrecorded.delete(id);
    return { running, lockedBefore, started: [...new Set([...running, ...this.#unrecorded.keys()])] };
  }
}
