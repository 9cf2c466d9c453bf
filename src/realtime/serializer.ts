/**
 * Phoenix channel frames as @supabase/realtime-js speaks them.
 *
 * - vsn 1.0.0: text frames, JSON objects `{join_ref, ref, topic, event, payload}`.
 * - vsn 2.0.0: text frames, JSON arrays `[join_ref, ref, topic, event, payload]`, plus binary
 *   frames for user broadcasts: the client pushes `broadcast` as kind 3 (userBroadcastPush) and
 *   decodes server broadcasts only as kind 4 (userBroadcast). Layouts (realtime-js
 *   lib/serializer.ts):
 *     kind 3: [3, joinRefLen, refLen, topicLen, eventLen, metaLen, encoding, joinRef, ref, topic, event, meta, payload]
 *     kind 4: [4, topicLen, eventLen, metaLen, encoding, topic, event, meta, payload]
 *   encoding 0 = raw bytes, 1 = JSON. Lengths are one byte each (≤ 255).
 *   This server sends kind 4 only for binary (raw) broadcasts; JSON broadcasts go as text frames
 *   (encodeBroadcast says why), which realtime-js decodes into the same message.
 * Every JSON part is read by the input policy's parseJson; the socket checks the decoded frame.
 */
import { decodeUtf8, parseJson } from '../input-policy.ts';

export type Vsn = '1.0.0' | '2.0.0';

export type Frame = {
  join_ref: string | null;
  ref: string | null;
  topic: string;
  event: string;
  payload: any;
  /** A decoded frame whose join_ref or ref is neither a string, a number nor null: it is answered as refused. */
  badRef?: 'join_ref' | 'ref';
};

/** Where a malformed frame that named its topic and refs can be answered, and what to say: `field: problem`. */
export type Answerable = { topic: string; join_ref: string | null; ref: string | null; field: string; problem: string };

export class ProtocolError extends Error {
  /**
   * A frame that names its topic (and refs) but is wrong after that (its event not a string; a
   * binary push's event, metadata or payload unreadable): it can be answered, on that topic, with
   * the ref it carried (realtime-js waits for that reply until its timeout).
   */
  constructor(message: string, readonly answerable?: Answerable) {
    super(message);
  }
}

/** The ProtocolError of a frame whose topic is a string and whose event is not (answerable), or whose topic is not (not). */
function badTopicOrEvent(joinRef: unknown, ref: unknown, topic: unknown): ProtocolError {
  const j = refOf(joinRef);
  const r = refOf(ref);
  if (typeof topic !== 'string' || j === undefined || r === undefined) return new ProtocolError('topic and event must be strings');
  return new ProtocolError('topic and event must be strings', { topic, join_ref: j, ref: r, field: 'event', problem: "a string (the event's name)" });
}

const KIND_USER_BROADCAST_PUSH = 3;
const KIND_USER_BROADCAST = 4;
const ENCODING_BINARY = 0;
const ENCODING_JSON = 1; // the kind 3 frames clients push; the server sends JSON as text frames

export function parseVsn(value: string | null | undefined): Vsn | null {
  if (value === undefined || value === null || value === '' || value === '1.0.0') return '1.0.0';
  if (value === '2.0.0') return '2.0.0';
  return null;
}

/**
 * A ref as the frame carries it: a string (realtime-js's), a number's text or null. Anything else
 * (an object, an array, a number a double cannot hold) is not a ref: undefined. String() of it
 * answered `[object Object]`, and of an array nested 100,000 deep overflowed the stack.
 */
const refOf = (v: unknown): string | null | undefined => {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') return v;
  if (typeof v === 'number' && Number.isFinite(v)) return String(v);
  return undefined;
};

/** A frame with its refs read by refOf; one that is not a ref leaves both null and is named in badRef. */
function withRefs(joinRef: unknown, ref: unknown, topic: string, event: string, payload: unknown): Frame {
  const j = refOf(joinRef);
  const r = refOf(ref);
  if (j === undefined || r === undefined) return { join_ref: null, ref: null, topic, event, payload, badRef: j === undefined ? 'join_ref' : 'ref' };
  return { join_ref: j, ref: r, topic, event, payload };
}

