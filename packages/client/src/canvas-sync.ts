import type { AccessMessage, AckMessage, ConflictMessage, DeltaMessage, HelloMessage, PresenceEvent, RejectedMessage, ServerMessage, WireBlock as Block } from './protocol.ts';
import { abortedBy } from './deadline.ts';
import { AccessLostError, PotentiaError } from './errors.ts';
import { textIn, TextOtClient, type TextLoss, type TextOp, type TextReceipt, type TextSend } from './text-ot.ts';
import { encodeJson, MESSAGE_MAX_DEPTH } from './json-value.ts';
import { MessagePacer } from './pacing.ts';
import { defaultReconnectDelayMs, fullJitterMs } from './backoff.ts';
import { monotonicNow } from './clock.ts';
import { readFrame } from './frames.ts';

export { defaultReconnectDelayMs } from './backoff.ts';

/**
 * A typed client for H1 (`/ws/canvas/{id}`): joins a canvas (snapshot, then resume, then live),
 * applies deltas in canvas_seq order (each exactly once), and after a reconnect resumes from the
 * last applied canvas_seq and resends every unacknowledged mutation with the same client_op_id (the
 * server applies an op at most once per client_op_id, and answers a repeat with its original
 * result as a `duplicate` ack). canvas_seq numbers the canvas's operations 1, 2, 3, … without
 * gaps, so a delta that is not the last applied + 1 shows that something was missed: it is not
 * applied; the client asks for everything after its last one (`resume` with since_canvas_seq) on
 * the same socket, and drops the socket if that replay does not arrive within `resumeTimeoutMs`.
 *
 * Network loss is routine, never an error: the client holds at most one socket at a time (a
 * replaced socket is torn down and its late events are ignored), schedules exactly one reconnect
 * per loss, with exponential backoff, jitter and a cap, drops a socket that is not live within
 * `resumeTimeoutMs` or that goes silent (heartbeat), and sends only on an OPEN socket. Nothing it
 * does on network loss throws or leaves a rejected promise behind.
 *
 * Collaborative text: editText / textOf / onText keep a content key's text with operational
 * transformation (text-ot.ts: local edits show at once, one op in flight per text, remote edits
 * transformed past the pending ones; the server's text wins).
 *
 * Presence: setPresence() keeps the latest H1 `presence` frame and sends it when live, paced with
 * the mutations, and again after every reconnect (the server announced this user's leave when the
 * old socket closed); others' `presence` / `presence_leave` frames go to `onPresence`.
 *
 * Runtime-neutral: pass any WHATWG-style WebSocket constructor (browser, Deno, Node 22, or `ws`).
 */
export type WebSocketLike = {
  readyState: number;
  send(data: string): void;
  close(): void;
  /**
   * Optional immediate teardown without a closing handshake (the `ws` package has it). Used,
   * when present, to drop a socket whose path may be dead, where close() could wait a long time.
   */
  terminate?(): void;
  onopen: SocketHandler<unknown> | null;
  /** `code` is the WebSocket close code (4403 / 4404: access lost; 4401: token expired or user deleted, reconnected with token() asked for a fresh one; 4429: too many frames, see protocol.ts). */
  onclose: SocketHandler<{ code?: number; reason?: string }> | null;
  /** `data` is one frame's text. */
  onmessage: SocketHandler<{ data: unknown }> | null;
  onerror: SocketHandler<unknown> | null;
};

/**
 * An event handler slot of a WebSocket. Checked bivariantly (method syntax), so that the handler
 * types of the browser's WebSocket and of `ws` (which take their own event classes) fit.
 */
export type SocketHandler<E> = { bivarianceHack(ev: E): void }['bivarianceHack'];

/** A WebSocket class: `new WebSocket(url)` (globalThis.WebSocket in browsers, Deno and Node 22+; the `ws` package in Node 20). */
export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** One block operation as H1 `mutate` carries it (docs/mutations.md), without its client_op_id. */
export type Mutation = {
  action: 'create' | 'update' | 'move' | 'delete';
  block_id?: string | null;
  base_version?: number | null;
  patch?: Record<string, unknown>;
};

/** How the server answered a mutation: applied (`ack`), stale and clashing (`conflict`) or refused (`rejected`). */
export type MutationOutcome = AckMessage | ConflictMessage | RejectedMessage;

/**
 * A change of one text (block `blockId`, content key `key`, see CanvasSync.editText): `text` is
 * the local text now. `source`: `local` (editText; `op` is the edit), `remote` (someone's edit,
 * `op` transformed past this client's pending edits: apply it to the previous local text, and
 * move cursors with transformPosition/transformSelection from text-ot.ts), `reset` (the text was
 * replaced by the server's, `op` null: cursors cannot follow; `lost` holds the pending local
 * edits that were dropped, if any — a conflict, a wholesale set of the key, a rejection, the
 * block's deletion, or a snapshot resync).
 */
export type TextChange = {
  blockId: string;
  key: string;
  text: string;
  op: TextOp | null;
  source: 'local' | 'remote' | 'reset';
  lost?: TextLoss;
};

/** How to reach the canvas, and the callbacks of a CanvasSync. */
export type CanvasSyncOptions = {
  /** http(s):// or ws(s):// base of the Potentia server. */
  url: string;
  canvasId: string;
  /**
   * Current access token (called on every (re)connect). `refused` is the token the server just
   * refused (it closed the socket with 4401: expired by the server's clock, or ended): return a
   * fresh one (refresh the session; createPotentiaClient's does, once). Passed for the first 4401
   * after the client was live only, so a server refusing every token cannot make token() refresh
   * in a loop: later reconnects ask token() without it until the client is live again.
   */
  token: (refused?: string) => string | Promise<string>;
  WebSocket: WebSocketConstructor;
  /**
   * Delay before reconnect attempt `attempt` (0 for the first after a loss; the count restarts
   * once the client is live again). Default: `defaultReconnectDelayMs` (backoff.ts), with `random`.
   */
  reconnectDelayMs?: (attempt: number) => number;
  /**
   * Uniform random numbers in [0, 1) for the jitter of the default reconnect delay and of a
   * refused resume sent again (the server's retry_after_ms plus a random point of the backoff's
   * step). Default Math.random; a seeded source makes the delays reproducible (tests, simulations).
   */
  random?: () => number;
  /**
   * A connection attempt not live (`resumed` received) this long after it began (token(),
   * connect, replay) is given up and retried: a socket that opens but stalls is dropped. Default 10 000.
   */
  resumeTimeoutMs?: number;
  /**
   * Liveness of a live socket: after this long without any frame from the server (or without
   * sending any itself) the client sends a `ping`; after twice this long without a frame from the
   * server it drops the socket as dead and reconnects. 0 turns the heartbeat off. Default 15 000.
   */
  heartbeatMs?: number;
  /**
   * Messages sent per second and socket at most (bursts up to the same number): the server's
   * per-socket limit (10 by default), which counts every message (`resume`, `mutate`, `presence`,
   * `ping`; not the resume of the URL), so that a backlog resent after a reconnect is paced rather
   * than answered with `rate_limited` frames (which are still handled: the op is resent later).
   * The pacing mirrors the server's bucket (pacing.ts).
   */
  messagesPerSecond?: number;
  /**
   * The state after each change: `delta` null for a whole new state (a snapshot). A snapshot in
   * several parts is told once, at `resumed`, when the replay after it brought the blocks written
   * while it was read (the deltas of that replay are not told one by one).
   */
  onChange?: (blocks: ReadonlyMap<string, Block>, delta: DeltaMessage | null) => void;
  /** Every change of a text edited through editText (before onChange of the same delta). See TextChange. */
  onText?: (change: TextChange) => void;
  /**
   * Errors the client cannot act on: a throwing `onChange` or `token()`, a CanvasAccessLostError,
   * an `error` frame nothing awaits (PotentiaError with its code and field), a frame it cannot read
   * (PotentiaError `invalid_message`: the socket is reconnected). Default: console.error.
   */
  onError?: (err: unknown) => void;
  /** The server's `hello` on each socket: the user and whether it may write. */
  onHello?: (hello: HelloMessage) => void;
  /** The write right changed while connected (`access`). */
  onAccess?: (access: AccessMessage) => void;
  /** Someone else's presence (`presence`), or their leaving (`presence_leave`). */
  onPresence?: (event: PresenceEvent) => void;
  /** The client became live (caught up, deltas flowing: true) or lost its socket (false). */
  onLive?: (live: boolean) => void;
};

