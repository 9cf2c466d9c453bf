import { createHash, randomUUID } from 'node:crypto';
import type { WebSocket } from 'ws';
import { monotonicNow } from '../clock.ts';
import { isConnectionFailure } from '../db/faults.ts';
import { withRequest } from '../db/request.ts';
import { TokenError } from '../auth/jwt.ts';
import { apiErrorFromDatabase, type ApiError } from '../http/errors.ts';
import { checkJson, fieldPath, isJsonObject } from '../input-policy.ts';
import { AccessGate, accessChange, concerns, watchAccess } from './access.ts';
import { callerOf } from './admission.ts';
import { mayAccessTopic, type SocketClaims } from './authorize.ts';
import type { BusMessage } from './bus.ts';
import { CANVAS_TOPIC_SPELLING, canvasIdOfTopic, isMisspelledCanvasTopic } from './canvas-topic.ts';
import { databaseEventRefusal, isDatabaseEvent } from './database-events.ts';
import { channelKey, type ChannelKey } from './channel-key.ts';
import type { ClusterPayload } from './cluster.ts';
import { HELD_MESSAGES_LIMIT_REACHED } from './held-frames.ts';
import type { Hub } from './hub.ts';
import { checkPresenceState, PRESENCE_KEY_MAX_METAS, PresenceDiffFold, wholeKeyDiffs, type PresenceDiff } from './presence.ts';
import { PresenceSteps } from './presence-sessions.ts';
import { FrameBound } from './frame-bound.ts';
import { RateLimiter } from './rate-limit.ts';
import { InboundQueue } from './inbound-queue.ts';
import { whenWritable, writeBounded, writeShared } from './socket-write.ts';
import { whenTokenExpires } from './token-expiry.ts';
import { parseReplay, readReplay, REPLAY_FAILED, ReplaySeam } from './replay.ts';
import { decodeFrame, encodeBinaryBroadcast, encodeBroadcast, encodeFrame, ProtocolError, type Encoded, type Frame, type Vsn } from './serializer.ts';

/**
 * One realtime-js connection (`/realtime/v1/websocket?apikey=…&vsn=…`): the Phoenix channel
 * lifecycle — phx_join (config: broadcast self/ack, presence key/enabled, private), phx_reply,
 * phx_leave, phx_close, phx_error, heartbeat on `phoenix`, access_token refresh, `system`
 * messages — with database broadcasts, client broadcasts and presence on each channel.
 */
type Channel = {
  topic: string; // realtime:<subTopic>
  subTopic: string;
  /** Partition of presence and client broadcasts: the private and public rooms of a topic never mix. */
  key: ChannelKey;
  joinRef: string;
  private: boolean;
  self: boolean;
  ack: boolean;
  presenceEnabled: boolean;
  presenceKey: string;
  claims: SocketClaims;
  /** Cached RLS decisions for sending, per extension; cleared by a new access_token. */
  canSend: Map<string, boolean>;
  offDatabase: () => void;
  offPeers: () => void;
  expiry: { cancel(): void } | null;
  lastPresenceWrite: number;
  /**
   * The durable presence session of the channel's current tracking period (app.presence_sessions,
   * sql/rpc/presence.sql): its id, the claims it was last written with and is left as (a token of
   * another user may come meanwhile), and whether a write of it committed. Made by the first track after the
   * channel was not tracked (each period its own id: a leave still on its way never removes the
   * next period's session); dropped by the untrack or close that leaves it.
   */
  presenceSession: {
    id: string; claims: SocketClaims; recorded: boolean;
    /** The last state written, and the removal of its recorder (Hub.onRecordSessionsAgain): written again when another gateway heard this one again after taking it for dead. */
    cursor: unknown; typing: boolean; offRecordAgain: (() => void) | null;
  } | null;
  /** The channel's durable presence writes and leaves, run one after another in the order asked. */
  presenceSteps: PresenceSteps;
  tracked: boolean;
  /** Bytes of the tracked state's JSON while `tracked` (limits.maxPresenceBytesPerSocket). */
  trackedBytes: number;
  /** Holds database messages, client broadcasts and presence diffs while the channel's access is re-checked (access.ts). */
  gate: AccessGate;
  /** Presence diffs that came while the gate held (a re-check), as their net effect. */
  heldPresence: PresenceDiffFold;
  /** Set when the join asked for a broadcast replay (replay.ts): holds live messages until it is sent. */
  replay: ReplaySeam | null;
  /**
   * A token sent by `access_token` that could not be checked because the signing keys could not
   * be fetched (TokenError keys_unavailable): the channel keeps its current token and claims, and
   * checks this one again (`attempt`: checks failed so far; `timer`: the next) until the keys
   * answer. A newer access_token, a leave or the channel's end drops it.
   */
  pending: { token: string; attempt: number; timer: NodeJS.Timeout | null } | null;
  socket: PhoenixSocket;
};

export type VerifyToken = (token: string) => Promise<SocketClaims>;

/**
 * The `system` error a channel gets when client broadcasts held during an access re-check were
 * dropped (hub.ts maxHeldBroadcasts): the stable code, then how many and the bound.
 */
export const BROADCASTS_DROPPED = 'BroadcastsDropped';
function broadcastsDropped(count: number, limits: { maxHeldBroadcasts: number; maxHeldBroadcastBytes: number }): string {
  return `${BROADCASTS_DROPPED}: ${count} client broadcast${count === 1 ? '' : 's'} sent while your access was re-checked were dropped, ` +
    `oldest first (a channel holds at most ${limits.maxHeldBroadcasts} broadcasts or ${limits.maxHeldBroadcastBytes} bytes meanwhile)`;
}

/**
 * The `system` error of a channel ended because more database messages arrived during an access
 * re-check than it holds (hub.ts maxHeldDatabaseMessages): the stable code, the bound, what to do.
 */
function heldMessagesLimitReached(limits: { maxHeldDatabaseMessages: number; maxHeldDatabaseBytes: number }): string {
  return `${HELD_MESSAGES_LIMIT_REACHED}: more than ${limits.maxHeldDatabaseMessages} database messages or ${limits.maxHeldDatabaseBytes} bytes ` +
    'arrived while your access was re-checked; they were not delivered and the channel rejoins: read what you show again from the database';
}

/** Reply and system message when the database connection was lost while handling a frame. */
const UNAVAILABLE = 'unavailable: the database connection was lost; retry shortly';

/**
 * Delays (ms) between the checks of an access_token that could not be checked because the signing
 * keys could not be fetched (Channel.pending), the last repeated: realtime-js's reconnect steps.
 */
const PENDING_TOKEN_RETRY_MS = [1000, 2000, 5000, 10_000];
const retryDelay = (attempt: number) => PENDING_TOKEN_RETRY_MS[Math.min(attempt, PENDING_TOKEN_RETRY_MS.length) - 1]!;

/** Database refusals caused by the client's frame or rights (as opposed to a fault of the database). */
const CLIENT_CAUSED = new Set(['invalid_input', 'forbidden', 'not_found', 'rate_limited', 'payload_too_large', 'conflict', 'rebase_required', 'unauthorized']);

const absent = (v: unknown) => v === undefined || v === null;

/**
 * What is wrong with a phx_join payload (`<field>: <problem>`, fields named as realtime-js's join
 * options: `config.broadcast.self`), or null. realtime-js sends `{config: {broadcast: {ack, self,
 * replay?}, presence: {key, enabled}, private, postgres_changes: []}, access_token?}`; each part may
 * be absent or null, and when present has its type. (config.private, the presence key's length and
 * broadcast.replay have their own checks in join.)
 */
