import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ReservedSql, Sql } from 'postgres';
import { answerTimedOut, isConnectionFailure, mayRunAgain } from './faults.ts';
import type { CallerSettings } from './request.ts';

/**
 * Canvas lanes: this process's mutations of one canvas go down ONE pooled connection, in the order
 * they arrived (within a transaction, in their callers' order), and the ones that queued up while
 * the lane's last transaction ran are sent together as the next one: up to `depth` requests in one
 * transaction, one COMMIT (group commit).
 *
 * Why: writers on a canvas are serialized by its row, locked until COMMIT (canvas_seq is commit
 * order: docs/mutations.md), and a COMMIT holds it until its WAL record is on disk. With a
 * connection per request, 16 concurrent mutations of one canvas are 16 backends queued on that
 * row; each hand-off goes through the lock manager and runs the next mutation on a backend whose
 * caches went cold while it slept (the holder's locked section took ~3× as long with 15 waiters as
 * alone), and each waits for a WAL flush of its own with the row locked (docs/performance.md). Down
 * one connection, in one transaction, k mutations run back to back on one warm backend and share
 * one flush. Other processes' lanes on the same canvas still queue on the row, so ordering stays
 * the database's guarantee, as before; in addition, a caller's mutations of a canvas apply in the
 * order this process received them.
 *
 * A request's statements set the caller's transaction-local settings themselves (role, claims,
 * headers, statement_timeout: src/db/request.ts), so each request of a group runs as its own
 * caller. What else a request leaves in the transaction are the rows it locks: besides the canvas
 * row, rows of its caller's own, the rate-limit counter (the H2 endpoint hit; the mutation hit's
 * slot waits for no one: internal.take_limit_slot). Held by one transaction for several callers
 * and taken in arrival order, they deadlocked with another lane's group holding them in the other
 * order (two canvases, or two processes on one canvas). So a group's requests go in the order of
 * their callers (`caller`; one caller's in arrival order), and the statements a request must run
 * before any canvas row is locked (`first`: the endpoint hit) go first, for the whole group: every
 * transaction takes those rows before its canvas row, and all of them in one order. A caller's
 * several mutations in a group take a rate-limit slot each, which keeps the limit's bound
 * (docs/limits.md). The callers' user rows, which each mutation locks before its canvas row (a
 * deletion of the user locks the user's row, then the canvases and blocks they created), are
 * locked for the whole group first too, with the canvas creator's, when it carries several
 * requests (`lockCallers`): a second caller's own lock, after the first caller's canvas row,
 * deadlocked with that caller's deletion; and the second request's change of the canvas row, which
 * the transaction had changed already, has the row's foreign keys checked again and locked the
 * creator's row after the canvas row, deadlocking with the creator's deletion, whoever the callers.
 * (Rows keyed by an id the client chooses are not ordered this way: two groups
 * creating the same two block ids on two canvases can still deadlock; Postgres breaks it after
 * deadlock_timeout, and the victim fails.)
 *
 * Pipelining: while a busy lane's transaction is on the wire, the lane may send the next one behind
 * it on the same connection (at most one: a full group at once, a smaller one when the
 * transaction ahead has run its statements and is at its COMMIT), so its backend goes from one
 * COMMIT to the next transaction's BEGIN without waiting for this process to read the answer and
 * write the next group (on a hot canvas, where the lane's backend is what serializes the
 * canvas's writers, that round trip was a sixth of its time: docs/performance.md). The one
 * behind must not commit unless the one ahead did: the one ahead ends by setting a session
 * setting to its id (LANE_MARK; a rollback takes a session setting's change back), and the one
 * behind begins by checking it (LANE_GUARD), which fails it, unrun, when the one ahead rolled
 * back. Its requests are then sent again behind the ones ahead's, in their order. A lane that has
 * rolled a transaction back sends one at a time until PIPELINE_AFTER of them have committed in a
 * row. Off behind a transaction pooler (`pipeline: false`), where the next transaction of a
 * connection may run on another server connection.
 *
 * A request is answered once its transaction has committed. When one request's statement fails,
 * the transaction rolls back: that request fails alone, the others were not committed and are sent
 * again, first in the queue and as a group of their own (nothing sent after them can commit before
 * them: the lane sends nothing more until every transaction on the wire has settled, and one
 * pipelined behind them fails its guard; nothing that arrived meanwhile joins them, so a stream of
 * failing requests cannot roll them back again and again).
 * The failed request's caller's other requests among them go behind that group, each in a
 * transaction with no other request of its caller, as requests with a `first` always go (a caller
 * whose requests fail one after another rolls back one group per failure, not each group again per
 * failure).
 * When the COMMIT itself fails, the culprit is unknown: each of them is sent again in a transaction
 * of its own.
 *
 * Lifecycle: a lane reserves its connection for its first request and releases it after its last
 * one is answered; there is nothing to start or stop. A connection failure fails the requests of
 * the transactions on the wire (their outcome is unknown: the caller answers 503 and the client
 * resends by client_op_id), unless the connection answered nothing since it was reserved (dead when
 * drawn: they are sent again, up to the pool's size of times); the lane then reserves a new connection for the
 * ones still queued, which were never sent. After TURNS requests the lane gives its connection back the same way and
 * queues for another, behind the pool's other callers: a hot canvas does not keep a connection
 * for ever.
 */
