import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import { withRequest, type RequestContext } from '../db/request.ts';
import { apiErrorFromDatabase } from '../http/errors.ts';
import type { ClusterNode } from './cluster.ts';

/*
 * Durable presence sessions (app.presence_sessions, sql/rpc/presence.sql) from the gateway's side.
 * Each realtime-js channel's tracking period and each H1 socket has a session '<node>/<n>' (the
 * node: this process's cluster node id; Hub.newPresenceSession): api.update_presence records it,
 * api.leave_canvas removes it, and a user's app.presence row goes (with presence_leave) when their
 * last session on the canvas leaves, whichever gateway holds the others.
 */

/** Attempts at removing a gone node's sessions (a deadlock with the cleanup job, a lost connection). */
const REMOVAL_ATTEMPTS = 3;

/**
 * The sessions of gateway node `node` leave (internal.remove_node_presence_sessions, the
 * processes' role's): it was taken for dead by the cluster, it said `leave`, or it is this process
 * stopping. Every gateway that saw it go calls this; the SQL is idempotent, and a user leaves a
 * canvas (presence_leave) only when none of their sessions remains. Tried `attempts` times;
 * after that the sessions go with their rows' expiry (internal.cleanup, presence_expiry_seconds).
 */
export async function removeNodePresenceSessions(sql: Sql, logger: Logger, node: string, attempts = REMOVAL_ATTEMPTS): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await sql`select internal.remove_node_presence_sessions(${node})`;
      return;
    } catch (err) {
      if (attempt >= attempts) {
        logger.warn({ err, node }, 'the presence sessions of a gone gateway were not removed: its users leave when their presence expires');
        return;
      }
      await new Promise((r) => setTimeout(r, 500 * attempt).unref());
    }
  }
}

/** How often a gateway looks for the sessions of nodes no live gateway knows, in its cluster's deadAfterMs (sweepUnknownNodes). */
const UNKNOWN_SWEEP_EVERY = 4;

/**
 * Removes, at start and then every UNKNOWN_SWEEP_EVERY x deadAfterMs (28 s by default) after the
 * last round ended, the sessions of gateway nodes no live gateway knows: killed with every other
 * gateway, or alone (onNodeGone fires only for a node some gateway heard, so before nobody removed
 * them: the user's row outlived their last live tab's close, with no presence_leave, until it
 * expired, and while they kept writing the dead sessions stayed, counted against
 * presence_sessions_max). A round snapshots the nodes that hold sessions
 * (internal.presence_session_nodes), then waits for `cluster.whenCovered()`: every node alive at
 * or after the snapshot has been heard by then (the proof the cluster takes a silent node for dead
 * on), so a snapshotted node that is neither this one nor in `cluster.nodes()` is dead, and its
 * sessions go (removeNodePresenceSessions: its users who hold no other session leave). No proof
 * (the replication stream down, this node unable to send), no removal: the round waits. A round
 * that fails (the database down at start) is logged at debug and tried again at the next; nothing
 * here blocks the gateway's start or ends the process. Runs until `stop()`. What it cannot tell: a
 * gateway of another cluster on the same database (another REALTIME_CLUSTER_SECRET, a rolling
 * restart that changes it) is never heard, so its live sessions are removed too (docs/realtime.md,
 * presence_leave: one database, one cluster).
 */
