import { type as textType } from 'ot-text-unicode';
import { buildTree, changedFields, compareBlocks, keyBetween, mergePatch, setMember, subtree, toBlock, type Block, type BlockNode } from './blocks.ts';
import { CanvasSync, type CanvasSyncOptions, type Mutation, type MutationOutcome, type TextChange, type WebSocketConstructor } from './canvas-sync.ts';
import { abortedBy, after, appliesDeadline, badSignal } from './deadline.ts';
import { AbortError, AccessLostError, ConflictError, PotentiaError, TimeoutError } from './errors.ts';
import { CanvasPresence } from './presence.ts';
import type { DeltaMessage, TextOp, WireBlock } from './protocol.ts';
import { textIn } from './text-ot.ts';
import { encodeJson, MESSAGE_MAX_DEPTH } from './json-value.ts';
import { canonicalUuid, idKey } from './uuid.ts';

/**
 * One canvas, live: the server's state (CanvasSync: snapshot, then deltas in canvas_seq order,
 * gap-free resume after any reconnect) with this client's unacknowledged changes applied on top
 * (optimistic), as an ordered block tree.
 *
 * Optimistic changes. create/update/move/delete change the local state at once and return a
 * promise of the server's answer. Until the answer, the change is re-applied on top of every new
 * server state (a remote delta never hides it). It is sent with one client_op_id and resent with
 * the same one after reconnects until answered (the server applies it at most once); it counts as
 * done when its own delta has been applied (then the server's block replaces the optimistic
 * one) and the server has answered it: once its promise resolves, every other session of the
 * database sees it too (a delta can come before that: see onOwnDelta). It is rolled back,
 * rejecting its promise, when the server refuses it (ConflictError for a same-field conflict,
 * PotentiaError otherwise). Network loss never rejects: the change waits.
 *
 * Changes of one block go out one at a time, in order (and a change that names a block still
 * being created waits for that creation): each is sent with the base_version that says what the
 * user saw — the block's version when the change was made, moved past the versions this client
 * produced itself and past others' changes of different fields, so that only a real clash with
 * someone else's change of the same field is a conflict (the server's merge rule, docs/merge.md).
 *
 * A change's promise can be ended sooner (ChangeOptions: an AbortSignal, a deadline): a change
 * not yet sent is then taken back; one already sent goes on (it cannot be unsent), and its
 * outcome shows in the canvas.
 *
 * Text: editText() edits a string under a content key with OT (text-ot.ts, merged with
 * everyone's concurrent typing); text() reads it. On a block still being created, edits are kept
 * and sent once it exists.
 */

/** The connection state of a canvas. */
export type CanvasStatus = 'idle' | 'connecting' | 'live' | 'reconnecting' | 'closed';

/** What made a canvas change (see CanvasSnapshotView). */
export type CanvasChangeCause = 'local' | 'remote' | 'snapshot' | 'ack' | 'rollback' | 'status';

/**
 * What subscribe() listeners get: the canvas as it is when read (getters read the live state).
 * `cause`: `local` (your optimistic change or text edit), `remote` (a server delta), `snapshot`
 * (the whole state was replaced), `ack` (your change was confirmed), `rollback` (your change was
 * refused and undone), `status` (connection state or write right).
 */
export type CanvasSnapshotView = {
  readonly canvasId: string;
  readonly cause: CanvasChangeCause;
  readonly status: CanvasStatus;
  /** canvas_seq of the server state underneath (0 before the snapshot). */
  readonly canvasSeq: number;
  /** Your block changes the server has not answered yet, their deltas applied or not. */
  readonly pending: number;
  /** Every block of the local state, by id. */
  readonly blocks: ReadonlyMap<string, Block>;
  /** The ordered block tree (see Canvas.tree). */
  tree(): BlockNode[];
  block(id: string): Block | undefined;
};

/**
 * create()'s input. `parent`: the parent block (default: top level, or `after`'s / `before`'s
 * parent). Placement: `after` a block (null: first), or `before` a block; neither appends.
 * `id`: the new block's id (a UUID; default generated).
 */
export type CreateInput = {
  type: string;
  content?: Record<string, unknown>;
  parent?: string | null;
  after?: string | null;
  before?: string;
  id?: string;
};

/** update()'s input: `content` is a JSON Merge Patch (keys set, null removes, objects merge); `type` replaces the type. */
export type UpdateInput = { content?: Record<string, unknown>; type?: string };

/**
 * move()'s input: `after` a block (null: first among its siblings), or `before` a block (right
 * before it: after its previous sibling, or first); `parent` re-parents (null: top level). With
 * `after`/`before` and no `parent`, the block joins that block's parent.
 */
export type MoveInput = { after?: string | null; before?: string; parent?: string | null };

/**
 * The last argument of create, update, move and delete: when to stop waiting for the server's
 * answer, and the change's client_op_id.
 *
 * `signal` (an AbortSignal) and `timeoutMs` (a deadline for the answer, in milliseconds; 0 or
 * none: no deadline) end the wait, whichever comes first: the promise rejects with AbortError
 * (code `aborted`) or TimeoutError (code `timeout`), both with the change's `clientOpId`. The
 * client's own `timeoutMs` (createPotentiaClient, for HTTP calls) does not apply to changes: a
 * change waits through network loss by design (offline editing), so give one per change when you
 * want a deadline. What happens to the change then:
 * - not yet sent on any socket (made offline or before connect(), waiting behind an earlier
 *   change of the same block, held back by pacing): it is taken back, rolled back locally and
 *   never sent;
 * - already sent: H1 has no way to take a mutation back (the server may apply it, or already
 *   has), so only the promise ends. The change goes on as before: it stays in the local state,
 *   is resent with the same client_op_id after a reconnect until the server answers, and its
 *   outcome shows in the canvas (the server's block replaces it; a refusal rolls it back and is
 *   reported to onError). It is applied at most once: the server applies a client_op_id once and
 *   answers a resend of an applied one with its first result (`ack`, status `duplicate`);
 * - applied (its own delta came) but not answered yet: only the promise ends (the message says it
 *   applied); the change is in the canvas.
 * An already-aborted signal changes nothing and sends nothing (the promise rejects at once);
 * a `signal` that is not an AbortSignal is refused (`invalid_input`, field `signal`), as a bad
 * `timeoutMs` is.
 *
 * `clientOpId` (1 to 128 characters; default a new UUID): the change's H1 client_op_id. To learn
 * the outcome of a change whose promise rejected with `timeout`, `aborted` or `closed` after a
 * reload or close(), make the same change again with its `clientOpId` (`err.clientOpId`): the
 * server answers it with the first one's result if that applied (the promise resolves with the
 * block), and applies it once if it did not. Use the same input: the server compares the action
 * and block, not the patch (docs/mutations.md, Idempotency). A create may be resent so although
 * its block exists. A `clientOpId` still pending on this canvas is refused (`invalid_input`, field
 * `clientOpId`): the client is sending it already.
 */
