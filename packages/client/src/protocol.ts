/**
 * H1 wire types, server → client: the frames `/ws/canvas/{canvas_id}` sends. Types only (no
 * runtime code), so the server (src/realtime/h1-protocol.ts, which documents the whole protocol
 * and validates what clients send) imports them from here and both sides agree by construction.
 *
 * Every frame is one JSON text message with a `type`. Numbers: `server_seq` orders operations
 * across all canvases (with gaps on any one canvas); `canvas_seq` numbers one canvas's applied
 * operations 1, 2, 3, … without gaps, in commit order.
 */

/** A block as the server sends it (`block` in deltas, `blocks` in snapshots); loosely typed on the wire. */
export type WireBlock = Record<string, unknown> & { block_id: string; version: number };

/**
 * The error codes of the HTTP API and of H1 `error` frames (the server's src/http/errors.ts
 * ERROR_STATUS keys; h1-protocol.ts checks at compile time that both lists are the same).
 */
export type ApiErrorCode =
  | 'invalid_input' | 'unauthorized' | 'forbidden' | 'not_found' | 'conflict' | 'rebase_required'
  | 'payload_too_large' | 'unsupported_media_type' | 'rate_limited' | 'internal' | 'not_implemented' | 'unavailable' | 'storage_not_configured'
  | 'timeout';

/** A text-unicode operation (ShareDB): n skips n code points, "str" inserts it, {d: n} deletes n code points. */
export type TextOp = Array<number | string | { d: number | string }>;

/** First frame: who you are and whether you may write (your canvas role and your token's scope allow it). */
export type HelloMessage = { type: 'hello'; v: 1; canvas_id: string; user_id: string; can_write: boolean };

/**
 * Your write right changed while connected (role changed on the canvas or its workspace):
 * `can_write` as in `hello`; `role` is your role now; `message` says why you may not write.
 */
export type AccessMessage = { type: 'access'; can_write: boolean; role: string | null; message: string | null };

/**
 * The full state (after `resume` with snapshot, or when the log cannot serve the resume), in parts
 * of at most 1,000 blocks and about 4 MB: `part` 0, 1, … while `has_more` (absent: one part).
 * Every part carries the first part's `watermark` (server_seq) and `canvas_watermark`; the next
 * delta is canvas_watermark + 1. One part is the state at canvas_watermark. With more, parts after
 * the first leave out the blocks changed after canvas_watermark: the deltas that follow bring
 * them, and the state is whole and consistent once they are applied (at `resumed`). Parts come
 * only to a socket opened with `?snapshot_parts=1` (CanvasSync sends it); without it, a snapshot
 * of more than one part is refused (`error` invalid_input, field `snapshot_parts`, close 4400).
 */
export type SnapshotMessage = {
  type: 'snapshot'; canvas: Record<string, unknown>; blocks: WireBlock[]; watermark: number; canvas_watermark: number;
  part?: number; has_more?: boolean;
};

/** One applied operation, from the log (`replaying: true`) or live; canvas_seq is the previous delta's + 1. */
export type DeltaMessage = {
  type: 'delta';
  server_seq: number;
  canvas_seq: number;
  action: 'create' | 'update' | 'move' | 'delete';
  block_id: string;
  /** The block's version after the operation (null for a delete). */
  version: number | null;
  /** The block after the operation (null for a delete). */
  block: WireBlock | null;
  client_op_id: string | null;
  actor_id: string | null;
  /** A delete's removed blocks: the block and its whole subtree. */
  deleted_ids: string[] | null;
  /** Text operations by content key, as applied (apply them to the previous text to get `block.content`). */
  text?: Record<string, TextOp>;
  replaying?: boolean;
};

/** The replay from the log is complete up to `watermark` (server_seq) and `canvas_watermark` (canvas_seq); live deltas follow. */
export type ResumedMessage = { type: 'resumed'; watermark: number; canvas_watermark: number };

/** A mutation applied (or already applied: `duplicate`), with the numbers its delta carries. */
export type AckMessage = {
  type: 'ack'; client_op_id: string; status: 'success' | 'duplicate'; server_seq: number; canvas_seq: number;
  version: number | null; block_id: string | null; text?: Record<string, TextOp>;
};

/**
 * A stale base_version touching the same fields (`code: 'conflict'`, with `fields.<field>.{base,
 * theirs, mine}`), or one the log can no longer merge (`code: 'rebase_required'`): nothing
 * changed; `block` is the current block.
 */
export type ConflictMessage = {
  type: 'conflict'; client_op_id: string; block: WireBlock | null; server_seq: number | null;
  code: 'conflict' | 'rebase_required'; message: string; version: number | null;
  changed?: string[]; fields?: Record<string, { base: unknown; theirs: unknown; mine: unknown }>;
};

/**
 * The database refused the mutation (validation, permission, rate limit); nothing changed.
 * `rate_limited` (the user's mutations per minute) carries `retry_after` (seconds until the next
 * window) and `limit`: resend the same client_op_id after it.
 */
export type RejectedMessage = {
  type: 'rejected'; client_op_id: string;
  error: { code: string; message: string; field?: string; retry_after?: number; limit?: number };
};

/**
 * Someone's presence on the canvas (never your own user's): `cursor` is the JSON object they sent
 * (at most 1 KB), `typing` their flag; `presence_leave` when they left or expired.
 */
export type PresenceEvent = { type: 'presence'; user_id: string; cursor: unknown; typing: boolean } | { type: 'presence_leave'; user_id: string };

/**
 * A message could not be processed; `client_op_id` when it was a mutate. The codes are those of
 * the HTTP API, plus two of the socket's own:
 * `invalid_message`: not an H1 message (not JSON, binary, or not of the shape above; `field` names
 * what is wrong). `invalid_input`: refused by the input policy (an unpaired surrogate or NUL in
 * any string or key, nesting deeper than 64) or by the database (e.g. a cursor over 1 KB); `field`
 * names it when known; resending the same message fails the same way.
 * `read_only`: this socket may not write. `rate_limited`: dropped, resend after `retry_after_ms`
 * (a `resume` too: over the socket's message rate, or, when it needs a snapshot, over the user's
 * snapshot limit across sockets and HTTP; nothing is streamed until a resume is accepted).
 * `forbidden` / `not_found`: access to the canvas was lost (the socket closes next, 4403 / 4404).
 * `unauthorized`: the socket's access token expired, or the user it names was deleted (the socket
 * closes next, 4401): reconnect with a fresh token (CanvasSync does, asking its token() again).
 * `unavailable` / `timeout`: the database connection was lost or the statement ran out of time
 * while handling it; resend after `retry_after_ms` (a mutate with the same client_op_id is applied
 * at most once). `internal` is a server fault, never the client's input.
 * Text frames that are not valid UTF-8 never get here: the WebSocket layer closes with 1007.
 * A socket sending frames far faster than the message rate (120 per second, bursts of 500) is not
 * answered frame by frame but closed, 4429 `FrameRateLimitReached`: reconnect after a backoff.
 */
export type ErrorMessage = {
  type: 'error';
  code: ApiErrorCode | 'invalid_message' | 'read_only';
  message: string;
  field?: string;
  retry_after_ms?: number;
  client_op_id?: string;
};

/** The answer to a `ping`. */
export type PongMessage = { type: 'pong' };

/** Every frame the server sends. */
export type ServerMessage =
  | HelloMessage | AccessMessage | SnapshotMessage | DeltaMessage | ResumedMessage | AckMessage
  | ConflictMessage | RejectedMessage | PresenceEvent | ErrorMessage | PongMessage;