export class CanvasLanes {
  readonly #sql: Sql;
  readonly #depth: number;
  readonly #pipeline: boolean;
  readonly #lockCallers: string | null;
  readonly #logger: Pick<Logger, 'warn'> | null;
  readonly #lanes = new Map<string, Lane>();
  /**
   * Ids of the transactions this object sends: a random prefix of this object's and a count, so
   * that no mark left on a connection by anyone else (another CanvasLanes object on the pool,
   * another process's session through a session pooler that does not reset it) can equal one.
   */
  readonly #txPrefix = randomUUID();
  #nextTx = 0;

  /**
   * `depth`: how many of a lane's requests one transaction may carry (default
   * DEFAULT_LANE_DEPTH, 16). `pipeline`
   * (default true): a busy lane may send its next transaction behind the one on the wire (see the
   * class docstring); false behind a transaction pooler, where consecutive transactions of one
   * connection may run on different server connections. `lockCallers`: a statement ($1: the
   * callers' ids, text[]; $2: the lane's key, the canvas id, text) written first in a transaction
   * that carries several requests, as the connecting role, to lock the users' rows they lock (the
   * callers', the canvas creator's) before any request locks its canvas row (LOCK_CALLERS; none by
   * default). `logger`: where a failure of `lockCallers` is logged (warn;
   * nowhere by default): the transaction rolls back, and its requests go again one per
   * transaction, served without the lock, so nothing else shows it.
   */
  constructor(sql: Sql, opts: { depth?: number; pipeline?: boolean; lockCallers?: string; logger?: Pick<Logger, 'warn'> } = {}) {
    const depth = opts.depth ?? DEFAULT_LANE_DEPTH;
    if (!Number.isInteger(depth) || depth < 1) throw new RangeError(`lane depth must be a whole number >= 1, got ${depth}`);
    this.#sql = sql;
    this.#depth = depth;
    this.#pipeline = opts.pipeline ?? true;
    this.#lockCallers = opts.lockCallers ?? null;
    this.#logger = opts.logger ?? null;
  }

  /** Lanes open now (one per canvas with a request in flight in this process). */
  get size(): number {
    return this.#lanes.size;
  }

