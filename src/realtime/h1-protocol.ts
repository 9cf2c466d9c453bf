import { z } from 'zod';
import { INT4_MAX, SEQ_MAX } from '../input-policy.ts';
import { UUID, UUID_MESSAGE } from '../uuid.ts';
import type { ErrorCode } from '../http/errors.ts';
import type { ApiErrorCode, HelloMessage } from '../../packages/client/src/protocol.ts';

/**
 * H1 — the canvas sync socket, `GET /ws/canvas/{canvas_id}` (WebSocket), protocol version 1.
 *
 * Connect with a JWT in the `access_token` query parameter or an `Authorization: Bearer` header.
 * The token must let the user read the canvas (else the upgrade is refused: 401 no/invalid token
 * or a deleted user's, 403/404 not a member; 503 `unavailable` with Retry-After when the database did not answer the
 * check, or the signing keys (SUPABASE_JWKS_URL) could not be fetched to check the token, as the HTTP API answers:
 * reconnect after it). Writing needs a writing role on the canvas (owner, admin, editor; a
 * viewer is read-only) and the `canvas:{id}:write` scope: a token whose `scope` claim lacks it
 * (and lacks `canvas:*:write`) is read-only; a token without any `scope` claim carries the
 * user's full rights. `hello.can_write` says which; the database checks again on every mutate.
 * Optionally `?since_canvas_seq=N` (preferred) or `?since_seq=N` resumes immediately (same as
 * sending `resume`). `?snapshot_parts=1` says the client joins a snapshot sent in parts (`part`,
 * `has_more`: a canvas over one page, 1,000 blocks or about 4 MB; docs/realtime.md "Paged
 * snapshots"). Without it, a snapshot that needs more than one part is refused: an `error` frame
 * `invalid_input`, field `snapshot_parts`, then close code 4400 (H1_CLOSE_BAD_REQUEST), since a
 * client that does not join parts would take the last one for the whole canvas. @potentia/client
 * sends it from the release that reads parts on.
 *
 * Every frame is one JSON text message with a `type`. The server speaks first with `hello`.
 * No `delta` is sent before the first `resume` (or `?since_canvas_seq=` / `?since_seq=` on the URL).
 * Each socket may send at most 10 messages per second; a message over the limit is dropped and
 * answered with `error` code `rate_limited` (and `client_op_id` when it was a mutate, so the
 * client can resend it after `retry_after_ms`). Every frame, whatever it is (a ping, one refused
 * as invalid or over that limit, a binary one), counts against a second bound, 120 per second in
 * bursts of 500 (framesPerSecond, as for realtime-js sockets, and h1FrameBurst, src/realtime/hub.ts):
 * past it the socket closes with 4429 (H1_CLOSE_FRAME_RATE), reason `FrameRateLimitReached: …`,
 * and what it still sent is dropped unread. Reconnect after a backoff, not at once.
 * A `resume` that needs a snapshot (`snapshot: true`, or a log that cannot continue from
 * since_canvas_seq) counts against the user's snapshot limit, the one of `GET /canvas/{id}/snapshot`
 * (H4, 1 per second, across sockets and HTTP: docs/limits.md). Over it the resume is dropped,
 * answered with `error` code `rate_limited` and `retry_after_ms` (no `client_op_id`), and changes
 * nothing: a live stream goes on; a socket without one (no resume accepted yet, or its earlier
 * resume superseded by the refused one) sends no delta until a resume is accepted: send it again
 * after retry_after_ms.
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
 * checks the numbers of the live deltas too, and fills a gap from the log itself. A replay whose
 * database work fails (a resume or a fill) is answered `error` `unavailable`, then the socket
 * closes with 1011: reconnect and resume from the last canvas_seq applied. A `resume` supersedes
 * an earlier one still replaying or queued: that one stops, without its `resumed`; wait for
 * `resumed` before asking again (the guarantee holds for the newest).
 *
 * Access is re-checked while the socket is open (src/realtime/access.ts): when the user's
 * workspace or canvas membership is removed or changed, or the canvas is deleted — by any means,
 * on any server — the socket is re-authorized within a second. Lost access: an `error` frame with
 * code `forbidden` (close code 4403), `not_found` (the canvas is gone, close code 4404) or
 * `unauthorized` (the user was deleted, close code 4401, as for an expired token), then the
 * close; nothing committed after the change is sent first. A changed write right: an `access`
 * frame with the new `can_write` (a viewer's `mutate` is answered `read_only`); deltas continue.
 * Do not reconnect after 4403/4404 with the same token and user: the upgrade is refused.
 * A re-check that lasts (waiting on a lock) holds the socket's deltas meanwhile; past
 * maxHeldDatabaseMessages / maxHeldDatabaseBytes (src/realtime/hub.ts) the socket closes with
 * 1013 (reason `HeldMessagesLimitReached: …`): reconnect and resume from the last canvas_seq
 * applied, as after any lost socket (@potentia/client does); nothing is lost.
 */