export function joinPayloadProblem(payload: unknown): string | null {
  if (absent(payload)) return null;
  if (!isJsonObject(payload)) return 'payload: a JSON object ({config, access_token})';
  if (!absent(payload.access_token) && typeof payload.access_token !== 'string') return 'access_token: a string (a JWT)';
  const config = payload.config;
  if (absent(config)) return null;
  if (!isJsonObject(config)) return 'config: a JSON object';
  for (const part of ['broadcast', 'presence'] as const) {
    if (!absent(config[part]) && !isJsonObject(config[part])) return `config.${part}: a JSON object`;
  }
  const broadcast = (config.broadcast ?? {}) as Record<string, unknown>;
  for (const flag of ['self', 'ack'] as const) {
    if (!absent(broadcast[flag]) && typeof broadcast[flag] !== 'boolean') return `config.broadcast.${flag}: true or false (a boolean)`;
  }
  const presence = (config.presence ?? {}) as Record<string, unknown>;
  if (!absent(presence.key) && typeof presence.key !== 'string') return 'config.presence.key: a string';
  if (!absent(presence.enabled) && typeof presence.enabled !== 'boolean') return 'config.presence.enabled: true or false (a boolean)';
  if (!absent(config.postgres_changes) && !Array.isArray(config.postgres_changes)) return 'config.postgres_changes: an array';
  return null;
}

/** A phx_reply / system reason from a mapped error: `<code>: <field>: <message>` (the field when known). */
function reasonOf(error: ApiError): string {
  const field = error.details.field;
  return typeof field === 'string' && !error.message.startsWith(`${field}:`)
    ? `${error.code}: ${field}: ${error.message}` : `${error.code}: ${error.message}`;
}

/**
 * Join refusal for postgres_changes bindings. Serving them means filtering every WAL row through
 * each subscriber's RLS (Supabase's walrus); the canvas's changes are already broadcast from the
 * database on its private topic (docs/realtime.md).
 */
/** Appended to a private join's refusal when its token names no user (an API key): docs/realtime.md, "realtime-js". */
const NO_USER_HINT = ' (this join carried no user, only an API key: sign in first, or call supabase.realtime.setAuth(accessToken), '
  + 'before subscribe(); docs/realtime.md)';

const POSTGRES_CHANGES_REFUSED =
  'PostgresChangesNotServed: postgres_changes is not served by this gateway (it would have to check RLS per subscriber for every changed row); ' +
  "subscribe to Broadcast from Database instead: channel `canvas:{id}` with config { private: true }, on('broadcast') events " +
  'block_op, presence, presence_leave, canvas_updated, canvas_deleted (see docs/realtime.md)';

/** The first of a frame's names (topic, join_ref, ref) longer than `max` characters, or null. */
function longName(frame: Frame, max: number): 'topic' | 'join_ref' | 'ref' | null {
  if (frame.topic.length > max) return 'topic';
  if (frame.join_ref !== null && frame.join_ref.length > max) return 'join_ref';
  if (frame.ref !== null && frame.ref.length > max) return 'ref';
  return null;
}

export class PhoenixSocket {
  private readonly channels = new Map<string, Channel>();
  private readonly limiter: RateLimiter;
  private readonly joinLimiter: RateLimiter;
  /** Every frame, whatever its topic and event (limits.framesPerSecond). */
  /** Every frame's bound: past it the socket is closing, and what it still sends is not read. */
  private readonly frames: FrameBound;
  private lastSeen = monotonicNow();
  private readonly idleTimer: NodeJS.Timeout;
  private closed = false;
  private lastRateWarning = 0;
  /** Frames are handled one after another per socket, so replies keep the client's order. */
  private readonly inbound: InboundQueue;
  /**
   * Per topic, the tail of its frames that wait off the socket's queue (onLane): one starts when a
   * channel's send waits for its access re-check; later frames of the topic queue behind it, in order.
   */
  private readonly lanes = new Map<string, Promise<void>>();
  /** Frames waiting on lanes, across the socket. */
  private laned = 0;

  constructor(
    private readonly ws: WebSocket,
    private readonly hub: Hub,
    private readonly vsn: Vsn,
    private readonly connectToken: string,
    private readonly verify: VerifyToken,
    /** Where the socket comes from (admission.ts): whose authorizations a join without a user costs. */
    private readonly address: string,
  ) {
    this.limiter = new RateLimiter(hub.limits.messagesPerSecond);
    this.joinLimiter = new RateLimiter(hub.limits.joinsPerSecond, hub.limits.maxChannelsPerSocket);
    this.inbound = new InboundQueue(ws, hub.limits.maxPendingFrames,
      () => whenWritable(ws, hub.limits.maxBufferedBytes, hub.limits.drainTimeoutMs));
    this.frames = new FrameBound(ws, hub.limits, 1008, () => this.frameRateReached());
    ws.on('message', (data, isBinary) => {
      // counted before anything reads the frame: a frame past the bound costs no decoding, no reply
      if (!this.frames.admit()) return;
      this.lastSeen = monotonicNow();
      this.inbound.push(() => this.onFrame(data as Buffer, isBinary), (err) => hub.logger.error({ err }, 'realtime frame handling failed'));
    });
    ws.on('close', () => void this.onClose());
    ws.on('error', () => {});
    this.idleTimer = setInterval(() => {
      if (monotonicNow() - this.lastSeen > hub.limits.idleTimeoutMs) ws.terminate();
    }, Math.min(15_000, hub.limits.idleTimeoutMs));
    this.idleTimer.unref();
  }

  /**
   * The socket sent frames faster than any realtime-js client does (limits.framesPerSecond):
   * heartbeats, frames to topics it never joined, garbage, each answered. FrameBound closes it
   * as Supabase Realtime ends a socket past its join rate (1008, policy violation; reason
   * frameRateLimitReached): realtime-js reconnects with its backoff and rejoins; frames still
   * arriving are dropped unread.
   */
  private frameRateReached(): void {
    const { framesPerSecond, frameBurst } = this.hub.limits;
    this.hub.logger.warn({ address: this.address, frames_per_second: framesPerSecond, frame_burst: frameBurst }, 'realtime socket closed: frame rate limit reached');
    this.hub.rateLimited('realtime:phoenix_frames');
  }

  /** One text frame of this socket's own (a reply, presence state, a system message). */
  send(frame: Frame): void {
    if (this.ws.readyState === this.ws.OPEN) this.ws.send(encodeFrame(frame, this.vsn));
  }

  /** A frame another socket caused (deliverPresenceDiff): a slow consumer is dropped (writeBounded). */
  sendCaused(frame: Frame): void {
    if (this.ws.readyState === this.ws.OPEN) writeBounded(this.ws, encodeFrame(frame, this.vsn), this.hub.limits.maxBufferedBytes);
  }

  private reply(frame: Frame, status: 'ok' | 'error', response: Record<string, unknown> = {}): void {
    this.send({ join_ref: frame.join_ref, ref: frame.ref, topic: frame.topic, event: 'phx_reply', payload: { status, response } });
  }

  private system(channel: Channel, status: 'ok' | 'error', message: string): void {
    this.send({
      join_ref: channel.joinRef, ref: null, topic: channel.topic, event: 'system',
      payload: { extension: 'system', status, message, channel: channel.subTopic },
    });
  }

