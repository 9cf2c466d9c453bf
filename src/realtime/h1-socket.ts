import type { WebSocket } from 'ws';
import { monotonicNow } from '../clock.ts';
import { requestStatement, withRequest, type RequestContext } from '../db/request.ts';
import { apiErrorFromDatabase, type ApiError } from '../http/errors.ts';
import { checkJson, fieldPath, parseJson } from '../input-policy.ts';
import { AccessGate, accessChange, canvasAccess, concerns, USER_GONE_MESSAGE, userGone, type CanvasAccess } from './access.ts';
import type { SocketClaims } from './authorize.ts';
import type { BusMessage } from './bus.ts';
import { ClientMessage, H1_CLOSE_BAD_REQUEST, H1_CLOSE_FORBIDDEN, H1_CLOSE_FRAME_RATE, H1_CLOSE_HELD_MESSAGES, H1_CLOSE_NOT_FOUND, H1_CLOSE_UNAUTHORIZED, H1_PROTOCOL_VERSION, SNAPSHOT_PARTS_REQUIRED, type DeltaMessage, type MutateMessage, type ServerMessage } from './h1-protocol.ts';
import { HELD_MESSAGES_LIMIT_REACHED, heldBytes } from './held-frames.ts';
import type { Hub } from './hub.ts';
import { FrameBound } from './frame-bound.ts';
import { RateLimiter } from './rate-limit.ts';
import type { Encoded } from './serializer.ts';
import { InboundQueue } from './inbound-queue.ts';
import { PresenceSteps } from './presence-sessions.ts';
import { whenWritable, writeBounded, writeShared } from './socket-write.ts';
import { whenTokenExpires } from './token-expiry.ts';

/** A bus message's live delta, made once for every socket of the canvas (it is never modified). */
const liveDeltas = new WeakMap<BusMessage, DeltaMessage>();
/** A live delta's frame, serialized once for every socket that sends it. */
const encodedDeltas = new WeakMap<DeltaMessage, Encoded>();

/**
 * One H1 sync socket on a canvas (protocol in h1-protocol.ts). Live deltas come from the
 * database bus (the `block_op` messages api.upsert_block_atomic sends to `canvas:{id}`);
 * `resume` replays the operation log (api.get_canvas_changes_since, page after page) while live
 * deltas are held back, then releases the held ones above the replay's last canvas_seq: no gap, no
 * duplicate. A live delta whose canvas_seq is not the last sent + 1 (the bus skipped one) makes the
 * socket fill the gap from the log the same way. Access is re-checked on every `access_changed`
 * concerning the user (access.ts).
 */
export class H1Socket {
  private readonly limiter: RateLimiter;
  /** Every frame, whatever it is (limits.framesPerSecond as realtime-js sockets, in bursts of limits.h1FrameBurst). */
  /** Every frame's bound: past it the socket is closing, and what it queued does not run. */
  private readonly frames: FrameBound;
  private readonly offDatabase: () => void;
  /** Holds database messages while access is re-checked. */
  private readonly gate: AccessGate;
  /** null until the client resumed; then the highest canvas_seq sent. */
  private lastSent: number | null = null;
  /** Live deltas held while a replay runs. */
  private held: DeltaMessage[] | null = null;
  /** Bytes of the deltas deliver() added to `held` since it was last emptied (heldBytes). */
  private heldSize = 0;
  /**
   * Client resumes taken so far. A replay serves the newest one only (see resume): an older one
   * still queued is skipped, one running stops before its next page. Before, each resume replayed
   * the whole log in turn: `resume` since 0 in a loop paged through it once per message.
   */
  private resumesAsked = 0;
  /** Messages are handled one after another, so answers keep the client's order. */
  private readonly inbound: InboundQueue;
  private lastPresenceWrite = 0;
  /** The last presence written (cursor, typing): written again when another gateway heard this one again after taking it for dead (Hub.recordSessionsAgain). */
  private lastPresence: { cursor: Record<string, unknown> | null; typing: boolean } | null = null;
  /** Removes this socket's recorder from the hub (Hub.onRecordSessionsAgain), at the close. */
  private offRecordAgain: (() => void) | null = null;
  /**
   * The socket's durable presence session (app.presence_sessions, sql/rpc/presence.sql), recorded
   * by every presence write and left at the close: the user's row stays while another of their
   * sockets or channels holds a session on the canvas, on any gateway.
   */
  private readonly presenceSession: string;
  /** The socket's presence writes and its close's leave, in order: the leave never runs before a write that records the session again. */
  private readonly presenceSteps = new PresenceSteps();
  private closed = false;
  /** Access was lost: queued messages are skipped while the one running finishes and is answered. */
  private revoked = false;
  /** Closes the socket when its token expires: H1 has no token refresh, the client reconnects. */
  private expiry: { cancel(): void } | null = null;

