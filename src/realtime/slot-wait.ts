import type { Logger } from 'pino';
import type { Sql } from 'postgres';

/**
 * Why the replication stream is not up yet, when the reason is a slot waiting. Creating a logical
 * slot (CREATE_REPLICATION_SLOT, at start and after every loss of the stream) waits until every
 * transaction that holds a transaction id anywhere in the cluster, in any database, has ended
 * (snapbuild.c SnapBuildWaitSnapshot). The wait is an ordinary lock wait on each one's xid, so
 * pg_blocking_pids names them. Meanwhile the gateway delivers by polling realtime.messages
 * (bus.ts), slower, and nothing else says why: a session left idle in a transaction for an hour
 * kept every gateway started in that hour off the stream, silently. Their query text is not logged:
 * it is other sessions' (any database's) and may carry their data; the DBA reads it by pid.
 */
export type SlotBlocker = { pid: number; datname: string | null; usename: string | null; application_name: string; state: string | null;
  seconds: number | null };

/** The sessions the slot-creating walsender `pid` waits for (empty: it is not waiting on a lock). */
export async function slotBlockers(sql: Sql, pid: number): Promise<SlotBlocker[]> {
  return await sql<SlotBlocker[]>`
    select a.pid, a.datname, a.usename, a.application_name, a.state,
           extract(epoch from now() - a.xact_start)::int as seconds
    from pg_stat_activity a where a.pid = any(pg_blocking_pids(${pid}::int)) order by a.xact_start`;
}

/** How long the stream may be down, its slot waiting, before the wait is logged; then once per interval. */
export const SLOT_WAIT_WARN_AFTER_MS = 10_000;
export const SLOT_WAIT_WARN_EVERY_MS = 60_000;

/**
 * Logs (warn) the sessions a slot creation waits for, naming them, with what to do; `waitedMs` is
 * how long the stream has been down. Nothing is logged when the walsender waits on none.
 */
export async function warnSlotWait(sql: Sql, pid: number, waitedMs: number, logger: Logger | undefined): Promise<boolean> {
  const blockers = await slotBlockers(sql, pid);
  if (blockers.length === 0) return false;
  logger?.warn({ blockers, waitedSeconds: Math.round(waitedMs / 1000) },
    `realtime replication stream not up after ${Math.round(waitedMs / 1000)} s: creating its slot waits for ${blockers.length} `
    + 'open transaction(s) with a transaction id (any database of this server) to end; deliveries are polled from realtime.messages '
    + 'meanwhile (slower). End them (commit, rollback, or pg_terminate_backend(pid); what each runs: select pid, query from pg_stat_activity '
    + `where pid in (${blockers.map((b) => b.pid).join(', ')})) or set idle_in_transaction_session_timeout`);
  return true;
}
