/**
 * The one input policy of every surface (HTTP bodies and URLs, H1 frames, realtime-js client
 * broadcasts and presence): input is taken exactly as sent or refused, never rewritten.
 *
 * - Text is UTF-8, decoded fatally: invalid bytes (`FF`, overlong `C0 80`, surrogate code points
 *   `ED A0 80`, truncated sequences) are refused, never replaced by U+FFFD.
 * - Every string and object key of a JSON value is well-formed UTF-16 (no unpaired surrogate,
 *   which `"\ud800"` escapes produce and which would reach Postgres as U+FFFD, so two different
 *   strings could become one) and holds no NUL (Postgres text cannot store it).
 * - JSON nests at most MAX_JSON_DEPTH levels (deeper values would overflow recursive serializers
 *   on their way to the database). Sizes are bounded before parsing by each surface (HTTP body
 *   limit, WebSocket maxPayload); JSON.parse itself is not recursive in V8.
 * - Every number is one an IEEE 754 double holds exactly (I-JSON, RFC 7493 §2.2): `1e400`,
 *   `12345678901234567890123` or `3.141592653589793238462643383279` would be stored as something
 *   else (Infinity becomes null, which in a merge patch even deletes the key), so they are refused
 *   with the advice to send such a value as a string (src/json-numbers.ts finds them).
 * - No object key is `__proto__`. Refused rather than kept: JSON.parse keeps it as an own key, but
 *   zod's records drop it and any JavaScript that copies objects by assignment (a merge, a client's
 *   state) would set a prototype instead, so it could not round-trip through every consumer.
 * - Integers passed to SQL fit the parameter's type (INT4_MAX, SEQ_MAX), checked by the schemas.
 *
 * A violation names the field by its path (`patch.content.t`, `ops.0.client_op_id`, fieldPath:
 * a key that is not plain in brackets, `patch.content["a.b"]`), so each surface can answer
 * `invalid_input` with that field.
 */

import { isUnsafeNumber, mayHoldUnsafeNumber, withExactNumbers } from './json-numbers.ts';

/** JSON values nest at most this deep. */
export const MAX_JSON_DEPTH = 64;

/** Largest value of a Postgres `integer` parameter (base_version, limits). */
export const INT4_MAX = 2_147_483_647;

/** Largest sequence number accepted (a Postgres `bigint`, bounded to what a JS number holds exactly). */
export const SEQ_MAX = Number.MAX_SAFE_INTEGER;

/** Why input was refused: the field at fault and a message that starts with it. */
export type InputViolation = { field: string; message: string };

const violation = (field: string, problem: string): InputViolation => ({ field, message: `${field}: ${problem}` });

const UNSAFE_NUMBER = 'a number beyond the magnitude or precision of an IEEE 754 double (I-JSON, RFC 7493), which would not be '
  + 'stored as sent: send it as a string';

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Bytes as UTF-8 text, or a violation of `field` when they are not valid UTF-8. */
export function decodeUtf8(bytes: Uint8Array, field = 'body'): string | InputViolation {
  try {
    return utf8.decode(bytes);
  } catch {
    return violation(field, 'not valid UTF-8');
  }
}

/**
 * A media type's parameters (RFC 9110 §5.6.6), split at the semicolons outside quoted strings: a
 * quoted value may hold a semicolon (foo="a;b"), and a quoted-pair (\") a quote. Lenient about
 * whitespace around `=`, as the check always was; an unterminated quoted string runs to the end.
 */
const PARAMETERS = /(?:[^;"]|"(?:[^"\\]|\\.)*"?)+/gs;
/** A quoted-string (RFC 9110 §5.6.4), its content in group 1, quoted-pairs still escaped. */
const QUOTED_STRING = /^"((?:[^"\\]|\\.)*)"$/s;
/** UTF-8's name and its IANA alias (charset names are case-insensitive), and the common utf8. */
const UTF_8_NAMES = new Set(['utf-8', 'csutf8', 'utf8']);

/**
 * A JSON body's Content-Type may name no charset other than UTF-8 (RFC 8259 §8.1: JSON exchanged
 * between systems is UTF-8; `application/json` defines no charset parameter at all). A body sent
 * as `charset=utf-16` or `iso-8859-1` would otherwise be read as UTF-8 bytes it is not (other
 * text, or malformed JSON): refused, never transcoded. The field is the header, `content-type`.
 */