  constructor(
    private readonly ws: WebSocket,
    private readonly hub: Hub,
    private readonly canvasId: string,
    private readonly claims: SocketClaims,
    private access: CanvasAccess,
    initialSinceSeq: number | null,
    initialSinceCanvasSeq: number | null = null,
    /** The client joins a snapshot sent in parts (`?snapshot_parts=1`); see sendSnapshot. */
    private readonly snapshotParts = false,
  ) {
    this.presenceSession = hub.newPresenceSession();
    this.limiter = new RateLimiter(hub.limits.messagesPerSecond);
    this.frames = new FrameBound(ws, { framesPerSecond: hub.limits.framesPerSecond, frameBurst: hub.limits.h1FrameBurst },
      H1_CLOSE_FRAME_RATE, () => this.frameRateReached());
    // true once the socket holds at most its bound; a client that does not read is dropped
    const drained = () => whenWritable(ws, hub.limits.maxBufferedBytes, hub.limits.drainTimeoutMs);
    const runs = () => !this.revoked && !this.frames.passed;
    this.inbound = new InboundQueue(ws, hub.limits.maxPendingFrames, async () => runs() && await drained() && runs());
    this.gate = new AccessGate(() => this.reauthorize(), (err) => {
      hub.logger.error({ err }, 'H1 re-authorization failed');
      this.send({ type: 'error', code: 'internal', message: 'could not re-check your access; reconnect' });
      ws.close(1011, 'access re-check failed');
    }, {
      sql: hub.sql,
      held: { maxKept: hub.limits.maxHeldDatabaseMessages, maxKeptBytes: hub.limits.maxHeldDatabaseBytes },
      // none may be dropped: the client resumes from its last canvas_seq on a new socket and
      // reads what was held from the log (the close waits for what was sent: acks included)
      onOverflow: () => this.heldOverflow('during an access re-check'),
    });
    this.offDatabase = hub.subscribe(`canvas:${canvasId}`, { onDatabase: (m) => this.onDatabase(m) });
    ws.on('message', (data, isBinary) => {
      // counted before anything reads the frame: one past the bound costs no parsing, no answer
      if (!this.frames.admit()) return;
      if (isBinary) this.send({ type: 'error', code: 'invalid_message', message: 'H1 frames are JSON text' });
      else this.onMessage(String(data));
      // a pong or a refusal is answered at once, outside the inbound queue (a ping during a long
      // replay is not kept waiting): past the socket's bound, reading stops until the client has
      // read its answers, and a client that does not within drainTimeoutMs is dropped. Before, a
      // client that sent small frames and never read grew the gateway by every answer (500 MB in
      // 15 s of pings).
      if (ws.bufferedAmount > hub.limits.maxBufferedBytes && !this.inbound.holding) {
        this.inbound.hold(drained());
      }
    });
    ws.on('close', () => this.onClose());
    ws.on('error', () => {});
    this.send({ type: 'hello', v: H1_PROTOCOL_VERSION, canvas_id: canvasId, user_id: String(claims.sub), can_write: access.write });
    hub.logger.info({ canvas_id: canvasId, user_id: claims.sub, can_write: access.write }, 'H1 socket open');
    if (typeof claims.exp === 'number') {
      const exp = claims.exp;
      this.expiry = whenTokenExpires(exp, () => {
        this.send({ type: 'error', code: 'unauthorized',
          message: `the access token expired ${Math.max(0, Math.floor(Date.now() / 1000) - exp)} seconds ago: reconnect with a fresh one` });
        ws.close(H1_CLOSE_UNAUTHORIZED, 'token_expired');
      });
    }
    if (initialSinceCanvasSeq !== null) this.enqueueResume({ since_canvas_seq: initialSinceCanvasSeq }, false);
    else if (initialSinceSeq !== null) this.enqueueResume({ since_seq: initialSinceSeq }, false);
  }