  private async onFrame(data: Buffer, isBinary: boolean): Promise<void> {
    if (this.frames.passed) return; // queued before the bound was passed: the socket is closing
    let frame: Frame;
    try {
      frame = decodeFrame(data, isBinary, this.vsn);
    } catch (err) {
      if (err instanceof ProtocolError) {
        // Phoenix ignores what it cannot decode; a frame whose topic and refs could be read but
        // which is wrong after them (an event not a string, a binary push's unreadable metadata or
        // payload) is answered on that topic (its sender waits for the reply), after the same
        // input policy as every frame (the topic and refs are echoed)
        const a = err.answerable;
        if (a && a.ref !== null && !checkJson({ topic: a.topic, join_ref: a.join_ref, ref: a.ref }) && a.topic.length <= this.hub.limits.maxNameLength
            && (a.join_ref ?? '').length <= this.hub.limits.maxNameLength && a.ref.length <= this.hub.limits.maxNameLength) {
          this.send({ join_ref: a.join_ref, ref: a.ref, topic: a.topic, event: 'phx_reply',
            payload: { status: 'error', response: { reason: `invalid_input: ${a.field}: ${a.problem}` } } });
        }
        return;
      }
      throw err;
    }
    // the input policy (src/input-policy.ts) on the whole frame, before anything reads it: topic,
    // event and payload (config, broadcast payloads, presence metas) never hold an unpaired
    // surrogate or NUL, nor nest deeper than 64; the field is named from the frame (payload.payload.x)
    if (frame.badRef) {
      // a ref that is not one cannot be echoed: answered with ref null, naming it
      return this.send({ join_ref: null, ref: null, topic: frame.topic, event: 'phx_reply',
        payload: { status: 'error', response: { reason: `invalid_input: ${frame.badRef}: a ref is a string, a number or null` } } });
    }
    // the refs too: they are echoed in every reply and kept as a channel's join_ref
    const bad = checkJson({ join_ref: frame.join_ref, ref: frame.ref, topic: frame.topic, event: frame.event, payload: frame.payload },
      { root: 'frame', depthField: (parts) => fieldPath(parts.slice(0, 3)) });
    if (bad) {
      const channel = this.channels.get(frame.topic);
      // a broadcast without ack has no reply waiting (realtime-js resolved it on send): say it on the channel
      if (frame.event === 'broadcast' && channel && !channel.ack) this.system(channel, 'error', `invalid_input: ${bad.message}`);
      else this.reply(frame, 'error', { reason: `invalid_input: ${bad.message}` });
      return;
    }
    const tooLong = longName(frame, this.hub.limits.maxNameLength);
    if (tooLong) return this.reply(frame, 'error', { reason: `invalid_input: ${tooLong}: at most ${this.hub.limits.maxNameLength} characters` });
    if (frame.topic === 'phoenix') {
      if (frame.event === 'heartbeat') this.reply(frame, 'ok');
      return;
    }
    // a channel whose send waits for its access re-check (maySend) waits on its own lane, in its
    // order, not in the socket's: the socket's heartbeats and its other channels' frames go on
    const current = this.channels.get(frame.topic);
    if (this.lanes.has(frame.topic)
        || (current && current.private && current.gate.holding && (frame.event === 'broadcast' || frame.event === 'presence'))) {
      const done = this.onLane(frame.topic, () => this.channelFrame(frame));
      // past the socket's bound the queue waits too (and stops reading): what a client floods meanwhile stays in its TCP window
      if (this.laned > this.hub.limits.maxPendingFrames) await done;
      return;
    }
    return this.channelFrame(frame);
  }

  /**
   * Runs `work` (a frame of `topic`) after the topic's earlier laned frames, off the socket's
   * queue: counted in `laned`, bounded with it (onFrame).
   */
  private onLane(topic: string, work: () => Promise<void>): Promise<void> {
    this.laned++;
    const next: Promise<void> = (this.lanes.get(topic) ?? Promise.resolve())
      .then(work)
      .catch((err) => { this.hub.logger.error({ err }, 'realtime frame handling failed'); })
      .finally(() => {
        this.laned--;
        if (this.lanes.get(topic) === next) this.lanes.delete(topic);
      });
    this.lanes.set(topic, next);
    return next;
  }

  /** A frame past the input policy, other than the socket's own (topic phoenix): a join, or one of a joined channel's. */
  private async channelFrame(frame: Frame): Promise<void> {
    if (frame.event === 'phx_join') {
      try {
        return await this.join(frame);
      } catch (err) {
        // a join always gets its phx_reply: without one realtime-js waits for its timeout
        if (isConnectionFailure(err)) return this.reply(frame, 'error', { reason: UNAVAILABLE });
        const error = apiErrorFromDatabase(err);
        if (error.code !== 'internal') return this.reply(frame, 'error', { reason: reasonOf(error) });
        this.hub.logger.error({ err, topic: frame.topic }, 'realtime join failed');
        return this.reply(frame, 'error', { reason: 'internal error: the join failed, retry shortly' });
      }
    }
    const channel = this.channels.get(frame.topic);
    if (!channel || (frame.join_ref && frame.join_ref !== channel.joinRef)) {
      if (frame.event !== 'phx_leave') this.reply(frame, 'error', { reason: 'unmatched topic' });
      else this.reply(frame, 'ok');
      return;
    }
    try {
      switch (frame.event) {
        case 'phx_leave':
          this.reply(frame, 'ok');
          await this.close(channel, false);
          return;
        case 'access_token':
          return await this.refreshToken(channel, frame);
        case 'broadcast':
          return await this.clientBroadcast(channel, frame);
        case 'presence':
          return await this.presence(channel, frame);
        default:
          this.reply(frame, 'error', { reason: `unknown event ${frame.event}` });
      }
    } catch (err) {
      await this.channelFailed(channel, frame, err);
    }
  }

  /**
   * A channel's frame failed (`frame`), or the gateway's own work for it (null: the later check of
   * an access_token, Channel.pending): answered, never dropped.
   */
  private async channelFailed(channel: Channel, frame: Frame | null, err: unknown): Promise<void> {
    if (isConnectionFailure(err)) {
      // the database hiccuped, the channel is fine: say so, keep it joined
      if (frame?.ref) this.reply(frame, 'error', { reason: UNAVAILABLE });
      return this.system(channel, 'error', UNAVAILABLE);
    }
    const error = apiErrorFromDatabase(err);
    if (error.code !== 'internal') {
      // refused for a reason the client can act on (its input, a limit, lost access): the channel stays
      if (frame?.ref) this.reply(frame, 'error', { reason: reasonOf(error) });
      else this.system(channel, 'error', reasonOf(error));
      if (error.code === 'forbidden' || error.code === 'not_found') channel.gate.recheck();
      return;
    }
    this.hub.logger.error({ err, topic: channel.topic, event: frame?.event ?? 'access_token' }, 'realtime channel failed');
    await this.errored(channel);
  }