const OPEN = 1;
const CLOSED = 3;
/** Close codes of a socket whose user lost access (h1-protocol.ts): reconnecting would be refused. */
const CLOSE_FORBIDDEN = 4403;
const CLOSE_NOT_FOUND = 4404;
/** Close code of a socket whose access token the server no longer takes (h1-protocol.ts H1_CLOSE_UNAUTHORIZED). */
const CLOSE_UNAUTHORIZED = 4401;
/** Close code of a socket that sent frames faster than the server's bound (h1-protocol.ts H1_CLOSE_FRAME_RATE). */
const CLOSE_FRAME_RATE = 4429;
/**
 * The backoff step a reconnect after a 4429 close starts from: the cap (2.5 to 5 s with the
 * default), however live the closed socket was, so a client that keeps flooding reconnects once
 * every few seconds rather than as soon as it can.
 */
const FRAME_RATE_ATTEMPT = 5;
/** How long a replaced socket may take to report `close` before the next one is made anyway. */
const RETIRE_WAIT_MS = 5000;
/** Resend delay after an `internal`/`unavailable` error that carries no `retry_after_ms`. */
const RESEND_DEFAULT_MS = 500;
/** Refusals of a mutation that say "not now" rather than "never": it is sent again (same client_op_id). */
const RETRY_CODES = new Set(['rate_limited', 'timeout', 'unavailable']);
const noop = () => {};
/** A resend delay: the server's (ms, at most a minute), else RESEND_DEFAULT_MS. */
const resendDelay = (ms: number | undefined): number =>
  typeof ms === 'number' && Number.isFinite(ms) && ms > 0 ? Math.min(ms, 60_000) : RESEND_DEFAULT_MS;

/**
 * The server ended the socket because the user lost access to the canvas (`forbidden`: removed
 * from it; `not_found`: the canvas was deleted). The client stops as after close(); it is passed
 * to `onError` and rejects waiting join()/ready() calls. The same class as AccessLostError.
 */
export const CanvasAccessLostError = AccessLostError;
/** See the constant of the same name. */
export type CanvasAccessLostError = AccessLostError;

/** An unanswered mutation: `sent` on the current socket; `everSent` on any socket so far (it may have reached the server). */
type Pending = { id: string; frame: string; resolvers: Array<(o: MutationOutcome) => void>; sent: boolean; everSent: boolean };
type Timer = ReturnType<typeof setTimeout>;
type TimerName = 'reconnectTimer' | 'resumeTimer' | 'heartbeatTimer' | 'resendTimer' | 'retireTimer' | 'resumeRetryTimer';

/**
 * The H1 sync engine of one canvas (see the top of this file). `blocks` is the server's state as of
 * `canvasSeq`; mutate() sends with exactly-once resends; editText() does text OT. Low-level:
 * applications use Canvas (canvas.ts), which adds optimistic state, a block tree and presence.
 */
