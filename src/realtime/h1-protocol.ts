import { z } from 'zod';
import { INT4_MAX, SEQ_MAX } from '../input-policy.ts';
import type { ErrorCode } from '../http/errors.ts';

/**
 * H1 — the canvas sync socket, `GET /ws/canvas/{canvas_id}` (WebSocket), protocol version 1.
 *
 * Connect with a JWT in the `access_token` query parameter or an `Authorization: Bearer` header.
 * The token must let the user read the canvas (else the upgrade is refused: 401 no/invalid token,
 * 403/404 not a member). Writing needs a writing role on the canvas (owner, admin, editor; a
 * viewer is read-only) and the `canvas:{id}:write` scope: a token whose `scope` claim lacks it
 * (and lacks `canvas:*:write`) is read-only; a token without any `scope` claim carries the
 * user's full rights. `hello.can_write` says which; the database checks again on every mutate.
 * Optionally `?since_canvas_seq=N` (preferred) or `?since_seq=N` resumes immediately (same as
 * sending `resume`).
 *
 * Every frame is one JSON text message with a `type`. The server speaks first with `hello`.
 * No `delta` is sent before the first `resume` (or `?since_canvas_seq=` / `?since_seq=` on the URL).
 * Each socket may send at most 10 messages per second; a message over the limit is dropped and
 * answered with `error` code `rate_limited` (and `client_op_id` when it was a mutate, so the
 * client can resend it after `retry_after_ms`).
 *
 * Two numbers per applied operation (sql/rpc/mutate.sql): `server_seq`, one order across all
 * canvases (with gaps on any one canvas), and `canvas_seq`, which numbers this canvas's applied
 * operations 1, 2, 3, … with no gap, in commit order (rejected attempts take no number). So a
 * client that applied canvas_seq N knows the next delta must carry N + 1: anything else means it
 * missed something, and it resumes with `since_canvas_seq: N` instead of applying out of order.
 *
 * Ordering guarantee: after `resume`, the socket sends every applied operation with
 * canvas_seq > since_canvas_seq (or server_seq > since_seq) exactly once, in canvas_seq order —
 * first those from the operation log (`replaying: true`, paged, however many there are), then
 * `resumed`, then live ones — no gap and no duplicate across the seam: consecutive deltas carry
 * consecutive canvas_seqs. If the log no longer reaches back to since_canvas_seq (retention), or
 * since_canvas_seq is ahead of the canvas, the replay starts with a `snapshot` instead. The server
 * checks the numbers of the live deltas too, and fills a gap from the log itself.
 *
 * Access is re-checked while the socket is open (src/realtime/access.ts): when the user's
 * workspace or canvas membership is removed or changed, or the canvas is deleted — by any means,
 * on any server — the socket is re-authorized within a second. Lost access: an `error` frame with
 * code `forbidden` (close code 4403) or `not_found` (the canvas is gone, close code 4404), then the
 * close; nothing committed after the change is sent first. A changed write right: an `access`
 * frame with the new `can_write` (a viewer's `mutate` is answered `read_only`); deltas continue.
 * Do not reconnect after 4403/4404 with the same token and user: the upgrade is refused.
 */
export const H1_PROTOCOL_VERSION = 1;

/** WebSocket close codes the server uses after re-authorization refused an open socket. */
export const H1_CLOSE_FORBIDDEN = 4403;
export const H1_CLOSE_NOT_FOUND = 4404;

const uuid = z.string().uuid();
const seq = z.number().int().nonnegative().max(SEQ_MAX); // bigint parameters in SQL

// ---------------------------------------------------------------- client → server

/** Apply one block operation (api.upsert_block_atomic). Idempotent by client_op_id. */
export const MutateMessage = z.object({
  type: z.literal('mutate'),
  client_op_id: z.string().min(1).max(128),
  action: z.enum(['create', 'update', 'move', 'delete']),
  block_id: uuid.nullish(),
  base_version: z.number().int().positive().max(INT4_MAX).nullish(), // an integer parameter in SQL
  patch: z.record(z.string(), z.unknown()).default({}),
});

/**
 * Start (or restart) the delta stream after `since_canvas_seq` (preferred: the last canvas_seq
 * applied) or, without it, after `since_seq` (a server_seq); `snapshot: true` first sends the full
 * state and continues from it. When both are given, since_canvas_seq is used.
 */
export const ResumeMessage = z.object({
  type: z.literal('resume'),
  since_seq: seq.default(0),
  since_canvas_seq: seq.optional(),
  snapshot: z.boolean().default(false),
});

/** Cursor / typing, broadcast to the canvas (api.update_presence: durable last_active_at at most every 30 s). */
export const PresenceMessage = z.object({
  type: z.literal('presence'),
  cursor: z.record(z.string(), z.unknown()).nullish(),
  typing: z.boolean().default(false),
});

export const PingMessage = z.object({ type: z.literal('ping') });