  private async join(frame: Frame): Promise<void> {
    const fail = (reason: string) => this.reply(frame, 'error', { reason });
    if (!frame.topic.startsWith('realtime:')) return fail('topics are `realtime:<name>`');
    // what a socket may hold is bounded before anything is kept: joins per second (each private
    // one costs a database probe), the names' length (onFrame), the number of channels. Reasons as Supabase
    // Realtime words them, so realtime-js users see the codes they know.
    const limits = this.hub.limits;
    const wait = this.joinLimiter.take();
    if (wait > 0) return fail(`ClientJoinRateLimitReached: Too many joins per second (at most ${limits.joinsPerSecond}); retry in ${wait} ms`);
    const existing = this.channels.get(frame.topic);
    if (!existing && this.channels.size >= limits.maxChannelsPerSocket) {
      return fail(`ChannelRateLimitReached: Too many channels (at most ${limits.maxChannelsPerSocket} per socket): leave one first`);
    }
    // the join's own fields have their types, or the join is refused naming the field (they were
    // read as absent: a config "x", a presence [] or an access_token 5 joined as if not sent, an
    // access_token that is not a string on the connect token)
    const malformed = joinPayloadProblem(frame.payload);
    if (malformed) return fail(`invalid_input: ${malformed}`);
    if (existing) await this.close(existing, true); // a re-join replaces the old join
    const payload = (frame.payload ?? {}) as { config?: any; access_token?: string };
    const config = payload.config ?? {};
    if (Array.isArray(config.postgres_changes) && config.postgres_changes.length > 0) {
      return fail(POSTGRES_CHANGES_REFUSED);
    }
    if (typeof config.presence?.key === 'string' && config.presence.key.length > limits.maxNameLength) {
      return fail(`invalid_input: config.presence.key: at most ${limits.maxNameLength} characters`);
    }
    // the presence key is an object key of every presence_state and presence_diff: refused as the
    // input policy refuses that key in any JSON object (src/input-policy.ts)
    if (config.presence?.key === '__proto__') {
      return fail('invalid_input: config.presence.key: __proto__ is not accepted (JavaScript would treat it as the prototype): use another key');
    }
    // a private join is authorized, a public one is not: anything but a boolean (the string "true")
    // is refused rather than read as public, which the client did not ask for
    if (config.private !== undefined && config.private !== null && typeof config.private !== 'boolean') {
      return fail('invalid_input: config.private: true or false (a boolean)');
    }
    const token = typeof payload.access_token === 'string' && payload.access_token ? payload.access_token : this.connectToken;
    let claims: SocketClaims;
    try {
      // verified again even when it is the connect token: it may have expired since (same leeway as HTTP)
      claims = await this.verify(token);
    } catch (err) {
      // the keys to check it could not be fetched: no verdict on the token, and a retryable
      // refusal (realtime-js rejoins on its own), as a join whose database probe failed
      if (err instanceof TokenError && err.code === 'keys_unavailable') return fail(`unavailable: ${err.message}`);
      if (err instanceof TokenError) return fail(`InvalidJWTToken: ${err.message}`);
      throw err;
    }
    const subTopic = frame.topic.slice('realtime:'.length);
    const isPrivate = config.private === true;
    if (isPrivate && isMisspelledCanvasTopic(subTopic)) return fail(CANVAS_TOPIC_SPELLING);
    // a private join costs a database probe: bounded per user across sockets, not only per socket
    const waitMs = isPrivate ? this.hub.admission.authorize(claims, this.address) : 0;
    if (waitMs > 0) {
      return fail(`ClientJoinRateLimitReached: Too many private channel joins per second for this user (at most ${limits.authorizationsPerSecond} across sockets); retry in ${waitMs} ms`);
    }
    // watched from before the check: an access change committed while it runs is re-checked
    const watch = isPrivate ? watchAccess(this.hub, subTopic, claims) : null;
    const allowed = !isPrivate || (await mayAccessTopic(this.hub.sql, claims, subTopic, 'read').catch((err) => { watch?.stop(); throw err; }));
    if (!allowed || this.closed) watch?.stop();
    // Supabase's words first (clients match them); a join that carried no user (the anon key
    // alone: subscribed before signing in) also hears what to do, where a stranger's does not
    if (!allowed) {
      return fail(`Unauthorized: You do not have permissions to read from this Channel topic: ${subTopic}${claims.sub ? '' : NO_USER_HINT}`);
    }
    if (this.closed) return;
    const replay = parseReplay(config, isPrivate);
    if (typeof replay === 'string') {
      watch?.stop();
      return fail(replay);
    }
    const presenceEnabled = config.presence?.enabled === true;
    const channel: Channel = {
      topic: frame.topic,
      subTopic,
      key: channelKey(subTopic, isPrivate),
      joinRef: frame.join_ref ?? frame.ref ?? '',
      private: isPrivate,
      self: config.broadcast?.self === true,
      ack: config.broadcast?.ack === true,
      presenceEnabled,
      presenceKey: typeof config.presence?.key === 'string' && config.presence.key ? config.presence.key : randomUUID(),
      claims,
      canSend: new Map(),
      offDatabase: () => {},
      offPeers: () => {},
      expiry: null,
      lastPresenceWrite: 0,
      presenceSession: null,
      presenceSteps: new PresenceSteps(),
      tracked: false,
      trackedBytes: 0,
      gate: new AccessGate(() => this.reauthorize(channel), (err) => void this.accessCheckFailed(channel, err), {
        sql: this.hub.sql,
        held: {
          maxDroppable: limits.maxHeldBroadcasts, maxDroppableBytes: limits.maxHeldBroadcastBytes,
          maxKept: limits.maxHeldDatabaseMessages, maxKeptBytes: limits.maxHeldDatabaseBytes,
        },
        onDropped: (count) => this.system(channel, 'error', broadcastsDropped(count, limits)),
        onOverflow: () => void this.heldMessagesOverflowed(channel),
      }),
      heldPresence: new PresenceDiffFold(),
      replay: replay ? new ReplaySeam() : null,
      pending: null,
      socket: this,
    };
    this.channels.set(frame.topic, channel);
    channel.offDatabase = this.hub.subscribe(subTopic, { onDatabase: (m) => this.deliverDatabase(channel, m) });
    if (watch?.messageIds.length) channel.gate.recheck(...watch.messageIds);
    watch?.stop();
    channel.offPeers = this.hub.join(channel.key, channel);
    this.armExpiry(channel);
    // read after the channel listens: a message committed meanwhile is held by the seam, not lost
    const replayed = replay ? await readReplay(this.hub.sql, claims, subTopic, replay).catch((err: unknown) => (err instanceof Error ? err : new Error(String(err)))) : [];
    if (this.channels.get(frame.topic) !== channel) return; // closed meanwhile (socket gone, access lost)
    if (replayed instanceof Error) {
      await this.close(channel, true);
      if (isConnectionFailure(replayed)) throw replayed;
      this.hub.logger.error({ err: replayed, topic: frame.topic }, 'realtime replay failed');
      return fail(REPLAY_FAILED);
    }
    this.reply(frame, 'ok', { postgres_changes: [] });
    this.hub.logger.info({ topic: frame.topic, user_id: claims.sub ?? null, role: claims.role, private: channel.private }, 'realtime channel joined');
    channel.replay?.release(replayed, (m) => channel.gate.deliver(() => {
      this.sendBroadcast(channel, m.event, m.payloadJson, { replayed: true, id: m.id }, new Map());
    }, m), (m) => this.deliverDatabase(channel, m));
    if (presenceEnabled) {
      // The room's presence as a diff, then an empty presence_state: a Phoenix client holds the
      // diffs that come before a join's presence_state and applies them after it, before its one
      // `sync`. realtime-js syncs a presence_state onto the state it kept from its last join (a
      // rejoin after a lost socket, a restarted gateway) and strips phx_ref from the metas a key
      // keeps through that sync (wholeKeyDiffs, presence.ts): a presence re-tracked while it was
      // away (a moved cursor) kept its old meta for good. Synced to {}, whatever it had leaves
      // whole; the room then joins whole.
      const state = this.hub.presence.state(channel.key);
      if (Object.keys(state).length > 0) {
        this.send({ join_ref: channel.joinRef, ref: null, topic: channel.topic, event: 'presence_diff', payload: { joins: state, leaves: {} } });
      }
      this.send({ join_ref: channel.joinRef, ref: null, topic: channel.topic, event: 'presence_state', payload: {} });
    }
  }

  private armExpiry(channel: Channel): void {
    channel.expiry?.cancel();
    channel.expiry = null;
    const exp = channel.claims.exp;
    if (typeof exp !== 'number') return;
    // closes when the token would no longer verify: exp plus the leeway every surface allows
    channel.expiry = whenTokenExpires(exp, () => {
      const ago = Math.max(0, Math.floor(Date.now() / 1000) - exp);
      if (channel.pending) {
        // the client sent a newer token, which the keys could not be fetched to check: its session
        // is not over. The channel errors (phx_error) rather than closes: realtime-js rejoins with
        // that token (its join payload), and the join is refused `unavailable` until the keys answer.
        this.system(channel, 'error', `unavailable: Token has expired ${ago} seconds ago and the newer one sent (access_token) could not be checked yet: ` +
          'the signing keys (SUPABASE_JWKS_URL) could not be fetched; the channel rejoins with it');
        void this.errored(channel);
        return;
      }
      this.system(channel, 'error', `Token has expired ${ago} seconds ago`);
      void this.close(channel, false);
    });
  }

