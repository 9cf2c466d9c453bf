import type { Block } from './blocks.ts';

/**
 * The errors @potentia/client throws or rejects with. Every one is a PotentiaError, so
 * `err instanceof PotentiaError` catches them all and `err.code` says what happened; the
 * subclasses carry what their case needs. Network loss is never one of them: the client
 * reconnects and resends by itself.
 */

/**
 * A refusal or failure with a stable `code`:
 * - the server's codes (the HTTP API's and H1's): `invalid_input` (`field` names the input, e.g.
 *   `patch.content`, `email`), `unauthorized` (not signed in, or the session ended), `forbidden`
 *   (no right: a viewer writing, a non-member), `not_found`, `payload_too_large`, `timeout`,
 *   `unavailable`, `internal`;
 * - sign-in codes of Supabase Auth (GoTrue), e.g. `invalid_credentials`, `user_already_exists`,
 *   `weak_password` (field `password`), `validation_failed` (field `email` or `password`: a
 *   malformed address, a missing password), `email_address_invalid` (field `email`);
 * - the client's own: `closed` (the canvas was closed before the operation was answered: its
 *   outcome is unknown), `network` (an HTTP call could not reach the server), `no_websocket` (no
 *   WebSocket class: pass one), `text_lost` (pending text edits dropped, see Canvas.onError),
 *   `invalid_message` (also H1's: a frame from the server this client cannot read, not JSON or a
 *   known type of the wrong shape; `field` names what is wrong; the socket is reconnected and
 *   resumed, so nothing it carried is lost), `timeout` (also the server's 504: an HTTP call that
 *   got no answer within the client's `timeoutMs`, a TimeoutError), `socket_refused` (the canvas
 *   socket's upgrade was answered with an HTTP `status` instead of a WebSocket, e.g. 404 where no
 *   gateway serves /ws/; reported to onError, and retried), `aborted` (the call's AbortSignal
 *   ended it: an AbortError).
 * `status` is the HTTP status when an HTTP answer caused it.
 */
export class PotentiaError extends Error {
  override name = 'PotentiaError';
  constructor(
    /** Stable machine-readable code (see the class comment). */
    readonly code: string,
    message: string,
    /** The input at fault, when the server named it (`invalid_input`). */
    readonly field?: string,
    /** HTTP status of the answer, when there was one. */
    readonly status?: number,
  ) {
    super(message);
  }
}

/** One clashing field of a ConflictError: its value at your base version, now, and in your change. */
export type ConflictField = {
  /** The value when you made your change (the block at its base version); null when the key did not exist. */
  base: unknown;
  /** The current value (someone else's). */
  theirs: unknown;
  /** Your operation's value: the patch value, `{text: op}` for a text edit, `{after_id?, y_order?}` for a position. */
  mine: unknown;
};

/**
 * Someone changed the same field since the version your change was based on (`code:
 * 'conflict'`), or the log no longer holds what changed since (`code: 'rebase_required'`).
 * Nothing was written and the optimistic change was rolled back. `fields` holds, per clashing
 * field (`content.<key>`, `type`, `parent`, `position`), base/theirs/mine exactly as the server
 * sent them; `changed` lists every field changed since your base. Resolve by sending the chosen
 * value again (`canvas.update(blockId, {content: {[key]: value}})`): it is based on the current
 * version.
 */
export class ConflictError extends PotentiaError {
  override name = 'ConflictError';
  constructor(
    override readonly code: 'conflict' | 'rebase_required',
    message: string,
    /** The block the change was for. */
    readonly blockId: string,
    /** The block as it is now on the server (null if the server did not send it). */
    readonly block: Block | null,
    /** Its current version. */
    readonly version: number | null,
    /** Every field changed since your base version. */
    readonly changed: string[],
    /** Per clashing field: base, theirs, mine. */
    readonly fields: Record<string, ConflictField>,
  ) {
    super(code, message, undefined, 409);
  }
}

/**
 * Too many requests: retry after `retryAfterMs`. Raised by HTTP calls (workspaces, canvases,
 * sign-in); canvas mutations are never refused this way, the socket resends them after the
 * server's delay by itself. `retryAfterMs` is the server's Retry-After, or 60 000 when it did not
 * send one (Supabase Auth's sign-in limits do not).
 */
export class RateLimitedError extends PotentiaError {
  override name = 'RateLimitedError';
  constructor(
    message: string,
    /** Milliseconds to wait before trying again. */
    readonly retryAfterMs: number,
    status = 429,
  ) {
    super('rate_limited', message, undefined, status);
  }
}

/**
 * An HTTP call of the client (sign-in, a refresh, workspaces, canvases) got no whole answer within
 * `timeoutMs` (createPotentiaClient's option, default 30 s): the request was abandoned (its
 * connection closed), so whether the server did it is unknown (a request stuck behind a database
 * lock may still complete). `code` is `timeout`, as for the server's own 504, and `status` is
 * undefined. A create is sent again with the same id first (it resolves if a resend is answered,
 * and rejects with this error only when every attempt timed out); any other call rejects at once:
 * its outcome is the app's to check (e.g. `workspaces.members` after an `addMember`). A canvas
 * change's own deadline (its `timeoutMs` option) rejects with it too, with the change's
 * `clientOpId` (see Canvas.create).
 */
export class TimeoutError extends PotentiaError {
  override name = 'TimeoutError';
  constructor(
    message: string,
    /** The deadline it missed, in milliseconds. */
    readonly timeoutMs: number,
    /** A canvas change's client_op_id (its `timeoutMs` option: see Canvas.create); undefined for an HTTP call. */
    readonly clientOpId?: string,
  ) {
    super('timeout', message);
  }
}

/**
 * A call ended by its caller's AbortSignal before it was answered: the `signal` option of every
 * HTTP call (sign-up, sign-in, sign-out, accessToken, workspaces, canvases), of a canvas change
 * (create, update, move, delete) and of Canvas.connect (which closes the canvas: ConnectOptions)
 * and CanvasSync's join and ready. `code` is `aborted`; `name` is `AbortError`, as fetch's own
 * abort, so `err.name === 'AbortError'` checks keep working; `reason` is the signal's reason (what
 * `controller.abort(reason)` was given; a DOMException TimeoutError for `AbortSignal.timeout(ms)`).
 * An abort is never retried (a create is not sent again) and never makes the client refresh the
 * session. An already-aborted signal sends nothing. One that aborts after the request left
 * abandons it (its connection closed), so whether the server did it is unknown, as after a
 * TimeoutError. `clientOpId`: for a canvas change, its H1 client_op_id (see Canvas.create).
 */
export class AbortError extends PotentiaError {
  override name = 'AbortError';
  constructor(
    message: string,
    /** The signal's reason. */
    readonly reason: unknown,
    /** A canvas change's client_op_id (undefined for an HTTP call). */
    readonly clientOpId?: string,
  ) {
    super('aborted', message);
  }
}

/**
 * The user cannot (or can no longer) see the canvas: `forbidden` (not a member, or removed while
 * connected) or `not_found` (no such canvas, or it was deleted). The canvas stops for good; its
 * unanswered operations reject with this error.
 */
export class AccessLostError extends PotentiaError {
  override name = 'AccessLostError';
  constructor(override readonly code: 'forbidden' | 'not_found', message: string) {
    super(code, message, undefined, code === 'forbidden' ? 403 : 404);
  }
}
