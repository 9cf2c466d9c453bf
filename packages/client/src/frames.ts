import type { ServerMessage } from './protocol.ts';
import { isObject } from './json-value.ts';

/**
 * Reading a server frame: the text of one H1 message, checked against protocol.ts before the
 * client acts on it. The server only sends frames of those shapes, but a frame is input from the
 * network (a proxy's page, a server of another version, a broken or hostile one): before, a frame
 * of a known type with a field of the wrong type threw out of the socket's message handler (a
 * `snapshot` whose `blocks` is not an array, a delete's `deleted_ids` not one, a `rejected` with
 * no `error`), which ends a Node process as an uncaught exception, after clearing the state a
 * snapshot replaces; others (a block that is a string, a `canvas_seq` that is not a number) went
 * into the state. Only the fields the client reads are checked; others pass as they are.
 *
 * A frame of a type this client does not know is `unknown` (a newer server's: ignored). One that
 * is not JSON, not an object, or of a known type and the wrong shape is `invalid`, naming the
 * field: CanvasSync reports it (PotentiaError `invalid_message`) and drops the socket, so a delta
 * or an answer it could not read is replayed or answered again on the next one.
 */
export type ReadFrame = { ok: ServerMessage } | { unknown: string } | { invalid: string; field: string };

const KNOWN = new Set(['hello', 'access', 'snapshot', 'delta', 'resumed', 'ack', 'conflict', 'rejected', 'presence', 'presence_leave', 'error', 'pong']);

type Obj = Record<string, unknown>;
/** A count of the protocol (server_seq, canvas_seq, watermarks): a non-negative safe integer. */
const isSeq = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
const isVersion = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);
const isStr = (v: unknown): v is string => typeof v === 'string';
const orNull = (check: (v: unknown) => boolean) => (v: unknown) => v === null || check(v);
const optional = (check: (v: unknown) => boolean) => (v: unknown) => v === undefined || check(v);
const isBlock = (v: unknown): boolean => isObject(v) && isStr(v['block_id']) && isVersion(v['version']);
const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every(isStr);
const isTextOps = (v: unknown): boolean => isObject(v) && Object.values(v).every(Array.isArray);
const isBool = (v: unknown): v is boolean => typeof v === 'boolean';

/** The checks of each known type: field → check. */
const SHAPES: Record<string, Record<string, (v: unknown) => boolean>> = {
  hello: { canvas_id: isStr, user_id: isStr, can_write: isBool },
  access: { can_write: isBool },
  snapshot: { blocks: (v) => Array.isArray(v) && v.every(isBlock), watermark: isSeq, canvas_watermark: isSeq, part: optional(isSeq), has_more: optional(isBool) },
  delta: {
    server_seq: isSeq, canvas_seq: isSeq, action: (v) => v === 'create' || v === 'update' || v === 'move' || v === 'delete',
    block_id: isStr, version: orNull(isVersion), block: orNull(isBlock), client_op_id: orNull(isStr),
    deleted_ids: optional(orNull(isStrings)), text: optional(isTextOps),
  },
  resumed: { watermark: isSeq, canvas_watermark: isSeq },
  ack: {
    client_op_id: isStr, status: (v) => v === 'success' || v === 'duplicate', server_seq: isSeq, canvas_seq: isSeq,
    version: orNull(isVersion), block_id: orNull(isStr), text: optional(isTextOps),
  },
  conflict: {
    client_op_id: isStr, code: (v) => v === 'conflict' || v === 'rebase_required', message: isStr, block: orNull(isBlock),
    version: orNull(isVersion), changed: optional(isStrings), fields: optional((v) => isObject(v) && Object.values(v).every(isObject)),
  },
  rejected: { client_op_id: isStr, error: (v) => isObject(v) && isStr(v['code']) && optional(isStr)(v['message']) && optional(orNull(isStr))(v['field']) },
  presence: { user_id: isStr },
  presence_leave: { user_id: isStr },
  error: { code: isStr, message: optional(isStr), field: optional(isStr), client_op_id: optional(isStr), retry_after_ms: optional((v) => typeof v === 'number') },
  pong: {},
};

/** Reads one frame's data (a text frame's string; anything else is invalid). */
export function readFrame(data: unknown): ReadFrame {
  if (typeof data !== 'string') return { invalid: 'a binary frame (the server sends JSON text)', field: 'message' };
  let m: unknown;
  try {
    m = JSON.parse(data);
  } catch {
    return { invalid: `not JSON: ${JSON.stringify(data.slice(0, 80))}`, field: 'message' };
  }
  if (!isObject(m) || !isStr(m['type'])) return { invalid: 'not an object with a string `type`', field: 'type' };
  const type = m['type'];
  if (!KNOWN.has(type)) return { unknown: type };
  for (const [field, check] of Object.entries(SHAPES[type]!)) {
    if (!check(m[field])) return { invalid: `a ${type} frame whose ${field} is ${describe(m[field])}`, field };
  }
  // a message is for people: one the server left out reads as its code
  if (type === 'error' && m['message'] === undefined) m['message'] = m['code'];
  const error = type === 'rejected' ? (m['error'] as Obj) : null;
  if (error && error['message'] === undefined) error['message'] = error['code'];
  return { ok: m as ServerMessage };
}

function describe(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array of the wrong kind';
  if (typeof v === 'string') return `the string ${JSON.stringify(v.slice(0, 40))}`;
  if (typeof v === 'object') return 'an object of the wrong shape';
  return `${typeof v} ${String(v)}`;
}