export function checkCharset(contentType: string | undefined): InputViolation | null {
  const semicolon = contentType?.indexOf(';') ?? -1;
  if (semicolon < 0) return null;
  for (const parameter of contentType!.slice(semicolon + 1).match(PARAMETERS) ?? []) {
    const eq = parameter.indexOf('=');
    if (parameter.slice(0, eq < 0 ? undefined : eq).trim().toLowerCase() !== 'charset') continue;
    const raw = parameter.slice(eq + 1).trim();
    const quoted = QUOTED_STRING.exec(raw);
    const value = (quoted ? quoted[1]!.replace(/\\(.)/gs, '$1') : raw).toLowerCase();
    if (eq < 0 || !UTF_8_NAMES.has(value)) {
      return violation('content-type', 'a JSON body is UTF-8 (RFC 8259): send Content-Type: application/json or application/json; charset=utf-8');
    }
  }
  return null;
}

/**
 * A JSON body is sent as it is: no Content-Encoding other than `identity`. Bodies are not
 * decompressed here, so a gzip body would be read as the compressed bytes (refused as invalid
 * UTF-8, which says nothing of the cause), and a plain body declared as gzip as if the header were
 * not there. The field is the header, `content-encoding`.
 */
export function checkContentEncoding(contentEncoding: string | undefined): InputViolation | null {
  if (contentEncoding === undefined) return null;
  const codings = contentEncoding.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '');
  if (codings.every((c) => c === 'identity')) return null;
  return violation('content-encoding', 'the body is read as sent, uncompressed: send it without Content-Encoding (or identity)');
}

/**
 * A request body is framed by Content-Length or by `Transfer-Encoding: chunked` alone. RFC 9112
 * §6.1: a server that receives a transfer coding it does not understand SHOULD answer 501 (Not
 * Implemented); no coding other than chunked is decoded here (gzip, deflate, compress, an unknown
 * x-…, also the obsolete identity, which no current specification defines), so such a body would
 * be read as its coded bytes, or a plain body declared as coded as if the header were not there
 * (`gzip, chunked` with a plain body was accepted). Node's parser has already refused, 400, a
 * request whose final coding is not chunked (§6.3: its length cannot be known) and chunked applied
 * twice. The field is the header, `transfer-encoding`.
 */
export function checkTransferEncoding(transferEncoding: string | undefined): InputViolation | null {
  if (transferEncoding === undefined) return null;
  const codings = transferEncoding.split(',').map((c) => c.trim().toLowerCase()).filter((c) => c !== '');
  if (codings.length === 1 && codings[0] === 'chunked') return null;
  return violation('transfer-encoding', 'no transfer coding other than chunked is understood here (RFC 9112 §6.1): send the body '
    + 'with Content-Length, or Transfer-Encoding: chunked alone (a compressed body is not accepted either)');
}

/** An unpaired surrogate: a high one not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** What is wrong with one string (an unpaired surrogate, a NUL), or null. */
function textProblem(s: string): string | null {
  if (LONE_SURROGATE.test(s)) return 'contains an unpaired UTF-16 surrogate (not a Unicode character)';
  if (s.includes('\u0000')) return 'contains a NUL character';
  return null;
}

/**
 * Text a person reads as a name (a presence name; in SQL a file's name, a workspace's, a canvas's
 * title): internal.is_display_text of sql/core/display_text.sql, character for character (its
 * comment says why each is refused; tests/unit/display-text.test.ts compares the two over every
 * code point). No control character (C0, DEL, C1), none of Unicode's invisible format characters
 * (zero-width, bidi overrides and isolates, BOM, tags, …) nor the blank-looking fillers, and at
 * least one character that is not a space, a joiner or a number sign.
 */
const CONTROL = /[\u0000-\u001F\u007F-\u009F]/;
const INVISIBLE = /[\u00AD\u034F\u061C\u115F\u1160\u17B4\u17B5\u180B-\u180F\u200B\u200E\u200F\u2028-\u202E\u2060-\u2064\u2066-\u206F\u2800\u3164\uFEFF\uFFA0\uFFF9-\uFFFB\u{13430}-\u{1343F}\u{1BCA0}-\u{1BCA3}\u{1D173}-\u{1D17A}\u{E0000}-\u{E007F}]/u;
const SHOWS = /[^ \u00A0\u1680\u2000-\u200A\u200C\u200D\u202F\u205F\u3000\u0600-\u0605\u06DD\u070F\u0890\u0891\u08E2\u{110BD}\u{110CD}]/u;