  private async refreshToken(channel: Channel, frame: Frame): Promise<void> {
    // a payload or token of another type is refused naming it, as a join's access_token is
    // (joinPayloadProblem): it went unanswered, and the client never knew its refresh was not
    // taken. null and "" are no new token (realtime-js's setAuth(null) at sign-out sends null;
    // Supabase Realtime ignores it): the channel keeps the one it has, until it expires. A token
    // sent before and still waiting for the keys (Channel.pending) is dropped: it is no longer the
    // client's (applied once the keys answered, a signed-out client's channel went on as the user).
    const problem = !isJsonObject(frame.payload) ? 'payload: a JSON object ({access_token})'
      : absent(frame.payload.access_token) || typeof frame.payload.access_token === 'string' ? null
        : 'payload.access_token: a string (a JWT), or null';
    if (problem) {
      if (frame.ref) this.reply(frame, 'error', { reason: `invalid_input: ${problem}` });
      else this.system(channel, 'error', `invalid_input: ${problem}`);
      return;
    }
    const token = (frame.payload as { access_token?: string | null }).access_token;
    this.dropPending(channel); // a newer token, or none: the one waiting for the keys is no longer the client's
    if (typeof token !== 'string' || !token) return;
    return this.useToken(channel, token, frame);
  }

  /**
   * Checks `token` for `channel` and, when it verifies and authorizes, makes it the channel's.
   * `frame`: the access_token frame that sent it, or null for a later check of a token that could
   * not be checked then (Channel.pending). A token the keys could not be fetched to check is no
   * verdict: the channel keeps its current token (it still ends when that one expires, or when
   * the keys refuse this one), is told `unavailable` once, and this token is checked again.
   * A later check keeps it (Channel.pending) until there is a verdict: put off by the
   * authorization rate limit, it is checked again when the limit allows; by a database connection
   * failure, after the next retry step. Dropped then with a `system` error alone, it was lost:
   * realtime-js sends a token once, and the channel closed for good when the old one expired.
   */
  private async useToken(channel: Channel, token: string, frame: Frame | null): Promise<void> {
    let claims: SocketClaims;
    try {
      claims = await this.verify(token);
    } catch (err) {
      if (!(err instanceof TokenError)) throw err;
      if (err.code === 'keys_unavailable') return this.checkLater(channel, token, frame, err);
      this.dropPending(channel);
      if (this.channels.get(channel.topic) !== channel) return;
      this.system(channel, 'error', err.expired ? err.message : `Invalid JWT: ${err.message}`);
      return this.close(channel, false);
    }
    if (this.channels.get(channel.topic) !== channel) return this.dropPending(channel); // left or ended while the keys were fetched
    // a later check's token (frame null), kept while the check is put off
    const later = !frame && channel.pending?.token === token ? channel.pending : null;
    // the same database probe as a private join, so the same per-user bound across sockets; the
    // channel keeps its current token (it closes when that one expires)
    const waitMs = channel.private ? this.hub.admission.authorize(claims, this.address) : 0;
    if (waitMs > 0 && later) return this.putOff(channel, token, later.attempt, waitMs, 'the authorization rate limit');
    if (waitMs > 0) {
      return this.system(channel, 'error', `ClientJoinRateLimitReached: Too many private channel authorizations per second for this user (at most ${this.hub.limits.authorizationsPerSecond} across sockets); retry in ${waitMs} ms`);
    }
    // watched from before the check, as a join is: the channel hears only the access changes of
    // its current token's user, so a change for the new token's user (another user: supabase-js
    // signed someone else in) committed while the check ran would be missed, and the channel kept
    // on the state from before it
    const watch = channel.private ? watchAccess(this.hub, channel.subTopic, claims) : null;
    try {
      let allowed: boolean;
      try {
        allowed = !channel.private || (await mayAccessTopic(this.hub.sql, claims, channel.subTopic, 'read'));
      } catch (err) {
        if (later && isConnectionFailure(err) && this.channels.get(channel.topic) === channel && !this.closed) {
          const attempt = later.attempt + 1;
          return this.putOff(channel, token, attempt, retryDelay(attempt), 'a database connection failure');
        }
        this.dropPending(channel);
        throw err;
      }
      this.dropPending(channel); // a verdict: kept until now, it still made an expiry an error (armExpiry), not a close
      if (!allowed) {
        this.system(channel, 'error', `Unauthorized: You do not have permissions to read from this Channel topic: ${channel.subTopic}`);
        return await this.close(channel, false);
      }
      if (this.channels.get(channel.topic) !== channel) return; // closed meanwhile (left, socket gone, access lost)
      if (claims.sub !== channel.claims.sub) {
        // another user's token: what the old user tracked is theirs, not the new user's. Untracked
        // as the old user (the others see it leave; their session leaves, and their durable presence
        // row with it unless they hold another session), and the new user starts with nothing tracked.
        // Before, the old meta stayed shown and a later untrack left the canvas as the new user.
        await this.untrack(channel);
        if (this.channels.get(channel.topic) !== channel) return;
        channel.lastPresenceWrite = 0; // the new user's first track is written
      }
      channel.claims = claims;
      channel.canSend.clear();
      this.armExpiry(channel);
      if (watch?.messageIds.length) channel.gate.recheck(...watch.messageIds);
      // told it was `unavailable` before: now it is in use
      if (!frame) this.system(channel, 'ok', 'the access token sent while the signing keys could not be fetched has been checked: the channel now uses it');
    } finally {
      watch?.stop();
    }
  }

  /**
   * `token` could not be checked: the signing keys could not be fetched. The first time (`frame`)
   * the client is told, as a frame whose database work failed is (a reply when it has a ref, a
   * `system` error); then it is checked again after PENDING_TOKEN_RETRY_MS, in the socket's
   * order of work, until the keys answer.
   */
  private checkLater(channel: Channel, token: string, frame: Frame | null, err: TokenError): void {
    if (this.channels.get(channel.topic) !== channel || this.closed) return;
    if (frame) {
      const reason = `unavailable: ${err.message}; the channel keeps its current token and checks this one again once the keys can be fetched`;
      if (frame.ref) this.reply(frame, 'error', { reason });
      this.system(channel, 'error', reason);
    }
    const attempt = channel.pending?.token === token ? channel.pending.attempt + 1 : 1;
    this.schedulePending(channel, token, attempt, retryDelay(attempt));
  }

  /** Makes `token` the channel's token waiting to be checked (Channel.pending), checked in `delayMs` in the socket's order of work. */
  private schedulePending(channel: Channel, token: string, attempt: number, delayMs: number): void {
    this.dropPending(channel);
    const pending: NonNullable<Channel['pending']> = { token, attempt, timer: null };
    pending.timer = setTimeout(() => {
      pending.timer = null;
      this.inbound.push(async () => {
        if (channel.pending !== pending || this.channels.get(channel.topic) !== channel) return;
        await this.useToken(channel, token, null);
      }, (e) => this.channelFailed(channel, null, e));
    }, delayMs);
    pending.timer.unref();
    channel.pending = pending;
  }