export const ClientMessage = z.discriminatedUnion('type', [MutateMessage, ResumeMessage, PresenceMessage, PingMessage]);
export type ClientMessage = z.infer<typeof ClientMessage>;
export type MutateMessage = z.infer<typeof MutateMessage>;

// ---------------------------------------------------------------- server → client

export type Block = Record<string, unknown> & { block_id: string; version: number };

/** First frame: who you are and whether you may write (your canvas role and your token's scope allow it). */
export type HelloMessage = { type: 'hello'; v: typeof H1_PROTOCOL_VERSION; canvas_id: string; user_id: string; can_write: boolean };

/**
 * Your write right changed while connected (role changed on the canvas or its workspace):
 * `can_write` as in `hello`; `role` is your role now; `message` says why you may not write.
 */
export type AccessMessage = { type: 'access'; can_write: boolean; role: string | null; message: string | null };

/**
 * The full state (after `resume` with snapshot, or when the log cannot serve the resume): blocks
 * consistent with `watermark` (server_seq) and `canvas_watermark` (the canvas_seq of the last
 * operation they include; the next delta is canvas_watermark + 1).
 */
export type SnapshotMessage = { type: 'snapshot'; canvas: Record<string, unknown>; blocks: Block[]; watermark: number; canvas_watermark: number };

/** One applied operation, from the log (`replaying: true`) or live; canvas_seq is the previous delta's + 1. */
export type DeltaMessage = {
  type: 'delta';
  server_seq: number;
  canvas_seq: number;
  action: 'create' | 'update' | 'move' | 'delete';
  block_id: string;
  version: number | null;
  block: Block | null;
  client_op_id: string | null;
  actor_id: string | null;
  deleted_ids: string[] | null;
  /** Text operations by content key, as applied (apply them to the previous text to get `block.content`). */
  text?: Record<string, TextOp>;
  replaying?: boolean;
};

/** The replay from the log is complete up to `watermark` (server_seq) and `canvas_watermark` (canvas_seq); live deltas follow. */
export type ResumedMessage = { type: 'resumed'; watermark: number; canvas_watermark: number };

/** A mutation applied (or already applied: `duplicate`), with the numbers its delta carries. */
export type AckMessage = { type: 'ack'; client_op_id: string; status: 'success' | 'duplicate'; server_seq: number; canvas_seq: number; version: number | null; block_id: string | null; text?: Record<string, TextOp> };

/** A text-unicode operation (ShareDB): n skips n code points, "str" inserts it, {d: n} deletes n code points. */
export type TextOp = Array<number | string | { d: number | string }>;

/**
 * A stale base_version touching the same fields (`code: 'conflict'`, with `fields.<field>.{base,
 * theirs, mine}`), or one the log can no longer merge (`code: 'rebase_required'`): nothing
 * changed; `block` is the current block.
 */
export type ConflictMessage = {
  type: 'conflict'; client_op_id: string; block: Block | null; server_seq: number | null;
  code: 'conflict' | 'rebase_required'; message: string; version: number | null;
  changed?: string[]; fields?: Record<string, { base: unknown; theirs: unknown; mine: unknown }>;
};

/** The database refused the mutation (validation, permission, rate limit); nothing changed. */
export type RejectedMessage = { type: 'rejected'; client_op_id: string; error: { code: string; message: string; field?: string } };

export type PresenceEvent = { type: 'presence'; user_id: string; cursor: unknown; typing: boolean } | { type: 'presence_leave'; user_id: string };

/**
 * A message could not be processed; `client_op_id` when it was a mutate. The codes are those of
 * the HTTP API (src/http/errors.ts), plus two of the socket's own:
 * `invalid_message`: not an H1 message (not JSON, binary, or not of the shape above; `field` names
 * what is wrong). `invalid_input`: refused by the input policy (src/input-policy.ts: an unpaired
 * surrogate or NUL in any string or key, nesting deeper than 64) or by the database (e.g. a cursor
 * over 1 KB); `field` names it when known; resending the same message fails the same way.
 * `read_only`: this socket may not write. `rate_limited`: dropped, resend after `retry_after_ms`.
 * `forbidden` / `not_found`: access to the canvas was lost (the socket closes next, 4403 / 4404).
 * `unavailable` / `timeout`: the database connection was lost or the statement ran out of time
 * while handling it; resend after `retry_after_ms` (a mutate with the same client_op_id is applied
 * at most once). `internal` is a server fault, never the client's input.
 * Text frames that are not valid UTF-8 never get here: the WebSocket layer closes with 1007.
 */
export type ErrorMessage = {
  type: 'error';
  code: ErrorCode | 'invalid_message' | 'read_only';
  message: string;
  field?: string;
  retry_after_ms?: number;
  client_op_id?: string;
};

export type ServerMessage = HelloMessage | AccessMessage | SnapshotMessage | DeltaMessage | ResumedMessage | AckMessage | ConflictMessage | RejectedMessage | PresenceEvent | ErrorMessage | { type: 'pong' };