export const H1_PROTOCOL_VERSION = 1;

/** WebSocket close codes the server uses after re-authorization refused an open socket. */
export const H1_CLOSE_FORBIDDEN = 4403;
export const H1_CLOSE_NOT_FOUND = 4404;
/**
 * The close code of a socket whose access token no longer authorizes anything (4000 + HTTP 401):
 * it expired (exp plus the clock leeway every surface allows; reason `token_expired`), or the
 * user it names was deleted (found by the re-check after an access change; reason `user_deleted`:
 * a token outlives its user until it expires, and every surface answers it 401, the upgrade too).
 * An `error` frame `unauthorized` first. Reconnect with a fresh token (@potentia/client asks its
 * token() again on every reconnect).
 */
export const H1_CLOSE_UNAUTHORIZED = 4401;
/**
 * The close code (1013, "try again later") of a socket that was sent more deltas during an access
 * re-check, or across resumes superseding each other, than it may hold (held-frames.ts
 * HELD_MESSAGES_LIMIT_REACHED): resume on a new socket.
 */
export const H1_CLOSE_HELD_MESSAGES = 1013;
/**
 * The close code of a socket that sent more frames than framesPerSecond / h1FrameBurst allow
 * (src/realtime/hub.ts), reason `FrameRateLimitReached: …` (rate-limit.ts): 4000 + HTTP 429, as
 * 4401 / 4403 / 4404 follow their HTTP statuses (realtime-js sockets get 1008, as Phoenix closes
 * them). Reconnect after a backoff (@potentia/client waits its backoff's cap, 2.5 to 5 s).
 */
export const H1_CLOSE_FRAME_RATE = 4429;

/**
 * The close code after a refusal of what the socket asked for at the upgrade (4000 + HTTP 400):
 * a snapshot in parts to a client without `?snapshot_parts=1`. Reconnecting as before is refused
 * again: upgrade the client (or send the parameter and join the parts).
 */
export const H1_CLOSE_BAD_REQUEST = 4400;
export const SNAPSHOT_PARTS_REQUIRED = "this canvas's snapshot comes in parts (more than 1,000 blocks or about 4 MB): "
  + 'connect with ?snapshot_parts=1 and join the parts (docs/realtime.md, "Paged snapshots"), or upgrade @potentia/client, which does';

const uuid = z.string().regex(UUID, UUID_MESSAGE); // as Postgres reads a uuid (src/uuid.ts); the SQL compares it as uuid
const seq = z.number().int().nonnegative().max(SEQ_MAX); // bigint parameters in SQL

// ---------------------------------------------------------------- client → server
// Closed objects, as the HTTP API's request bodies are: a field the server does not know is
// refused (`invalid_message` naming it), never ignored. Ignored, a misspelt field (`canvas_seq`
// for `since_canvas_seq`) silently meant its default (a resume from 0).

/** Apply one block operation (api.upsert_block_atomic). Idempotent by client_op_id. */
export const MutateMessage = z.strictObject({
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
export const ResumeMessage = z.strictObject({
  type: z.literal('resume'),
  since_seq: seq.default(0),
  since_canvas_seq: seq.optional(),
  snapshot: z.boolean().default(false),
});

/** Cursor / typing, broadcast to the canvas (api.update_presence: durable last_active_at at most every 30 s). */
export const PresenceMessage = z.strictObject({
  type: z.literal('presence'),
  cursor: z.record(z.string(), z.unknown()).nullish(),
  typing: z.boolean().default(false),
});

export const PingMessage = z.strictObject({ type: z.literal('ping') });

export const ClientMessage = z.discriminatedUnion('type', [MutateMessage, ResumeMessage, PresenceMessage, PingMessage]);
export type ClientMessage = z.infer<typeof ClientMessage>;
export type MutateMessage = z.infer<typeof MutateMessage>;

// ---------------------------------------------------------------- server → client

// The frames the server sends are typed once, in the client package (types only, erased at
// build): the client and the server cannot disagree on them. Their documentation is there.
export type {
  AccessMessage, AckMessage, ConflictMessage, DeltaMessage, ErrorMessage, HelloMessage, PongMessage, PresenceEvent,
  RejectedMessage, ResumedMessage, ServerMessage, SnapshotMessage, TextOp, WireBlock as Block,
} from '../../packages/client/src/protocol.ts';

// Compile-time checks that the client's copies of two server facts are still true.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
type Holds<T extends true> = T;
export type ProtocolAgrees = [
  Holds<Same<ErrorCode, ApiErrorCode>>,
  Holds<Same<typeof H1_PROTOCOL_VERSION, HelloMessage['v']>>,
];
