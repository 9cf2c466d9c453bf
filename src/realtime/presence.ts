import { randomUUID } from 'node:crypto';
import type { ChannelKey } from './channel-key.ts';

/**
 * Presence as Phoenix.Presence exposes it to realtime-js: per topic, a map key → {metas: [...]},
 * each meta carrying its `phx_ref`. `presence_state` is the whole map (sent on join),
 * `presence_diff` is `{joins, leaves}` (sent on every track/untrack/disconnect).
 *
 * State lives in this gateway process (one tracker per process): presence is ephemeral, the
 * durable part (app.presence.last_active_at) is written through api.update_presence by the socket.
 * State is keyed by ChannelKey (channel-key.ts): the private and the public channel of one topic
 * name never share presence.
 */
export type Meta = Record<string, unknown> & { phx_ref: string; phx_ref_prev?: string };
export type PresenceState = Record<string, { metas: Meta[] }>;
export type PresenceDiff = { joins: PresenceState; leaves: PresenceState };

type Entry = { key: string; meta: Meta };

export class PresenceTracker {
  /** channel → owner (one channel join) → entry */
  private readonly topics = new Map<ChannelKey, Map<object, Entry>>();

  /** The whole presence map of one channel (what `presence_state` carries). */
  state(topic: ChannelKey): PresenceState {
    const out: PresenceState = {};
    for (const { key, meta } of this.topics.get(topic)?.values() ?? []) {
      (out[key] ??= { metas: [] }).metas.push(meta);
    }
    return out;
  }

  /** Tracks (or re-tracks) `owner`'s presence under `key`; returns the diff to broadcast. */
  track(topic: ChannelKey, owner: object, key: string, payload: Record<string, unknown>): PresenceDiff {
    let entries = this.topics.get(topic);
    if (!entries) this.topics.set(topic, (entries = new Map()));
    const previous = entries.get(owner);
    const meta: Meta = { ...payload, phx_ref: randomRef() };
    const diff: PresenceDiff = { joins: {}, leaves: {} };
    if (previous) {
      meta.phx_ref_prev = previous.meta.phx_ref;
      if (previous.key !== key) diff.leaves[previous.key] = { metas: [previous.meta] };
    }
    entries.set(owner, { key, meta });
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
    return { joins: {}, leaves: { [previous.key]: { metas: [previous.meta] } } };
  }

  /** Whether any other owner on `topic` is present under `key` (another tab of the same user). */
  keyPresent(topic: ChannelKey, key: string): boolean {
    for (const e of this.topics.get(topic)?.values() ?? []) if (e.key === key) return true;
    return false;
  }
}

const randomRef = () => randomUUID().replace(/-/g, '').slice(0, 20);