export type ChangeOptions = { signal?: AbortSignal; timeoutMs?: number; clientOpId?: string };

/**
 * Options of Canvas.connect(): `signal` (an AbortSignal) ends a connect that is not live yet, at
 * any stage (the access check, the socket opening, the join, the snapshot): the promise rejects
 * with AbortError (code `aborted`, `reason` the signal's) and the canvas is closed, as by close():
 * its socket and requests are abandoned, no timer or listener is left, and other connect() calls
 * waiting for it reject with PotentiaError `closed`. potentia.canvas(id) then gives a new one.
 * Once the canvas is live the signal ends nothing. An already-aborted signal does nothing.
 */
export type ConnectOptions = { signal?: AbortSignal };

/** @internal What Canvas needs from the client that made it. */
export type CanvasDeps = {
  url: string;
  WebSocket: WebSocketConstructor | undefined;
  /** The current access token, or a fresh one when `refused` (the socket was closed 4401 with it); throws PotentiaError `unauthorized` when signed out. */
  token: (refused?: string, signal?: AbortSignal) => Promise<string>;
  /** Asks the server whether the user may see the canvas (HTTP): rejects with AccessLostError, PotentiaError, or a network error; `signal` abandons the request. */
  checkAccess: (signal?: AbortSignal) => Promise<{ can_write: boolean }>;
  /** Extra CanvasSync options (reconnect timing, heartbeat, pacing, the jitter's random source). */
  sync?: Partial<Pick<CanvasSyncOptions, 'reconnectDelayMs' | 'resumeTimeoutMs' | 'heartbeatMs' | 'messagesPerSecond' | 'random'>>;
  onClose?: (canvas: Canvas) => void;
};

type Placement = { parent?: string | null; after?: string | null; before?: string };

type LocalOp = {
  id: string;
  action: Mutation['action'];
  blockId: string;
  /** Blocks this op names besides its own (parent, after, before): it waits while one of them is being created. */
  names: string[];
  /** The merge fields it changes ('all' for a delete or a create). */
  fields: Set<string> | 'all';
  /** Server version of the block when the op was made (0: not on the server yet). */
  seen: number;
  /** content/type of an update; created content/type of a create. */
  patch: { type?: string; content?: Record<string, unknown> };
  placement: Placement | null;
  /**
   * waiting: not sent; sent: on a socket, no answer yet; acked: answered, its delta not applied
   * yet; applied: its delta applied before the answer came (it resolves at the answer: see
   * onOwnDelta).
   */
  state: 'waiting' | 'sent' | 'acked' | 'applied';
  ackSeq: number;
  /** What it resolves with once applied (the server's block from its delta; undefined for a delete). */
  result?: Block | undefined;
  /** Its caller stopped waiting (ChangeOptions: an abort, a deadline) after it was sent: its refusal is reported as nobody's. */
  detached: boolean;
  resolve: (b: Block | undefined) => void;
  reject: (e: PotentiaError) => void;
};

/** Changes of one block seen since this client began changing it: to compute base versions. */
type History = { shadow: Block | undefined; entries: Array<{ version: number; fields: Set<string> | 'all'; own: boolean }>; unknown: boolean };

const noop = () => {};
/** `p`, marked handled: the caller still gets its rejection; one left unawaited is not an unhandled rejection. */
const handled = <T>(p: Promise<T>): Promise<T> => {
  p.catch(noop);
  return p;
};
/** When a canvas that is not live checks over HTTP that the user still has access: after the first, then every second ms. */
const ACCESS_CHECK_MS = [3000, 15_000] as const;
const uuid = (): string => globalThis.crypto.randomUUID();
/** A placement's block id in the server's spelling; null (first / top level) as it is. */
const idOrNull = <T extends string | null>(id: T): T => (typeof id === 'string' ? idKey(id) as T : id);

/** A canvas of a Potentia client: `potentia.canvas(id)`. See the top of canvas.ts. */
export class Canvas {
  /** Presence on this canvas: presence.set(), presence.others(), presence.subscribe(). */
  readonly presence: CanvasPresence;
  private readonly sync: CanvasSync;
  private _status: CanvasStatus = 'idle';
  private _canWrite = false;
  private _userId: string | null = null;
  private connecting: Promise<void> | null = null;
  /** Aborted when the canvas ends: abandons the HTTP requests of connect() and of the access checks still in flight. */
  private readonly lifetime = new AbortController();
  private accessTimer: ReturnType<typeof setTimeout> | null = null;
  private accessChecks = 0;
  private readonly ops: LocalOp[] = [];
  /** Ops whose delta was applied before their answer came: out of `ops`, resolved at the answer (onOwnDelta). */
  private readonly unanswered = new Set<LocalOp>();
  private readonly histories = new Map<string, History>();
  /** Text edits on blocks still being created: composed op per content key. */
  private readonly early = new Map<string, Map<string, TextOp>>();
  /** (block, key) pairs edited through CanvasSync.editText: their local text overlays the view. */
  private readonly textKeys = new Map<string, Set<string>>();
  private cache: { blocks: Map<string, Block>; tree: BlockNode[] | null } | null = null;
  /** Server blocks as Blocks, made once per block version the server sent. */
  private converted = new WeakMap<WireBlock, Block>();
  private readonly listeners = new Set<(view: CanvasSnapshotView) => void>();
  private readonly errorListeners = new Set<(err: PotentiaError) => void>();
  private readonly textListeners = new Set<(change: TextChange) => void>();

  /** @internal Made by PotentiaClient.canvas(id). */
  constructor(readonly id: string, private readonly deps: CanvasDeps) {
    this.presence = new CanvasPresence((cursor, typing) => this.sync.setPresence({ cursor, typing }), (err) => this.report(err));
    this.sync = new CanvasSync({
      url: deps.url,
      canvasId: id,
      token: deps.token,
      // connect() refuses to start without a WebSocket class, so this one is never made
      WebSocket: deps.WebSocket ?? (MissingWebSocket as unknown as WebSocketConstructor),
      ...deps.sync,
      onChange: (_blocks, delta) => this.onServerChange(delta),
      onText: (change) => this.onTextChange(change),
      onError: (err) => this.onSyncError(err),
      onHello: (hello) => {
        this._userId = hello.user_id;
        this.setCanWrite(hello.can_write);
      },
      onAccess: (access) => this.setCanWrite(access.can_write),
      onPresence: (event) => this.presence.receive(event),
      onLive: (live) => {
        this.setStatus(live ? 'live' : 'reconnecting');
        if (live) this.accessChecks = 0;
        else this.watchAccess();
      },
    });
  }

