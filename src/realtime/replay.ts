import type { Sql } from 'postgres';
import { withRequest } from '../db/request.ts';
import { ACCESS_CHANGED } from './access.ts';
import type { SocketClaims } from './authorize.ts';
import { orderCatchUp, type BusMessage } from './bus.ts';

/**
 * Broadcast replay for realtime-js (`config.broadcast.replay: { since, limit }` in phx_join), as
 * Supabase Realtime serves it (lib/realtime/messages.ex, realtime_channel.ex):
 *
 * - private channels only; on a public channel the join is refused
 *   (`UnableToReplayMessages: Replay is not allowed for public channels`);
 * - `since` (epoch milliseconds, integer) is compared with realtime.messages.inserted_at — the
 *   writing transaction's start time — `limit` (integer, default 25) is clamped to 1..25
 *   (REPLAY_LIMIT_CAP); anything else refuses the join (`Replay params are not valid`);
 * - the rows read are the topic's private `broadcast` rows inserted at or after `since`, the
 *   `limit` NEWEST of them (Supabase: `order by inserted_at desc limit n`), sent oldest first
 *   after the join reply with `meta: { replayed: true, id }`;
 * - read under RLS as the joining user, so a user replays only what the channel's read policy
 *   lets them see.
 *
 * The seam with live delivery (ReplaySeam): the channel listens to the bus before the replay is
 * read, holds live messages until the replayed ones are out, and never sends an id twice.
 */

/** Supabase Realtime's hard cap on replayed messages per join (`@hard_limit 25`). */
export const REPLAY_LIMIT_CAP = 25;

export type ReplayRequest = { since: number; limit: number };

/** Join error reasons, worded as Supabase Realtime words them. */
export const REPLAY_PUBLIC = 'UnableToReplayMessages: Replay is not allowed for public channels';
export const REPLAY_INVALID = 'UnableToReplayMessages: Replay params are not valid';
export const REPLAY_FAILED = 'UnableToReplayMessages: Realtime was unable to replay messages';

/** Largest |epoch ms| a JavaScript Date (and so a client's clock value) can hold. */
const MAX_EPOCH_MS = 8.64e15;

/**
 * The replay a join asks for: null when none, a join error reason when it cannot be served.
 * `config` is the phx_join payload's `config`.
 */
export function parseReplay(config: { broadcast?: { replay?: unknown } } | undefined, isPrivate: boolean): ReplayRequest | null | string {
  const replay = config?.broadcast?.replay;
  if (replay === undefined || replay === null) return null;
  if (!isPrivate) return REPLAY_PUBLIC;
  if (typeof replay !== 'object' || Array.isArray(replay)) return REPLAY_INVALID;
  const { since, limit } = replay as { since?: unknown; limit?: unknown };
  if (!Number.isInteger(since) || Math.abs(since as number) > MAX_EPOCH_MS) return REPLAY_INVALID;
  if (limit !== undefined && limit !== null && !Number.isInteger(limit)) return REPLAY_INVALID;
  const asked = typeof limit === 'number' ? limit : REPLAY_LIMIT_CAP;
  // before 1970 asks for everything: PostgreSQL's timestamps end near 4713 BC, a Date's far before
  return { since: Math.max(0, since as number), limit: Math.max(1, Math.min(asked, REPLAY_LIMIT_CAP)) };
}

/**
 * Reads the messages to replay on `topic` (`canvas:{id}`) as `claims` under RLS: the
 * transaction carries the caller's role and claims (withRequest) and `realtime.topic`, exactly
 * as the join's authorization probe does. Oldest first; within the set, canvas operations in
 * commit (server_seq) order.
 */
export async function readReplay(sql: Sql, claims: SocketClaims, topic: string, request: ReplayRequest): Promise<BusMessage[]> {
  const rows = await withRequest(sql, { claims: claims as any, path: '/realtime/v1/websocket' }, async (tx) => {
    await tx`select set_config('realtime.topic', ${topic}, true)`;
    // inserted_at is `timestamp without time zone` written by now() in the server's TimeZone
    return tx<{ id: string; topic: string; event: string | null; extension: string; payload: unknown }[]>`
      select id::text, topic, event, extension, payload
      from realtime.messages
      where topic = ${topic} and private is true and extension = 'broadcast'
        and event is distinct from 'authorization_probe' and event is distinct from ${ACCESS_CHANGED}
        and inserted_at >= (to_timestamp(${request.since}::double precision / 1000) at time zone current_setting('TimeZone'))
      -- one transaction's rows share inserted_at (now()): among them the operations committed
      -- last are the newest (server_seq), so a batch of more than the limit replays its last ops,
      -- not any of them (the random id alone picked them at random, with gaps between them)
      order by inserted_at desc,
        case when jsonb_typeof(payload -> 'server_seq') = 'number' then (payload ->> 'server_seq')::numeric end desc nulls last,
        id desc
      limit ${request.limit}`;
  });
  const messages = rows.reverse().map((row): BusMessage => {
    const payload = typeof row.payload === 'string' ? JSON.parse(row.payload) : row.payload ?? null;
    return {
      id: row.id, topic: row.topic, event: row.event ?? '', extension: row.extension, private: true,
      payload, payloadJson: JSON.stringify(payload),
    };
  });
  return orderCatchUp(messages);
}

/**
 * The seam between a channel's replay and its live messages. From the moment the channel listens
 * until release(), live messages are held; afterwards the replayed ids stay known for the
 * channel's life (at most REPLAY_LIMIT_CAP), so a message that was both replayed and still on
 * its way through the bus is delivered once, as the replayed copy.
 */
export class ReplaySeam {
  private held: BusMessage[] | null = [];
  private readonly replayed = new Set<string>();

  /** True when the live message is taken here (held for later, or dropped as already replayed). */
  intercept(message: BusMessage): boolean {
    if (this.replayed.has(message.id)) return true;
    if (this.held) {
      this.held.push(message);
      return true;
    }
    return false;
  }

  /**
   * Sends the replayed messages, then the live ones held meanwhile that were not among them
   * (through `deliverLive`, which passes them back through intercept: they are no longer held).
   */
  release(replayed: BusMessage[], sendReplayed: (m: BusMessage) => void, deliverLive: (m: BusMessage) => void): void {
    for (const m of replayed) this.replayed.add(m.id);
    const held = this.held ?? [];
    this.held = null;
    for (const m of replayed) sendReplayed(m);
    for (const m of held) deliverLive(m);
  }
}
