import { randomUUID } from 'node:crypto';
import { isDisplayText, isJsonObject, type InputViolation } from '../input-policy.ts';
import type { ChannelKey } from './channel-key.ts';

/** A presence `name` has at most this many characters (code points). */
export const PRESENCE_NAME_MAX = 100;

/**
 * A presence `color`: one plain CSS color, a hex, a keyword or rgb()/hsl()/… of numbers (the
 * demo's peerColor). Not `url(…)` (each peer's browser would fetch it), a second declaration
 * (`red;position:fixed`), `var(…)`, quotes or escapes.
 */
const PLAIN_COLOR = /^(?:#[0-9a-f]{3,8}|[a-z]{3,30}|(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch)\([0-9a-z%.,/ +-]{1,80}\))$/i;

/** Keys of a meta that are Phoenix's and realtime-js's (the server's phx_ref, the client's presence_ref), never a client's. */
const RESERVED_META_KEYS = ['phx_ref', 'phx_ref_prev', 'presence_ref'];

/**
 * The presence state a client sends (a realtime-js `track()` meta, root `payload.payload`; H1 and
 * HTTP send the same state as `cursor`, checked by api.update_presence in SQL with the same rules):
 * a JSON object whose conventional fields, when present and not null, have their types, and whose
 * name and color are safe to show to every other member. Other keys are the application's (the
 * input policy and the payload size bound them). Null or the first violation, its field named
 * from `root` (`payload.payload.name`).
 *
 * - `name`: text of 1 to PRESENCE_NAME_MAX characters as a person reads it (isDisplayText: no
 *   control, invisible or direction-changing character, not blank);
 * - `color`: a plain CSS color (PLAIN_COLOR);
 * - `typing`: true or false; `cursor`, `selection`: JSON objects;
 * - no `phx_ref`, `phx_ref_prev` or `presence_ref` (they would pass for the server's).
 */
export function checkPresenceState(state: unknown, root: string): InputViolation | null {
  const bad = (field: string, problem: string): InputViolation => ({ field, message: `${field}: ${problem}` });
  if (!isJsonObject(state)) return bad(root, 'the presence state is a JSON object');
  for (const key of RESERVED_META_KEYS) {
    if (Object.hasOwn(state, key)) return bad(`${root}.${key}`, 'is set by the server, not in a tracked state');
  }
  const { name, color, typing, cursor, selection } = state;
  if (name != null) {
    if (typeof name !== 'string') return bad(`${root}.name`, 'a string');
    const length = [...name].length;
    if (length < 1 || length > PRESENCE_NAME_MAX || !isDisplayText(name)) {
      return bad(`${root}.name`, `1 to ${PRESENCE_NAME_MAX} characters, without control characters, invisible or direction-changing `
        + 'characters (such as U+200B, U+202E, U+FEFF, U+2028), and not only spaces or joiners');
    }
  }
  if (color != null && (typeof color !== 'string' || !PLAIN_COLOR.test(color))) {
    return bad(`${root}.color`, 'one plain CSS color: #rgb to #rrggbbaa, a color keyword, or rgb()/hsl()/hwb()/lab()/lch()/oklab()/oklch() of numbers');
  }
  if (typing != null && typeof typing !== 'boolean') return bad(`${root}.typing`, 'true or false (a boolean)');
  if (cursor != null && !isJsonObject(cursor)) return bad(`${root}.cursor`, 'a JSON object (such as {"x": 1, "y": 2}) or null');
  if (selection != null && !isJsonObject(selection)) return bad(`${root}.selection`, 'a JSON object or null');
  return null;
}

/**
 * Presence as Phoenix.Presence exposes it to realtime-js: per topic, a map key → {metas: [...]},
 * each meta carrying its `phx_ref`. `presence_state` is the whole map (sent on join),
 * `presence_diff` is `{joins, leaves}` (sent on every track/untrack/disconnect).
 *
 * The view of a channel is the cluster's: the presences tracked by this gateway process (local,
 * one entry per channel join) plus those of every other gateway process (remote, per node id, as
 * cluster.ts receives them: diffs, full syncs, and a whole node dropped when it leaves or dies).
 * Presence is ephemeral; the durable part (app.presence.last_active_at) is written through
 * api.update_presence by the socket. State is keyed by ChannelKey (channel-key.ts): the private and
 * the public channel of one topic name never share presence.
 */
export type Meta = Record<string, unknown> & { phx_ref: string; phx_ref_prev?: string };
export type PresenceState = Record<string, { metas: Meta[] }>;
export type PresenceDiff = { joins: PresenceState; leaves: PresenceState };

type Entry = { key: string; meta: Meta };

/**
 * A presence map keyed by clients' presence keys, which are any string: without a prototype, so
 * that a key such as `constructor` or `toString` is a key like any other (on a plain object it
 * read Object.prototype's member, and every later presence_state of the channel threw).
 */
const emptyState = (): PresenceState => Object.create(null) as PresenceState;
const emptyDiff = (): PresenceDiff => ({ joins: emptyState(), leaves: emptyState() });

/** One node's presences: channel → presence key → metas. */
export type NodePresence = Record<ChannelKey, PresenceState>;

/**
 * Who tracked each of some metas: phx_ref → caller (a digest, phoenix-socket.ts presenceCaller).
 * It travels beside the metas between gateway processes (cluster.ts), never in them: clients
 * never see it.
 */
export type MetaCallers = Record<string, string>;

export class PresenceTracker {
  /** channel → owner (one channel join) → entry */
  private readonly topics = new Map<ChannelKey, Map<object, Entry>>();
  /** node id → channel → presence key → phx_ref → meta (other gateway processes) */
  private readonly remote = new Map<string, Map<ChannelKey, Map<string, Map<string, Meta>>>>();
  /**
   * The caller of each meta this view holds, when known: every local one; a remote one when its
   * node sent it (a node of a version before it sends none, and its metas count for no caller).
   */
  private readonly callers = new WeakMap<Meta, string>();

  /** The whole presence map of one channel, local and remote (what `presence_state` carries). */
  state(topic: ChannelKey): PresenceState {
    const out = this.localState(topic);
    for (const channels of this.remote.values()) {
      for (const [key, metas] of channels.get(topic) ?? []) (out[key] ??= { metas: [] }).metas.push(...metas.values());
    }
    return out;
  }

  /** Every meta under presence key `key` in channel `topic`'s view, local and remote, in state()'s order. */
  metas(topic: ChannelKey, key: string): Meta[] {
    const out: Meta[] = [];
    for (const entry of this.topics.get(topic)?.values() ?? []) if (entry.key === key) out.push(entry.meta);
    for (const channels of this.remote.values()) out.push(...(channels.get(topic)?.get(key)?.values() ?? []));
    return out;
  }

  /** This process's presences of one channel only. */
  localState(topic: ChannelKey): PresenceState {
    const out = emptyState();
    for (const { key, meta } of this.topics.get(topic)?.values() ?? []) {
      (out[key] ??= { metas: [] }).metas.push(meta);
    }
    return out;
  }

  /** This process's presences of every channel (what a `presence_sync` carries). */
  localSnapshot(): NodePresence {
    const out: NodePresence = {};
    for (const topic of this.topics.keys()) out[topic] = this.localState(topic);
    return out;
  }

  /** The callers of the metas of `state` that this view knows, by phx_ref (sent beside them to the cluster). */
  callersOf(state: PresenceState): MetaCallers {
    const out: MetaCallers = Object.create(null);
    for (const { metas } of Object.values(state)) {
      for (const meta of metas) {
        const caller = this.callers.get(meta);
        if (caller !== undefined) out[meta.phx_ref] = caller;
      }
    }
    return out;
  }

  /** The callers of every local meta (what a `presence_sync` carries beside localSnapshot). */
  localCallers(): MetaCallers {
    const out: MetaCallers = Object.create(null);
    for (const entries of this.topics.values()) {
      for (const { meta } of entries.values()) out[meta.phx_ref] = this.callers.get(meta)!;
    }
    return out;
  }

  /**
   * Applies a diff another node sent for `topic`, with the callers of its joins when it sent them;
   * returns the diff as it changed this view (leaves of metas never seen and joins of metas
   * already held dropped), or null when nothing changed.
   */
  applyRemoteDiff(node: string, topic: ChannelKey, diff: PresenceDiff, callers?: MetaCallers): PresenceDiff | null {
    let channels = this.remote.get(node);
    if (!channels) this.remote.set(node, (channels = new Map()));
    let keys = channels.get(topic);
    if (!keys) channels.set(topic, (keys = new Map()));
    const out = emptyDiff();
    for (const [key, { metas }] of Object.entries(diff.leaves)) {
      const refs = keys.get(key);
      for (const meta of metas) {
        const had = refs?.get(meta.phx_ref);
        if (!had) continue;
        refs!.delete(meta.phx_ref);
        (out.leaves[key] ??= { metas: [] }).metas.push(had);
      }
      if (refs && refs.size === 0) keys.delete(key);
    }
    for (const [key, { metas }] of Object.entries(diff.joins)) {
      let refs = keys.get(key);
      if (!refs) keys.set(key, (refs = new Map()));
      for (const meta of metas) {
        // a meta is immutable under its phx_ref (a re-track makes a new one): one already in this
        // view (a full sync repeats every diff before it) is no join, and clients would show it as one
        if (refs.has(meta.phx_ref)) continue;
        refs.set(meta.phx_ref, meta);
        const caller = callers && Object.hasOwn(callers, meta.phx_ref) ? callers[meta.phx_ref] : undefined;
        if (typeof caller === 'string') this.callers.set(meta, caller);
        (out.joins[key] ??= { metas: [] }).metas.push(meta);
      }
    }
    if (keys.size === 0) channels.delete(topic);
    if (channels.size === 0) this.remote.delete(node);
    return isEmpty(out) ? null : out;
  }

  /**
   * Replaces everything known of `node` with its full state (a `presence_sync`, with the callers
   * of its metas when it sent them); returns the diffs per channel that take this view there.
   */
  replaceRemote(node: string, state: NodePresence, callers?: MetaCallers): Map<ChannelKey, PresenceDiff> {
    const diffs = this.dropRemote(node, state);
    for (const [topic, presences] of Object.entries(state) as [ChannelKey, PresenceState][]) {
      // what the old view already held was kept by dropRemote: only the new metas join
      const joined = this.applyRemoteDiff(node, topic, { joins: presences, leaves: emptyState() }, callers);
      if (!joined) continue;
      const d = diffs.get(topic) ?? emptyDiff();
      d.joins = joined.joins;
      diffs.set(topic, d);
    }
    for (const [topic, d] of diffs) if (isEmpty(d)) diffs.delete(topic);
    return diffs;
  }

  /**
   * Removes `node`'s presences (it left or is dead), except metas also in `keep`; returns the
   * leave diffs per channel.
   */
  dropRemote(node: string, keep: NodePresence = {}): Map<ChannelKey, PresenceDiff> {
    const diffs = new Map<ChannelKey, PresenceDiff>();
    const channels = this.remote.get(node);
    if (!channels) return diffs;
    for (const [topic, keys] of channels) {
      const kept = keep[topic] ?? {};
      for (const [key, refs] of keys) {
        const keepRefs = new Set(((Object.hasOwn(kept, key) ? kept[key]?.metas : undefined) ?? []).map((m) => m.phx_ref));
        for (const [ref, meta] of refs) {
          if (keepRefs.has(ref)) continue;
          refs.delete(ref);
          const d = diffs.get(topic) ?? emptyDiff();
          (d.leaves[key] ??= { metas: [] }).metas.push(meta);
          diffs.set(topic, d);
        }
        if (refs.size === 0) keys.delete(key);
      }
      if (keys.size === 0) channels.delete(topic);
    }
    if (channels.size === 0) this.remote.delete(node);
    return diffs;
  }

  /** Node ids this view holds presences of. */
  remoteNodes(): string[] {
    return [...this.remote.keys()];
  }

  /**
   * Tracks (or re-tracks) `owner`'s presence under `key` for `caller` (who tracked it, as
   * presenceCaller names them: sent to the other gateway processes beside the meta, never to a
   * client); returns the diff to broadcast.
   */
  track(topic: ChannelKey, owner: object, key: string, payload: Record<string, unknown>, caller: string): PresenceDiff {
    let entries = this.topics.get(topic);
    if (!entries) this.topics.set(topic, (entries = new Map()));
    const previous = entries.get(owner);
    const meta: Meta = { ...payload, phx_ref: randomRef() };
    const diff = emptyDiff();
    if (previous) {
      meta.phx_ref_prev = previous.meta.phx_ref;
      // as Phoenix.Presence on update: the previous meta leaves (realtime-js keeps metas a join does not replace)
      diff.leaves[previous.key] = { metas: [previous.meta] };
    }
    entries.set(owner, { key, meta });
    this.callers.set(meta, caller);
    diff.joins[key] = { metas: [meta] };
    return diff;
  }

  /** Removes `owner`'s presence; returns the diff, or null when it had none. */
  untrack(topic: ChannelKey, owner: object): PresenceDiff | null {
    const entries = this.topics.get(topic);
    const previous = entries?.get(owner);
    if (!entries || !previous) return null;
    entries.delete(owner);
    if (entries.size === 0) this.topics.delete(topic);
    const diff = emptyDiff();
    diff.leaves[previous.key] = { metas: [previous.meta] };
    return diff;
  }

  /**
   * How many metas `caller` holds under presence key `key` in channel `topic`'s view (local, and
   * remote when their node sent their callers), not counting `owner`'s own (a re-track replaces
   * it). Other callers' metas under the key are not counted.
   */
  callerMetasBeside(topic: ChannelKey, key: string, caller: string, owner: object): number {
    const own = this.topics.get(topic)?.get(owner);
    let n = 0;
    for (const meta of this.metas(topic, key)) if (meta !== own?.meta && this.callers.get(meta) === caller) n++;
    return n;
  }
}

/**
 * The most metas one caller holds under one presence key in a channel, on one gateway process:
 * the caller's next track under a key where it holds this many is refused (phoenix-socket.ts,
 * `too_many_presences`). The caller is who tracked (presenceCaller): the token's user, or for a
 * token without one (the anon key) the address the socket comes from, as the gateway's other
 * per-caller limits (admission.ts) count them. A user's tabs are a few; one caller's many sockets
 * under one key (an attacker's, or an application's constant key) are refused past it.
 *
 * Per caller, not per key: presence keys are the client's choice (realtime-js
 * `config.presence.key`, as on Supabase), so a bound on every meta of a key let anyone fill
 * another's key (16 anonymous sockets tracking under "alice" in a public room, and alice's own
 * track was refused). Other callers' metas under the key never count against yours.
 *
 * Why a bound and not a cheaper diff: realtime-js (@supabase/phoenix Presence.syncDiff, through
 * presenceAdapter's onJoin/onLeave) strips `phx_ref` from every meta a key keeps through a join or
 * a partial leave, so a key's change is only safe sent whole (wholeKeyDiffs), and a whole key
 * costs every watcher all its metas on every change (1,000 metas of 16 KiB: 16 MB a change, which
 * drops every watcher as a slow consumer). This bound keeps what one caller can make a key cost at
 * 16 metas (256 KiB of the largest states) per gateway process; a key shared by many callers costs
 * what they all track, as a room of many callers does anyway (each tracks, and broadcasts, at its
 * own rate). No bound on a key's or a channel's total: any such bound is one that callers other
 * than you can fill (one address opens 1,000 sockets), which is the denial this replaced; memory
 * is bounded per socket (limits.maxPresenceBytesPerSocket) and sockets per caller (admission.ts).
 *
 * Each gateway process refuses against the view it has (its own metas, and the cluster's, whose
 * callers travel beside them): two processes taking tracks of one caller under one key at the
 * same moment, each before the other's diff arrived, can each admit them: a caller tracking on N
 * processes at once holds up to this many times N under a key (tried: 16 on each of two), and
 * it is still sent whole.
 */
export const PRESENCE_KEY_MAX_METAS = 16;

/**
 * The `presence_diff` payloads that take a realtime-js client's view of channel `topic` through
 * `diff`, whole key by whole key: for every key `diff` touches, the metas the key held before
 * leave (all of them), then the metas it holds now (`view`, with `diff` applied) join (all of
 * them). One payload of leaves, then one of joins; either may be absent. A key holds at most
 * PRESENCE_KEY_MAX_METAS metas per caller (per gateway process of the cluster), so this is
 * bounded by the callers sharing the key.
 *
 * realtime-js (its phoenix Presence with presenceAdapter) strips `phx_ref` from the metas a key
 * keeps whenever it applies a join to that key (the metas it had) or a leave that does not take
 * all of them (the ones that stay): onJoin and onLeave rewrite those meta objects in place, and a
 * meta without `phx_ref` never matches a later leave. Sent as the change itself, a second tab
 * joining under the user's presence key made the first tab's meta permanent in every client's
 * presenceState(), and so did a cluster diff that arrived before the leave of the meta it
 * replaced: nothing either tab did afterwards left it, until the watcher rejoined. A key that
 * leaves whole and joins whole is never kept through a join or a partial leave (a join that
 * leaves nothing lists every meta of the key, so realtime-js keeps none of its old ones). The
 * price: a second tab's join is shown as a join of both its metas, a re-track as the key's leave
 * then a join of all its metas (`sync` between).
 */
export function wholeKeyDiffs(view: PresenceTracker, topic: ChannelKey, diff: PresenceDiff): PresenceDiff[] {
  const leaves = emptyState();
  const joins = emptyState();
  for (const key of new Set([...Object.keys(diff.leaves), ...Object.keys(diff.joins)])) {
    const now = view.metas(topic, key);
    const left = Object.hasOwn(diff.leaves, key) ? diff.leaves[key]!.metas : [];
    const joined = Object.hasOwn(diff.joins, key) ? diff.joins[key]!.metas : [];
    // before the diff: what is there now, less what it joined, plus what it took away
    const joinedRefs = new Set(joined.map((m) => m.phx_ref));
    const before = [...now.filter((m) => !joinedRefs.has(m.phx_ref)), ...left];
    if (left.length > 0) leaves[key] = { metas: before };
    if (now.length > 0) joins[key] = { metas: now };
  }
  const out: PresenceDiff[] = [];
  if (Object.keys(leaves).length > 0) out.push({ joins: emptyState(), leaves });
  if (Object.keys(joins).length > 0) out.push({ joins, leaves: emptyState() });
  return out;
}

/**
 * Presence diffs folded into their net effect: what a channel holding them while its access is
 * re-checked (access.ts) is sent at release. A meta that joined and left meanwhile is never
 * shown; what is kept is bounded by the room's presences (those that left, those that joined),
 * not by how often they changed. realtime-js learns it from a diff, not a presence_state: syncing
 * to a state, it strips phx_ref from the metas it keeps while applying joins, and a replaced meta
 * then never leaves.
 */
export class PresenceDiffFold {
  /** presence key → phx_ref → meta */
  private joins = new Map<string, Map<string, Meta>>();
  private leaves = new Map<string, Map<string, Meta>>();

  add(diff: PresenceDiff): void {
    for (const [key, { metas }] of Object.entries(diff.leaves)) {
      for (const meta of metas) {
        const joined = this.joins.get(key);
        if (joined?.delete(meta.phx_ref)) { // joined while folded: never sent
          if (joined.size === 0) this.joins.delete(key);
          continue;
        }
        refsOf(this.leaves, key).set(meta.phx_ref, meta);
      }
    }
    for (const [key, { metas }] of Object.entries(diff.joins)) {
      for (const meta of metas) refsOf(this.joins, key).set(meta.phx_ref, meta);
    }
  }

  /** The net diff (null when nothing changed), and the fold starts empty again. */
  take(): PresenceDiff | null {
    const out = emptyDiff();
    for (const [key, refs] of this.leaves) out.leaves[key] = { metas: [...refs.values()] };
    for (const [key, refs] of this.joins) out.joins[key] = { metas: [...refs.values()] };
    this.joins = new Map();
    this.leaves = new Map();
    return isEmpty(out) ? null : out;
  }
}

function refsOf(map: Map<string, Map<string, Meta>>, key: string): Map<string, Meta> {
  let refs = map.get(key);
  if (!refs) map.set(key, (refs = new Map()));
  return refs;
}

function isEmpty(diff: PresenceDiff): boolean {
  return Object.keys(diff.joins).length === 0 && Object.keys(diff.leaves).length === 0;
}

const randomRef = () => randomUUID().replace(/-/g, '').slice(0, 20);