  /** The connection state: idle (before connect), connecting, live, reconnecting (after a loss; automatic), closed. */
  get status(): CanvasStatus {
    return this._status;
  }

  /** Whether this user may change the canvas (role and token scope), as the server last said. */
  get canWrite(): boolean {
    return this._canWrite;
  }

  /** The signed-in user's id, as the server's `hello` said (null before it). */
  get userId(): string | null {
    return this._userId;
  }

  /** canvas_seq of the server state the view is built on. */
  get canvasSeq(): number {
    return this.sync.canvasSeq;
  }

  /**
   * Block changes of yours the server has not answered yet (a change whose delta came first is in
   * the local state as the server's, and still counts until its answer; so does one whose caller
   * stopped waiting: ChangeOptions).
   */
  get pending(): number {
    return this.ops.length + this.unanswered.size;
  }

  /**
   * Connects (H1 `/ws/canvas/{id}`) and resolves once the snapshot is in and deltas flow. Then it
   * stays live by itself: after any network loss it reconnects (backoff, a fresh access token)
   * and resumes from its last canvas_seq without a gap. Calling it again returns the same promise.
   * Rejects with AccessLostError (not a member / no such canvas), PotentiaError `unauthorized`
   * (not signed in), `no_websocket` (no WebSocket class: pass `WebSocket` to
   * createPotentiaClient, e.g. the `ws` package on Node 20) or `closed` (close() came first, or
   * another connect()'s signal aborted). A server that cannot be reached is waited for, not an
   * error. `options.signal` (ConnectOptions) ends a connect that is not live yet: AbortError, and
   * the canvas is closed, nothing left behind (no socket, request, timer or listener); an
   * already-aborted signal rejects at once and does nothing.
   */
  connect(options: ConnectOptions = {}): Promise<void> {
    const { signal } = options;
    if (this._status === 'closed') return Promise.reject(new PotentiaError('closed', 'this canvas was closed'));
    if (signal?.aborted) return handled(Promise.reject(abortedBy('connect', signal))); // nothing done
    if (!this.connecting) this.connecting = handled(this.start());
    const shared = this.connecting;
    if (!signal || this._status === 'live') return shared;
    return handled(new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        if (this._status === 'live') return; // live meanwhile: nothing to end, shared resolves this one
        reject(abortedBy('connect', signal)); // first: the caller hears of its abort, not of the close it causes
        this.end(new PotentiaError('closed', 'the canvas was closed: its connect() was aborted before it was live'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      shared.then(
        () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        },
        (err: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(err);
        },
      );
    }));
  }

  /** Whether the canvas has ended (a method: TypeScript does not narrow its answer across an await). */
  private isClosed(): boolean {
    return this._status === 'closed';
  }

  private async start(): Promise<void> {
    if (!this.deps.WebSocket) {
      throw new PotentiaError('no_websocket', 'no WebSocket class: pass one to createPotentiaClient({ WebSocket }) (Node 20: the ws package)', 'WebSocket');
    }
    this.setStatus('connecting');
    // close() (or an aborted connect) during these requests abandons them (this.lifetime)
    const closed = () => new PotentiaError('closed', 'this canvas was closed');
    try {
      await this.deps.token(undefined, this.lifetime.signal); // signed in? (else PotentiaError unauthorized, before any socket)
    } catch (err) {
      if (this.isClosed()) throw closed();
      const e = err instanceof PotentiaError ? err : new PotentiaError('unauthorized', err instanceof Error ? err.message : String(err));
      this.end(e);
      throw e;
    }
    if (this.isClosed()) throw closed();
    try {
      this.setCanWrite((await this.deps.checkAccess(this.lifetime.signal)).can_write);
    } catch (err) {
      if (this.isClosed()) throw closed();
      // refusals end here; an unreachable server is left to the socket's retries
      if (err instanceof PotentiaError && err.code !== 'network' && err.code !== 'unavailable' && err.code !== 'timeout') {
        this.end(err);
        throw err;
      }
      this.watchAccess();
    }
    if (this.isClosed()) throw closed();
    try {
      await this.sync.join();
    } catch (err) {
      throw err instanceof PotentiaError ? err : new PotentiaError('closed', 'this canvas was closed before it was live');
    }
  }

  /**
   * Closes the socket (the others see this user leave) for good. Changes not answered yet reject
   * with PotentiaError `closed` (their outcome is unknown), except those whose delta was applied
   * (in the server state: they resolve).
   */
  close(): void {
    this.end(new PotentiaError('closed', 'the canvas was closed before the server answered'));
  }

  /** @internal Ends the canvas; unanswered changes reject with `reason`. */
  end(reason: PotentiaError): void {
    if (this._status === 'closed') return;
    this._status = 'closed';
    if (this.accessTimer) clearTimeout(this.accessTimer);
    this.accessTimer = null;
    this.lifetime.abort(reason);
    this.sync.close();
    this.presence.close();
    for (const op of this.ops.splice(0)) op.reject(reason);
    // in the server state already (their deltas were applied): done, whatever the answer would say
    for (const op of this.unanswered) op.resolve(op.result);
    this.unanswered.clear();
    this.early.clear();
    this.invalidate();
    this.notify('status');
    this.deps.onClose?.(this);
  }

  // ------------------------------------------------------------------ reading

  /** The ordered block tree: top-level blocks by y_order, each node's children likewise. The same array until the state changes: do not modify it. */
  tree(): BlockNode[] {
    const cache = this.view();
    return (cache.tree ??= buildTree(cache.blocks.values()));
  }

  /** One block of the local state (server + your pending changes), or undefined. */
  block(id: string): Block | undefined {
    return this.view().blocks.get(idKey(id));
  }

  /** Every block of the local state, by id. */
  blocks(): ReadonlyMap<string, Block> {
    return this.view().blocks;
  }

  /** The local text under content key `key` of a block (the server's plus your pending edits); '' for an unknown block or a non-text key. */
  text(blockId: string, key: string): string {
    return textIn(this.block(blockId), key);
  }

  /**
   * Calls `listener` after every change of the local state (optimistic, remote, acknowledged,
   * rolled back) and of the connection state. Returns the unsubscribe function. A listener that
   * throws is reported to onError listeners and does not stop the others.
   */
  subscribe(listener: (view: CanvasSnapshotView) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /**
   * Calls `listener` with errors nobody awaits: every refused change (also rejected to its
   * caller), lost text edits (PotentiaError `text_lost`), AccessLostError when access ends while
   * connected, and errors thrown by listeners. Returns the unsubscribe function.
   */
  onError(listener: (err: PotentiaError) => void): () => void {
    this.errorListeners.add(listener);
    return () => void this.errorListeners.delete(listener);
  }

  /**
   * Calls `listener` with every change of a text edited through editText: `source` local, remote
   * (`op` transformed past your pending edits: move carets with transformPosition) or reset. Returns the unsubscribe function.
   */
  onText(listener: (change: TextChange) => void): () => void {
    this.textListeners.add(listener);
    return () => void this.textListeners.delete(listener);
  }

  // ------------------------------------------------------------------ changing

  /**
   * Creates a block; it is in the local state at once (version 0) and the promise resolves with
   * the server's block once applied. Rejects with PotentiaError (`invalid_input` naming the field,
   * `forbidden` for a viewer, `closed`), AccessLostError; never for network loss. `options`:
   * ChangeOptions (AbortError, TimeoutError; the client_op_id, to resend a create yourself).
   */
  create(input: CreateInput, options: ChangeOptions = {}): Promise<Block> {
    // the server's spelling (lower case): the block is keyed by it here, as the server answers it
    const id = input.id === undefined ? uuid() : canonicalUuid(input.id);
    if (id === null) return this.refuse(new PotentiaError('invalid_input', 'id must be a UUID (8-4-4-4-12 hex digits)', 'id'));
    // a create resent with its client_op_id (ChangeOptions) may find its block made: the server answers it
    if (this.block(id) && options.clientOpId === undefined) return this.refuse(new PotentiaError('invalid_input', `block ${id} exists`, 'id'));
    const sent = asSent(input.content);
    if (sent instanceof PotentiaError) return this.refuse(sent);
    const patch: LocalOp['patch'] = { type: input.type, ...(sent.content !== undefined ? { content: sent.content } : {}) };
    const placement: Placement = {};
    if (input.parent !== undefined) placement.parent = idOrNull(input.parent);
    if (input.after !== undefined) placement.after = idOrNull(input.after);
    if (input.before !== undefined) placement.before = idOrNull(input.before);
    return this.enqueue('create', id, patch, placement, 'all', options) as Promise<Block>;
  }

  /**
   * Changes a block's content (JSON Merge Patch) and/or type, at once locally. Resolves with the
   * server's block. Rejects with ConflictError when someone changed the same field since you saw
   * it (rolled back; resolve by updating again with the value you choose), PotentiaError
   * (`not_found`, `invalid_input`, `forbidden`, `closed`), AccessLostError; AbortError and
   * TimeoutError (`options`: ChangeOptions).
   */
  update(blockId: string, input: UpdateInput, options: ChangeOptions = {}): Promise<Block> {
    blockId = idKey(blockId);
    if (!this.block(blockId)) return this.refuse(new PotentiaError('not_found', `block ${blockId} is not on this canvas`, 'blockId'));
    const sent = asSent(input.content);
    if (sent instanceof PotentiaError) return this.refuse(sent);
    const fields = new Set<string>();
    for (const k of Object.keys(sent.content ?? {})) fields.add(`content.${k}`);
    if (input.type !== undefined) fields.add('type');
    if (fields.size === 0) return this.refuse(new PotentiaError('invalid_input', 'the update changes nothing', 'patch'));
    const patch: LocalOp['patch'] = { ...(sent.content !== undefined ? { content: sent.content } : {}), ...(input.type !== undefined ? { type: input.type } : {}) };
    return this.enqueue('update', blockId, patch, null, fields, options) as Promise<Block>;
  }

  /**
   * Moves a block (see MoveInput), at once locally; the server computes the final position
   * (`after_id`, `parent_id`). Resolves with the server's block; rejects as update() does
   * (a conflict when someone moved it meanwhile). `options`: ChangeOptions.
   */
  move(blockId: string, input: MoveInput, options: ChangeOptions = {}): Promise<Block> {
    blockId = idKey(blockId);
    input = { ...input, ...(input.parent !== undefined ? { parent: idOrNull(input.parent) } : {}),
      ...(input.after !== undefined ? { after: idOrNull(input.after) } : {}), ...(input.before !== undefined ? { before: idOrNull(input.before) } : {}) };
    if (!this.block(blockId)) return this.refuse(new PotentiaError('not_found', `block ${blockId} is not on this canvas`, 'blockId'));
    const placement: Placement = {};
    const fields = new Set<string>();
    if (input.parent !== undefined) {
      placement.parent = input.parent;
      fields.add('parent');
    }
    if (input.after !== undefined) placement.after = input.after;
    if (input.before !== undefined) placement.before = input.before;
    if (input.after !== undefined || input.before !== undefined) fields.add('position').add('parent');
    if (fields.size === 0) return this.refuse(new PotentiaError('invalid_input', 'move needs after, before or parent', 'patch'));
    if ([input.after, input.before, input.parent].includes(blockId)) {
      return this.refuse(new PotentiaError('invalid_input', 'a block cannot be placed relative to itself', 'patch'));
    }
    return this.enqueue('move', blockId, {}, placement, fields, options) as Promise<Block>;
  }

  /**
   * Deletes a block and its whole subtree, at once locally. Resolves once applied; rejects with
   * ConflictError if someone changed the block since you saw it (rolled back), PotentiaError, AccessLostError;
   * AbortError and TimeoutError (`options`: ChangeOptions).
   */
  delete(blockId: string, options: ChangeOptions = {}): Promise<void> {
    blockId = idKey(blockId);
    if (!this.block(blockId)) return this.refuse(new PotentiaError('not_found', `block ${blockId} is not on this canvas`, 'blockId'));
    const done = this.enqueue('delete', blockId, {}, null, 'all', options).then(noop);
    done.catch(noop); // rejected to the caller (and reported to onError); never unhandled
    return done;
  }

  /**
   * Edits the text under content key `key` of a block with a text operation (ot-text-unicode: n
   * keeps n code points, "str" inserts, {d: n} deletes n), merged with everyone's concurrent edits.
   * Returns the new local text. Throws PotentiaError (`not_found`: no such block; `invalid_input`:
   * the op does not fit the text; `closed`), changing nothing. Edits the server could not merge
   * (someone set the key as a whole meanwhile) are dropped and reported to onError (`text_lost`)
   * and onText (`reset`).
   */
  editText(blockId: string, key: string, op: TextOp): string {
    blockId = idKey(blockId);
    if (this._status === 'closed') throw new PotentiaError('closed', 'this canvas was closed');
    const block = this.block(blockId);
    if (!block) throw new PotentiaError('not_found', `block ${blockId} is not on this canvas`, 'blockId');
    let text: string;
    if (this.sync.blocks.has(blockId) && !this.early.has(blockId)) {
      try {
        text = this.sync.editText(blockId, key, op);
      } catch (err) {
        throw new PotentiaError('invalid_input', err instanceof Error ? err.message : String(err), 'op');
      }
      let keys = this.textKeys.get(blockId);
      if (!keys) this.textKeys.set(blockId, (keys = new Set()));
      keys.add(key);
    } else {
      // the block is still being created: keep the edits, composed, until it exists
      let normalized: TextOp;
      try {
        normalized = textType.normalize(op);
        text = textType.apply(textIn(block, key), normalized);
      } catch (err) {
        throw new PotentiaError('invalid_input', err instanceof Error ? err.message : String(err), 'op');
      }
      let keys = this.early.get(blockId);
      if (!keys) this.early.set(blockId, (keys = new Map()));
      const prev = keys.get(key);
      keys.set(key, prev ? textType.compose(prev, normalized) : normalized);
    }
    this.invalidate();
    this.notify('local');
    return text;
  }

  // ------------------------------------------------------------------ internals: ops

  /** A change refused before it was made: rejected to its caller and reported to onError, as every refused change is. */
  private refuse<T>(err: PotentiaError): Promise<T> {
    this.report(err, true);
    const p = Promise.reject<T>(err);
    p.catch(noop); // rejected to the caller; not unhandled if the caller ignores it
    return p;
  }

  private enqueue(action: Mutation['action'], blockId: string, patch: LocalOp['patch'], placement: Placement | null, fields: LocalOp['fields'], options: ChangeOptions): Promise<Block | undefined> {
    if (this._status === 'closed') return this.refuse(new PotentiaError('closed', 'this canvas was closed'));
    const { signal, timeoutMs = 0, clientOpId } = options;
    if (typeof timeoutMs !== 'number' || Number.isNaN(timeoutMs) || timeoutMs < 0) {
      return this.refuse(new PotentiaError('invalid_input', `timeoutMs must be a number of milliseconds, 0 or more (0: no deadline), got ${String(timeoutMs)}`, 'timeoutMs'));
    }
    const bad = badSignal(signal);
    if (bad) return this.refuse(bad);
    if (clientOpId !== undefined && (typeof clientOpId !== 'string' || clientOpId.length < 1 || clientOpId.length > 128)) {
      return this.refuse(new PotentiaError('invalid_input', 'clientOpId must be a string of 1 to 128 characters', 'clientOpId'));
    }
    if (clientOpId !== undefined && this.unansweredId(clientOpId)) {
      return this.refuse(new PotentiaError('invalid_input', `client_op_id ${clientOpId} is still pending on this canvas: the client is sending it (its outcome shows in the canvas)`, 'clientOpId'));
    }
    const id = clientOpId ?? uuid();
    const what = `${action} of block ${blockId}`;
    if (signal?.aborted) {
      // nothing changed, nothing sent: the caller's own abort, not a refusal for onError
      const p = Promise.reject<Block | undefined>(abortedBy(what, signal, id));
      p.catch(noop);
      return p;
    }
    let cancelTimer: (() => void) | null = null;
    const unlisten = () => {
      cancelTimer?.();
      signal?.removeEventListener('abort', onAbort);
    };
    let resolve!: LocalOp['resolve'];
    let reject!: LocalOp['reject'];
    const promise = new Promise<Block | undefined>((res, rej) => {
      resolve = (b) => {
        unlisten();
        res(b);
      };
      reject = (e) => {
        unlisten();
        rej(e);
      };
    });
    promise.catch(noop); // rejected to the caller (and reported to onError); never unhandled
    const names = placement ? [placement.parent, placement.after, placement.before].filter((x): x is string => typeof x === 'string') : [];
    const op: LocalOp = {
      id, action, blockId, names, fields, patch, placement,
      seen: this.sync.blocks.get(blockId)?.version ?? 0,
      state: 'waiting', ackSeq: 0, detached: false, resolve, reject,
    };
    const onAbort = () => this.stopWaiting(op, (fate) => new AbortError(`${what}: aborted by the caller's signal; ${fate}`, signal!.reason, id));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (appliesDeadline(timeoutMs)) {
      cancelTimer = after(timeoutMs, () => this.stopWaiting(op, (fate) => new TimeoutError(`${what}: no answer within ${timeoutMs} ms (its timeoutMs); ${fate}`, timeoutMs, id)));
    }
    if (!this.histories.has(blockId)) {
      const shadow = this.sync.blocks.get(blockId);
      this.histories.set(blockId, { shadow: shadow ? toBlock(shadow) : undefined, entries: [], unknown: false });
    }
    this.ops.push(op);
    this.invalidate();
    this.notify('local');
    this.dispatch();
    return promise;
  }

  /** Whether a change with client_op_id `id` is not answered yet (waiting, sent, or applied before its answer). */
  private unansweredId(id: string): boolean {
    if (this.ops.some((o) => o.id === id)) return true;
    for (const o of this.unanswered) if (o.id === id) return true;
    return false;
  }

  /**
   * The caller of `op` stopped waiting (ChangeOptions: its signal aborted, or its deadline passed):
   * an op not yet on any socket is taken back (rolled back, never sent: CanvasSync.withdraw) and
   * rejects with `err`; a sent one rejects with `err` and goes on (H1 has no cancel: the client
   * resends it until answered; its refusal, if any, is reported to onError as nobody's). An op
   * already answered (acked: its delta is on the way) is left to settle. One applied (its delta
   * came first) but not answered rejects with `err` too: the signal and deadline are for the
   * server's answer, which is what makes it visible to every other session (onOwnDelta); it
   * stays in the state and counts as pending until its answer, which nobody awaits.
   */
  private stopWaiting(op: LocalOp, error: (fate: string) => AbortError | TimeoutError): void {
    if (op.state === 'applied') {
      if (op.detached || !this.unanswered.has(op)) return; // answered meanwhile, or the canvas ended
      // it stays unanswered (pending, its client_op_id taken) until the answer, as a sent one does
      op.detached = true;
      op.reject(error(`its delta came, so it applied and shows in the canvas; the server had not answered it yet (it is resent with client_op_id ${op.id} until answered: answered at once as a duplicate)`));
      return;
    }
    if (!this.ops.includes(op) || op.detached || op.state === 'acked') return;
    if (op.state === 'waiting' || this.sync.withdraw(op.id)) {
      this.remove(op);
      if (op.action === 'create') this.early.delete(op.blockId);
      op.reject(error('it was not sent yet, so it was taken back (rolled back, never sent)'));
      this.invalidate();
      this.notify('rollback');
      this.dispatch();
      return;
    }
    op.detached = true;
    op.reject(error(`it was sent, so it may apply: the client keeps sending it with client_op_id ${op.id} until the server answers (applied at most once), and its outcome shows in the canvas`));
  }

  /** Sends every waiting op whose block (and named blocks) no earlier op is still changing or creating. */
  private dispatch(): void {
    if (this._status === 'closed') return;
    const busy = new Set<string>(); // blocks an earlier unfinished op targets
    for (const op of this.ops) {
      const blocked = busy.has(op.blockId) || op.names.some((n) => busy.has(n));
      busy.add(op.blockId);
      if (blocked || op.state !== 'waiting') continue;
      const mutation = this.toMutation(op);
      op.state = 'sent';
      // mutate() rejects only once the sync has ended (end() settled the op); a fault here is reported, never unhandled
      this.sync.mutate(mutation, op.id).then((outcome) => this.safely(() => this.onOutcome(op, outcome)), noop);
    }
  }

  /** The H1 mutation of an op, with placement and base_version resolved against the state now. */
  private toMutation(op: LocalOp): Mutation {
    const patch: Record<string, unknown> = {};
    if (op.patch.type !== undefined) patch['type'] = op.patch.type;
    if (op.patch.content !== undefined) patch['content'] = op.patch.content;
    if (op.placement) {
      const target = this.resolvePlacement(this.view().blocks, op.blockId, op.placement, true);
      if (target.after !== undefined) patch['after_id'] = target.after;
      const current = this.sync.blocks.get(op.blockId);
      const currentParent = current ? (typeof current['parent_id'] === 'string' ? current['parent_id'] : null) : undefined;
      if (target.parent !== undefined && (op.action === 'create' || target.parent !== currentParent)) patch['parent_id'] = target.parent;
      if (op.action === 'move' && !('after_id' in patch) && !('parent_id' in patch)) patch['parent_id'] = target.parent ?? null;
    }
    const m: Mutation = { action: op.action, block_id: op.blockId, patch };
    if (op.action !== 'create') m.base_version = this.baseVersion(op);
    return m;
  }

  /**
   * The version to send as base_version: the newest one such that nobody else changed a field of
   * this op after it — versions this client produced itself, and others' changes of other fields,
   * are skipped; the first foreign change of the same field stays after the base (a conflict).
   */
  private baseVersion(op: LocalOp): number {
    const server = this.sync.blocks.get(op.blockId);
    const seen = Math.max(op.seen, 1);
    if (!server) return seen; // gone (deleted): the server answers not_found or conflict
    const history = this.histories.get(op.blockId);
    // after a snapshot the versions in between are unknown: the one seen, and the server decides
    if (!history || history.unknown) return op.seen > 0 ? Math.min(op.seen, server.version) : server.version;
    for (const e of history.entries) {
      if (e.version <= op.seen || e.own) continue;
      const clash = e.fields === 'all' || op.fields === 'all' || [...op.fields].some((f) => (e.fields as Set<string>).has(f));
      if (clash) return Math.max(seen, e.version - 1);
    }
    return Math.max(seen, server.version);
  }

  /**
   * Where a placement puts a block in `view`: its parent (undefined: unchanged / top level) and
   * `after` for the server's after_id (undefined: no position given). `forServer`: a `before`'s
   * previous sibling must be a block the server has (one still being created is skipped; an
   * explicit `after` waits for its creation in dispatch()).
   */
  private resolvePlacement(view: ReadonlyMap<string, Block>, selfId: string, p: Placement, forServer: boolean): { parent?: string | null; after?: string | null } {
    const onServer = (id: string) => !forServer || this.sync.blocks.has(id);
    if (p.before !== undefined) {
      const anchor = view.get(p.before);
      if (!anchor) return p.parent !== undefined ? { parent: p.parent } : {};
      const parent = p.parent !== undefined ? p.parent : anchor.parent_id;
      const siblings = [...view.values()]
        .filter((b) => b.parent_id === anchor.parent_id && b.block_id !== selfId && (b.block_id === anchor.block_id || onServer(b.block_id)))
        .sort(compareBlocks);
      const i = siblings.findIndex((b) => b.block_id === anchor.block_id);
      return { parent, after: i > 0 ? siblings[i - 1]!.block_id : null };
    }
    if (p.after !== undefined) {
      if (p.after === null) return p.parent !== undefined ? { parent: p.parent, after: null } : { after: null };
      const anchor = view.get(p.after);
      if (!anchor) return p.parent !== undefined ? { parent: p.parent } : {};
      return { parent: p.parent !== undefined ? p.parent : anchor.parent_id, after: p.after };
    }
    return p.parent !== undefined ? { parent: p.parent } : {};
  }

  private onOutcome(op: LocalOp, outcome: MutationOutcome): void {
    if (op.state === 'applied') {
      // its delta came first; the answer means its commit is visible to every session now
      if (!this.unanswered.delete(op)) return; // the canvas ended
      op.resolve(op.result); // a detached op's promise rejected already: nothing
      this.notify('ack'); // pending went down
      return;
    }
    if (!this.ops.includes(op)) return; // settled already, or the canvas ended
    if (outcome.type === 'ack') {
      if (outcome.canvas_seq <= this.sync.canvasSeq) return this.settle(op, 'ack');
      op.state = 'acked';
      op.ackSeq = outcome.canvas_seq;
      return;
    }
    let err: PotentiaError;
    if (outcome.type === 'conflict') {
      const fields: ConflictError['fields'] = {};
      for (const [f, v] of Object.entries(outcome.fields ?? {})) fields[f] = { base: v.base, theirs: v.theirs, mine: v.mine };
      err = new ConflictError(outcome.code, outcome.message, op.blockId, outcome.block ? toBlock(outcome.block) : null,
        outcome.version, outcome.changed ?? [], fields);
    } else {
      const e = outcome.error;
      err = new PotentiaError(e.code, e.message, e.field); // a "not now" (rate_limited) is resent by CanvasSync, never an outcome
    }
    this.remove(op);
    if (op.action === 'create') this.early.delete(op.blockId);
    op.reject(err);
    this.report(err, !op.detached); // a detached op's caller stopped listening
    this.invalidate();
    this.notify('rollback');
    this.dispatch();
  }

  /**
   * The op's own delta was applied. Answered already: done. Not answered yet: it leaves the
   * optimistic overlay now (the server's block is in the state) and resolves at its answer. A delta
   * is read from the WAL once the commit record is flushed, and the committing backend makes the
   * transaction visible to other sessions only after that (its COMMIT then returns and the server
   * answers), so a promise resolved by the delta could be followed by a read, over HTTP or SQL,
   * that does not find the change yet.
   */
  private onOwnDelta(op: LocalOp, block: WireBlock | null | undefined): void {
    if (op.state === 'acked') return this.settle(op, 'delta', block);
    // not sent yet (behind another change of its block): its client_op_id was applied by another
    // client of this user (a tab resending it). It goes out in its turn and is answered as a
    // duplicate; taken out of `ops` now, it would never be sent, so never answered.
    if (op.state === 'waiting') return;
    this.remove(op);
    op.state = 'applied';
    op.result = this.serverResult(op, block);
    this.unanswered.add(op);
    if (op.action === 'create') this.flushEarlyText(op.blockId);
  }

  /** What an op resolves with: the server's block (from its delta, else the server state), undefined for a delete. */
  private serverResult(op: LocalOp, block?: WireBlock | null): Block | undefined {
    const server = block ?? this.sync.blocks.get(op.blockId);
    return op.action === 'delete' ? undefined : server ? toBlock(server) : this.view().blocks.get(op.blockId);
  }

  /** The op is done: its delta is in the server state, and the server answered it. Resolves with the server's block. */
  private settle(op: LocalOp, cause: 'ack' | 'delta', block?: WireBlock | null): void {
    this.remove(op);
    op.resolve(this.serverResult(op, block));
    if (op.action === 'create') this.flushEarlyText(op.blockId);
    if (cause === 'ack') {
      this.invalidate();
      this.notify('ack');
      this.dispatch();
    }
  }

  private remove(op: LocalOp): void {
    const i = this.ops.indexOf(op);
    if (i >= 0) this.ops.splice(i, 1);
    if (!this.ops.some((o) => o.blockId === op.blockId)) this.histories.delete(op.blockId);
  }

  /** Text typed into a block while it was being created goes out now that it exists. */
  private flushEarlyText(blockId: string): void {
    const keys = this.early.get(blockId);
    if (!keys) return;
    this.early.delete(blockId);
    if (!this.sync.blocks.has(blockId)) return;
    for (const [key, op] of keys) {
      try {
        this.sync.editText(blockId, key, op);
        let set = this.textKeys.get(blockId);
        if (!set) this.textKeys.set(blockId, (set = new Set()));
        set.add(key);
      } catch (err) {
        this.report(new PotentiaError('text_lost', `text typed into ${blockId}.${key} while it was created was lost: ${err instanceof Error ? err.message : String(err)}`, key));
      }
    }
  }

  // ------------------------------------------------------------------ internals: server state

  private onServerChange(delta: DeltaMessage | null): void {
    if (!delta) {
      // a snapshot: what happened between is unknown
      for (const [id, h] of this.histories) {
        const b = this.sync.blocks.get(id);
        h.shadow = b ? toBlock(b) : undefined;
        h.unknown = true;
      }
    } else {
      const own = this.sync.isOwn(delta.client_op_id);
      for (const id of delta.action === 'delete' ? [delta.block_id, ...(delta.deleted_ids ?? [])] : [delta.block_id]) {
        const h = this.histories.get(id);
        if (!h) continue;
        const after = id === delta.block_id && delta.block ? toBlock(delta.block) : undefined;
        h.entries.push({ version: delta.version ?? Number.MAX_SAFE_INTEGER, fields: changedFields(h.shadow, after), own });
        h.shadow = after;
      }
      const op = delta.client_op_id ? this.ops.find((o) => o.id === delta.client_op_id) : undefined;
      if (op) this.onOwnDelta(op, delta.block);
    }
    for (const op of [...this.ops]) if (op.state === 'acked' && op.ackSeq <= this.sync.canvasSeq) this.settle(op, 'delta');
    this.invalidate();
    this.notify(!delta ? 'snapshot' : this.sync.isOwn(delta.client_op_id) ? 'ack' : 'remote');
    this.dispatch();
  }

  private onTextChange(change: TextChange): void {
    if (change.lost) {
      this.report(new PotentiaError('text_lost', `edits of ${change.blockId}.${change.key} could not be merged (${change.lost.reason}) and were dropped`, change.key));
    }
    for (const l of [...this.textListeners]) {
      try {
        l(change);
      } catch (err) {
        this.report(err);
      }
    }
    if (change.source === 'local') return; // editText notifies
    this.invalidate();
    // a remote edit's delta notifies next; a reset by the answer to an edit has no delta
    if (change.source === 'reset') this.notify('rollback');
  }

  private onSyncError(err: unknown): void {
    if (err instanceof AccessLostError) this.end(err);
    this.report(err);
  }

  /**
   * While not live, asks over HTTP (ACCESS_CHECK_MS) whether the user may still see the
   * canvas: a socket upgrade refused with 403/404 looks like any network failure to a WebSocket
   * (browsers give no status), so a user removed while offline would otherwise retry for ever.
   */
  private watchAccess(): void {
    if (this.accessTimer || this._status === 'closed') return;
    const first = this.accessChecks++ === 0;
    this.accessTimer = setTimeout(() => {
      this.accessTimer = null;
      if (this._status === 'live' || this._status === 'closed') return;
      this.deps.checkAccess(this.lifetime.signal).then(
        (r) => this.safely(() => {
          this.setCanWrite(r.can_write);
          this.watchAccess();
        }),
        (err: unknown) => this.safely(() => {
          if (err instanceof AccessLostError || (err instanceof PotentiaError && err.code === 'unauthorized')) {
            this.end(err);
            this.report(err);
          } else {
            this.watchAccess(); // unreachable: the socket keeps trying, so do we
          }
        }),
      );
    }, first ? ACCESS_CHECK_MS[0] : ACCESS_CHECK_MS[1]);
  }

  private setStatus(status: CanvasStatus): void {
    if (this._status === 'closed' || this._status === status) return;
    this._status = status;
    this.notify('status');
  }

  private setCanWrite(canWrite: boolean): void {
    if (this._canWrite === canWrite) return;
    this._canWrite = canWrite;
    this.notify('status');
  }

  // ------------------------------------------------------------------ internals: the view

  private invalidate(): void {
    this.cache = null;
  }

  /** Server blocks, then every pending op in order, then local text. */
  private view(): { blocks: Map<string, Block>; tree: BlockNode[] | null } {
    if (this.cache) return this.cache;
    const blocks = new Map<string, Block>();
    for (const [id, b] of this.sync.blocks) {
      let block = this.converted.get(b);
      if (!block) this.converted.set(b, (block = toBlock(b)));
      blocks.set(id, block);
    }
    for (const op of this.ops) {
      try {
        this.applyOp(blocks, op);
      } catch {
        // an op that no longer fits the state (its block is gone) shows nothing
      }
    }
    for (const [id, keys] of this.textKeys) {
      const b = blocks.get(id);
      if (!b) continue;
      for (const key of keys) {
        const text = this.sync.textOf(id, key);
        if (text === undefined || b.content[key] === text || (text === '' && !(key in b.content))) continue;
        blocks.set(id, { ...b, content: { ...b.content, [key]: text } });
      }
    }
    for (const [id, keys] of this.early) {
      const b = blocks.get(id);
      if (!b) continue;
      const content = { ...b.content };
      for (const [key, op] of keys) {
        try {
          setMember(content, key, textType.apply(textIn(b, key), op));
        } catch {
          // the key changed under the edits (never for a block not yet on the server)
        }
      }
      blocks.set(id, { ...b, content });
    }
    return (this.cache = { blocks, tree: null });
  }

  private applyOp(blocks: Map<string, Block>, op: LocalOp): void {
    const current = blocks.get(op.blockId);
    switch (op.action) {
      case 'create': {
        if (current) return; // already there (its delta came)
        const where = this.resolvePlacement(blocks, op.blockId, op.placement ?? {}, false);
        blocks.set(op.blockId, {
          block_id: op.blockId, canvas_id: this.id, parent_id: where.parent ?? null, type: op.patch.type ?? '',
          content: (mergePatch({}, op.patch.content ?? {}) as Record<string, unknown>),
          y_order: localKey(blocks, op.blockId, where.after), version: 0,
          created_at: null, created_by: null, updated_at: null, updated_by: null,
        });
        return;
      }
      case 'update': {
        if (!current) return;
        blocks.set(op.blockId, {
          ...current,
          ...(op.patch.type !== undefined ? { type: op.patch.type } : {}),
          ...(op.patch.content !== undefined ? { content: mergePatch(current.content, op.patch.content) as Record<string, unknown> } : {}),
        });
        return;
      }
      case 'move': {
        if (!current) return;
        const where = this.resolvePlacement(blocks, op.blockId, op.placement ?? {}, false);
        blocks.set(op.blockId, {
          ...current,
          ...(where.parent !== undefined ? { parent_id: where.parent } : {}),
          ...(where.after !== undefined ? { y_order: localKey(blocks, op.blockId, where.after) } : {}),
        });
        return;
      }
      case 'delete': {
        if (!current) return;
        for (const id of subtree(blocks, op.blockId)) blocks.delete(id);
        return;
      }
    }
  }

  private notify(cause: CanvasChangeCause): void {
    if (this.listeners.size === 0) return;
    const self = this;
    const view: CanvasSnapshotView = {
      canvasId: this.id,
      cause,
      get status() { return self.status; },
      get canvasSeq() { return self.canvasSeq; },
      get pending() { return self.pending; },
      get blocks() { return self.blocks(); },
      tree: () => this.tree(),
      block: (id: string) => this.block(id),
    };
    for (const l of [...this.listeners]) {
      try {
        l(view);
      } catch (err) {
        this.report(err);
      }
    }
  }

  /** Runs `fn`, reporting what it throws: for callbacks of promises nobody else awaits. */
  private safely(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.report(err);
    }
  }

  /**
   * Hands an error to the onError listeners; without any, prints it unless its caller hears of it
   * anyway (`heard`: a refused change rejects its own promise).
   */
  private report(err: unknown, heard = false): void {
    const e = err instanceof PotentiaError ? err : new PotentiaError('internal', err instanceof Error ? err.message : String(err));
    if (this.errorListeners.size === 0) {
      if (!heard) console.error('@potentia/client:', err);
      return;
    }
    for (const l of [...this.errorListeners]) {
      try {
        l(e);
      } catch {
        // an error listener that throws has nobody left to tell
      }
    }
  }
}