  /** A later check of `token` put off (not a verdict on it): kept, and checked again in `delayMs`. */
  private putOff(channel: Channel, token: string, attempt: number, delayMs: number, why: string): void {
    this.hub.logger.warn({ topic: channel.topic, attempt, retryInMs: delayMs }, `realtime access token check put off by ${why}`);
    this.schedulePending(channel, token, attempt, delayMs);
  }

  /** Forgets the channel's token waiting for the keys (Channel.pending), if any. */
  private dropPending(channel: Channel): void {
    if (channel.pending?.timer) clearTimeout(channel.pending.timer);
    channel.pending = null;
  }

  /**
   * Whether the channel may send a client broadcast or track presence: on a private channel the
   * insert policy's answer (asked once per channel and token), after any running access re-check
   * (AccessGate.settled): a member removed does not send into the room meanwhile.
   */
  private async maySend(channel: Channel, extension: 'broadcast' | 'presence'): Promise<boolean> {
    if (!channel.private) return true;
    if (!(await channel.gate.settled())) return false;
    let ok = channel.canSend.get(extension);
    if (ok === undefined) {
      ok = await mayAccessTopic(this.hub.sql, channel.claims, channel.subTopic, 'write', extension);
      channel.canSend.set(extension, ok);
    }
    return ok;
  }

  /** Rate limit + size limit shared by client broadcasts and presence; false when refused. */
  private admit(channel: Channel, frame: Frame, payloadSize: number, reply: boolean): boolean {
    const wait = this.limiter.take();
    // then the caller's budget across its sockets (admission.ts): each message is relayed through Postgres
    const callerWait = wait > 0 ? 0 : this.hub.admission.message(channel.claims, this.address);
    if (wait > 0 || callerWait > 0) {
      const [limit, scope, retry] = wait > 0
        ? [this.hub.limits.messagesPerSecond, 'messages per second', wait]
        : [this.hub.limits.callerMessagesPerSecond, `messages per second ${channel.claims.sub ? 'for this user' : 'from this address'} across sockets`, callerWait];
      if (reply) this.reply(frame, 'error', { reason: `rate_limited: at most ${limit} ${scope}; retry in ${retry} ms` });
      if (monotonicNow() - this.lastRateWarning > 1000) {
        this.lastRateWarning = monotonicNow();
        this.system(channel, 'error', `Too many messages per second: at most ${limit} ${scope.replace(/^messages per second ?/, '')}`.trimEnd());
      }
      return false;
    }
    if (payloadSize > this.hub.limits.maxPayloadBytes) {
      if (reply) this.reply(frame, 'error', { reason: `payload_too_large: at most ${this.hub.limits.maxPayloadBytes} bytes` });
      else this.system(channel, 'error', `Payload too large: at most ${this.hub.limits.maxPayloadBytes} bytes`);
      return false;
    }
    return true;
  }

  private async clientBroadcast(channel: Channel, frame: Frame): Promise<void> {
    const p = (frame.payload ?? {}) as { event?: unknown; payload?: unknown };
    if (typeof p.event !== 'string') {
      const reason = "invalid_input: payload.event: a string (the broadcast's event name)";
      // without ack no reply is awaited (realtime-js resolved it on send): said on the channel, as a payload refused by the input policy
      if (channel.ack) this.reply(frame, 'error', { reason });
      else this.system(channel, 'error', reason);
      return;
    }
    // the event name is relayed to every subscriber and through the cluster like the payload:
    // bounded as a name (it is not counted in maxPayloadBytes)
    if (p.event.length > this.hub.limits.maxNameLength) {
      this.reply(frame, 'error', { reason: `invalid_input: payload.event: at most ${this.hub.limits.maxNameLength} characters` });
      return;
    }
    // the database's own events reach members' database-event listeners: only the database sends them
    if (channel.private && isDatabaseEvent(p.event)) {
      if (channel.ack) this.reply(frame, 'error', { reason: databaseEventRefusal(p.event) });
      else this.system(channel, 'error', databaseEventRefusal(p.event));
      return;
    }
    // vsn 2.0.0 binary (kind 3, raw encoding): relayed byte for byte
    const payload: ClusterPayload = p.payload instanceof ArrayBuffer ? { binary: Buffer.from(p.payload) } : { json: JSON.stringify(p.payload ?? {}) };
    const size = 'binary' in payload ? payload.binary.length : Buffer.byteLength(payload.json);
    if (!this.admit(channel, frame, size, channel.ack)) return;
    if (!(await this.maySend(channel, 'broadcast'))) {
      if (channel.ack) this.reply(frame, 'error', { reason: `Unauthorized: You do not have permissions to write to this Channel topic: ${channel.subTopic}` });
      return;
    }
    // this gateway's subscribers at once; the other gateways' through the cluster (cluster.ts)
    deliverClientBroadcast(this.hub, channel.key, p.event, payload, channel.self ? null : channel);
    const published = this.hub.cluster?.publishBroadcast(channel.key, p.event, payload);
    if (!channel.ack) {
      published?.catch((err) => this.hub.logger.debug({ err }, 'client broadcast not published to the cluster'));
      return;
    }
    if (!published) return this.reply(frame, 'ok');
    // ack = the cluster accepted it for fan-out (pg_logical_emit_message returned). Not awaited
    // here: the socket's next frames need not wait for it, and acks still resolve in send order.
    published.then(
      () => this.reply(frame, 'ok'),
      (err) => {
        this.hub.logger.warn({ err }, 'client broadcast not published to the cluster');
        this.reply(frame, 'error', { reason: 'unavailable: the broadcast did not reach the other gateways; retry shortly' });
      },
    );
  }

  /** Sends a client broadcast (JSON, or binary: vsn 2.0.0 sockets only, vsn 1.0.0 has no binary frames). */
  sendClientBroadcast(channel: Channel, event: string, payload: ClusterPayload, cache: Map<Vsn, Encoded>): void {
    if ('json' in payload) return this.sendBroadcast(channel, event, payload.json, null, cache);
    if (this.vsn !== '2.0.0' || this.ws.readyState !== this.ws.OPEN) return;
    let encoded = cache.get(this.vsn);
    if (encoded === undefined) {
      encoded = encodeBinaryBroadcast(channel.topic, event, payload.binary);
      cache.set(this.vsn, encoded);
    }
    writeShared(this.ws, encoded, this.hub.limits.maxBufferedBytes);
  }

  /** Sends a broadcast, encoding it once per protocol version for all recipients. */
  sendBroadcast(channel: Channel, event: string, payloadJson: string, meta: Record<string, unknown> | null, cache: Map<Vsn, Encoded>): void {
    if (this.ws.readyState !== this.ws.OPEN) return;
    let encoded = cache.get(this.vsn);
    if (encoded === undefined) {
      encoded = encodeBroadcast(channel.topic, event, payloadJson, meta, this.vsn);
      cache.set(this.vsn, encoded);
    }
    // the frame built once for every recipient, one write per socket; a slow consumer is dropped
    writeShared(this.ws, encoded, this.hub.limits.maxBufferedBytes);
  }

  private deliverDatabase(channel: Channel, message: BusMessage & { encoded?: Map<Vsn, Encoded> }): void {
    if (message.extension !== 'broadcast' || message.private !== channel.private) return;
    const change = accessChange(message);
    if (change) {
      // for the gateway only: never forwarded; the channel re-runs its join authorization
      if (concerns(change, channel.claims)) channel.gate.recheck(message.id);
      return;
    }
    if (channel.replay?.intercept(message)) return; // held until the replay is out, or already replayed
    channel.gate.deliver(() => {
      message.encoded ??= new Map();
      this.sendBroadcast(channel, message.event, message.payloadJson, { id: message.id }, message.encoded);
    }, message);
  }