  /**
   * Transactions sent since this object was made (`pipelined`: those sent behind another on the
   * wire), and the requests they carried (requests sent again after their group rolled back count
   * again): requests / transactions is the mean group size, what group commit shares one flush
   * among (printed by bench:mutate).
   */
  get sent(): { transactions: number; requests: number; pipelined: number } {
    return { transactions: this.#sentTransactions, requests: this.#sentRequests, pipelined: this.#sentPipelined };
  }

  #sentTransactions = 0;
  #sentRequests = 0;
  #sentPipelined = 0;

  /**
   * Runs a request on the lane of `key` (a canvas id) in its turn, inside a transaction the lane
   * opens and commits: `write` writes the request's statements to `conn` synchronously (before any
   * await; no BEGIN or COMMIT) and returns their results' promises. The request's answer is the
   * last statement's result, once the transaction has committed; a statement's failure fails it.
   * `write` must not leave a statement's promise behind when it throws.
   *
   * `caller`: whose own rows the statements lock (the user id; null: none), so that a group goes in
   * callers' order. `first`: statements written like `write`'s, before every request's `write` in
   * the transaction (the group's `first`s in callers' order);
   * their failure is the request's. `first`'s parameters must always serialize (a statement the
   * driver refuses before sending it does not stop the request's own). `single`: what to write
   * instead of `first` and `write` when the request is its transaction's only one (the same work
   * in fewer statements: an H2 request's endpoint limit and RPC in one).
   */
  run<T>(key: string, write: Write, opts: { caller?: string | null; first?: Write; single?: Write } = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      let lane = this.#lanes.get(key);
      if (lane === undefined) {
        lane = new Lane();
        this.#lanes.set(key, lane);
      }
      lane.queue.push({ write, first: opts.first ?? null, single: opts.single ?? null, caller: opts.caller ?? null,
        resolve: resolve as (value: unknown) => void, reject,
        alone: false, onePerCaller: false, unanswered: 0 });
      this.#pump(key, lane);
    });
  }

  /**
   * Sends the lane's next transaction when it has none on the wire, or behind the one on the wire
   * when the pipelining gate below lets it: the queued requests, in
   * arrival order, up to `depth` (one, if the head must go alone), sent in callers' order;
   * reserves a connection when it has none; closes the lane when it has nothing left. Every
   * request that is not on the wire is in `lane.queue`, so nothing can overtake it: not a request
   * that arrives while the lane changes connection (after a failure, or to give the pool's
   * connection up for a turn).
   */
  #pump(key: string, lane: Lane): void {
    if (lane.onWire.length > 0) {
      // a second transaction behind the one on the wire (pipelined): only behind one that carries
      // its mark, while the lane's transactions commit (nothing rolled back in the last
      // PIPELINE_AFTER, nothing being resent), when the connection is not being given back, and
      // when it is worth a COMMIT of its own: a full group, or the one ahead has run its
      // statements (its backend is at its COMMIT, and would sit idle for the round trip)
      const ahead = lane.onWire[0]!;
      if (lane.onWire.length > 1 || !ahead.marked || lane.closing || lane.queue.length === 0) return;
      if (lane.committedInARow < PIPELINE_AFTER || lane.queue[0]!.alone || lane.resend > 0) return;
      if (lane.queue.length < this.#depth && !ahead.ran) return;
    }
    const conn = lane.conn;
    if (conn !== null && (lane.closing || lane.queue.length === 0)) {
      lane.conn = null;
      lane.closing = false;
      conn.release();
    }
    if (lane.conn === null) {
      if (lane.reserving) return;
      if (lane.queue.length === 0) {
        if (this.#lanes.get(key) === lane) this.#lanes.delete(key);
        return;
      }
      lane.reserving = true;
      this.#sql.reserve().then((reserved) => {
        lane.reserving = false;
        lane.conn = reserved;
        lane.drawn = { answered: false };
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
    // The queued requests in arrival order, up to the depth. Requests rolled back with their group
    // go again on their own, without the ones that arrived meanwhile, and a request whose last
    // group's COMMIT failed goes alone. A caller's requests share a transaction unless one of them
    // goes one per caller: one with a `first` (the H2 endpoint hit, where a caller over its limit
    // fails request after request) or one of a caller whose request just failed in a group (each
    // failure rolls back its whole group). The first request that may not join ends the group:
    // nothing overtakes it.
    const most = lane.queue[0]!.alone ? 1 : Math.min(lane.resend || lane.queue.length, this.#depth);
    lane.resend = 0;
    const callers = new Map<string | null, boolean>([[lane.queue[0]!.caller, onePer(lane.queue[0]!)]]);
    let size = 1;
    for (; size < most; size++) {
      const next = lane.queue[size]!;
      if (next.alone) break;
      const present = callers.get(next.caller);
      if (next.caller !== null && present !== undefined && (present || onePer(next))) break;
      callers.set(next.caller, (present ?? false) || onePer(next));
    }
    // sent in callers' order (those without one first, in arrival order): each transaction takes
    // its callers' rows in one order
    const group = lane.queue.splice(0, size).sort(byCaller);
    // marked when the lane is busy (requests queued behind it, or it carries several that queued):
    // the next transaction may then be pipelined behind it; a lane of one request at a time (most
    // canvases) skips the mark's statement
    const tx: OnWire = { id: `${this.#txPrefix}:${++this.#nextTx}`, ran: false, marked: this.#pipeline && (group.length > 1 || lane.queue.length > 0) };
    const after = lane.onWire.length > 0 ? lane.onWire[0]!.id : null;
    lane.onWire.push(tx);
    if (after !== null) this.#sentPipelined++;
    this.#sentTransactions++;
    this.#sentRequests += group.length;
    // a canvas busy without pause would keep the connection from every other caller of the pool:
    // after TURNS requests the lane gives it back once answered, and queues for another
    lane.turns += group.length;
    if (lane.turns >= TURNS) lane.closing = true;
    // (ran and settle are methods, not closures made here: under tsx, how the server runs, esbuild's
    // keepNames names each named closure with Object.defineProperty every time it is created)
    void this.#send(key, lane, lane.conn!, group, tx, after).then(({ retry, resend, broken, committed, lost }) => {
      this.#settle(key, lane, retry, resend, broken, !committed, lost);
    }, (err: unknown) => {
      // not expected (#send handles what the driver throws): fail the group, keep the lane going
      for (const request of group) request.reject(err);
      this.#settle(key, lane, [], 0, true, true);
    });
    // and a transaction behind this one, if the gate above lets one go now
    this.#pump(key, lane);
  }

  /** A transaction of `lane` settled (#send's outcome): its retries queued, and the lane pumped. */
  #settle(key: string, lane: Lane, retry: Request[], resend: number, broken: boolean, rolledBack: boolean, lost?: unknown): void {
    lane.onWire.shift();
    if (broken) lane.closing = true;
    if (lost !== undefined && answerTimedOut(lost)) {
      // the server sent nothing for answer_timeout (a stalled path): the requests waiting
      // behind this transaction waited as long, and would wait as long again on another of the
      // pool's connections over the same path; they fail with it (503: resent by client_op_id)
      for (const request of [...lane.retry.splice(0), ...lane.queue.splice(0)]) request.reject(lost);
      lane.retryResend = 0;
      lane.resend = 0;
    }
    // after a rollback nothing is pipelined (#pump's gate) until PIPELINE_AFTER commit in a
    // row, so nothing more is sent before every transaction on the wire has settled
    lane.committedInARow = rolledBack ? 0 : lane.committedInARow + 1;
    // transactions settle in the order they were sent: the retries in that order too
    if (lane.retry.length === 0) lane.retryResend = resend;
    lane.retry.push(...retry);
    if (lane.onWire.length === 0) {
      lane.queue.unshift(...lane.retry);
      lane.resend = lane.retryResend;
      lane.retry = [];
      lane.retryResend = 0;
    }
    this.#pump(key, lane);
  }

  /**
   * One transaction: BEGIN, each request's statements, COMMIT, written in one tick, in order
   * (postgres.js pipelines them; on a new connection it sends them as each prepared statement is
   * described). What runs at COMMIT (deferred checks and triggers) runs with the last request's
   * settings. Settles every request except the ones to send again, which it returns; `broken`
   * when the connection failed.
   */
  async #send(key: string, lane: Lane, conn: ReservedSql, group: Request[], tx: OnWire, after: string | null)
    : Promise<{ retry: Request[]; resend: number; broken: boolean; committed: boolean; lost?: unknown }> {
    const begin = conn`begin`.execute();
    const drawn = lane.drawn;
    begin.then(() => { drawn.answered = true; }, () => {});
    // behind a transaction still on the wire: runs only if that one committed (its mark below is
    // a session setting, which its rollback takes back)
    const guard = after === null ? null : conn.unsafe(LANE_GUARD, [after], { prepare: true }).execute();
    // the callers' own rows and the canvas creator's before any request's canvas row, when there are
    // several requests: each request locks its caller's first itself (the mutation RPC), but a
    // second caller's would come after the first one's canvas row, and the second request's change
    // of the canvas row (changed already by this transaction: its foreign keys are checked again)
    // locks the creator's; a deletion of that user (their row held, waiting for a canvas row they
    // created, which this transaction holds) deadlocked with it
    const callers = [...new Set(group.map((r) => r.caller).filter((c): c is string => c !== null))];
    const locked = this.#lockCallers === null || group.length < 2 ? null
      : conn.unsafe(this.#lockCallers, [callers, key] as never[], { prepare: true }).execute();
    // every request's `first` statements, then every request's own (a request whose `first` threw
    // writes nothing more); each result handled from the start, or a rejection would go unhandled
    const scratch: TransactionScratch = {};
    const none = { ok: true, settled: Promise.resolve([] as PromiseSettledResult<unknown>[]) };
    const single = group.length === 1 ? group[0]!.single : null;
    const firsts = group.map((request) => (request.first === null || single !== null ? none : write(request.first, conn, scratch)));
    const mains = group.map((request, i) => (firsts[i]!.ok ? write(single ?? request.write, conn, scratch) : none));
    const mark = tx.marked ? conn.unsafe(LANE_MARK, [tx.id], { prepare: true }).execute() : null;
    const commit = conn`commit`.execute();
    // all of them ran without error: the backend is at the mark and COMMIT, the time to send the next
    const mainsSettled = Promise.all(mains.map((m) => m.settled));
    void mainsSettled.then((all) => {
      if (all.every((o) => o.every((r) => r.status === 'fulfilled'))) {
        tx.ran = true;
        this.#pump(key, lane);
      }
    });
    const [opened, closed, guarded, marked, callersLocked] = await Promise.allSettled([begin, commit, guard, mark, locked]);
    const firstOutcomes = await Promise.all(firsts.map((f) => f.settled));
    const outcomes = await mainsSettled;
    // a request's failure: the first of its statements to fail, in the order they were sent
    const errors = group.map((_, i) => [...firstOutcomes[i]!, ...outcomes[i]!]
      .find((s): s is PromiseRejectedResult => s.status === 'rejected')?.reason);
    const lost = [opened, closed, guarded, marked, callersLocked].map((s) => (s.status === 'rejected' ? s.reason : undefined)).concat(errors)
      .find((err) => err !== undefined && isConnectionFailure(err));
    if (lost !== undefined && !drawn.answered && mayRunAgain(lost) && group.every((request) => request.unanswered < this.#sql.options.max)) {
      // the connection answered nothing since the pool handed it out (not this BEGIN, nor one of a
      // transaction ahead of it): it was most likely dead when drawn, another casualty of a
      // fault that ended every pooled connection at once (a restart, every backend terminated, a
      // NAT's timeout), whose end the pool had not read yet; with the pool's connections all dead,
      // each lane failed its requests (503) while the database answered. The group goes again, first
      // and as a group of its own, on a connection reserved anew (the same rule as withRequest's:
      // src/db/faults.ts); at most the pool's size of times per request. Should the server have
      // committed it all the same (the connection lost after COMMIT, before BEGIN's answer came),
      // the requests are idempotent by client_op_id (requestStatement): sent again, nothing applies twice
      for (const request of group) request.unanswered++;
      return { retry: group, resend: group.length, broken: true, committed: false };
    }
    if (lost !== undefined) {
      // the connection failed: every request of the transaction fails with it (it may have
      // committed or not; the caller answers 503 and the client resends by client_op_id)
      for (const request of group) request.reject(lost);
      return { retry: [], resend: 0, broken: true, committed: false, lost };
    }
    if (guarded.status === 'rejected') {
      // the transaction ahead rolled back: none of these ran; all go again, behind its retries
      return { retry: group, resend: 0, broken: false, committed: false };
    }
    if (callersLocked.status === 'rejected' && !isAbortedTransaction(callersLocked.reason)) {
      // its requests did not run (25P02): they go again below, each in a transaction of its own
      // (one request: nothing to lock first), and are served; only this line tells
      const err = callersLocked.reason as { code?: unknown };
      this.#logger?.warn({ err, code: err?.code, canvas_id: key, callers: callers.length },
        'canvas lane: locking the callers\' rows failed; the transaction\'s requests go again one per transaction');
    }
    const committed = opened.status === 'fulfilled' && closed.status === 'fulfilled'
      && (closed.value as { command?: string }).command === 'COMMIT';
    const retry: Request[] = [];
    const failed = new Set<string | null>();
    group.forEach((request, i) => {
      const err = errors[i];
      if (err !== undefined && !isAbortedTransaction(err)) { // its own failure
        request.reject(err);
        failed.add(request.caller);
      } else if (committed) request.resolve((outcomes[i]!.at(-1) as PromiseFulfilledResult<unknown> | undefined)?.value);
      else retry.push(request); // rolled back with another request's failure: sent again
    });
    // the others first, as a group of their own; then the failed callers' other requests, one per
    // caller per group (their next failure would roll back whoever shares their transaction)
    const others = retry.filter((r) => r.caller === null || !failed.has(r.caller));
    const ofFailed = retry.filter((r) => r.caller !== null && failed.has(r.caller));
    for (const request of ofFailed) request.onePerCaller = true;
    if (!committed && retry.length === group.length) {
      // none of them failed, yet the transaction did not commit (the COMMIT failed: a check
      // deferred to it): alone, each request meets its own outcome
      if (group.length === 1) {
        group[0]!.reject(closed.status === 'rejected' ? closed.reason
          : opened.status === 'rejected' ? opened.reason : new Error('the lane\'s transaction rolled back'));
        return { retry: [], resend: 0, broken: false, committed };
      }
      for (const request of retry) request.alone = true;
    }
    return { retry: [...others, ...ofFailed], resend: others.length, broken: false, committed };
  }
}

/**
 * Whether a request goes one per caller in a group (a `first`, or a caller whose request just
 * failed). This and `write` are module functions, not closures in #pump and #send: under tsx (how
 * the server runs: node --import tsx) esbuild's keepNames names each named closure with
 * Object.defineProperty every time it is created.
 */
function onePer(r: Request): boolean {
  return r.first !== null || r.onePerCaller;
}

/** A request's statements written on the transaction (#send): their outcomes, or what they threw. */
function write(w: Write, conn: ReservedSql, scratch: TransactionScratch): { ok: boolean; settled: Promise<PromiseSettledResult<unknown>[]> } {
  try {
    return { ok: true, settled: Promise.allSettled(w(conn, scratch)) };
  } catch (err) {
    return { ok: false, settled: Promise.resolve([{ status: 'rejected', reason: err } as PromiseRejectedResult]) };
  }
}

/** Callers' order: requests without a caller first; stable, so one caller's keep arrival order. */
function byCaller(a: Request, b: Request): number {
  if (a.caller === b.caller) return 0;
  if (a.caller === null) return -1;
  if (b.caller === null) return 1;
  return a.caller < b.caller ? -1 : 1;
}

/** 25P02: a statement sent after another one failed in the same transaction (it did not run). */
function isAbortedTransaction(err: unknown): boolean {
  return (err as { code?: unknown } | null)?.code === '25P02';
}

/**
 * How many requests one lane transaction carries by default. 16 against 8: on a hot canvas
 * (16 clients on one canvas) 1.14x the mutations a second, half the WAL flushes per mutation in the
 * canvas's turn and a lower p50 (docs/performance.md, "Lane depth 16"); more only lengthens what one
 * failure sends again (each request of a rolled-back group goes again, and applies once).
 */
export const DEFAULT_LANE_DEPTH = 16;

/**
 * How many requests a lane sends down one connection before it gives it back to the pool (once
 * they are answered) and queues for a connection again, behind whoever waits for one: the price,
 * one round trip with nothing on the wire per TURNS requests of a canvas that never pauses.
 */
const TURNS = 64;

/** Writes statements to the connection synchronously and returns their results' promises. */
type Write = (conn: ReservedSql, scratch: TransactionScratch) => Promise<unknown>[];

/**
 * One per transaction, shared by its writes, for what the statements written so far leave set in
 * it (the caller's settings: src/db/request.ts skips setting them again when they are already).
 */
export type TransactionScratch = { settings?: CallerSettings };

type Request = {
  write: Write;
  /** Written before every `write` of its transaction (see run). */
  first: Write | null;
  /** Written instead of `first` and `write` in a transaction of its own (see run). */
  single: Write | null;
  /** Whose own rows its statements lock (see run); null: nobody's. */
  caller: string | null;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  /** Sent in a transaction of its own (its last group's COMMIT failed for a reason unknown). */
  alone: boolean;
  /** Shares no transaction with another request of its caller (a request of its caller failed in its last group). */
  onePerCaller: boolean;
  /** Transactions it was sent in on a connection that answered nothing (sent again on a new connection, up to the pool's size). */
  unanswered: number;
};

/** A lane's transaction on the wire: `ran` once its requests' statements have all succeeded; `marked`: it sets its mark (LANE_MARK) before COMMIT. */
type OnWire = { id: string; ran: boolean; marked: boolean };

/** Transactions a lane must commit in a row, after one rolled back, before it pipelines again (a stream of failures turns pipelining off). */
const PIPELINE_AFTER = 4;

/** Sets this transaction's mark: a session setting, so it stays after COMMIT and a rollback takes it back. */
const LANE_MARK = "select set_config('potentia.lane_tx', $1, false)";
/**
 * The callers' user rows and the canvas creator's, locked before a transaction's requests run
 * (sql/rpc/canvas.sql internal.lock_callers): the `lockCallers` of the server's lanes (src/db/index.ts).
 */
export const LOCK_CALLERS = 'select internal.lock_callers($1::text[], $2::text)';
/** Fails unless the transaction ahead on this connection committed its mark. */
const LANE_GUARD = "select 1 / (current_setting('potentia.lane_tx', true) is not distinct from $1)::int";

class Lane {
  /** The connection, while the lane holds one. */
  conn: ReservedSql | null = null;
  /** Waiting for the pool to reserve a connection. */
  reserving = false;
  /** Whether `conn` has answered anything since it was reserved (a BEGIN): one that has not was most likely dead when drawn. */
  drawn = { answered: false };
  /** Gives `conn` back once the transaction on the wire settles: it failed, or its turns are used up. */
  closing = false;
  /** Requests sent down `conn` since it was reserved. */
  turns = 0;
  /** The lane's transactions on the wire, in the order sent (at most two: one pipelined behind the other). */
  readonly onWire: OnWire[] = [];
  /** Transactions committed in a row (a new lane counts as having committed enough to pipeline). */
  committedInARow = PIPELINE_AFTER;
  /** Requests to send again, from transactions settled while another was still on the wire. */
  retry: Request[] = [];
  /** `resend` of the first transaction that put requests in `retry`. */
  retryResend = 0;
  /** How many requests at the head of `queue` were rolled back with their group: sent again as a group of their own. */
  resend = 0;
  /** Requests not sent yet, in arrival order. */
  readonly queue: Request[] = [];
}