/** Stands in for a missing WebSocket class (connect() refuses before it could be used). */
class MissingWebSocket {
  constructor() {
    throw new PotentiaError('no_websocket', 'no WebSocket class: pass one to createPotentiaClient({ WebSocket })', 'WebSocket');
  }
}

/** A local y_order for a block placed `after` (undefined: appended; null: first), excluding the block itself. */
function localKey(blocks: ReadonlyMap<string, Block>, selfId: string, after: string | null | undefined): string {
  const keys = [...blocks.values()].filter((b) => b.block_id !== selfId).map((b) => b.y_order).sort();
  if (after === null) return keyBetween(null, keys[0] ?? null);
  const anchor = after !== undefined ? blocks.get(after) : undefined;
  if (!anchor) return keyBetween(keys[keys.length - 1] ?? null, null);
  return keyBetween(anchor.y_order, keys.find((k) => k > anchor.y_order) ?? null);
}

/**
 * `content` as it will be sent (through JSON: a Date is its string, as the server will store it),
 * or the refusal of a value JSON cannot carry (json-value.ts), named as the server names it
 * (`patch.content.count`): checked before the change enters the optimistic state, so the local
 * state shows what the server will get.
 */
function asSent(content: Record<string, unknown> | undefined): { content: Record<string, unknown> | undefined } | PotentiaError {
  if (content === undefined) return { content };
  // a mutate frame holds patch.content two levels down
  const encoded = encodeJson(content, 'patch.content', MESSAGE_MAX_DEPTH - 2);
  if (!('text' in encoded)) return new PotentiaError('invalid_input', encoded.message, encoded.field);
  const sent: unknown = JSON.parse(encoded.text);
  if (sent === null || typeof sent !== 'object' || Array.isArray(sent)) return new PotentiaError('invalid_input', 'content must be a JSON object', 'patch.content');
  return { content: sent as Record<string, unknown> };
}
