import { ApiError, apiErrorFromDatabase } from '../http/errors.ts';
import type { Admission } from './admission.ts';
import { mayAccessTopic, type SocketClaims } from './authorize.ts';
import { channelKey } from './channel-key.ts';
import type { ClusterNode, ClusterPayload } from './cluster.ts';
import { databaseEventRefusal, isDatabaseEvent } from './database-events.ts';
import type { Hub, Limits } from './hub.ts';
import { deliverClientBroadcast } from './phoenix-socket.ts';

/**
 * Supabase Realtime's REST broadcast, as @supabase/realtime-js calls it over fetch:
 *  - `POST /realtime/v1/api/broadcast` `{messages: [{topic, event, payload, private}]}`:
 *    `channel.send()` on a channel that is not joined (realtime-js falls back to it);
 *  - `POST /realtime/v1/api/broadcast/{topic}/events/{event}?private=true`, the body the payload
 *    (JSON, or raw bytes as application/octet-stream): `channel.httpSend()`.
 * Answered 202 with no body once every message was delivered to this gateway's subscribers and
 * accepted by the cluster for the other gateways (cluster.ts), as an `ack` broadcast on a socket.
 *
 * Each message is a client broadcast, held to the socket path's rules (phoenix-socket.ts
 * clientBroadcast): the event a name of at most maxNameLength characters, on a private topic
 * never one of the database's events (database-events.ts); the payload at most maxPayloadBytes;
 * a private topic's messages sent only when the caller's RLS lets it write broadcasts to the topic
 * (authorize.ts, the probe of the socket's first send on a channel); every message taken from the
 * caller's budget across sockets (admission.ts callerMessagesPerSecond). A request holds at most
 * messagesPerSecond messages (one socket's burst). The whole request is checked before anything is
 * sent: a refused request sends nothing.
 */
export type RestMessage = {
  topic: string; event: string; payload: ClusterPayload; private: boolean;
  /** The request's field a refusal of the topic names (`messages[0].topic`, or the path's `topic`). */
  topicField: string;
};

export type RealtimeRest = {
  /** Sends `messages` as `claims`' caller from `address`; throws the ApiError a refusal is answered with. */
  broadcast(claims: SocketClaims, address: string, messages: RestMessage[]): Promise<void>;
  /** The bounds a request is checked against. */
  readonly limits: Pick<Limits, 'maxPayloadBytes' | 'maxNameLength' | 'messagesPerSecond'>;
};

const MESSAGE_FIELDS = new Set(['topic', 'event', 'payload', 'private']);

/** The topic as a realtime-js channel joins it: `realtime:<topic>`, bounded as a frame's topic (hub.ts maxNameLength). */
function checkTopic(topic: unknown, field: string, limits: RealtimeRest['limits']): string {
  if (typeof topic !== 'string' || topic === '') throw invalid(field, 'a channel topic (a non-empty string, as the channel was named: canvas:<id>)');
  if (`realtime:${topic}`.length > limits.maxNameLength) throw invalid(field, `at most ${limits.maxNameLength - 'realtime:'.length} characters`);
  return topic;
}

function checkEvent(event: unknown, isPrivate: boolean, field: string, limits: RealtimeRest['limits']): string {
  if (typeof event !== 'string' || event === '') throw invalid(field, "the broadcast's event name (a non-empty string)");
  if (event.length > limits.maxNameLength) throw invalid(field, `at most ${limits.maxNameLength} characters`);
  if (isPrivate && isDatabaseEvent(event)) {
    throw new ApiError('invalid_input', databaseEventRefusal(event).replace(/^invalid_input: payload\.event/, field), { field });
  }
  return event;
}

/** A payload within maxPayloadBytes (bytes of its JSON, or of the raw bytes), else 413 naming the field. */
export function checkPayload(payload: ClusterPayload, field: string, limits: RealtimeRest['limits']): ClusterPayload {
  const size = 'binary' in payload ? payload.binary.length : Buffer.byteLength(payload.json);
  if (size > limits.maxPayloadBytes) {
    throw new ApiError('payload_too_large', `${field}: at most ${limits.maxPayloadBytes} bytes (this one is ${size})`, { field });
  }
  return payload;
}