export function isDisplayText(s: string): boolean {
  return !CONTROL.test(s) && !INVISIBLE.test(s) && SHOWS.test(s);
}

/** Whether a JSON value is an object (not null, not an array). */
export const isJsonObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A violation of `field` when `s` is not acceptable text, else null. */
export function checkText(s: string, field: string): InputViolation | null {
  const problem = textProblem(s);
  return problem ? violation(field, problem) : null;
}

/**
 * A key written as is in a field path: letters, digits, `_`, `$`, `-`, and not only digits (a
 * step `.0` is an array's element). Any other key (a `.`, a bracket or a quote in it, a space,
 * other letters, an empty or all-digit key) is written in brackets as its JSON string, so that
 * every path reads one way: content key `a.b` is `patch.content["a.b"]`, never the key `b` of `a`.
 */
const PLAIN_KEY = /^(?![0-9]+$)[A-Za-z0-9_$-]+$/;

/** One step of a field path: `.key` for a plain key, `.N` for an array index, `["key"]` for any other key. */
export function fieldStep(key: string | number): string {
  return typeof key === 'number' || PLAIN_KEY.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`;
}

/**
 * The field path of every error on every surface (HTTP, H1, realtime-js; SQL's
 * internal.field_step writes the same): steps from the top, the first without its dot, `ops.0.patch.text["a.b"]`.
 */
export function fieldPath(parts: readonly PropertyKey[], base = ''): string {
  return parts.reduce<string>(appendField, base);
}

/** `path` and the step of `key` (fieldStep; a symbol, as a zod issue path may hold, as its text), the first step without its dot. */
function appendField(path: string, key: PropertyKey): string {
  const step = fieldStep(typeof key === 'number' ? key : String(key));
  return path === '' && step.startsWith('.') ? step.slice(1) : path + step;
}

/**
 * How a depth violation names its field by default: the field of the HTTP and H1 schemas (a
 * top-level field, `patch.x`, `ops.N.patch.x`), not the whole chain of 64 keys.
 */
export function schemaField(parts: readonly (string | number)[]): string {
  const out: (string | number)[] = [];
  let i = 0;
  if (parts[0] === 'ops' && parts.length > 1) out.push(parts[i++]!, parts[i++]!);
  if (i < parts.length) out.push(parts[i++]!);
  if (out[out.length - 1] === 'patch' && i < parts.length) out.push(parts[i++]!);
  return fieldPath(out);
}

// each value with its depth, its key and its parent entry: the path is walked back from them only
// for a violation (a path string built per key was most of a clean body's walk)
type JsonEntry = [unknown, number, string | number | null, JsonEntry | null];

/**
 * The keys from the value checkJson started at down to `entry`. At module level, not a closure in
 * checkJson: under tsx (how the server runs: node --import tsx) esbuild's keepNames gives a named
 * closure its name with Object.defineProperty each time it is created, on every body read.
 */
function partsOf(entry: JsonEntry): (string | number)[] {
  const parts: (string | number)[] = [];
  for (let e: JsonEntry | null = entry; e && e[2] !== null; e = e[3]) parts.push(e[2]);
  return parts.reverse();
}

/**
 * Walks a value from parseJson once (iteratively: hostile nesting cannot overflow the stack) and
 * returns the first violation: a string or key that is not acceptable text, a `__proto__` key, a
 * number a double cannot hold exactly, or nesting deeper than `maxDepth`. `root` names the value itself (its fields are named from the top, `a.b.0`);
 * `depthField` shortens the path of a depth violation to the field a client would recognise.
 */
export function checkJson(value: unknown, opts: { root?: string; maxDepth?: number; depthField?: (parts: (string | number)[]) => string } = {}): InputViolation | null {
  const root = opts.root ?? 'body';
  const maxDepth = opts.maxDepth ?? MAX_JSON_DEPTH;
  const depthField = opts.depthField ?? schemaField;
  const stack: JsonEntry[] = [[value, 0, null, null]];
  while (stack.length > 0) {
    const entry = stack.pop()!;
    const [v, depth] = entry;
    if (typeof v === 'string') {
      const problem = textProblem(v);
      if (problem) return violation(fieldPath(partsOf(entry)) || root, problem);
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (isUnsafeNumber(v)) return violation(fieldPath(partsOf(entry)) || root, UNSAFE_NUMBER);
    if (depth >= maxDepth) return violation(depthField(partsOf(entry)) || root, `JSON nested deeper than ${maxDepth} levels`);
    if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push([v[i], depth + 1, i, entry]);
      continue;
    }
    // its keys, not Object.entries: no [key, value] array per key of every body
    const keys = Object.keys(v);
    for (let i = keys.length - 1; i >= 0; i--) {
      const key = keys[i]!;
      // the key itself is not echoed: it is the hostile part; the object holding it is named
      const problem = textProblem(key);
      if (problem) return violation(fieldPath(partsOf(entry)) || root, `an object key ${problem}`);
      if (key === '__proto__') {
        return violation(fieldPath([...partsOf(entry), key]), 'the object key __proto__ is not accepted (JavaScript would treat it as the prototype): use another name');
      }
      stack.push([(v as Record<string, unknown>)[key], depth + 1, key, entry]);
    }
  }
  return null;
}

/**
 * The one parse of untrusted JSON text: JSON.parse, plus the exact reading of the numbers when the
 * text may hold one a double would change (marked as UnsafeNumber for checkJson to refuse). Its
 * value must pass checkJson before use. A violation of `field` for malformed JSON.
 */
export function parseJson(text: string, field = 'body'): { value: unknown } | InputViolation {
  try {
    const value: unknown = JSON.parse(text);
    return { value: mayHoldUnsafeNumber(text) ? withExactNumbers(text, value) : value };
  } catch (err) {
    // SyntaxError for malformed text; RangeError should the engine ever refuse the nesting
    return violation(field, err instanceof RangeError ? 'JSON too large or too deeply nested' : 'malformed JSON');
  }
}

/** UTF-8 JSON bytes → a value that passed checkJson, or the first violation (decoding, syntax, policy). */
export function readJson(bytes: Uint8Array, field = 'body'): { value: unknown } | InputViolation {
  const text = decodeUtf8(bytes, field);
  if (typeof text !== 'string') return text;
  const parsed = parseJson(text, field);
  if (!('value' in parsed)) return parsed;
  const bad = checkJson(parsed.value, { root: field });
  return bad ?? parsed;
}

/**
 * The query parameters `names` a surface reads as one value each: null when absent, and a
 * violation naming the parameter when it is sent more than once (`?scope=local&scope=global`).
 * Taking the first of several (URLSearchParams.get, Hono's query()) acts on one value while a
 * proxy, a log or a firewall in front may have judged another; the API's zod schemas refuse a
 * repeated parameter too (an array where a string is expected).
 */
export function singleQueryValues<N extends string>(params: URLSearchParams, names: readonly N[]): { values: Record<N, string | null> } | InputViolation {
  const values = {} as Record<N, string | null>;
  for (const name of names) {
    const all = params.getAll(name);
    if (all.length > 1) return violation(name, `sent ${all.length} times: send it once`);
    values[name] = all[0] ?? null;
  }
  return { values };
}

/** Percent-decodes one URL component fatally (invalid UTF-8 throws in decodeURIComponent); null when it is not valid. */
function decodeComponent(s: string): string | null {
  try {
    return decodeURIComponent(s);
  } catch {
    return null;
  }
}

/**
 * Checks a request URL's path segments and query parameters: each must percent-decode to valid
 * UTF-8 without NUL (a lone surrogate cannot be spelled in a URL; `%ED%A0%80` is invalid UTF-8).
 * Names the field `path` or `query.<name>` (fieldPath: `query["a.b"]` for a name that is not plain).
 */
export function checkUrl(url: string): InputViolation | null {
  const u = new URL(url);
  for (const segment of u.pathname.split('/')) {
    const decoded = decodeComponent(segment);
    if (decoded === null) return violation('path', 'percent-encoding is not valid UTF-8');
    if (decoded.includes('\u0000')) return violation('path', 'contains a NUL character');
  }
  const search = u.search.slice(1);
  if (!search) return null;
  for (const pair of search.split('&')) {
    const eq = pair.indexOf('=');
    const rawName = (eq < 0 ? pair : pair.slice(0, eq)).replace(/\+/g, ' ');
    const name = decodeComponent(rawName);
    if (name === null) return violation('query', 'a parameter name is not valid UTF-8');
    if (name.includes('\u0000')) return violation('query', 'a parameter name contains a NUL character');
    const field = fieldPath([name], 'query');
    if (eq < 0) continue;
    const value = decodeComponent(pair.slice(eq + 1).replace(/\+/g, ' '));
    if (value === null) return violation(field, 'percent-encoding is not valid UTF-8');
    if (value.includes('\u0000')) return violation(field, 'contains a NUL character');
  }
  return null;
}