/**
 * The ProtocolError of a frame not of its socket's shape (`expected`): answerable when its topic and
 * refs can be read as either shape has them (a vsn 1.0.0 client on a 2.0.0 socket, an array one
 * element short), else not.
 */
function wrongShape(parsed: unknown, expected: string): ProtocolError {
  const [joinRef, ref, topic] = Array.isArray(parsed) ? parsed
    : typeof parsed === 'object' && parsed !== null ? [(parsed as Record<string, unknown>).join_ref, (parsed as Record<string, unknown>).ref, (parsed as Record<string, unknown>).topic]
      : [];
  const j = refOf(joinRef);
  const r = refOf(ref);
  if (typeof topic !== 'string' || j === undefined || r === undefined) return new ProtocolError(`frames are ${expected}`);
  return new ProtocolError(`frames are ${expected}`, { topic, join_ref: j, ref: r, field: 'frame', problem: expected });
}

/** One incoming frame (text or binary) → a Frame; throws ProtocolError on anything malformed. */
export function decodeFrame(data: Buffer | string, isBinary: boolean, vsn: Vsn): Frame {
  if (isBinary) {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    if (vsn !== '2.0.0') throw new ProtocolError('binary frames need vsn 2.0.0');
    return decodeUserBroadcastPush(buf);
  }
  const read = parseJson(typeof data === 'string' ? data : data.toString('utf8'), 'frame');
  if (!('value' in read)) throw new ProtocolError('frame is not JSON');
  const parsed = read.value;
  if (vsn === '2.0.0') {
    if (!Array.isArray(parsed) || parsed.length !== 5) throw wrongShape(parsed, 'a JSON array [join_ref, ref, topic, event, payload] (vsn 2.0.0)');
    const [joinRef, ref, topic, event, payload] = parsed;
    if (typeof topic !== 'string' || typeof event !== 'string') throw badTopicOrEvent(joinRef, ref, topic);
    return withRefs(joinRef, ref, topic, event, payload ?? {});
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw wrongShape(parsed, 'a JSON object {join_ref, ref, topic, event, payload} (vsn 1.0.0)');
  const o = parsed as Record<string, unknown>;
  if (typeof o.topic !== 'string' || typeof o.event !== 'string') throw badTopicOrEvent(o.join_ref, o.ref, o.topic);
  return withRefs(o.join_ref, o.ref, o.topic, o.event, o.payload ?? {});
}

function decodeUserBroadcastPush(buf: Buffer): Frame {
  if (buf.length < 7 || buf[0] !== KIND_USER_BROADCAST_PUSH) throw new ProtocolError(`unsupported binary frame kind ${buf[0]}`);
  const [joinRefLen, refLen, topicLen, eventLen, metaLen, encoding] = [buf[1]!, buf[2]!, buf[3]!, buf[4]!, buf[5]!, buf[6]!];
  let offset = 7;
  const take = (n: number) => {
    if (offset + n > buf.length) throw new ProtocolError('truncated binary frame');
    const s = decodeUtf8(buf.subarray(offset, offset + n)); // fatal: never U+FFFD in place of what was sent
    if (typeof s !== 'string') throw new ProtocolError('binary frame field is not valid UTF-8');
    offset += n;
    return s;
  };
  const joinRef = take(joinRefLen);
  const ref = take(refLen);
  const topic = take(topicLen);
  // topic and refs read: whatever is wrong after them is answered on that topic with that ref
  const refuse = (field: string, problem: string) =>
    new ProtocolError(`${field}: ${problem}`, { topic, join_ref: joinRef || null, ref: ref || null, field, problem });
  if (offset + eventLen > buf.length) throw new ProtocolError('truncated binary frame');
  const event = decodeUtf8(buf.subarray(offset, offset + eventLen), 'event');
  if (typeof event !== 'string') throw refuse('event', 'not valid UTF-8');
  offset += eventLen;
  if (offset + metaLen > buf.length) throw refuse('meta', 'truncated: the frame ends before its metadata');
  const metaText = decodeUtf8(buf.subarray(offset, offset + metaLen), 'meta');
  if (typeof metaText !== 'string') throw refuse('meta', 'not valid UTF-8');
  offset += metaLen;
  const body = buf.subarray(offset);
  let payload: unknown;
  if (encoding === ENCODING_JSON) {
    const text = decodeUtf8(body);
    if (typeof text !== 'string') throw refuse('payload.payload', 'not valid UTF-8');
    const read = parseJson(text);
    if (!('value' in read)) throw refuse('payload.payload', 'malformed JSON');
    payload = read.value;
  } else if (encoding === ENCODING_BINARY) {
    payload = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
  } else {
    throw refuse('payload.payload', `an encoding of ${ENCODING_BINARY} (binary) or ${ENCODING_JSON} (JSON), not ${encoding}`);
  }
  let meta: Record<string, unknown> = {};
  if (metaText) {
    const read = parseJson(metaText);
    if (!('value' in read)) throw refuse('meta', 'malformed JSON');
    // spread into the payload below: a string or an array would become keys '0', '1', …
    if (typeof read.value !== 'object' || read.value === null || Array.isArray(read.value)) throw refuse('meta', 'a JSON object');
    meta = read.value as Record<string, unknown>;
  }
  return {
    join_ref: joinRef || null,
    ref: ref || null,
    topic,
    event: 'broadcast',
    payload: { ...meta, type: 'broadcast', event, payload },
  };
}

/** A frame to send: a string (text frame) or a Buffer (binary frame). */
export function encodeFrame(frame: Frame, vsn: Vsn): string {
  if (vsn === '2.0.0') return JSON.stringify([frame.join_ref, frame.ref, frame.topic, frame.event, frame.payload]);
  return JSON.stringify({ join_ref: frame.join_ref, ref: frame.ref, topic: frame.topic, event: frame.event, payload: frame.payload });
}

/** A frame encoded once for every recipient: the bytes, and whether they go as a binary frame (else text). */
export type Encoded = {
  data: Buffer;
  binary: boolean;
  /** The whole WebSocket frame (header + data), built once by socket-write.ts wireFrame on first send. */
  frame?: Buffer;
};

/**
 * A JSON broadcast to deliver, as the text frame of the socket's vsn: `[null, null, topic,
 * "broadcast", {type, event, payload, meta}]` (2.0.0) or the same as an object (1.0.0). The
 * payload part is pre-serialized once per message by the caller and the frame is encoded once
 * per vsn for all recipients, already as bytes (ws would otherwise encode a string per socket).
 * Text rather than binary kind 4 under 2.0.0: realtime-js decodes a text frame with one
 * JSON.parse, a kind 4 frame with a TextDecoder, four copies and two JSON.parse — about 4× its
 * CPU per message (measured), which is what caps the subscribers a client process can follow.
 */
export function encodeBroadcast(topic: string, event: string, payloadJson: string, meta: Record<string, unknown> | null, vsn: Vsn): Encoded {
  const metaPart = meta ? `,"meta":${JSON.stringify(meta)}` : '';
  const inner = `{"type":"broadcast","event":${JSON.stringify(event)},"payload":${payloadJson}${metaPart}}`;
  const text = vsn === '2.0.0'
    ? `[null,null,${JSON.stringify(topic)},"broadcast",${inner}]`
    : `{"join_ref":null,"ref":null,"topic":${JSON.stringify(topic)},"event":"broadcast","payload":${inner}}`;
  return { data: Buffer.from(text, 'utf8'), binary: false };
}

/**
 * A binary client broadcast (vsn 2.0.0 only: vsn 1.0.0 has no binary frames): kind 4 with raw
 * encoding, the payload bytes exactly as the sender pushed them.
 */
export function encodeBinaryBroadcast(topic: string, event: string, payload: Uint8Array): Encoded {
  return { data: userBroadcast(topic, event, payload), binary: true };
}

function userBroadcast(topic: string, event: string, payloadB: Uint8Array): Buffer {
  const topicB = Buffer.from(topic, 'utf8');
  const eventB = Buffer.from(event, 'utf8');
  if (topicB.length > 255 || eventB.length > 255) throw new ProtocolError('topic or event longer than 255 bytes');
  const out = Buffer.allocUnsafe(5 + topicB.length + eventB.length + payloadB.length);
  out[0] = KIND_USER_BROADCAST;
  out[1] = topicB.length;
  out[2] = eventB.length;
  out[3] = 0; // no metadata
  out[4] = ENCODING_BINARY;
  let o = 5;
  o += topicB.copy(out, o);
  o += eventB.copy(out, o);
  out.set(payloadB, o);
  return out;
}