  /**
   * The socket sent frames faster than the bound of every frame (limits.framesPerSecond): before,
   * each was answered (a pong, a refusal) however fast it came. FrameBound closes it as a
   * realtime-js socket is (phoenix-socket.ts), with H1's code: the client reconnects after a
   * backoff and resumes; messages queued before do not run (a mutate among them is resent by
   * the client with its client_op_id).
   */
  private frameRateReached(): void {
    const { framesPerSecond, h1FrameBurst: frameBurst } = this.hub.limits;
    this.hub.logger.warn({ canvas_id: this.canvasId, user_id: this.claims.sub, frames_per_second: framesPerSecond, frame_burst: frameBurst }, 'H1 socket closed: frame rate limit reached');
    this.hub.rateLimited('realtime:h1_frames');
  }

  /** One frame of this socket's own (an answer, a snapshot, a replayed delta). */
  private send(message: ServerMessage): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(JSON.stringify(message));
  }

  /** A frame another client caused (presence): a slow consumer is dropped (writeBounded). */
  private sendCaused(message: ServerMessage): void {
    if (this.ws.readyState === this.ws.OPEN) writeBounded(this.ws, JSON.stringify(message), this.hub.limits.maxBufferedBytes);
  }

  /**
   * A resume's flow control: true once the socket has room for more of the replay (half its
   * bound), false when the socket closed or the client did not read for limits.drainTimeoutMs
   * (terminated: a slow consumer). Resumes never overlap: each runs in the inbound queue.
   */
  private roomForReplay(): Promise<boolean> {
    return whenWritable(this.ws, this.hub.limits.maxBufferedBytes / 2, this.hub.limits.drainTimeoutMs);
  }

  /**
   * Queues a replay (a resume, or the fill of a gap in the live stream). Live deltas are held while
   * one runs, so one that failed (the database did not answer) left every later delta held: the
   * socket stayed open, answering pings, and silent, and its client, shown no gap, never knew.
   * Its failure is answered as any other, then the socket closes (1011): the client reconnects and
   * resumes from its last canvas_seq, as after any lost socket.
   */
  private enqueueReplay(work: () => Promise<unknown>): void {
    this.enqueue(work, undefined, () => {
      if (this.held !== null && this.ws.readyState === this.ws.OPEN) this.ws.close(1011, 'replay failed: reconnect and resume');
    });
  }

  /**
   * Queues a client's resume (its message, or the upgrade's since_seq / since_canvas_seq): it
   * supersedes any before it. Live deltas are held from now, as while its replay runs: the resume
   * may wait its turn behind the socket's earlier messages (a mutate), and a delta sent live
   * meanwhile (that mutate's) came again in the replay, before `resumed`, contrary to the
   * guarantee. Every queued item runs, or is skipped only once the socket is closing or has lost
   * its access, so the hold always ends (the replay, or a refused snapshot's release, ends it).
   */
  private enqueueResume(from: { since_seq: number } | { since_canvas_seq: number }, snapshot: boolean): void {
    const ask = ++this.resumesAsked;
    if (this.held === null) {
      this.held = [];
      this.heldSize = 0;
    }
    this.enqueueReplay(() => this.resume(from, snapshot, ask));
  }

  /**
   * Runs `work` after the socket's earlier messages; `opId` names the mutate it serves, if any;
   * `failed` runs after a failure was answered (one that is lost access is the gate's to close).
   */
  private enqueue(work: () => Promise<unknown>, opId?: string, failed?: () => void): void {
    const op = opId === undefined ? {} : { client_op_id: opId };
    this.inbound.push(work, (err) => {
      // the one mapping of database errors to stable codes, as on HTTP: nothing the client
      // caused (bad values, limits, lost access) is `internal`
      const error = apiErrorFromDatabase(err);
      if (error.code === 'forbidden' || error.code === 'not_found') {
        // the database refused the canvas to this user (PX403 / PX404): access changed under the socket
        this.send({ type: 'error', code: error.code, message: error.message });
        return this.gate.recheck();
      }
      if (error.code === 'internal') this.hub.logger.error({ err }, 'H1 message failed');
      const { field, retry_after } = error.details;
      this.send({
        type: 'error', code: error.code, message: error.message, ...op,
        ...(typeof field === 'string' ? { field } : {}),
        ...(typeof retry_after === 'number' ? { retry_after_ms: retry_after * 1000 } : {}),
      });
      failed?.();
    });
  }

  private onMessage(text: string): void {
    const read = parseJson(text, 'message');
    if (!('value' in read)) return this.send({ type: 'error', code: 'invalid_message', message: 'not JSON' });
    const raw = read.value;
    const wait = this.limiter.take();
    if (wait > 0) {
      const opId = (raw as { client_op_id?: unknown })?.client_op_id;
      return this.send({
        type: 'error', code: 'rate_limited', retry_after_ms: wait,
        message: `at most ${this.hub.limits.messagesPerSecond} messages per second per socket; this message was dropped`,
        ...(typeof opId === 'string' ? { client_op_id: opId } : {}),
      });
    }
    // the input policy before the schema: the same refusals as HTTP, naming the field
    const bad = checkJson(raw, { root: 'message' });
    if (bad) {
      const opId = (raw as { client_op_id?: unknown })?.client_op_id;
      return this.send({ type: 'error', code: 'invalid_input', message: bad.message, field: bad.field,
        ...(typeof opId === 'string' ? { client_op_id: opId } : {}) });
    }
    const parsed = ClientMessage.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      // an unknown field is named itself (its issue's path is the object holding it)
      const path = issue?.code === 'unrecognized_keys' ? [...issue.path, issue.keys[0]!] : issue?.path ?? [];
      const field = fieldPath(path) || 'message';
      const opId = (raw as { client_op_id?: unknown })?.client_op_id;
      return this.send({ type: 'error', code: 'invalid_message', message: `${field}: ${issue?.message}`, field,
        ...(typeof opId === 'string' ? { client_op_id: opId } : {}) });
    }
    const msg = parsed.data;
    switch (msg.type) {
      case 'ping':
        return this.send({ type: 'pong' });
      case 'mutate':
        return this.enqueue(() => this.mutate(msg), msg.client_op_id);
      case 'resume':
        return this.enqueueResume(msg.since_canvas_seq !== undefined ? { since_canvas_seq: msg.since_canvas_seq } : { since_seq: msg.since_seq }, msg.snapshot);
      case 'presence': {
        // each is a realtime.messages row every member receives: the user's budget across sockets
        // (admission.ts), shared with their realtime-js broadcasts and tracks
        const wait = this.hub.admission.message(this.claims, '');
        if (wait > 0) {
          return this.send({ type: 'error', code: 'rate_limited', retry_after_ms: wait,
            message: `at most ${this.hub.limits.callerMessagesPerSecond} presence updates and client messages per second for this user across sockets; this message was dropped` });
        }
        return this.enqueue(() => this.presence(msg.cursor ?? null, msg.typing));
      }
    }
  }

  /** Who is asking, as the database sees it: this socket's claims, on its canvas's path. */
  private get request(): RequestContext {
    return { claims: this.claims as any, path: `/ws/canvas/${this.canvasId}` };
  }

  private rpc<T>(work: (tx: any) => Promise<T>): Promise<T> {
    return withRequest(this.hub.sql, this.request, work);
  }

  private async mutate(msg: MutateMessage): Promise<void> {
    if (!this.access.write) {
      return this.send({ type: 'error', code: 'read_only', client_op_id: msg.client_op_id, message: this.access.readOnlyReason ?? 'read only' });
    }
    // idempotent by client_op_id: one pipelined transaction (requestStatement), like H2 over HTTP
    const [row] = await requestStatement<{ r: Record<string, any> }>(this.hub.lanes, this.canvasId, this.request,
      'select api.upsert_block_atomic($1::uuid, $2::uuid, $3, $4, $5::int, $6::jsonb) as r',
      [this.canvasId, msg.block_id ?? null, msg.action, msg.client_op_id, msg.base_version ?? null, msg.patch as any]);
    const result = row!.r;
    if (result.status === 'success' || result.status === 'duplicate') {
      this.send({ type: 'ack', client_op_id: msg.client_op_id, status: result.duplicate === true ? 'duplicate' : 'success', server_seq: Number(result.server_seq), canvas_seq: Number(result.canvas_seq), version: result.version ?? null, block_id: result.block_id ?? result.block?.block_id ?? null, ...(result.text ? { text: result.text } : {}) });
    } else if (result.status === 'conflict') {
      const { code, message, changed, fields } = result.error ?? {};
      this.send({ type: 'conflict', client_op_id: msg.client_op_id, block: result.block ?? null, server_seq: null,
        code: code === 'rebase_required' ? 'rebase_required' : 'conflict', message: String(message ?? 'conflict'), version: result.version ?? null,
        ...(changed ? { changed } : {}), ...(fields ? { fields } : {}) });
    } else {
      this.send({ type: 'rejected', client_op_id: msg.client_op_id, error: result.error ?? { code: 'failed', message: 'mutation failed' } });
    }
  }

  /**
   * Replays the log after `from` (by canvas_seq, or by server_seq for the first page), paging
   * until it is exhausted, while live deltas are held; then `resumed` and the held deltas above
   * the replay. With `gap` (the live delta that showed a gap: a fill the client did not ask for)
   * nothing is announced, and if the log has not reached `gap` the held deltas stay held and the
   * answer is false: the caller retries or drops `gap`.
   *
   * `ask` is the client resume it serves (resumesAsked; a gap fill, the newest when it was queued).
   * Once a newer one is asked this replay is superseded: it reads and sends nothing more, no
   * `resumed`, and leaves the held deltas to the newer one (queued behind it). So a socket's
   * database work is one replay at a time plus at most one page (or snapshot) per resume it
   * superseded, each resume a message of the socket's rate (limits.messagesPerSecond).
   */
  private async resume(from: { since_seq: number } | { since_canvas_seq: number }, snapshot: boolean, ask: number, gap?: DeltaMessage): Promise<boolean> {
    // access lost stops it too: the forbidden close waits for the running message, and a replay
    // paced by the client's reading (drainTimeoutMs a delta) went on to its page's end first
    const superseded = () => ask !== this.resumesAsked || this.revoked || this.ws.readyState !== this.ws.OPEN;
    if (superseded()) return true; // queued before a newer resume: that one replays
    // the live stream this resume replaces: a client resume refused by the snapshot limit before it
    // sent anything leaves it as it was (null: none, e.g. a replay this one superseded)
    const stream = gap === undefined ? this.lastSent : null;
    let sentAny = false;
    if (this.held === null) { // from now, live deltas wait for the replay (a gap fill keeps the one that showed the gap)
      this.held = [];
      this.heldSize = 0;
    } else if (!gap && this.heldTooMuch()) {
      // held by the replays this one superseded: a client sending `resume` faster than a replay
      // ends kept every delta of the canvas for as long as it went on. Bounded as the access gate
      // holds (one slow replay is not: its held deltas go out once it is done, paced)
      this.held = [];
      this.heldSize = 0;
      this.heldOverflow('across superseded resumes');
      return true;
    }
    this.lastSent = null;
    let last = 0; // canvas_seq of the last delta sent
    let lastSeq = 0; // and its server_seq
    let snapshots = 0;
    /** false: the user's snapshot limit refused it (answered; the resume ends there). */
    const sendSnapshot = async (): Promise<boolean> => {
      // a stale log can need one; a second in one resume means something is wrong: fail the resume
      if (++snapshots > 2) throw new Error('H1 resume: the operation log could not continue from a fresh snapshot');
      // a client's resume takes one hit of the user's snapshot limit, the HTTP snapshot's (H4), in
      // the snapshot's transaction, before it: `snapshot: true` (or a since_canvas_seq ahead of the
      // canvas) cost one snapshot per message, 10 per second per socket. A gap fill is the
      // server's own, and the second snapshot of one resume is part of the first's work.
      const limited = gap === undefined && snapshots === 1;
      // the snapshot a page at a time (api.get_canvas_snapshot: 1,000 blocks, about 4 MB), each
      // sent before the next is read: pages after the first leave out the blocks changed after
      // the first page's canvas_watermark, and the replay from there that follows brings them
      const page = (cursor: string | null) => this.rpc(async (tx) => (await tx`select api.get_canvas_snapshot(${this.canvasId}::uuid, null, ${cursor}) as r`)[0].r);
      let snap: any;
      try {
        snap = limited
          ? await this.rpc(async (tx) => (await tx`select api.get_canvas_snapshot(${this.canvasId}::uuid) as r from api.hit_endpoint_limit('H4', ${this.hub.relaxedEndpointLimits})`)[0].r)
          : await page(null);
      } catch (err) {
        const refusal = limited ? apiErrorFromDatabase(err) : null;
        if (refusal?.code !== 'rate_limited') throw err;
        await this.snapshotRefused(refusal, sentAny ? null : stream);
        return false;
      }
      if (snap.has_more === true && !this.snapshotParts) {
        // a client that did not say it joins parts (one before them) would keep the last part
        // alone, believing it the canvas: told what to do instead, and closed
        this.send({ type: 'error', code: 'invalid_input', field: 'snapshot_parts', message: SNAPSHOT_PARTS_REQUIRED });
        this.ws.close(H1_CLOSE_BAD_REQUEST, 'snapshot_parts required');
        return false;
      }
      last = Number(snap.canvas_watermark ?? 0);
      lastSeq = Number(snap.watermark ?? 0);
      for (let part = 0; ; part++) {
        if (!(await this.roomForReplay()) || superseded()) return true;
        this.send({ type: 'snapshot', canvas: snap.canvas, blocks: snap.blocks, watermark: lastSeq, canvas_watermark: last, part, has_more: snap.has_more === true });
        sentAny = true;
        if (snap.has_more !== true) return true;
        snap = await page(String(snap.next_cursor));
      }
    };
    const changesSince = (canvasSeq: number) =>
      this.rpc(async (tx) => (await tx`select api.get_canvas_changes_since(${this.canvasId}::uuid, ${canvasSeq}, 500) as r`)[0].r);
    let page: any;
    if (snapshot) {
      if (!(await sendSnapshot()) || superseded()) return true;
      page = await changesSince(last);
    } else if ('since_canvas_seq' in from) {
      last = from.since_canvas_seq;
      page = await changesSince(last);
    } else {
      lastSeq = from.since_seq;
      page = await this.rpc(async (tx) => (await tx`select api.get_canvas_changes(${this.canvasId}::uuid, ${lastSeq}, 500) as r`)[0].r);
    }
    for (;;) {
      if (superseded()) return true;
      if (page.snapshot_required) {
        // retention removed what follows since_canvas_seq, or it is ahead of the canvas
        if (!(await sendSnapshot())) return true;
      } else {
        for (const c of page.changes as any[]) {
          const canvasSeq = Number(c.canvas_seq);
          if (canvasSeq <= last) continue;
          if (!(await this.roomForReplay()) || superseded()) return true;
          this.send(toDelta(c, true));
          sentAny = true;
          last = canvasSeq;
          lastSeq = Number(c.server_seq);
        }
        if (!page.has_more) {
          last = Math.max(last, Number(page.canvas_watermark ?? 0));
          lastSeq = Math.max(lastSeq, Number(page.watermark ?? 0));
          break;
        }
      }
      if (superseded()) return true;
      page = await changesSince(last);
    }
    this.lastSent = last;
    if (gap && gap.canvas_seq > last) return false; // held stays held (deliver() keeps adding to it)
    if (!gap) this.send({ type: 'resumed', watermark: lastSeq, canvas_watermark: last });
    await this.releaseHeld();
    return true;
  }

  /**
   * A client resume whose snapshot the user's snapshot limit refused (H4, shared with HTTP):
   * answered `rate_limited` with retry_after_ms and no client_op_id, the socket staying open. A
   * refusal changes nothing: the live stream the socket had (`stream`, its last canvas_seq sent)
   * goes on from where it was, with the deltas held meanwhile, as after any replay (releaseHeld:
   * in order, a gap filled). Before, the stream stopped until a resume was accepted: a live
   * socket asking for a fresh snapshot in the wrong second went silent. Without one (the socket had
   * not resumed, the replay this one superseded, or this one had sent part of its replay: the
   * client's state is its own to start again) nothing is streamed until a resume is accepted, and
   * what was held is dropped (that resume's replay reads it from the log).
   */
  private async snapshotRefused(refusal: ApiError, stream: number | null): Promise<void> {
    this.hub.rateLimited('H4');
    const retryAfter = typeof refusal.details.retry_after === 'number' ? refusal.details.retry_after : 1;
    this.send({ type: 'error', code: 'rate_limited', retry_after_ms: retryAfter * 1000,
      message: `snapshots per user, across sockets and GET /canvas/{id}/snapshot (H4): ${refusal.message}; this resume was dropped: send it again after retry_after_ms` });
    this.lastSent = stream;
    if (stream !== null) return this.releaseHeld();
    this.held = null;
  }

  /**
   * Sends the held deltas above what was sent, in canvas_seq order, then stops holding. Paced as
   * the replay is (roomForReplay): a hold as long as a slow replay, sent at once, could pass the
   * bound of a client that reads and drop it as a slow consumer. Deltas that arrive meanwhile
   * join the hold and go out after these; at a gap the rest stay held for the fill.
   */
  private async releaseHeld(drop?: DeltaMessage): Promise<void> {
    while (this.held !== null) {
      const next = this.held.filter((d) => d !== drop).sort((a, b) => a.canvas_seq - b.canvas_seq);
      if (next.length === 0) {
        this.held = null;
        return;
      }
      this.held = [];
      this.heldSize = 0;
      for (const [i, d] of next.entries()) {
        const at = this.placeOf(d);
        if (at === 'sent') continue;
        if (at === 'gap') {
          this.held = [...next.slice(i), ...this.held];
          const ask = this.resumesAsked;
          this.enqueueReplay(() => this.fillGap(d, ask));
          return;
        }
        // closed, terminated as a slow consumer, or access lost (nothing more is sent)
        if (!(await this.roomForReplay()) || this.revoked) return;
        this.sendLive(d);
      }
    }
  }

  /**
   * Fills a gap in the live stream from the log, up to the delta that showed it. A live delta is
   * sent only once the log confirms it: a commit can reach the bus an instant before a new
   * snapshot sees it, so an unconfirmed one is retried a few times with a pause; one the log still
   * lacks then is no operation of this canvas (nothing but the mutation RPC may send block_op) and
   * is dropped, never sent on the strength of its number alone.
   */
  private async fillGap(gap: DeltaMessage, ask: number): Promise<void> {
    for (let tries = 1; tries <= 3; tries++) {
      if (tries > 1) await new Promise((r) => setTimeout(r, 50 * tries));
      // a client resume queued before this fill has covered it (and released what was held)
      if (this.held === null || this.lastSent === null || !this.held.includes(gap)) return;
      if (await this.resume({ since_canvas_seq: this.lastSent }, false, ask, gap)) return;
    }
    this.hub.logger.warn({ canvasId: this.canvasId, canvas_seq: gap.canvas_seq, last: this.lastSent }, 'H1: block_op not in the operation log; dropped');
    await this.releaseHeld(gap);
  }

  /** Where a delta falls against the last one sent: already sent (or no stream yet), the next one, or past a gap. */
  private placeOf(d: DeltaMessage): 'sent' | 'next' | 'gap' {
    if (this.lastSent === null || d.canvas_seq <= this.lastSent) return 'sent';
    return d.canvas_seq === this.lastSent + 1 ? 'next' : 'gap';
  }

  private sendLive(d: DeltaMessage): void {
    const at = this.placeOf(d);
    if (at === 'sent') return;
    if (at === 'gap') {
      // the bus skipped (or has not yet delivered) one: hold this and later deltas, and send the
      // missing ones from the log first; a client resume queued before the fill covers it already
      if (this.held) return void this.held.push(d);
      this.held = [d];
      const ask = this.resumesAsked;
      this.enqueueReplay(() => this.fillGap(d, ask));
      return;
    }
    this.lastSent = d.canvas_seq;
    if (this.ws.readyState !== this.ws.OPEN) return;
    let encoded = encodedDeltas.get(d);
    if (encoded === undefined) encodedDeltas.set(d, (encoded = { data: Buffer.from(JSON.stringify(d), 'utf8'), binary: false }));
    writeShared(this.ws, encoded, this.hub.limits.maxBufferedBytes); // one frame for every socket; a slow consumer is dropped
  }

  private onDatabase(m: BusMessage): void {
    if (!m.private || m.extension !== 'broadcast') return;
    const change = accessChange(m);
    if (change) {
      if (concerns(change, this.claims)) this.gate.recheck(m.id);
      return;
    }
    this.gate.deliver(() => this.deliver(m), m);
  }

  /** Re-checks access after these access_changed messages (committed while the upgrade was being authorized). */
  recheckAccess(messageIds: readonly string[]): void {
    this.gate.recheck(...messageIds);
  }

  /** Re-authorizes after an access change: closes on lost access, announces a changed write right. */
  private async reauthorize(): Promise<boolean> {
    if (this.closed) return false;
    const access = await canvasAccess(this.hub.sql, this.claims, this.canvasId);
    if (!access.read) {
      // a deleted user's token (the memberships went with the user): unauthorized, as HTTP and
      // the upgrade answer it (401), not the forbidden of a member removed
      const userDeleted = await userGone(this.hub.sql, this.claims);
      // the message running now (a mutation that may have committed before the change) is
      // answered before the close, not lost with it; its transaction is bounded by the statement
      // timeout. Nothing queued after it runs, and nothing held is delivered (the gate is denied).
      this.revoked = true;
      await this.inbound.idle();
      const [code, message, closeCode, reason] = userDeleted ? ['unauthorized', USER_GONE_MESSAGE, H1_CLOSE_UNAUTHORIZED, 'user_deleted'] as const
        : access.gone ? ['not_found', 'this canvas was deleted', H1_CLOSE_NOT_FOUND, 'not_found'] as const
          : ['forbidden', 'you no longer have access to this canvas', H1_CLOSE_FORBIDDEN, 'forbidden'] as const;
      this.send({ type: 'error', code, message });
      this.ws.close(closeCode, reason);
      return false;
    }
    const changed = access.write !== this.access.write;
    this.access = access;
    if (changed) this.send({ type: 'access', can_write: access.write, role: access.role, message: access.readOnlyReason });
    return true;
  }

  private deliver(m: BusMessage): void {
    const p = m.payload as Record<string, any>;
    if (m.event === 'block_op') {
      let d = liveDeltas.get(m);
      if (d === undefined) liveDeltas.set(m, (d = toDelta(p, false)));
      if (!this.held) return this.sendLive(d);
      this.held.push(d);
      this.heldSize += heldBytes(m);
    } else if (m.event === 'presence' && p.user_id !== this.claims.sub) {
      this.sendCaused({ type: 'presence', user_id: String(p.user_id), cursor: p.cursor ?? null, typing: p.typing === true });
    } else if (m.event === 'presence_leave' && p.user_id !== this.claims.sub) {
      this.sendCaused({ type: 'presence_leave', user_id: String(p.user_id) });
    }
  }

  /** Whether the held deltas are past limits.maxHeldDatabaseMessages / maxHeldDatabaseBytes. */
  private heldTooMuch(): boolean {
    const { maxHeldDatabaseMessages, maxHeldDatabaseBytes } = this.hub.limits;
    return this.held !== null && (this.held.length > maxHeldDatabaseMessages || this.heldSize > maxHeldDatabaseBytes);
  }

  /**
   * More deltas arrived while a replay or an access re-check ran than the socket may hold: none may
   * be dropped, so the socket closes and the client resumes from its last canvas_seq on a new one,
   * reading what was held from the log (the close waits for what was sent: acks included).
   */
  private heldOverflow(when: string): void {
    this.hub.logger.warn({ canvas_id: this.canvasId, user_id: this.claims.sub, last_canvas_seq: this.lastSent }, `H1 socket closed: held messages limit reached ${when}`);
    this.ws.close(H1_CLOSE_HELD_MESSAGES, `${HELD_MESSAGES_LIMIT_REACHED}: resume from your last canvas_seq`);
  }

  private async presence(cursor: Record<string, unknown> | null, typing: boolean): Promise<void> {
    // api.update_presence broadcasts through realtime.send; its durable write is throttled in SQL,
    // the session recorded at every call (idempotent: one removed meanwhile is back)
    this.lastPresenceWrite = monotonicNow();
    if (!this.lastPresence) {
      this.offRecordAgain = this.hub.onRecordSessionsAgain(() => {
        const last = this.lastPresence;
        // beside the socket's queue (not the client's message: its failure is not answered to it); in order with its writes and leave
        if (!this.closed && last) {
          this.presenceSteps.write(() => this.writePresence(last.cursor, last.typing))
            .catch((err) => this.hub.logger.debug({ err, session: this.presenceSession }, 'an H1 socket\'s presence session was not recorded again'));
        }
      });
    }
    this.lastPresence = { cursor, typing };
    await this.presenceSteps.write(() => this.writePresence(cursor, typing));
  }

  private writePresence(cursor: Record<string, unknown> | null, typing: boolean): Promise<unknown> {
    return this.rpc((tx) => tx`select api.update_presence(${this.canvasId}::uuid, ${cursor as any}::jsonb, ${typing}, ${this.presenceSession})`);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    this.expiry?.cancel();
    this.offRecordAgain?.();
    this.hub.logger.info({ canvas_id: this.canvasId, user_id: this.claims.sub, last_canvas_seq: this.lastSent }, 'H1 socket closed');
    this.offDatabase();
    // its session leaves; the user leaves the canvas only when it was their last (sql/rpc/presence.sql)
    if (this.lastPresenceWrite > 0) {
      void this.presenceSteps.leave(this.hub.sql, this.hub.logger, this.request, this.canvasId, this.presenceSession);
    }
  }
}

function toDelta(c: Record<string, any>, replaying: boolean): DeltaMessage {
  return {
    type: 'delta',
    server_seq: Number(c.server_seq),
    canvas_seq: Number(c.canvas_seq),
    action: c.action,
    block_id: c.block_id,
    version: c.version ?? null,
    block: c.block ?? null,
    client_op_id: c.client_op_id ?? null,
    actor_id: c.actor_id ?? null,
    deleted_ids: c.deleted_ids ?? null,
    // live: the broadcast's `text`; from the log: the logged patch's (both as applied)
    ...((c.text ?? c.patch?.text) ? { text: c.text ?? c.patch.text } : {}),
    ...(replaying ? { replaying: true } : {}),
  };
}