/** `POST /realtime/v1/api/broadcast`'s body, checked whole; throws ApiError naming the field. */
export function parseBatch(body: unknown, limits: RealtimeRest['limits']): RestMessage[] {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw invalid('body', 'a JSON object {"messages": [...]}');
  for (const key of Object.keys(body)) if (key !== 'messages') throw invalid(key, 'not a field of a broadcast request (it has messages only)');
  const list = (body as { messages?: unknown }).messages;
  if (!Array.isArray(list)) throw invalid('messages', 'an array of {topic, event, payload, private}');
  if (list.length === 0) throw invalid('messages', 'at least one message');
  if (list.length > limits.messagesPerSecond) {
    throw invalid('messages', `at most ${limits.messagesPerSecond} messages per request (a socket's burst of client broadcasts)`);
  }
  return list.map((m, i) => {
    const at = `messages[${i}]`;
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw invalid(at, 'an object {topic, event, payload, private}');
    for (const key of Object.keys(m)) if (!MESSAGE_FIELDS.has(key)) throw invalid(`${at}.${key}`, 'not a field of a message (topic, event, payload, private)');
    const msg = m as Record<string, unknown>;
    if (msg.private !== undefined && typeof msg.private !== 'boolean') throw invalid(`${at}.private`, 'true or false (a boolean)');
    const isPrivate = msg.private === true;
    const topic = checkTopic(msg.topic, `${at}.topic`, limits);
    const event = checkEvent(msg.event, isPrivate, `${at}.event`, limits);
    // a missing payload is {}, as on the socket (phoenix-socket.ts clientBroadcast)
    const payload = checkPayload({ json: JSON.stringify(msg.payload ?? {}) }, `${at}.payload`, limits);
    return { topic, event, payload, private: isPrivate, topicField: `${at}.topic` };
  });
}

/** The single message of `POST /realtime/v1/api/broadcast/{topic}/events/{event}` (httpSend). */
export function singleMessage(topic: string, event: string, isPrivate: boolean, payload: ClusterPayload, limits: RealtimeRest['limits']): RestMessage {
  return {
    topic: checkTopic(topic, 'topic', limits),
    event: checkEvent(event, isPrivate, 'event', limits),
    payload: checkPayload(payload, 'payload', limits),
    private: isPrivate,
    topicField: 'topic',
  };
}

/**
 * Appended to a private topic's refusal when the request's token names no user (an API key alone:
 * httpSend() or send() before signing in), as a join's refusal says it (phoenix-socket.ts).
 */
const NO_USER_HINT = ' (this request carried no user, only an API key: sign in first, or send the user\'s access token as Authorization: Bearer; docs/realtime.md)';

function invalid(field: string, what: string): ApiError {
  return new ApiError('invalid_input', `${field}: ${what}`, { field });
}

/**
 * The REST broadcast of a gateway (Gateway.rest): each request's messages checked against the
 * caller's budget and, per private topic, its RLS write probe, all before any is sent; then sent
 * to this process's subscribers and published to the cluster (see RestMessage for the rules).
 */
export function createRestBroadcast(hub: Hub, cluster: ClusterNode, admission: Admission, limits: Limits): RealtimeRest {
  return {
    limits,
    async broadcast(claims, address, messages) {
      // the caller's budget across sockets, all of the request's messages or none
      const wait = admission.message(claims, address, messages.length);
      if (wait > 0) {
        throw new ApiError('rate_limited', `too many broadcasts: at most ${limits.callerMessagesPerSecond} messages per second `
          + `${claims.sub ? 'for this user' : 'from this address'} across sockets and requests; retry in ${wait} ms`,
        { retry_after: Math.max(1, Math.ceil(wait / 1000)) });
      }
      // each private topic's write authorization, before anything is sent
      const topics = [...new Set(messages.filter((m) => m.private).map((m) => m.topic))];
      for (const topic of topics) {
        const authWait = admission.authorize(claims, address);
        if (authWait > 0) {
          throw new ApiError('rate_limited', `too many private channel authorizations per second (at most ${limits.authorizationsPerSecond}): retry in ${authWait} ms`,
            { retry_after: Math.max(1, Math.ceil(authWait / 1000)) });
        }
        let allowed: boolean;
        try {
          allowed = await mayAccessTopic(hub.sql, claims, topic, 'write', 'broadcast');
        } catch (err) {
          throw apiErrorFromDatabase(err);
        }
        if (!allowed) {
          const field = messages.find((m) => m.private && m.topic === topic)!.topicField;
          throw new ApiError('forbidden', `Unauthorized: You do not have permissions to write to this Channel topic: ${topic}${claims.sub ? '' : NO_USER_HINT}`, { field });
        }
      }
      // this gateway's subscribers at once; the other gateways' through the cluster, as a socket's broadcast
      const published: Promise<void>[] = [];
      for (const m of messages) {
        const key = channelKey(m.topic, m.private);
        deliverClientBroadcast(hub, key, m.event, m.payload);
        published.push(cluster.publishBroadcast(key, m.event, m.payload));
      }
      try {
        await Promise.all(published);
      } catch (err) {
        hub.logger.warn({ err }, 'REST broadcast not published to the cluster');
        throw new ApiError('unavailable', 'the broadcast did not reach the other gateways (this gateway\'s subscribers have it); retry shortly', { retry_after: 1 });
      }
    },
  };
}