  /** After an access change: the join authorization again; refused → `system` error and phx_close. */
  private async reauthorize(channel: Channel): Promise<boolean> {
    if (this.channels.get(channel.topic) !== channel) return false;
    const allowed = await mayAccessTopic(this.hub.sql, channel.claims, channel.subTopic, 'read');
    if (this.channels.get(channel.topic) !== channel) return false;
    if (allowed) {
      channel.canSend.clear(); // send rights are re-asked on the next broadcast / track
      return true;
    }
    this.system(channel, 'error', `Unauthorized: You do not have permissions to read from this Channel topic: ${channel.subTopic}`);
    await this.close(channel, false);
    return false;
  }

  /** The re-check itself failed (database unreachable): the channel errors; realtime-js rejoins, which authorizes. */
  private async accessCheckFailed(channel: Channel, err: unknown): Promise<void> {
    this.hub.logger.error({ err, topic: channel.topic }, 'realtime re-authorization failed');
    if (this.channels.get(channel.topic) !== channel) return;
    await this.errored(channel);
  }

  /**
   * More database messages came during a re-check than the channel holds (AccessGate onOverflow):
   * they cannot be dropped silently, so the channel ends as after a failed re-check — `system`
   * error with the stable code, `phx_error` — and realtime-js rejoins, authorized again.
   */
  private async heldMessagesOverflowed(channel: Channel): Promise<void> {
    if (this.channels.get(channel.topic) !== channel) return;
    this.hub.logger.warn({ topic: channel.topic, user_id: channel.claims.sub ?? null }, 'realtime channel ended: held messages limit reached during an access re-check');
    this.system(channel, 'error', heldMessagesLimitReached(this.hub.limits));
    await this.errored(channel);
  }

  private async presence(channel: Channel, frame: Frame): Promise<void> {
    const p = (frame.payload ?? {}) as { event?: unknown; payload?: unknown };
    if (p.event === 'track') {
      const state = p.payload ?? {};
      const size = Buffer.byteLength(JSON.stringify(state));
      if (!this.admit(channel, frame, size, true)) return;
      // the state every other member's client shows (name, color): its conventional fields checked
      // (checkPresenceState), a state that is not an object refused (it was tracked as {})
      const invalid = checkPresenceState(state, 'payload.payload');
      if (invalid) return this.reply(frame, 'error', { reason: `invalid_input: ${invalid.message}` });
      // what the socket makes every gateway of the cluster hold, across its channels (a re-track
      // replaces this channel's state: not counted twice)
      let others = 0;
      for (const c of this.channels.values()) if (c !== channel && c.tracked) others += c.trackedBytes;
      const bound = this.hub.limits.maxPresenceBytesPerSocket;
      if (others + size > bound) {
        return this.reply(frame, 'error', { reason: `payload_too_large: presence tracked on one socket: at most ${bound} bytes across its channels `
          + `(this state is ${size}, its other channels hold ${others}): untrack one first` });
      }
      if (this.keyFull(channel, presenceCaller(channel.claims, this.address))) return this.reply(frame, 'error', { reason: keyFullReason(channel) });
      const meta = state as Record<string, unknown>;
      if (!(await this.maySend(channel, 'presence'))) {
        return this.reply(frame, 'error', { reason: `Unauthorized: You do not have permissions to track presence on this Channel topic: ${channel.subTopic}` });
      }
      // durable last_active_at and the channel's session first: `ok` means recorded; a cursor the
      // database refuses is not tracked
      const refused = await this.writePresence(channel, meta);
      if (refused) {
        this.reply(frame, 'error', { reason: reasonOf(refused) });
        if (refused.code === 'forbidden' || refused.code === 'not_found') channel.gate.recheck();
        return;
      }
      // the channel ended while the track waited for the database (its socket closed, its access or
      // token ended: close() untracked nothing, none was tracked yet): a meta tracked now would
      // belong to no channel, never untracked, shown to every member and counted against its caller
      // under the key until the gateway restarts. The session update_presence wrote was left by the
      // close (leaveCanvas, run after the write: PresenceSteps).
      if (this.channels.get(channel.topic) !== channel) return this.reply(frame, 'error', { reason: 'unmatched topic' });
      // again, now: another channel of the key may have tracked while this one was authorized
      // (the caller taken again: an access_token event may have changed the token's user meanwhile)
      const caller = presenceCaller(channel.claims, this.address);
      if (this.keyFull(channel, caller)) return this.reply(frame, 'error', { reason: keyFullReason(channel) });
      channel.tracked = true;
      channel.trackedBytes = size;
      this.broadcastDiff(channel.key, this.hub.presence.track(channel.key, channel, channel.presenceKey, meta, caller));
      this.reply(frame, 'ok');
    } else if (p.event === 'untrack') {
      this.reply(frame, 'ok');
      await this.untrack(channel);
    } else {
      this.reply(frame, 'error', { reason: 'presence events are track and untrack' });
    }
  }

  /**
   * Whether `caller` (presenceCaller: the channel's token's user, else this socket's address) already holds
   * PRESENCE_KEY_MAX_METAS metas under the channel's presence key in the channel (the cluster's
   * view; the channel's own meta not counted: a re-track replaces it). Other callers' metas
   * under the key never count: a key is the client's choice, and anyone may join a public room
   * under yours. A key is sent whole on every change (wholeKeyDiffs), so what one caller puts
   * under it is bounded.
   */
  private keyFull(channel: Channel, caller: string): boolean {
    return this.hub.presence.callerMetasBeside(channel.key, channel.presenceKey, caller, channel) >= PRESENCE_KEY_MAX_METAS;
  }

  /** A local presence change: to this gateway's presence channels of `key`, and to the cluster. */
  private broadcastDiff(key: ChannelKey, diff: PresenceDiff | null): void {
    if (!diff) return;
    deliverPresenceDiff(this.hub, key, diff);
    this.hub.cluster?.publishPresenceDiff(key, diff);
  }

  /**
   * Durable presence (api.update_presence as the channel's user; the canvas is the private
   * channel), with the channel's session (Channel.presenceSession): written at the first track of a
   * tracking period, always, and again at most every presenceWriteIntervalMs (the session recorded
   * again with it, sql/rpc/presence.sql). Answers the error when the database refused the presence
   * for the client's sake (invalid cursor, lost access, too many sessions): nothing was recorded.
   * A database fault only logs (presence is in memory) and leaves the session unrecorded: the next
   * track writes again, whatever the interval. Until then the user's row is not held by this
   * channel: their other sessions' leaves may clear it (the cleanup's expiry would anyway), and
   * this channel's leave removes nothing (its session is not there).
   */
  private async writePresence(channel: Channel, meta: Record<string, unknown>): Promise<ApiError | null> {
    const canvasId = canvasIdOfTopic(channel.subTopic);
    if (!canvasId || !channel.private || !channel.claims.sub || channel.claims.role !== 'authenticated') return null;
    const now = monotonicNow();
    let session = channel.presenceSession;
    if (session?.recorded && now - channel.lastPresenceWrite < this.hub.limits.presenceWriteIntervalMs) return null;
    if (!session) channel.presenceSession = session = { id: this.hub.newPresenceSession(), claims: channel.claims, recorded: false, cursor: null, typing: false, offRecordAgain: null };
    channel.lastPresenceWrite = now;
    const cursor = meta.cursor && typeof meta.cursor === 'object' && !Array.isArray(meta.cursor) ? meta.cursor : null;
    session.cursor = cursor;
    session.typing = meta.typing === true;
    // as the channel's current token (a refresh of the same user's may narrow its scope); the leave
    // goes as the last one written with (leaveCanvas)
    const { id } = session;
    const claims = session.claims = channel.claims;
    try {
      await this.recordSession(channel, canvasId, { id, claims, cursor, typing: meta.typing === true });
      session.recorded = true;
      if (!session.offRecordAgain && channel.presenceSession === session) session.offRecordAgain = this.recordAgain(channel, session);
      return null;
    } catch (err) {
      const error = apiErrorFromDatabase(err);
      if (CLIENT_CAUSED.has(error.code)) {
        channel.lastPresenceWrite = 0; // nothing was recorded: the next track writes again
        if (!session.recorded && channel.presenceSession === session) channel.presenceSession = null; // nothing to leave
        return error;
      }
      this.hub.logger.warn({ err }, 'update_presence from realtime failed');
      return null;
    }
  }