export class CanvasSync {
  readonly blocks = new Map<string, Block>();
  /** Highest server_seq applied. */
  seq = 0;
  /** Highest canvas_seq applied: the next delta must carry canvasSeq + 1. */
  canvasSeq = 0;
  /** A gap was seen and a resume sent on the current socket; deltas wait for its replay. */
  private resyncing = false;
  private hasSnapshot = false;
  /** The snapshot part expected next (parts after 0 add to the state; SnapshotMessage). */
  private snapshotNext = 0;
  /**
   * A snapshot came in several parts: the state lacks the blocks changed while they were read
   * until the replay after them is applied, so onChange waits for `resumed` and then tells it once.
   */
  private wholeAtResumed = false;
  /** The one socket whose events count; every other socket's events are ignored. */
  private ws: WebSocketLike | null = null;
  /** A replaced socket not yet closed: no new socket is made until it is (or RETIRE_WAIT_MS passed). */
  private retiring: WebSocketLike | null = null;
  private live = false;
  private started = false;
  private closed = false;
  /** Waiting for token() before making a socket. */
  private connecting = false;
  /** Reconnect attempts since the client was last live (the backoff step). */
  private attempt = 0;
  /** Identifies the current connection attempt, so that a late answer of an abandoned one is ignored. */
  private attemptId = 0;
  /** The HTTP status of the last upgrade refusal reported since the client was last live (reportRefusedUpgrade). */
  private refusedStatus: number | null = null;
  private lastFrameAt = 0;
  private lastSentAt = 0;
  private pingSentAt = 0;
  /** The mirror of the server's per-socket message bucket (pacing.ts): every message sent takes a token (fresh for each socket). */
  private pacer = new MessagePacer(10);
  /** A `resume` message is to go out on the current socket: the first of a join, a gap's, a refused one's again. Sent first by flush(). */
  private resumeDue = false;
  private reconnectTimer: Timer | null = null;
  private resumeTimer: Timer | null = null;
  private heartbeatTimer: Timer | null = null;
  private resendTimer: Timer | null = null;
  /** A resume the server dropped (`rate_limited`), asked again on the same socket after its delay. */
  private resumeRetryTimer: Timer | null = null;
  /** Resumes sent again on the current socket since it was last answered `resumed` (their jitter's backoff step). */
  private resumeRetries = 0;
  /** The jitter's random source (option `random`; read at each draw). */
  private readonly random = (): number => (this.opts.random ?? Math.random)();
  /** The token of the current socket (as given to open()). */
  private socketToken: string | null = null;
  /** The token a socket was closed 4401 with, for the next token() call; null once asked. */
  private refusedToken: string | null = null;
  /** Whether a 4401 has been handed to token() since the client was last live (at most one is). */
  private refusalHandled = false;
  /** No mutation is sent before this (monotonicNow() ms): the user's mutation limit said "not now" (backOff). */
  private holdMutationsUntil = 0;
  /** Nothing is sent by flush() before this: the socket's message limit, or a fault, said "not now" (backOff). */
  private holdAllUntil = 0;
  /** Shared "not now" holds in a row since an op was last answered (the jitter's backoff step: backOff). */
  private sharedHolds = 0;
  private retireTimer: Timer | null = null;
  private readonly pending = new Map<string, Pending>();
  /** Text OT state per block and content key (made by the first editText of that text). */
  private readonly texts = new Map<string, Map<string, TextOtClient>>();
  private readonly readyWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];
  /** client_op_ids this client sent whose delta has not been seen yet (isOwn). */
  private readonly issued = new Set<string>();
  /** The latest presence frame (sent again after every reconnect) and whether it still has to go out. */
  private presenceFrame: string | null = null;
  private presenceDue = false;

  /** Throws a TypeError naming the option when `token` is not a function (a token string is the usual slip). */
  constructor(private readonly opts: CanvasSyncOptions) {
    // checked here: called only at connect time, a string would fail on every reconnect while join() waits forever
    if (typeof opts.token !== 'function') {
      throw new TypeError(`CanvasSync: the token option must be a function returning the current access token (e.g. token: () => accessToken), got ${typeof opts.token}`);
    }
  }

  /**
   * Connects and resolves once the state is caught up (snapshot + replay) and live. Connection
   * failures, refused upgrades included, are retried (backoff; token() is asked again each time)
   * rather than reported: join() waits until the client is live, and rejects only if the client
   * ends before that (close(), or a CanvasAccessLostError). `options.signal` ends a join that is
   * not live yet: it rejects with AbortError (code `aborted`) and the client is closed, as by
   * close() (its socket closed, its timers cleared); an already-aborted signal rejects and starts
   * nothing. Once live, the signal ends nothing.
   */
  join(options: { signal?: AbortSignal } = {}): Promise<void> {
    const { signal } = options;
    if (this.closed) return Promise.reject(new Error('CanvasSync is closed'));
    if (signal?.aborted) return Promise.reject(abortedBy('join', signal));
    this.started = true;
    this.connect();
    return this.waitLive('join', signal, true);
  }

  /**
   * Resolves once the client is live (at once if it is); rejects only if the client ends first.
   * `options.signal` stops this wait (AbortError, code `aborted`); the client goes on.
   */
  ready(options: { signal?: AbortSignal } = {}): Promise<void> {
    return this.waitLive('ready', options.signal, false);
  }

  /** A wait until live; `signal` ends it (and the client, with `closeOnAbort`), its listener removed however the wait ends. */
  private waitLive(what: string, signal: AbortSignal | undefined, closeOnAbort: boolean): Promise<void> {
    if (this.closed) return Promise.reject(new Error('CanvasSync is closed'));
    if (signal?.aborted) return Promise.reject(abortedBy(what, signal));
    if (this.live) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const at = this.readyWaiters.indexOf(waiter);
        if (at < 0) return; // settled meanwhile
        this.readyWaiters.splice(at, 1);
        reject(abortedBy(what, signal!));
        if (closeOnAbort) this.close();
      };
      const waiter = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (err: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.readyWaiters.push(waiter);
    });
  }

  /**
   * Sends a mutation; resolves with its ack, conflict or rejection, exactly once, however many
   * reconnects it takes (unacknowledged mutations are resent with the same client_op_id). A
   * mutation made while offline is sent once live. A refusal that says "not now" (`rate_limited`:
   * the user's mutations per minute, docs/limits.md; `timeout`, `unavailable`) is not an outcome:
   * the mutation is resent after the server's `retry_after`. It never rejects (only if the client
   * has ended); one still pending when the client ends never settles (its outcome is unknown: a
   * later client may resend the same client_op_id to learn it). Resolves at once as `rejected`,
   * nothing sent: a patch JSON cannot carry (invalid_input naming the field, e.g.
   * `patch.content.count` for NaN: json-value.ts), or a `clientOpId` still pending for another
   * operation (another action or block; invalid_input on client_op_id).
   */
  mutate(op: Mutation, clientOpId: string = globalThis.crypto.randomUUID()): Promise<MutationOutcome> {
    if (this.closed) return Promise.reject(new Error('CanvasSync is closed'));
    return new Promise((resolve) => {
      const refuse = (field: string, message: string) =>
        resolve({ type: 'rejected', client_op_id: clientOpId, error: { code: 'invalid_input', field, message } });
      // the frame is {…, patch}: the patch sits one level down
      const patch = encodeJson(op.patch ?? {}, 'patch', MESSAGE_MAX_DEPTH - 1);
      if (!('text' in patch)) return refuse(patch.field, patch.message);
      const head = encodeJson({ type: 'mutate', client_op_id: clientOpId, ...op, patch: undefined }, 'message');
      if (!('text' in head)) return refuse(head.field, head.message);
      const frame = `${head.text.slice(0, -1)},"patch":${patch.text}}`;
      const known = this.pending.get(clientOpId);
      if (known) {
        // the same op twice (action and block, as the server compares them): one send, both
        // callers get its outcome
        const first = JSON.parse(known.frame) as { action?: unknown; block_id?: unknown };
        if (first.action === op.action && (first.block_id ?? null) === (op.block_id ?? null)) {
          known.resolvers.push(resolve);
          return;
        }
        // another op under a pending id: folded into the first, it would get the first's outcome
        // (the server refuses the same reuse once the first applied: docs/mutations.md)
        return refuse('client_op_id', `client_op_id ${clientOpId} is pending for another operation: give each operation a client_op_id of its own`);
      }
      this.pending.set(clientOpId, { id: clientOpId, frame, resolvers: [resolve], sent: false, everSent: false });
      this.issued.add(clientOpId);
      this.flush();
    });
  }

  /**
   * Takes back the pending mutation `clientOpId` if it has not gone out on any socket yet (made
   * offline or before join(), paced, waiting for the socket): it will never be sent, and its
   * mutate() promises resolve as `rejected` with code `aborted`. Returns true then; false when it
   * is not pending (answered, or unknown) or was sent at least once: a sent mutation cannot be
   * taken back (H1 has no cancel; the server may apply it), so it stays pending and is resent
   * with its client_op_id until answered, applied at most once. Canvas's `signal` and
   * `timeoutMs` options use this.
   */
  withdraw(clientOpId: string): boolean {
    const p = this.pending.get(clientOpId);
    if (!p || p.everSent) return false;
    this.pending.delete(clientOpId);
    this.issued.delete(clientOpId);
    const outcome: MutationOutcome = { type: 'rejected', client_op_id: clientOpId, error: { code: 'aborted', message: 'taken back before it was sent' } };
    for (const resolve of p.resolvers) resolve(outcome);
    return true;
  }

  /**
   * Whether `clientOpId` was sent by this client (mutate, editText) and its delta is the one being
   * applied or still to come: true inside onChange for the delta of one's own operation.
   */
  isOwn(clientOpId: string | null | undefined): boolean {
    return typeof clientOpId === 'string' && this.issued.has(clientOpId);
  }

  /**
   * Sets this user's presence: `cursor` (a JSON object of at most 1 KB, or null) and `typing`,
   * sent as an H1 `presence` frame once live (only the latest is kept while offline or paced) and
   * again after each reconnect; null stops resending it. Throws PotentiaError `invalid_input`
   * (field `cursor.<key>`) for a value JSON cannot carry (NaN, a BigInt, a Map: json-value.ts).
   * Pace calls yourself (a few per second): each one is a message of the socket's 10 per second.
   */
  setPresence(presence: { cursor: Record<string, unknown> | null; typing: boolean } | null): void {
    if (this.closed) return;
    let frame: string | null = null;
    if (presence) {
      const encoded = encodeJson({ type: 'presence', cursor: presence.cursor, typing: presence.typing }, 'message');
      if (!('text' in encoded)) throw new PotentiaError('invalid_input', encoded.message, encoded.field.replace(/^message\./, ''));
      frame = encoded.text;
    }
    this.presenceFrame = frame;
    this.presenceDue = this.presenceFrame !== null;
    this.flush();
  }

  /**
   * Edits the text under content key `key` of block `blockId` with a text-unicode op (npm
   * ot-text-unicode: n skips n code points, "str" inserts, {d: n} deletes n code points) on its
   * local text (textOf). Returns the new local text. Throws, changing nothing, if the block is not
   * known (no snapshot yet, or deleted), the client has ended, or the op does not fit the text.
   *
   * The edit shows at once locally; it is sent as `{action: 'update', base_version, patch:
   * {text: {[key]: op}}}` through mutate() (queued while offline, resent with the same
   * client_op_id after a reconnect), at most one op in flight per text: edits made meanwhile
   * are composed and sent when the in-flight op's delta comes back. Remote edits are transformed
   * past the pending ones (text-ot.ts); the server's text wins in the end. Pending edits are
   * dropped, reported through onText with `source: 'reset'` and `lost`, when the server cannot
   * merge them: the key was set as a whole (`content`) since they were made (the delta or a
   * `conflict` answer shows it), the log lost their base (`rebase_required`), the op was
   * rejected, the block was deleted, or a snapshot replaced the state. A rate limit or database
   * timeout is not a loss: the op is sent again after the delay the server names.
   */
  editText(blockId: string, key: string, op: TextOp): string {
    if (this.closed) throw new Error('CanvasSync is closed');
    const client = this.textFor(blockId, key);
    if (!client) throw new Error(`block ${blockId} is not known`);
    const send = client.applyLocal(op);
    this.emitText({ blockId, key, text: client.text, op, source: 'local' });
    if (send) this.sendText(blockId, key, send);
    return client.text;
  }

  /** The local text under content key `key` (the server's with this client's pending edits); undefined for an unknown block. */
  textOf(blockId: string, key: string): string | undefined {
    const client = this.texts.get(blockId)?.get(key);
    if (client) return client.text;
    const block = this.blocks.get(blockId);
    return block ? textIn(block, key) : undefined;
  }

  /**
   * The OT state of a text edited through editText (state, version, serverText, inflight,
   * pending), for inspection: edit through editText only. Undefined before the first edit.
   */
  textClient(blockId: string, key: string): Readonly<TextOtClient> | undefined {
    return this.texts.get(blockId)?.get(key);
  }

  /** The OT state of a text, made from the block as last seen if there is none yet. */
  private textFor(blockId: string, key: string): TextOtClient | undefined {
    const existing = this.texts.get(blockId)?.get(key);
    if (existing) return existing;
    const block = this.blocks.get(blockId);
    if (!block) return undefined;
    const client = new TextOtClient(textIn(block, key), block.version);
    let keys = this.texts.get(blockId);
    if (!keys) this.texts.set(blockId, (keys = new Map()));
    keys.set(key, client);
    return client;
  }

  /** Sends a text op; its answer matters only if it is a refusal (the delta acknowledges it). */
  private sendText(blockId: string, key: string, send: TextSend): void {
    const op: Mutation = { action: 'update', block_id: blockId, base_version: send.baseVersion, patch: { text: { [key]: send.op } } };
    this.mutate(op, send.clientOpId).then((outcome) => {
      try {
        this.onTextOutcome(blockId, key, send, outcome);
      } catch (err) {
        this.report(err);
      }
    }, noop); // rejects only once the client has ended: nothing left to do
  }

  private onTextOutcome(blockId: string, key: string, send: TextSend, outcome: MutationOutcome): void {
    const client = this.texts.get(blockId)?.get(key);
    if (!client || client.inflight?.clientOpId !== send.clientOpId || outcome.type === 'ack') return;
    const receipt = outcome.type === 'conflict'
      ? client.fail(send.clientOpId, { reason: outcome.code === 'rebase_required' ? 'rebase_required' : 'conflict', block: outcome.block, version: outcome.version, message: outcome.message }, key)
      : client.fail(send.clientOpId, { reason: 'rejected', message: `${outcome.error.code}: ${outcome.error.message}` }, key);
    if (receipt) this.afterText(blockId, key, client, receipt);
  }

  /** Notifies a text change and sends what the OT state says to send. */
  private afterText(blockId: string, key: string, client: TextOtClient, receipt: TextReceipt): void {
    if (client.deleted) this.texts.get(blockId)?.delete(key);
    if (this.texts.get(blockId)?.size === 0) this.texts.delete(blockId);
    if (receipt.op) this.emitText({ blockId, key, text: client.text, op: receipt.op, source: 'remote' });
    else if (receipt.reset) this.emitText({ blockId, key, text: client.text, op: null, source: 'reset', ...(receipt.lost ? { lost: receipt.lost } : {}) });
    if (receipt.send) this.sendText(blockId, key, receipt.send);
  }

  /** Hands a delta to the OT state of the texts it concerns; null: a snapshot just replaced every block. */
  private textsSee(delta: DeltaMessage | null): void {
    if (this.texts.size === 0) return;
    const ids = !delta ? [...this.texts.keys()] : delta.action === 'delete' ? [delta.block_id, ...(delta.deleted_ids ?? [])] : [delta.block_id];
    for (const id of ids) {
      const keys = this.texts.get(id);
      if (!keys) continue;
      for (const [key, client] of [...keys]) {
        try {
          const block = this.blocks.get(id) ?? null;
          const receipt = delta ? client.receive(delta, key) : client.resync(block, key);
          this.afterText(id, key, client, receipt);
        } catch (err) {
          this.report(err);
        }
      }
    }
  }

  private emitText(change: TextChange): void {
    try {
      this.opts.onText?.(change);
    } catch (err) {
      this.report(err);
    }
  }

  /** Closes for good: cancels every timer, closes the socket, rejects waiting join()/ready() calls. */
  close(): void {
    this.end(new Error('CanvasSync closed before it was live'));
  }

  private end(reason: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.live = false;
    for (const t of ['reconnectTimer', 'resumeTimer', 'heartbeatTimer', 'resendTimer', 'retireTimer', 'resumeRetryTimer'] as const) this.clearTimer(t);
    const ws = this.ws;
    this.ws = null;
    if (ws) this.retire(ws, ws.readyState === OPEN ? 'graceful' : 'now');
    for (const w of this.readyWaiters.splice(0)) w.reject(reason);
  }

  /** The server closed the socket for lost access: reconnecting would be refused, so the client ends. */
  private accessLost(ws: WebSocketLike, code: 'forbidden' | 'not_found', message: string): void {
    if (this.ws !== ws) return;
    const err = new AccessLostError(code, message);
    this.end(err);
    this.report(err);
  }

  /** Drops the connection as a network failure would (tests, or a suspected dead socket); reconnects. */
  drop(): void {
    if (this.ws) this.lost(this.ws);
  }

  /** Starts one connection attempt, unless one is under way, due, or waiting for an old socket to close. */
  private connect(): void {
    if (this.closed || !this.started || this.ws || this.connecting || this.reconnectTimer || this.retiring) return;
    this.connecting = true;
    const attempt = ++this.attemptId;
    // the whole attempt (token, connect, replay) must end live in time, or it is given up
    this.resumeTimer = setTimeout(() => {
      this.resumeTimer = null;
      if (attempt !== this.attemptId) return;
      if (this.connecting) {
        this.attemptId++; // a late token() answer is ignored
        this.connecting = false;
        this.report(new Error('token() did not answer within resumeTimeoutMs'));
        this.scheduleReconnect();
      } else if (this.ws && !this.live) {
        this.lost(this.ws);
      }
    }, this.opts.resumeTimeoutMs ?? 10_000);
    let token: Promise<string>;
    const refused = this.refusedToken;
    this.refusedToken = null;
    try {
      token = Promise.resolve(refused === null ? this.opts.token() : this.opts.token(refused));
    } catch (err) {
      token = Promise.reject(err);
    }
    token.then(
      (t) => {
        if (attempt !== this.attemptId || this.closed) return;
        this.connecting = false;
        this.open(t);
      },
      (err) => {
        if (attempt !== this.attemptId || this.closed) return;
        this.connecting = false;
        this.clearTimer('resumeTimer');
        this.report(err);
        this.scheduleReconnect();
      },
    );
  }

  private open(token: string): void {
    if (this.closed) return;
    const base = this.opts.url.replace(/^http/, 'ws').replace(/\/+$/, '');
    const query = this.hasSnapshot ? `&since_canvas_seq=${this.canvasSeq}` : '';
    let ws: WebSocketLike;
    try {
      ws = new this.opts.WebSocket(`${base}/ws/canvas/${encodeURIComponent(this.opts.canvasId)}?access_token=${encodeURIComponent(String(token))}&snapshot_parts=1${query}`);
    } catch (err) {
      this.clearTimer('resumeTimer');
      this.report(err);
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.socketToken = String(token);
    this.live = false;
    this.lastFrameAt = monotonicNow();
    this.pacer = new MessagePacer(this.rate());
    this.resumeDue = false;
    this.resumeRetries = 0;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      // with since_seq in the URL the server resumes by itself; the first join asks for the snapshot
      if (this.ws !== ws || this.hasSnapshot) return;
      this.sendResume();
    };
    ws.onmessage = (ev) => {
      if (this.ws === ws) this.onFrame(ws, ev?.data);
    };
    ws.onerror = (ev) => {
      if (this.ws === ws && !opened) this.reportRefusedUpgrade(`${base}/ws/canvas/${encodeURIComponent(this.opts.canvasId)}`, ev);
      this.lost(ws);
    };
    ws.onclose = (ev) => {
      const code = ev?.code;
      if (code === CLOSE_FORBIDDEN) this.accessLost(ws, 'forbidden', 'you no longer have access to this canvas');
      else if (code === CLOSE_NOT_FOUND) this.accessLost(ws, 'not_found', 'this canvas was deleted');
      else if (code === CLOSE_FRAME_RATE) this.frameRateClosed(ws, ev?.reason);
      else if (code === CLOSE_UNAUTHORIZED) this.tokenRefused(ws);
      else this.lost(ws);
    };
  }

  /**
   * The server closed the socket for its token (4401: expired by the server's clock, however the
   * client's clock runs, or its user deleted): reconnected as after any loss, and the next
   * token() call is given the refused token, so that it is replaced rather than sent again (it
   * used to be: refused at every reconnect until the session's own refresh timer fired, or the
   * canvas's access check ended it `unauthorized`). Once per run of losses (refusalHandled).
   */
  private tokenRefused(ws: WebSocketLike): void {
    if (this.ws !== ws) return;
    if (!this.refusalHandled && this.socketToken !== null) {
      this.refusalHandled = true;
      this.refusedToken = this.socketToken;
    }
    this.lost(ws);
  }

  /**
   * A socket whose upgrade the server answered with an HTTP status instead of a WebSocket (the
   * `ws` package says `Unexpected server response: 404`; browsers give no status, and a server
   * that does not answer at all is network loss, waited for in silence): reported as PotentiaError
   * `socket_refused` with that status, once per status until the client is live again, since it
   * is retried like any loss (a 503 or 429 passes; a 404 from a process that serves no /ws/, a
   * `--role api` one or a proxy that does not route it to the gateways, never does, and join()
   * waited without a word). The URL is named without its token.
   */
  private reportRefusedUpgrade(socketUrl: string, ev: unknown): void {
    const message = (ev as { message?: unknown } | null)?.message;
    const status = Number(/Unexpected server response: (\d{3})/.exec(typeof message === 'string' ? message : '')?.[1]);
    if (!status || status === this.refusedStatus) return;
    this.refusedStatus = status;
    const why = status === 404
      ? 'no canvas of yours has this id, or no realtime gateway serves /ws/ at this URL (a --role api process, a proxy that does not route /ws/ to the gateways: docs/self-hosting.md)'
      : status === 401 ? 'the access token was refused' : status === 403 ? 'you may not read this canvas'
        : status === 503 ? 'its realtime gateway is starting or not serving yet (the server\'s log and GET /ready say why)' : 'the server refused it for now';
    this.report(new PotentiaError('socket_refused', `the server answered the canvas socket ${socketUrl} with HTTP ${status} instead of a WebSocket: ${why}; retrying`, undefined, status));
  }

  /**
   * The resume that (re)starts the stream: from the last canvas_seq applied, or, before the first
   * snapshot, from a snapshot.
   */
  private resumeFrame(): string {
    return JSON.stringify(this.hasSnapshot ? { type: 'resume', since_canvas_seq: this.canvasSeq } : { type: 'resume', since_seq: 0, snapshot: true });
  }

  /**
   * The server closed the socket for sending frames faster than its bound (4429): more than this
   * client sends with its default pacing (messagesPerSecond above the server's?). Reported, and
   * reconnected as after any loss, but from the backoff's cap: reconnecting at once, a client that
   * floods again would be closed again, over and over.
   */
  private frameRateClosed(ws: WebSocketLike, reason: unknown): void {
    if (this.ws !== ws) return;
    this.attempt = Math.max(this.attempt, FRAME_RATE_ATTEMPT);
    this.report(new PotentiaError('rate_limited', `the server closed the socket for sending too many frames (${String(reason ?? 'FrameRateLimitReached')}): reconnecting after a backoff`));
    this.lost(ws);
  }

  /**
   * A resume the server dropped as `rate_limited` (the socket's message rate, or the user's
   * snapshot limit): sent again on the same socket after the server's delay, once, however many
   * refusals came meanwhile. The server answered, so the socket is not stalled: the time it has
   * to become live (resumeTimeoutMs) starts again from the resend. To the server's delay a random
   * point of the backoff's step is added (full jitter, backoff.ts: up to 250 ms, then 500 ms, …
   * for each refusal in a row): tabs refused together (a limit, a gateway restart) asked again
   * together, at the same millisecond, and were refused together again. The step stops growing
   * at the server's delay, the limit's window: a step longer than it leaves windows no tab asks
   * in, unused (10 tabs of one user at one snapshot a second, simulated 2,000 times: the last
   * live after 11.6 s at the median and over 15 s in 9 % of joins with the 5 s cap; 9.9 s, and
   * at most 13.2 s, with this one).
   */
  private retryResume(ws: WebSocketLike, afterMs: number | undefined): void {
    if (this.resumeRetryTimer) return;
    const serverMs = resendDelay(afterMs);
    const delay = serverMs + fullJitterMs(this.resumeRetries++, this.random, serverMs);
    this.resumeRetryTimer = setTimeout(() => {
      this.resumeRetryTimer = null;
      if (this.ws !== ws || (this.live && !this.resyncing)) return;
      this.clearTimer('resumeTimer');
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = null;
        if (this.ws === ws && (!this.live || this.resyncing)) this.lost(ws);
      }, this.opts.resumeTimeoutMs ?? 10_000);
      this.sendResume();
    }, delay);
  }

  /** The one place a socket is given up: only the current socket counts, so this runs once per loss. */
  private lost(ws: WebSocketLike): void {
    if (this.ws !== ws) return;
    this.ws = null;
    this.live = false;
    this.resyncing = false; // the next socket resumes from canvasSeq anyway
    this.resumeDue = false;
    for (const t of ['resumeTimer', 'heartbeatTimer', 'resendTimer', 'resumeRetryTimer'] as const) this.clearTimer(t);
    for (const p of this.pending.values()) p.sent = false; // resent once live again
    this.presenceDue = this.presenceFrame !== null; // the server announced our leave: say it again
    this.retire(ws, 'now');
    this.scheduleReconnect();
    this.emitLive(false);
  }

  private emitLive(live: boolean): void {
    try {
      this.opts.onLive?.(live);
    } catch (err) {
      this.report(err);
    }
  }

  /**
   * Detaches a socket (its late events do nothing; its `error` stays handled, as `ws` throws an
   * unhandled one) and closes it; the next socket waits for its `close`, so two never overlap.
   */
  private retire(ws: WebSocketLike, how: 'now' | 'graceful'): void {
    ws.onopen = noop;
    ws.onmessage = noop;
    ws.onerror = noop;
    if (ws.readyState === CLOSED) {
      ws.onclose = noop;
      return;
    }
    this.retiring = ws;
    const done = () => {
      if (this.retiring !== ws) return;
      this.retiring = null;
      this.clearTimer('retireTimer');
      this.connect();
    };
    ws.onclose = done;
    if (!this.closed) this.retireTimer = setTimeout(done, RETIRE_WAIT_MS);
    try {
      if (how === 'now' && typeof ws.terminate === 'function') ws.terminate();
      else ws.close();
    } catch {
      // a runtime that throws on close of a half-made socket: it is unusable either way
    }
  }

  /** At most one reconnect is ever due. */
  private scheduleReconnect(): void {
    if (this.closed || this.reconnectTimer) return;
    const attempt = this.attempt++;
    let delay = this.opts.reconnectDelayMs ? this.opts.reconnectDelayMs(attempt) : defaultReconnectDelayMs(attempt, this.random);
    if (!Number.isFinite(delay) || delay < 0) delay = 0;
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delay);
  }

  private clearTimer(name: TimerName): void {
    const t = this[name];
    if (t !== null) clearTimeout(t);
    this[name] = null;
  }

  /** Sends on `ws` only if it is the current socket and OPEN; never throws. */
  private sendOn(ws: WebSocketLike, frame: string): boolean {
    if (this.ws !== ws || ws.readyState !== OPEN) return false;
    try {
      ws.send(frame);
      this.lastSentAt = monotonicNow();
      return true;
    } catch {
      this.lost(ws); // a socket that cannot send is of no use; reconnect
      return false;
    }
  }

  private rate(): number {
    const r = this.opts.messagesPerSecond ?? 10;
    return Number.isFinite(r) && r > 0 ? r : 10;
  }

  /**
   * Sends one message on `ws` if the pacer has a token for it (the server takes one for every
   * message: pacing.ts): 0 when sent, else the milliseconds until a token (nothing sent); null when
   * `ws` cannot send (not the current socket, not open, or it failed: lost). Every message goes
   * through here, so the mirror counts each one the server counts.
   */
  private sendPaced(ws: WebSocketLike, frame: string): number | null {
    if (this.ws !== ws || ws.readyState !== OPEN) return null;
    const wait = this.pacer.take();
    if (wait > 0) return wait;
    return this.sendOn(ws, frame) ? 0 : null;
  }

  /**
   * A resume is to go out on the current socket: first of all that waits for a token, so paced
   * mutations cannot take every token before it (a gap's resume, sent without a token, was refused
   * again and again while a backlog drained).
   */
  private sendResume(): void {
    this.resumeDue = true;
    this.clearTimer('resendTimer'); // a pass scheduled for a hold (up to a minute) would hold the resume too
    this.flush();
  }

  /**
   * Sends, paced (sendPaced), a due resume (while joining too), then, if live and not backing off
   * after a "not now", unsent pending mutations, then a due presence.
   */
  private flush(): void {
    const ws = this.ws;
    if (!ws || this.resendTimer) return;
    if (this.resumeDue) {
      // not held by backOff: the server's delay for a refused resume is retryResume's; the pacer paces it
      const sent = this.sendPaced(ws, this.resumeFrame());
      if (sent === null) return;
      if (sent > 0) return this.scheduleResend(sent);
      this.resumeDue = false;
    }
    if (!this.live) return;
    const now = monotonicNow();
    if (this.holdAllUntil > now) return this.scheduleResend(this.holdAllUntil - now);
    const heldMutations = this.holdMutationsUntil - now;
    let unsent = false;
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      if (heldMutations > 0) {
        unsent = true;
        break;
      }
      const sent = this.sendPaced(ws, p.frame);
      if (sent === null) return;
      if (sent > 0) return this.scheduleResend(sent);
      p.sent = true;
      p.everSent = true;
    }
    if (this.presenceDue && this.presenceFrame) {
      const sent = this.sendPaced(ws, this.presenceFrame);
      if (sent === null) return;
      if (sent > 0) return this.scheduleResend(sent);
      this.presenceDue = false;
    }
    if (unsent) this.scheduleResend(heldMutations);
  }

  /** One resend pass after `ms` (pacing, or the server's retry_after_ms); one timer at most. */
  private scheduleResend(ms: number | undefined): void {
    if (this.resendTimer) return;
    const delay = resendDelay(ms);
    this.resendTimer = setTimeout(() => {
      this.resendTimer = null;
      this.flush();
    }, delay);
  }
  /**
   * Holds sends back for the server's delay (a "not now" refusal): `mutations` after the user's
   * mutation limit (presence goes on), `all` after the socket's message limit or a fault. A
   * sooner resend pass (pacing) is pushed back to it, and a reconnect meanwhile sends nothing held
   * before it either (the hold outlives the socket), so nothing goes out early only to be refused again.
   * `shared`: the refusal came to others at the same moment too (the user's limit, counted over
   * all their tabs; a fault of the server or its database, for every client), so a new hold adds
   * full jitter of the backoff's step (backoff.ts), the step doubling with each such hold in a row
   * until an op is answered: before, every tab or client resent at the same millisecond when the
   * server's delay ended, and was refused together again. The socket's own message limit is not
   * shared (its bucket is the pacer's mirror) and waits the server's delay alone.
   */
  private backOff(ms: number | undefined, what: 'mutations' | 'all', shared = false): void {
    const now = monotonicNow();
    const holding = (what === 'all' ? this.holdAllUntil : this.holdMutationsUntil) > now;
    const until = now + resendDelay(ms) + (shared && !holding ? fullJitterMs(this.sharedHolds++, this.random) : 0);
    if (what === 'all') this.holdAllUntil = Math.max(this.holdAllUntil, until);
    else this.holdMutationsUntil = Math.max(this.holdMutationsUntil, until);
    this.clearTimer('resendTimer');
    this.flush(); // what is not held goes on (a presence while mutations wait); the rest is scheduled
  }


  private startHeartbeat(ws: WebSocketLike): void {
    const every = this.opts.heartbeatMs ?? 15_000;
    if (!(every > 0)) return;
    this.clearTimer('heartbeatTimer');
    const tick = () => {
      this.heartbeatTimer = null;
      if (this.ws !== ws) return;
      const now = monotonicNow();
      if (now - this.lastFrameAt >= 2 * every) return this.lost(ws);
      // one ping per silence (either side: a server may close a socket that sends nothing)
      const quiet = now - this.lastFrameAt >= every || now - this.lastSentAt >= every;
      // a ping is a message too (paced); none while a resume waits for its token
      if (quiet && this.pingSentAt <= this.lastFrameAt && !this.resumeDue && this.sendPaced(ws, '{"type":"ping"}') === 0) {
        this.pingSentAt = now;
      }
      this.heartbeatTimer = setTimeout(tick, every / 4);
    };
    this.heartbeatTimer = setTimeout(tick, every / 4);
  }

  private settle(clientOpId: string, outcome: MutationOutcome): void {
    const p = this.pending.get(clientOpId);
    if (!p) return; // a late answer to a resend: already settled
    this.pending.delete(clientOpId);
    if (outcome.type !== 'ack') this.issued.delete(clientOpId); // no delta will come
    for (const resolve of p.resolvers) resolve(outcome);
  }

  private emitChange(delta: DeltaMessage | null): void {
    try {
      this.opts.onChange?.(this.blocks, delta);
    } catch (err) {
      this.report(err);
    }
  }

  /** Runs a host callback; what it throws is reported, never let into the socket handling. */
  private callback(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.report(err);
    }
  }

  private report(err: unknown): void {
    try {
      if (this.opts.onError) this.opts.onError(err);
      else console.error('CanvasSync:', err);
    } catch {
      // an error reporter that throws must not break the socket handling
    }
  }

  /**
   * One frame of the current socket, read by readFrame (frames.ts) before anything acts on it: one
   * it cannot read (not JSON, or a known type of the wrong shape) is reported as PotentiaError
   * `invalid_message` and the socket dropped, since what it carried (a delta, an answer) is then
   * owed: the next socket resumes from canvasSeq and resends what is unanswered. Its reconnect
   * starts from the backoff's cap, as after a 4429, so a server that keeps sending such frames is
   * met every few seconds, not in a loop. A frame of a type this client does not know is ignored.
   * Nothing thrown while handling a frame leaves this method (in Node, an exception out of a
   * socket's handler ends the process): it is reported, and the socket dropped the same way.
   */
  private onFrame(ws: WebSocketLike, data: unknown): void {
    this.lastFrameAt = monotonicNow();
    const read = readFrame(data);
    if ('unknown' in read) return;
    if ('invalid' in read) return this.unreadable(ws, new PotentiaError('invalid_message', `the server sent a frame this client cannot read: ${read.invalid}`, read.field));
    try {
      this.onMessage(ws, read.ok);
    } catch (err) {
      this.unreadable(ws, new PotentiaError('internal', `handling a ${read.ok.type} frame failed: ${err instanceof Error ? err.message : String(err)}`));
    }
  }

  private unreadable(ws: WebSocketLike, err: PotentiaError): void {
    this.report(err);
    if (this.ws !== ws) return;
    this.attempt = Math.max(this.attempt, FRAME_RATE_ATTEMPT);
    this.lost(ws);
  }

  private onMessage(ws: WebSocketLike, m: ServerMessage): void {
    switch (m.type) {
      case 'snapshot':
        // in parts: part 0 starts the state again, the next ones add to it (a part out of turn is
        // one of a resume superseded mid-way: dropped, the newer resume starts at its part 0)
        if (!m.part) {
          this.blocks.clear();
          this.snapshotNext = 0;
          this.hasSnapshot = false; // a socket lost before the last part asks for a snapshot again
          this.wholeAtResumed = false;
        } else if (m.part !== this.snapshotNext) return;
        this.snapshotNext++;
        for (const b of m.blocks) this.blocks.set(b.block_id, b);
        this.seq = m.watermark;
        this.canvasSeq = m.canvas_watermark;
        if (m.has_more) return; // the state is told once it is whole
        this.hasSnapshot = true;
        // deltas up to the watermark will not come: only ops still unanswered may have one ahead
        for (const id of [...this.issued]) if (!this.pending.has(id)) this.issued.delete(id);
        this.textsSee(null);
        if (m.part) this.wholeAtResumed = true;
        else this.emitChange(null);
        return;
      case 'delta':
        if (!(m.canvas_seq > this.canvasSeq)) return; // already applied
        if (m.canvas_seq !== this.canvasSeq + 1) return this.resync(ws); // missed one: never apply out of order
        this.canvasSeq = m.canvas_seq;
        this.seq = m.server_seq;
        if (m.action === 'delete') for (const id of [m.block_id, ...(m.deleted_ids ?? [])]) this.blocks.delete(id);
        else if (m.block) this.blocks.set(m.block_id, m.block);
        this.textsSee(m);
        if (!this.wholeAtResumed) this.emitChange(m);
        if (m.client_op_id) this.issued.delete(m.client_op_id);
        return;
      case 'resumed':
        this.resumeRetries = 0;
        if (this.wholeAtResumed) {
          this.wholeAtResumed = false;
          this.emitChange(null);
        }
        if (this.resyncing) {
          this.resyncing = false;
          if (this.live) return this.clearTimer('resumeTimer');
        }
        if (this.live) return;
        this.live = true;
        this.attempt = 0;
        this.refusalHandled = false;
        this.refusedStatus = null;
        this.clearTimer('resumeTimer');
        this.startHeartbeat(ws);
        for (const w of this.readyWaiters.splice(0)) w.resolve();
        this.flush();
        this.emitLive(true);
        return;
      case 'rejected': {
        const p = this.pending.get(m.client_op_id);
        if (p && RETRY_CODES.has(m.error.code)) {
          // "not now" (the user's mutation limit, docs/limits.md): sent again after the server's delay
          const after = m.error.retry_after;
          p.sent = false;
          return this.backOff(typeof after === 'number' && after > 0 ? after * 1000 : undefined, 'mutations', true);
        }
        return this.settle(m.client_op_id, m);
      }
      case 'ack':
      case 'conflict':
        this.sharedHolds = 0;
        this.settle(m.client_op_id, m);
        return;
      case 'error':
        return this.onErrorFrame(ws, m);
      case 'hello':
        // a socket to another canvas (a proxy or server routing wrong): its deltas must not enter this state
        if (m.canvas_id.toLowerCase() !== this.opts.canvasId.toLowerCase()) {
          return this.unreadable(ws, new PotentiaError('invalid_message', `the server's hello names canvas ${m.canvas_id}, not ${this.opts.canvasId}`, 'canvas_id'));
        }
        return this.callback(() => this.opts.onHello?.(m));
      case 'access':
        return this.callback(() => this.opts.onAccess?.(m));
      case 'presence':
      case 'presence_leave':
        return this.callback(() => this.opts.onPresence?.(m));
      default:
        return;
    }
  }

  /** A delta skipped a number: asks for everything after the last applied one, once per gap. */
  private resync(ws: WebSocketLike): void {
    if (this.resyncing) return; // later deltas past the gap wait for the same replay
    this.resyncing = true;
    this.sendResume(); // resumeFrame(): since canvasSeq, the last applied
    if (this.live && !this.resumeTimer) {
      this.resumeTimer = setTimeout(() => {
        this.resumeTimer = null;
        if (this.ws === ws && this.resyncing) this.lost(ws);
      }, this.opts.resumeTimeoutMs ?? 10_000);
    }
  }

  private onErrorFrame(ws: WebSocketLike, m: Extract<ServerMessage, { type: 'error' }>): void {
    const code: string = m.code;
    const retryLater = code === 'rate_limited' || code === 'internal' || code === 'unavailable' || code === 'timeout';
    if (m.client_op_id) {
      const p = this.pending.get(m.client_op_id);
      if (!p) return;
      if (retryLater) {
        p.sent = false;
        this.backOff(m.retry_after_ms, 'all', code !== 'rate_limited');
      } else {
        // refused for good (read-only token or role, a malformed op, or a code this client does not
        // know), with the field the server named (client_op_id, patch.content.<key>: it was dropped,
        // and the rejection named none)
        const error = code === 'read_only' ? 'forbidden' : code === 'invalid_message' ? 'invalid_input' : code;
        this.settle(p.id, { type: 'rejected', client_op_id: p.id, error: { code: error, message: m.message, ...(m.field !== undefined ? { field: m.field } : {}) } });
      }
    } else if (code === 'forbidden' || code === 'not_found') {
      this.accessLost(ws, code, m.message); // the close (4403/4404) follows
    } else if (code === 'internal' || code === 'unavailable' || code === 'timeout') {
      // the server could not process some message and did not say which: resend whatever is in
      // flight (safe: a repeated client_op_id is answered with its original result)
      for (const p of this.pending.values()) p.sent = false;
      this.presenceDue = this.presenceFrame !== null;
      this.backOff(m.retry_after_ms, 'all', true);
    } else if (code === 'rate_limited') {
      // a message without client_op_id was dropped (a presence, a ping or a resume): the presence may have been it
      this.presenceDue = this.presenceFrame !== null;
      this.backOff(m.retry_after_ms, 'all');
      // and while a resume is unanswered, it may have been: the server starts no stream for it
      // until one is accepted (a second one, if the first was not dropped, only replays again)
      if (!this.live || this.resyncing) this.retryResume(ws, m.retry_after_ms);
    } else if (code !== 'unauthorized') {
      // nothing to resend: a presence refused (invalid_input naming cursor.name), a message the
      // server could not read, a code this client does not know. Before, these were dropped
      // unseen. (`unauthorized` is not: the 4401 close follows, and the reconnect asks token() again.)
      this.report(new PotentiaError(code, m.message, m.field));
    }
  }
}
