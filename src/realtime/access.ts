import type { Sql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import { mayAccessTopic, type SocketClaims } from './authorize.ts';
import type { BusMessage } from './bus.ts';
import { HeldFrames, heldBytes, type HeldLimits } from './held-frames.ts';
import type { Hub } from './hub.ts';
import { canonicalUuid, idKey } from '../uuid.ts';

/**
 * Live re-authorization of open sockets.
 *
 * Authorization is decided when a socket joins; access can be taken away while it stays open. The
 * database announces every change that may do so (sql/realtime/access.sql): a private
 * `access_changed` message `{canvas_id, user_id, reason}` on `canvas:{id}`, written in the same
 * transaction as the membership / canvas change, so every gateway process receives it through its
 * bus after commit, in commit order with the canvas's other messages, however the change was made.
 *
 * A socket concerned by the change (its user, or everyone when user_id is null) runs its join
 * authorization again. Meanwhile its database messages wait in an AccessGate: a message committed
 * after the change is delivered only if access survived, so nothing written after a revocation
 * reaches the revoked socket. `access_changed` itself is never forwarded to clients.
 *
 * Logical decoding can hand over a commit a moment before the transaction is visible to new
 * snapshots, so a re-check first waits until the announcing message row is visible: it then
 * reads the state the message announced, never the one before.
 */
export const ACCESS_CHANGED = 'access_changed';

export type AccessChange = {
  canvasId: string;
  /** The user whose access may have changed; null = everyone on the canvas. */
  userId: string | null;
  /** workspace_member | canvas_member | canvas_deleted | canvas_moved */
  reason: string;
};

/** The access change a database message announces, or null when it announces none. */
export function accessChange(message: BusMessage): AccessChange | null {
  if (message.event !== ACCESS_CHANGED || !message.private || message.extension !== 'broadcast') return null;
  const p = (message.payload ?? {}) as { canvas_id?: unknown; user_id?: unknown; reason?: unknown };
  return {
    canvasId: typeof p.canvas_id === 'string' ? idKey(p.canvas_id) : message.topic.replace(/^canvas:/, ''),
    userId: typeof p.user_id === 'string' ? idKey(p.user_id) : null,
    reason: typeof p.reason === 'string' ? p.reason : 'unknown',
  };
}

/** Whether a socket holding `claims` must re-check its access after `change`. */
export function concerns(change: AccessChange, claims: SocketClaims): boolean {
  // both in idKey's spelling: a user compared as text in two spellings would be a member
  // never re-checked (the verifier hands on a UUID sub in lower case; this holds without it too)
  return change.userId === null || (typeof claims.sub === 'string' && change.userId === idKey(claims.sub));
}

export type AccessWatch = {
  /** Ids of the access_changed messages concerning the caller received so far (re-check after them). */
  readonly messageIds: readonly string[];
  stop(): void;
};

/**
 * Notes access changes concerning `claims` on `subTopic` from now until stop(). Started before a
 * join's authorization check and stopped once the socket listens itself: a change committed
 * while the check ran (which may have read the state before it) is then re-checked, not missed.
 */
export function watchAccess(hub: Pick<Hub, 'subscribe'>, subTopic: string, claims: SocketClaims): AccessWatch {
  const messageIds: string[] = [];
  let off: (() => void) | null = hub.subscribe(subTopic, {
    onDatabase(m) {
      const change = accessChange(m);
      if (change && concerns(change, claims)) messageIds.push(m.id);
    },
  });
  return {
    messageIds,
    stop() {
      off?.();
      off = null;
    },
  };
}

/**
 * A scope entry as internal.scope_allows reads it: ASCII letters in lower case, so that
 * `canvas:<ID IN UPPER CASE>:write` names the canvas as the id in lower case does (a uuid has no
 * case; the token's sub and the HTTP paths are read in either case too). Only A-Z: the database's
 * translate() is not locale-dependent, toLowerCase() would be for other letters.
 */
export const scopeEntry = (entry: string): string => entry.replace(/[A-Z]+/g, (s) => s.toLowerCase());

/**
 * Write scope of H1: a token without a `scope` claim carries the user's full rights (the canvas
 * role still decides); a token with one must name canvas:{id}:write or canvas:*:write — the rule
 * of internal.token_allows.
 */
export function hasWriteScope(claims: SocketClaims, canvasId: string): boolean {
  const scope = claims.scope;
  if (scope === undefined || scope === null) return true;
  const entries = Array.isArray(scope) ? scope.filter((e) => typeof e === 'string') : String(scope).split(/\s+/);
  const wanted = `canvas:${idKey(canvasId)}:write`;
  return entries.some((e) => { const entry = scopeEntry(e); return entry === wanted || entry === 'canvas:*:write'; });
}

/** What an H1 socket's token may do on its canvas right now. */
export type CanvasAccess = {
  /** May join (read): the RLS join probe of `canvas:{id}` admits the token. */
  read: boolean;
  /** May mutate: read, a writing role (owner/admin/editor) and a write scope. */
  write: boolean;
  /** The user's effective role on the canvas (null without access). */
  role: string | null;
  /** Why it may not write (the `read_only` message), when it may not. */
  readOnlyReason: string | null;
  /** No access because the canvas no longer exists (deleted, purged) rather than for lack of a role. */
  gone: boolean;
};

/**
 * H1's authorization, at the upgrade and on every access change: the same RLS probe as a private
 * realtime channel for reading, plus the canvas role (internal.canvas_role / can_write_role, the
 * rules api.upsert_block_atomic applies) and the token's scope for writing.
 */
export async function canvasAccess(sql: Sql, claims: SocketClaims, canvasId: string): Promise<CanvasAccess> {
  const read = await mayAccessTopic(sql, claims, `canvas:${canvasId}`, 'read');
  const sub = typeof claims.sub === 'string' ? canonicalUuid(claims.sub) : null;
  const [row] = await sql<{ live: boolean; role: string | null; writer: boolean }[]>`
    select c.deleted_at is null as live, r.role::text as role, internal.can_write_role(r.role) as writer
    from app.canvases c, lateral (select internal.canvas_role(c.canvas_id, ${sub}::uuid) as role) r
    where c.canvas_id = ${canvasId}::uuid`;
  const gone = !row || !row.live;
  if (!read || !row) return { read: false, write: false, role: null, readOnlyReason: 'no access to this canvas', gone };
  const scoped = hasWriteScope(claims, canvasId);
  const readOnlyReason = !row.writer
    ? `your role on this canvas (${row.role ?? 'none'}) cannot edit it`
    : !scoped ? `this token's scope does not include canvas:${canvasId}:write` : null;
  return { read: true, write: readOnlyReason === null, role: row.role, readOnlyReason, gone: false };
}

/**
 * Whether the user a token names no longer exists (deleted: a token outlives its user until it
 * expires). Asked only of a refusal, to answer it as the HTTP API does (internal.require_user_exists:
 * 401 unauthorized) rather than as a canvas the user is not a member of (the memberships went with
 * the user). A token without a user's sub names no one gone.
 */
export async function userGone(sql: Sql, claims: SocketClaims): Promise<boolean> {
  const sub = typeof claims.sub === 'string' ? canonicalUuid(claims.sub) : null;
  if (sub === null) return false;
  const [row] = await sql<{ gone: boolean }[]>`select not exists (select from auth.users where id = ${sub}::uuid) as gone`;
  return row?.gone === true;
}

/** internal.require_user_exists's message: the refusal of a deleted user's token, on every surface. */
export const USER_GONE_MESSAGE = 'the user this token was issued to no longer exists';

/**
 * Waits (briefly: at most `timeoutMs`) until the realtime.messages rows `ids` are visible to a
 * new snapshot, so that what is read next includes the change they announced.
 */
export async function untilVisible(sql: Sql, ids: readonly string[], timeoutMs = 2000): Promise<void> {
  if (ids.length === 0) return;
  const end = monotonicNow() + timeoutMs;
  for (let delay = 2; ; delay = Math.min(delay * 2, 50)) {
    const [row] = await sql<{ n: number }[]>`select count(*)::int as n from realtime.messages where id = any(${ids as string[]}::uuid[])`;
    // past the deadline (a row already removed by retention, say), decide on what is visible
    if ((row?.n ?? 0) >= ids.length || monotonicNow() > end) return;
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

export type AccessGateOptions = {
  /** Pool to wait for the visibility of announcing messages (untilVisible); without it, no wait. */
  sql?: Sql;
  /** Delay before the one retry of a check that threw. */
  retryDelayMs?: number;
  /** Bounds of what is held during a re-check (held-frames.ts); each one absent is unbounded. */
  held?: Partial<HeldLimits>;
  /** After a re-check that access survived, when client broadcasts held meanwhile were dropped (how many). */
  onDropped?: (count: number) => void;
  /**
   * A database message arrived past held.maxKept / maxKeptBytes: what was held is let go, nothing
   * more is delivered (the gate is done), and this ends the channel or socket, so that the
   * client reads what it missed from the database (realtime-js rejoins, H1 resumes).
   */
  onOverflow?: () => void;
};

const UNBOUNDED: HeldLimits = { maxDroppable: Infinity, maxDroppableBytes: Infinity, maxKept: Infinity, maxKeptBytes: Infinity };

/**
 * Holds what a socket (or channel) receives while its access is re-checked: its database messages,
 * and a realtime-js channel's client broadcasts and presence changes (phoenix-socket.ts).
 *
 * `check` re-authorizes and acts on a refusal itself (closes the socket / channel); it resolves
 * true when access survived. It runs once the announcing messages are visible (untilVisible).
 * Re-checks never overlap: a change arriving during one runs another after it. Held messages are
 * delivered, in order, after the last re-check passed, or dropped for good when one failed. What
 * is held is bounded by kind (held-frames.ts, `options.held`): database messages up to a bound,
 * past which the gate gives up and `onOverflow` ends the channel (none is dropped silently); the
 * newest client broadcasts; the last of each slot (presence). A
 * check that throws (database unreachable) is retried once; if it throws again, `onFailure`
 * closes the socket (the client's reconnect re-authorizes at the door).
 */
export class AccessGate {
  private held: HeldFrames | null = null;
  private running = false;
  private again = false;
  private denied = false;
  private pendingIds: string[] = [];
  /** Resolves waiters of settled() once the running re-checks are over: true when access survived them. */
  private outcome: { promise: Promise<boolean>; resolve: (allowed: boolean) => void } | null = null;

  constructor(
    private readonly check: () => Promise<boolean>,
    private readonly onFailure: (err: unknown) => void,
    private readonly options: AccessGateOptions = {},
  ) {}

  /**
   * Delivers now, or after the running re-check if access survives it. `message`: the database
   * message `send` delivers, counted against the held bounds (past them: onOverflow).
   */
  deliver(send: () => void, message?: BusMessage): void {
    if (this.denied) return;
    if (!this.held) return send();
    if (this.held.keep(send, message ? heldBytes(message) : 0)) return;
    this.denied = true; // what the running check decides no longer matters
    this.held = null;
    this.options.onOverflow?.();
  }

  /** As deliver, for a frame that may be dropped (a client broadcast of `bytes`): the oldest go past `options.held`. */
  deliverDroppable(send: () => void, bytes: number): void {
    if (this.denied) return;
    if (this.held) this.held.keepDroppable(send, bytes);
    else send();
  }

  /**
   * As deliver, but a re-check holds one `send` per `slot`, the last given (the caller folds what
   * it replaces into it: presence diffs into their net effect).
   */
  deliverLatest(slot: string, send: () => void): void {
    if (this.denied) return;
    if (this.held) this.held.keepLatest(slot, send);
    else send();
  }

  /** Whether deliveries are held now (a re-check runs). */
  get holding(): boolean {
    return this.held !== null;
  }

  /**
   * Whether the socket (or channel) may still act on its access: at once when no re-check runs,
   * else once the running re-checks are over — true when access survived them, false when one
   * refused it (or failed, or the gate gave up). What the client sends waits on it, as what it
   * receives is held: a member removed must not go on sending into the room on the send rights
   * checked before the change while the re-check waits (on a lock, seconds).
   */
  settled(): Promise<boolean> {
    if (this.denied) return Promise.resolve(false);
    return this.outcome?.promise ?? Promise.resolve(true);
  }

  /**
   * Starts a re-check (or queues one after the running one); deliveries wait until it is done.
   * `messageIds`: the access_changed messages that asked for it (the check reads after them).
   */
  recheck(...messageIds: string[]): void {
    if (this.denied) return;
    this.pendingIds.push(...messageIds);
    this.held ??= new HeldFrames({ ...UNBOUNDED, ...this.options.held });
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = true;
    if (!this.outcome) {
      let resolve!: (allowed: boolean) => void;
      const promise = new Promise<boolean>((r) => { resolve = r; });
      this.outcome = { promise, resolve };
    }
    void this.run();
  }

  private async run(): Promise<void> {
    try {
      do {
        this.again = false;
        const allowed = await this.attempt();
        if (this.denied) return; // ended meanwhile (onOverflow)
        if (!allowed) {
          this.denied = true;
          this.held = null;
          return;
        }
      } while (this.again);
      const held = this.held;
      this.held = null;
      // told first: what follows is the newest of what was sent meanwhile
      if (held?.dropped) this.options.onDropped?.(held.dropped);
      for (const send of held?.release() ?? []) send();
    } catch (err) {
      if (this.denied) return; // ended meanwhile (onOverflow): its channel is gone already
      this.denied = true;
      this.held = null;
      this.onFailure(err);
    } finally {
      this.running = false;
      const outcome = this.outcome;
      this.outcome = null;
      outcome?.resolve(!this.denied);
    }
  }

  private async attempt(): Promise<boolean> {
    const ids = this.pendingIds;
    this.pendingIds = [];
    const once = async () => {
      if (this.options.sql) await untilVisible(this.options.sql, ids);
      return this.check();
    };
    try {
      return await once();
    } catch {
      await new Promise((resolve) => setTimeout(resolve, this.options.retryDelayMs ?? 250));
      return await once();
    }
  }
}
