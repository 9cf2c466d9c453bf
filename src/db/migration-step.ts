import type { Sql, TransactionSql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import { couldNotConnect, isConnectionFailure } from './faults.ts';
import { begin } from './transaction.ts';

/**
 * One step of `npm run db:migrate` (src/db/migrate.ts) in its own transaction, under the
 * migrations' advisory lock, made to behave against a database that serves live traffic:
 *
 * - **Lock waits are bounded.** A migration queued for a table's ACCESS EXCLUSIVE lock behind a
 *   long transaction makes every later reader and writer of that table queue behind it, so without
 *   a bound one forgotten `begin` in a psql stalled the whole API for as long as it stayed open.
 *   The step's first try waits FIRST_LOCK_TIMEOUT_MS for each lock, each next try twice as long,
 *   up to LOCK_TIMEOUT_MS (GitLab's way: short tries first stall the traffic less, 1423 → 207 ms for
 *   a writer behind a 1.5 s holder, 2017 → 814 ms behind a 5 s one: docs/performance.md, "Migration
 *   lock waits"). The step is rolled back, the traffic passes, and it is tried again until
 *   `lockWaitMs` has passed; then it fails naming the sessions
 *   that held the lock (pid, role, application, how long their transaction has been open, their
 *   query), seen by a second connection of the pool while the step waited.
 * - **The step's own settings win.** `statement_timeout` and `idle_in_transaction_session_timeout`
 *   set on the role or the database for the application would cut a long migration (rolled back
 *   every time, so it could never be applied); they are 0 inside the step.
 * - **A killed client ends its step.** client_connection_check_interval makes the backend notice
 *   within 2 s that the client is gone (SIGKILL), even where the database has no such setting
 *   (a role that does not own it), so the step is rolled back and its locks released instead of
 *   running on to the end of its statement.
 * - **A lost connection is named.** pg_terminate_backend or a network failure mid-step fails
 *   the run saying which step was in flight and that it was rolled back (or, lost while
 *   committing, that it may have been applied).
 * - **A deadlock's victim is run again** (40P01, up to 5 times): mutations lock the same tables in
 *   another order, and the victim's transaction is rolled back whole.
 */
export type StepOptions = {
  /** what the step applies, for messages: a file, or what the step does */
  label?: string;
  /** how long the step may spend, over all its attempts, waiting for locks (default DEFAULT_LOCK_WAIT_MS) */
  lockWaitMs?: number;
  /** holders of the migrations' lock already reported in this run: each is named once */
  reported?: Set<number>;
  /** another connection, to look at who holds the locks a step waits for (without it they go unnamed) */
  watch?: Sql;
};

/** The longest lock wait of a try: under the 3 s lock_timeout of the mutation RPCs (sql/rpc/mutate.sql),
 *  so a mutation queued behind the step's pending lock gets through when the step gives up. */
export const LOCK_TIMEOUT_MS = 2000;
/** The first try's lock wait; each next try's is twice the last one's, up to LOCK_TIMEOUT_MS. */
export const FIRST_LOCK_TIMEOUT_MS = 100;
export const DEFAULT_LOCK_WAIT_MS = 60_000;

/**
 * The lock_timeout, in ms, of a step's try after `tries` earlier tries that gave up on a lock
 * (0 for the first): FIRST_LOCK_TIMEOUT_MS, twice as long each time, up to LOCK_TIMEOUT_MS (0.1,
 * 0.2, 0.4, 0.8, 1.6, then 2 s). The last try of a step waits what is left of its lockWaitMs
 * instead (migrationStep). scripts/bench-lock-wait.ts measures this schedule.
 */
export function tryLockTimeoutMs(tries: number): number {
  return Math.min(FIRST_LOCK_TIMEOUT_MS * 2 ** tries, LOCK_TIMEOUT_MS);
}
/** Between two attempts the traffic that queued behind the step runs. */
export const RETRY_PAUSE_MS = 1000;
/** Less of --lock-wait left than this after a try and its pause: not worth another try. */
const MIN_ATTEMPT_LOCK_MS = 250;
/** The last try's lock wait at the least (--lock-wait 0 included): long enough for watchLocks to see who holds the lock. */
const LAST_TRY_MIN_MS = 500;
const MIGRATE_LOCK = 7_303_030_001; // advisory lock key: one migrator at a time per database
const WATCH_EVERY_MS = 250;

/** A session that held a lock the step waited for. */
export type Blocker = {
  pid: number; role: string | null; application: string | null; state: string | null; transactionSeconds: number | null; query: string | null;
  waitingFor: string | null;
};

export class LockWaitError extends Error {
  constructor(readonly label: string, readonly blockers: Blocker[], readonly waitedMs: number) {
    super(`${label} waited ${+(waitedMs / 1000).toFixed(1)} s for locks held by other sessions and was not applied: ${describeBlockers(blockers)}. ` +
      'The step was rolled back (nothing of it is applied; the steps before it are kept). End those sessions or let them finish ' +
      '(select pg_terminate_backend(pid) ends one), then run the same command again; --lock-wait SECONDS waits longer.');
  }
}

export class StepConnectionLostError extends Error {
  constructor(readonly label: string, readonly committing: boolean, cause: unknown) {
    const why = (cause as Error).message;
    super(committing
      ? `the connection to the database was lost while committing ${label} (${why}): it may or may not be applied. ` +
        'Run the same command again: it skips the step if it was applied and applies it if not.'
      : `the connection to the database was lost while applying ${label} (${why}): the step was rolled back with its transaction ` +
        '(nothing of it is applied; the steps before it are kept). Run the same command again: it goes on from that step.', { cause });
  }
}

export function describeBlockers(blockers: Blocker[]): string {
  if (blockers.length === 0) return 'who held them could not be seen (no connection to look from, or they were gone before a look)';
  return blockers.map((b) => `pid ${b.pid}${b.role ? ` (role ${b.role}` : ' ('}${b.application ? `, application ${b.application}` : ''}` +
    `${b.state ? `, ${b.state}` : ''}${b.transactionSeconds !== null ? ` in a transaction open for ${b.transactionSeconds} s` : ''}` +
    `${b.waitingFor ? `, holding ${b.waitingFor}` : ''}${b.query ? `; last query: ${b.query}` : ''})`).join('; ');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const codeOf = (err: unknown) => (err as { code?: string }).code ?? ((err as Error).cause as { code?: string } | undefined)?.code;

export async function migrationStep<T>(sql: Sql, log: (line: string) => void, work: (tx: TransactionSql) => Promise<T>,
  { label = 'a migration step', lockWaitMs = DEFAULT_LOCK_WAIT_MS, reported = new Set<number>(), watch }: StepOptions = {}): Promise<T> {
  const started = monotonicNow();
  let deadlocks = 0;
  let tries = 0;
  for (;;) {
    // the tries grow from FIRST_LOCK_TIMEOUT_MS; the last (no other fits in lockWaitMs after it)
    // waits what is left, but at least LAST_TRY_MIN_MS: its failure names who held the lock, which
    // the watcher must have seen
    const grown = tryLockTimeoutMs(tries);
    const leftAtStart = lockWaitMs - (monotonicNow() - started);
    const last = leftAtStart - grown - RETRY_PAUSE_MS < MIN_ATTEMPT_LOCK_MS;
    const attemptLockMs = last ? Math.max(Math.min(leftAtStart, LOCK_TIMEOUT_MS), LAST_TRY_MIN_MS) : grown;
    let pid: number | null = null;
    let committing = false;
    const watcher = watchLocks(watch, () => pid, Math.min(WATCH_EVERY_MS, attemptLockMs / 2));
    try {
      return await begin(sql, async (tx) => {
        const [row] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid,
          set_config('statement_timeout', '0', true), set_config('idle_in_transaction_session_timeout', '0', true),
          set_config('client_connection_check_interval', '2s', true)`;
        pid = row!.pid;
        // a migration that sets one of vector's parameters (`create function … set
        // hnsw.iterative_scan`) is refused to a role that is not a superuser while vector's library
        // is not loaded in the session ("permission denied to set parameter"), and such a role may
        // not LOAD it: a call into it loads it. Without this, a run that resumed at such a migration
        // in a new session, with nothing before it touching vector, could never apply it.
        await tx.unsafe(`do $$ declare s name := (select n.nspname from pg_extension e join pg_namespace n on n.oid = e.extnamespace
                                                  where e.extname = 'vector');
                         begin if s is not null then execute format('select %1$I.vector_dims(%2$L::%1$I.vector)', s, '[1]'); end if; end $$`);
        await takeMigrateLock(tx, log, reported);
        await tx`select set_config('lock_timeout', ${`${attemptLockMs}ms`}, true)`;
        const result = await work(tx);
        committing = true;
        return result;
      });
    } catch (err) {
      // (applyFile wraps a statement's error as its cause; a connection that was never made started
      // no step: the caller says how to reach the database. One lost under the step's first
      // statement, before its answer, is the step's: it surfaced as a bare `read ECONNRESET`)
      const lost = [err, (err as Error).cause].find((e) => e != null && isConnectionFailure(e));
      if (lost && (pid !== null || !couldNotConnect(lost))) throw new StepConnectionLostError(label, committing, lost);
      const code = codeOf(err);
      if (code === '40P01' && ++deadlocks < 5) {
        log(`deadlock with live traffic (${(err as Error).message.split('\n')[0]}): the step was rolled back, retrying (attempt ${deadlocks + 1} of 5)`);
        await sleep(200 * deadlocks);
        continue;
      }
      if (code === '55P03') {
        const blockers = watcher.blockers();
        if (!last) {
          const left = lockWaitMs - (monotonicNow() - started);
          log(`${label}: waited ${+(attemptLockMs / 1000).toFixed(1)} s for a lock, ${describeBlockers(blockers)}: rolled back so the traffic queued behind it runs; ` +
            `trying again (${Math.round(left / 1000)} s left of --lock-wait)`);
          tries++;
          await sleep(RETRY_PAUSE_MS);
          continue;
        }
        throw new LockWaitError(label, blockers, monotonicNow() - started);
      }
      throw err;
    } finally {
      watcher.stop();
    }
  }
}

/**
 * The migrations' advisory lock (transaction-scoped: a transaction pooler keeps it). When another
 * run holds it, says which session that is (once per run) and waits without a bound: the other
 * run's own lock waits are bounded.
 */
async function takeMigrateLock(tx: TransactionSql, log: (line: string) => void, reported: Set<number>): Promise<void> {
  const [got] = await tx<{ ok: boolean }[]>`select pg_try_advisory_xact_lock(${MIGRATE_LOCK}) as ok`;
  if (got!.ok) return;
  const holders = await tx<{ pid: number; application: string | null; seconds: number | null }[]>`
    select a.pid, nullif(a.application_name, '') as application, extract(epoch from now() - a.xact_start)::int as seconds
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.objsubid = 1 and ((l.classid::bigint << 32) | l.objid::bigint) = ${MIGRATE_LOCK}`;
  for (const h of holders) {
    if (reported.has(h.pid)) continue;
    reported.add(h.pid);
    log(`waiting for another db:migrate (pid ${h.pid}${h.application ? `, application ${h.application}` : ''}, ` +
      `its step open for ${h.seconds ?? '?'} s): runs take turns step by step`);
  }
  await tx`select set_config('lock_timeout', '0', true)`;
  await tx`select pg_advisory_xact_lock(${MIGRATE_LOCK})`;
}

/**
 * While a step runs, looks every `everyMs` (WATCH_EVERY_MS, less for a short try: twice within its
 * wait) at what its backend waits for, on another connection (the step's is busy waiting). Keeps
 * the last sessions seen blocking it, for the message once the wait times out.
 */
function watchLocks(sql: Sql | undefined, pid: () => number | null, everyMs: number): { blockers(): Blocker[]; stop(): void } {
  let last: Blocker[] = [];
  let stopped = false;
  if (!sql) return { blockers: () => last, stop: () => {} };
  const look = async () => {
    const p = pid();
    if (stopped || p === null) return;
    const rows = await sql<Blocker[]>`
      select b.pid, b.usename as role, nullif(b.application_name, '') as application, b.state,
             extract(epoch from now() - b.xact_start)::int as "transactionSeconds",
             left(regexp_replace(b.query, '\\s+', ' ', 'g'), 160) as query,
             (select coalesce(w.relation::regclass::text, w.locktype) from pg_locks w where w.pid = ${p} and not w.granted limit 1) as "waitingFor"
      from unnest(pg_blocking_pids(${p})) as bp(pid) join pg_stat_activity b on b.pid = bp.pid
      order by b.pid`.catch(() => []);
    if (rows.length > 0) last = rows.map((r) => ({ ...r }));
  };
  // connected before the first look (postgres.js connects on the first query): a short try's
  // wait may be over before a connection made at the first look could look
  let running: Promise<void> = sql`select 1`.then(() => {}, () => {});
  const timer = setInterval(() => { running = running.then(look); }, everyMs);
  return { blockers: () => last, stop: () => { stopped = true; clearInterval(timer); } };
}