  /**
   * Registers the recording again of `session`, the channel's recorded session, with its last state
   * (Hub.recordSessionsAgain: another gateway removed it, having taken this one for dead); in order
   * with the channel's writes and leave, a failure logged (the channel's next write records it).
   */
  private recordAgain(channel: Channel, session: NonNullable<Channel['presenceSession']>): () => void {
    const canvasId = canvasIdOfTopic(channel.subTopic)!;
    return this.hub.onRecordSessionsAgain(() => {
      if (channel.presenceSession !== session) return;
      this.recordSession(channel, canvasId, session)
        .catch((err) => this.hub.logger.debug({ err, session: session.id }, 'a channel\'s presence session was not recorded again'));
    });
  }

  /** Writes the channel's durable presence session (api.update_presence) as `s.claims`, in order with its other writes and its leave. */
  private recordSession(channel: Channel, canvasId: string, s: { id: string; claims: SocketClaims; cursor: unknown; typing: boolean }): Promise<unknown> {
    return channel.presenceSteps.write(() => withRequest(this.hub.sql, { claims: s.claims as any, path: '/realtime/v1/websocket' }, (tx) =>
      tx`select api.update_presence(${canvasId}::uuid, ${s.cursor as any}::jsonb, ${s.typing}, ${s.id})`));
  }

  private async untrack(channel: Channel): Promise<void> {
    if (channel.tracked) {
      channel.tracked = false;
      this.broadcastDiff(channel.key, this.hub.presence.untrack(channel.key, channel));
    }
    await this.leaveCanvas(channel);
  }

  /**
   * The durable side of an untrack or a close: the channel's session leaves (api.leave_canvas with
   * it, as the user it was written as). The database decides whether the user left the canvas:
   * their app.presence row goes, and presence_leave is broadcast, only when none of their sessions
   * remains, on any gateway (sql/rpc/presence.sql). Before, this gateway decided from its view of
   * the cluster, which did not yet hold a tab tracked `ok` on another gateway a moment before.
   */
  private async leaveCanvas(channel: Channel): Promise<void> {
    const session = channel.presenceSession;
    const canvasId = canvasIdOfTopic(channel.subTopic);
    if (!session || !canvasId) return;
    channel.presenceSession = null;
    session.offRecordAgain?.();
    channel.lastPresenceWrite = 0; // the next tracking period's first track writes
    await channel.presenceSteps.leave(this.hub.sql, this.hub.logger, { claims: session.claims as any, path: '/realtime/v1/websocket' }, canvasId, session.id);
  }

  /** Ends a channel with `phx_error`: realtime-js rejoins it (with backoff), and the join authorizes again. */
  private async errored(channel: Channel): Promise<void> {
    this.send({ join_ref: channel.joinRef, ref: channel.joinRef, topic: channel.topic, event: 'phx_error', payload: {} });
    await this.close(channel, true);
  }

  /** Ends a channel; `silent` skips the phx_close frame (the client already moved on). */
  private async close(channel: Channel, silent: boolean): Promise<void> {
    if (this.channels.get(channel.topic) !== channel) return;
    this.channels.delete(channel.topic);
    channel.expiry?.cancel();
    this.dropPending(channel);
    channel.offDatabase();
    channel.offPeers();
    if (!silent) this.send({ join_ref: channel.joinRef, ref: channel.joinRef, topic: channel.topic, event: 'phx_close', payload: {} });
    await this.untrack(channel);
  }

  private async onClose(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.idleTimer);
    for (const channel of [...this.channels.values()]) await this.close(channel, true);
  }

  /** Server shutdown. */
  terminate(): void {
    this.ws.terminate();
  }
}

/**
 * Delivers a client broadcast to this process's subscribers of channel `key` (realtime-js
 * sockets), except `skip` (the sender, unless it asked for `self`); encoded once per vsn.
 */
export function deliverClientBroadcast(hub: Hub, key: ChannelKey, event: string, payload: ClusterPayload, skip: unknown = null): void {
  const encoded = new Map<Vsn, Encoded>();
  const bytes = event.length + ('binary' in payload ? payload.binary.length : Buffer.byteLength(payload.json));
  for (const peer of hub.peersOf<Channel>(key)) {
    if (peer === skip) continue;
    // held with the channel's database messages while its access is re-checked (access.ts): a
    // member who lost access gets nothing sent after the change; the oldest held go past
    // maxHeldBroadcasts / maxHeldBroadcastBytes
    peer.gate.deliverDroppable(() => peer.socket.sendClientBroadcast(peer, event, payload, encoded), bytes);
  }
}

/**
 * Who tracked a presence, as every gateway process of the cluster compares it (presence.ts
 * MetaCallers): admission.ts's caller (the token's user, else the address), as a digest of fixed
 * size, so that cluster messages carry no address or user id in clear (a digest of an IPv4
 * address can be guessed back: it is not a secret, only not spelled out).
 */
function presenceCaller(claims: SocketClaims, address: string): string {
  return createHash('sha256').update(callerOf(claims, address)).digest('base64url').slice(0, 22);
}

/**
 * The refusal of a track under a presence key where the channel's caller holds
 * PRESENCE_KEY_MAX_METAS metas already (stable code too_many_presences).
 */
function keyFullReason(channel: Channel): string {
  const whose = channel.claims.sub ? 'of this user' : 'from this address';
  return `too_many_presences: presence key ${JSON.stringify(channel.presenceKey)} holds ${PRESENCE_KEY_MAX_METAS} presences ${whose} in this channel, `
    + 'the most one caller may hold under one key: untrack one first, or track under a key of its own';
}

/**
 * Sends a `presence_diff` to this process's presence-enabled channels of `key`: `diff` has just
 * been applied to the hub's presence view, which the frames are made from (wholeKeyDiffs).
 */
export function deliverPresenceDiff(hub: Hub, key: ChannelKey, diff: PresenceDiff): void {
  let payloads: PresenceDiff[] | undefined; // made once, for every channel not holding
  for (const peer of hub.peersOf<Channel>(key)) {
    if (!peer.presenceEnabled) continue;
    if (!peer.gate.holding) {
      peer.gate.deliver(() => sendPresenceDiff(peer, (payloads ??= wholeKeyDiffs(hub.presence, key, diff))));
      continue;
    }
    // held during a re-check, as client broadcasts are: folded into one net diff, however many
    // came meanwhile (presence.ts PresenceDiffFold), and sent whole key by whole key from the view
    // as it is at release (every change since the hold began is in the fold)
    peer.heldPresence.add(diff);
    peer.gate.deliverLatest('presence', () => {
      const net = peer.heldPresence.take();
      if (net) sendPresenceDiff(peer, wholeKeyDiffs(hub.presence, key, net));
    });
  }
}

/**
 * The `presence_diff` frames of one change to one channel, in order: the touched keys' old metas
 * leave, then their current metas join (wholeKeyDiffs: realtime-js would otherwise keep metas
 * that left, for good).
 */
function sendPresenceDiff(peer: Channel, payloads: PresenceDiff[]): void {
  for (const payload of payloads) peer.socket.sendCaused({ join_ref: peer.joinRef, ref: null, topic: peer.topic, event: 'presence_diff', payload });
}
