import type { Logger } from 'pino';
import type { Sql } from 'postgres';

/**
 * Durable presence sessions (app.presence_sessions, sql/rpc/presence.sql) from the gateway's side.
 * Each realtime-js channel's tracking period and each H1 socket has a session '<node>/<n>', where
 * the node is this process's cluster node id: api.update_presence records it, api.leave_canvas
 * removes it, and a user's app.presence row goes (with presence_leave) when their last session on
 * the canvas leaves, whichever gateway holds the others.
 */
export class PresenceSessions {
  private made = 0;

  /** `node`: this process's cluster node id (cluster.ts), what the other gateways remove this one's sessions by. */
  constructor(private readonly node: () => string) {}

  /** A new session id of this process, never given before by it. */
  next(): string {
    return `${this.node()}/${++this.made}`;
  }
}

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