export function sweepUnknownNodes(sql: Sql, logger: Logger, cluster: Pick<ClusterNode, 'id' | 'deadAfterMs' | 'nodes' | 'whenCovered'>): { stop(): void } {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const unknown = (nodes: string[]) => {
    const known = new Set([cluster.id, ...cluster.nodes()]);
    return nodes.filter((node) => !known.has(node));
  };
  const round = async () => {
    try {
      // nodes known now are not waited for: should one die, onNodeGone removes its sessions
      const suspects = unknown((await sql<{ node: string }[]>`select internal.presence_session_nodes() as node`).map((r) => r.node));
      if (suspects.length > 0 && await cluster.whenCovered()) {
        for (const node of unknown(suspects)) {
          if (stopped) break;
          logger.info({ node }, 'the presence sessions of a gateway node no live gateway knows (killed unseen) are removed');
          await removeNodePresenceSessions(sql, logger, node);
        }
      }
    } catch (err) {
      logger.debug({ err }, 'the nodes holding presence sessions were not read: tried again at the next round');
    }
    if (!stopped) (timer = setTimeout(() => void round(), UNKNOWN_SWEEP_EVERY * cluster.deadAfterMs)).unref();
  };
  void round();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/** The longest wait between two attempts at a session's leave (leavePresenceSession). */
const LEAVE_RETRY_MAX_MS = 30_000;
/** apiErrorFromDatabase's codes of a fault that passes: a leave that failed so is tried again (leavePresenceSession). */
const PASSING = new Set(['unavailable', 'timeout']);

/**
 * Session `session` of a channel or H1 socket on canvas `canvasId` leaves (api.leave_canvas with
 * it, as the request `ctx` it was written as): the database removes it, and the user's row with
 * presence_leave if it was their last (sql/rpc/presence.sql). Resolves after the first attempt. A
 * leave that failed on a passing fault (apiErrorFromDatabase's unavailable or timeout: a
 * connection lost, even during its COMMIT; the database unreachable, out of connections,
 * read-only, too slow, in a deadlock) is tried again in the background, waiting 0.5 s, then twice
 * as long each time up to LEAVE_RETRY_MAX_MS, until it is done: a leave is idempotent (a session
 * not there changes nothing), so one that did commit unseen is harmless to repeat. Before, the
 * failure was only logged and the session stayed while its gateway lived, keeping the user's row
 * (no presence_leave) after their last tab closed. Not tried again: one the database refused
 * (PX…: the canvas gone, access lost; the row went with the access) or failed on a bug (internal:
 * it would fail forever), nor once this process's pool has ended (it stops: its own sessions are
 * removed by it or by the other gateways).
 */
async function leavePresenceSession(sql: Sql, logger: Logger, ctx: RequestContext, canvasId: string, session: string): Promise<void> {
  const leave = async (): Promise<boolean> => {
    try {
      await withRequest(sql, ctx, (tx) => tx`select api.leave_canvas(${canvasId}::uuid, ${session})`);
      return true;
    } catch (err) {
      const code = (err as { code?: unknown })?.code;
      const ended = code === 'CONNECTION_ENDED' || code === 'CONNECTION_DESTROYED';
      const kind = apiErrorFromDatabase(err).code;
      if (PASSING.has(kind) && !ended) {
        logger.debug({ err, session }, 'a presence session\'s leave failed on a fault: tried again');
        return false;
      }
      // refused (access lost: the row went with it) or the pool ended: as expected; a bug: said
      if (kind === 'internal') logger.warn({ err, session }, 'a presence session\'s leave failed: its session goes with its gateway or its row\'s expiry');
      else logger.debug({ err, session }, 'a presence session\'s leave was refused, or this process stops');
      return true;
    }
  };
  if (await leave()) return;
  void (async () => {
    for (let wait = 500; !(await leave()); wait = Math.min(2 * wait, LEAVE_RETRY_MAX_MS)) {
      await new Promise((r) => setTimeout(r, wait).unref());
    }
  })();
}

/**
 * A realtime-js channel's or an H1 socket's durable presence writes and leaves, run one after
 * another in the order asked: each starts once the ones asked before it are done, so a leave asked
 * while a write is on its way (the socket closed, the client untracked) runs after it and never
 * leaves a session that the write then records again. A write's outcome (a refusal, a fault) is its
 * caller's; the steps after it run all the same.
 */
export class PresenceSteps {
  private tail: Promise<void> = Promise.resolve();

  /** Runs `work`, a durable presence write (api.update_presence), after the steps asked before it; settles as it does. */
  write<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work);
    this.tail = run.then(() => {}, () => {});
    return run;
  }

  /**
   * Session `session` leaves (leavePresenceSession: tried again in the background on a passing
   * fault) after the steps asked before it; resolves after its first attempt, and the steps asked
   * after it wait for that attempt only.
   */
  leave(sql: Sql, logger: Logger, ctx: RequestContext, canvasId: string, session: string): Promise<void> {
    return this.write(() => leavePresenceSession(sql, logger, ctx, canvasId, session));
  }
}
