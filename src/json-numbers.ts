/**
 * Numbers of untrusted JSON, kept exactly or marked (I-JSON, RFC 7493 §2.2: no number with more
 * magnitude or precision than an IEEE 754 double). JSON.parse turns `1e400` into Infinity (which
 * JSON.stringify writes as null) and `12345678901234567890123` into the nearest double, so a value
 * would be stored differently from what was sent. Node 20's JSON.parse does not expose a number's
 * source text, so such texts are read again with lossless-json, which hands over each number's
 * text. The rule: a number is kept when the double nearest to it has the same decimal value
 * (`1e21`, `100000000000000000000`, `0.1` and everything JSON.stringify writes are), and refused
 * when the double would change it (overflow, underflow to 0, digits lost). That re-reading runs
 * only when the text could hold such a number: parsing a request twice would cost every request,
 * and almost none carries one.
 */
import { LosslessNumber, parse } from 'lossless-json';

/**
 * A number token (after `:`, `,`, `[` or at the start) with an exponent, or with 16 or more
 * digits: every number a double cannot hold exactly is one of these (15 significant digits
 * always round-trip). Tokens inside strings may match too; that only costs the exact check.
 */
const MAYBE_UNSAFE = /(?:^|[:,[])\s*-?(?:\d+(?:\.\d+)?[eE]|\d(?:\.?\d){15})/;

/** Whether `text` may hold a number that a double cannot hold exactly (false: it holds none). */
export function mayHoldUnsafeNumber(text: string): boolean {
  return MAYBE_UNSAFE.test(text);
}

/** A number as sent, which an IEEE 754 double would change: refused by the input policy (checkJson). */
export type UnsafeNumber = LosslessNumber;

/** Whether `v` is a number that JSON.parse would have changed (its source text is `v.value`). */
export function isUnsafeNumber(v: unknown): v is UnsafeNumber {
  return v instanceof LosslessNumber;
}

/** A JSON number's decimal value, canonical: significant digits and the exponent of 0.digits (`0` for zero). */
function decimalValue(text: string): string {
  const m = /^-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!m) return text; // not a JSON number (lossless-json hands over only JSON numbers)
  const all = m[1]! + (m[2] ?? '');
  const lead = all.length - all.replace(/^0+/, '').length;
  const digits = all.slice(lead).replace(/0+$/, '');
  return digits === '' ? '0' : `${digits}e${Number(m[3] ?? 0) + m[1]!.length - lead}`;
}

/** Whether the double nearest to number text `text` has its decimal value (nothing lost; both keep the sign). */
function doubleHoldsExactly(text: string): boolean {
  const n = Number(text);
  return Number.isFinite(n) && decimalValue(text) === decimalValue(String(n));
}

const exactOrMarked = (text: string) => (doubleHoldsExactly(text) ? Number(text) : new LosslessNumber(text));
// what JSON.parse does with a repeated key: the last value, at the first key's place
const lastValue = ({ newValue }: { newValue: unknown }) => newValue;

/**
 * `text`, already parsed by JSON.parse into `parsed`, parsed again with every number a double
 * holds exactly as that number and every other one as an UnsafeNumber. Only the numbers can
 * differ from `parsed`: keys (`__proto__` too, as an own property), strings and repeated keys
 * are read as JSON.parse reads them.
 */
export function withExactNumbers(text: string, parsed: unknown): unknown {
  try {
    return parse(text, null, { parseNumber: exactOrMarked, onDuplicateKey: lastValue });
  } catch (err) {
    // lossless-json recurses: nesting thousands deep overflows the stack. Such a value is far
    // deeper than MAX_JSON_DEPTH, for which checkJson refuses it on every surface (so none of its
    // numbers is ever used): JSON.parse's value is returned for that refusal.
    if (err instanceof RangeError) return parsed;
    throw err;
  }
}
