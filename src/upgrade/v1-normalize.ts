// How v1 values become v2 values (docs/upgrade-v1.md, "What changes on the way"). Each rule
// exists because v2 enforces something v1 did not: block types match ^[a-z][a-z0-9_]{0,39}$,
// content is a JSON object, titles are 1..500 characters, vectors have 1536 dimensions, emails are
// stored trimmed and lower-cased (as GoTrue stores them). The writer and the verifier both apply
// them, so the verification compares v2 with what these rules say v1 should have become.

export const EMBEDDING_DIMENSIONS = 1536;
export const MAX_TITLE_CHARS = 500;
export const MAX_CONTENT_BYTES = 65536; // app.settings max_content_bytes: only reported, never cut

const TYPE_RE = /^[a-z][a-z0-9_]{0,39}$/;

/** v2 block type: lower-cased, other characters → '_', 'b_' before a non-letter start, 40 characters at most. */
export function normalizeType(raw: string | null): { type: string; changed: boolean } {
  if (raw !== null && TYPE_RE.test(raw)) return { type: raw, changed: false };
  let t = (raw ?? '').trim().toLowerCase().replace(/[^a-z0-9_]/g, '_');
  if (t === '') t = 'text';
  else if (!/^[a-z]/.test(t)) t = `b_${t}`;
  return { type: t.slice(0, 40), changed: true };
}

export type ContentIssue = 'null' | 'invalid_json' | 'not_object' | 'nul_removed';

/** Removes U+0000 from every string and key: jsonb cannot hold it. */
function stripNul(value: unknown): unknown {
  if (typeof value === 'string') return value.replace(/\u0000/g, '');
  if (Array.isArray(value)) return value.map(stripNul);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k.replace(/\u0000/g, ''), stripNul(v)]));
  }
  return value;
}

/**
 * v2 content (JSON text of an object). An object is passed through as its own text (no number
 * is re-printed, so nothing is rounded); null → {}; a JSON string → {"text": s}; any other JSON
 * value → {"value": v}; text that is not JSON → {"text": the text}; U+0000 is removed.
 */
export function normalizeContent(raw: string | null): { json: string; issue: ContentIssue | null } {
  if (raw === null) return { json: '{}', issue: 'null' };
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return { json: JSON.stringify({ text: raw.replace(/\u0000/g, '') }), issue: 'invalid_json' };
  }
  const hasNul = /\\u0000/i.test(raw) || raw.includes('\u0000');
  if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) {
    return hasNul ? { json: JSON.stringify(stripNul(parsed)), issue: 'nul_removed' } : { json: raw, issue: null };
  }
  if (parsed === null) return { json: '{}', issue: 'null' };
  const wrapped = typeof parsed === 'string' ? { text: parsed } : { value: parsed };
  return { json: JSON.stringify(stripNul(wrapped)), issue: 'not_object' };
}

/** JSON text with object keys sorted at every level: equal for equal JSON, whatever the spacing or key order. */
export function canonicalJson(text: string): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sort((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return JSON.stringify(sort(JSON.parse(text)));
}

/** v2 canvas title: 'Untitled' for none or blank, cut to 500 characters (code points). */
export function normalizeTitle(raw: string | null): { title: string; changed: boolean } {
  if (raw === null || raw.trim() === '') return { title: 'Untitled', changed: true };
  const chars = Array.from(raw);
  return chars.length > MAX_TITLE_CHARS ? { title: chars.slice(0, MAX_TITLE_CHARS).join(''), changed: true } : { title: raw, changed: false };
}

/** Emails as GoTrue stores them: trimmed, lower-cased; blank → none. */
export function normalizeEmail(raw: string | null): string | null {
  const e = raw?.trim().toLowerCase() ?? '';
  return e === '' ? null : e;
}

/**
 * A bcrypt hash pgcrypto's crypt() checks (what auth.users.encrypted_password holds): $2a$ as is;
 * $2b$ and $2y$ are the same algorithm for passwords under 255 bytes and are written as $2a$.
 * Anything else (another algorithm, a plain password) → null: the user resets the password.
 */
export function normalizePasswordHash(raw: string | null): { hash: string | null; unusable: boolean } {
  if (raw === null || raw === '') return { hash: null, unusable: false };
  const m = /^\$2[aby]\$(\d\d)\$[./A-Za-z0-9]{53}$/.exec(raw);
  return m ? { hash: `$2a$${raw.slice(4)}`, unusable: false } : { hash: null, unusable: true };
}

export type EmbeddingProblem = 'unparseable' | 'dimensions' | 'non_finite';

/**
 * A v1 embedding's numbers: text as Postgres prints float arrays ({1,2}), vectors or JSON ([1,2]),
 * or bytes (little-endian float32, Prisma Bytes). Valid = exactly 1536 finite numbers.
 */
export function parseEmbedding(raw: string | Buffer | null): { values: Float32Array } | { problem: EmbeddingProblem; dims?: number } {
  if (raw === null) return { problem: 'unparseable' };
  let numbers: number[];
  if (Buffer.isBuffer(raw)) {
    if (raw.byteLength % 4 !== 0) return { problem: 'unparseable' };
    numbers = [];
    for (let i = 0; i < raw.byteLength; i += 4) numbers.push(raw.readFloatLE(i));
  } else {
    const t = raw.trim();
    if (!/^[[{].*[\]}]$/s.test(t)) return { problem: 'unparseable' };
    const inner = t.slice(1, -1).trim();
    if (inner === '') return { problem: 'dimensions', dims: 0 };
    numbers = inner.split(',').map((s) => {
      const x = s.trim().toLowerCase();
      if (x === 'nan' || x === 'null' || x === '"nan"') return Number.NaN;
      if (x === 'infinity' || x === '-infinity') return x.startsWith('-') ? -Infinity : Infinity;
      return x === '' || !/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/.test(x) ? Number.NaN : Number(x);
    });
  }
  if (numbers.length !== EMBEDDING_DIMENSIONS) return { problem: 'dimensions', dims: numbers.length };
  if (numbers.some((n) => !Number.isFinite(n) || !Number.isFinite(Math.fround(n)))) return { problem: 'non_finite' };
  return { values: Float32Array.from(numbers) };
}

/** pgvector's text input for float32 values: shortest round-trip decimal of each. */
export function vectorLiteral(values: Float32Array): string {
  // String(-0) is "0": keep the sign, so the stored float32 is the same value bit for bit
  return `[${Array.from(values, (v) => (Object.is(v, -0) ? '-0' : String(v))).join(',')}]`;
}

/** A vector's value for checksums: its float32 bytes. */
export function vectorBytes(values: Float32Array): Buffer {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength);
}

/**
 * A time as the upgrade carries it: ISO 8601 in UTC with microseconds. Accepts what sources give:
 * already-canonical text, other date text (a zone-less one is UTC), a Date, or a number of
 * milliseconds since 1970 (Prisma's DateTime in SQLite; below 10^11 it is read as seconds).
 */
export function canonicalTime(value: unknown): string | null {
  if (value === null || value === undefined || value === '') return null;
  if (typeof value === 'string' && /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/.test(value)) return value;
  let ms: number;
  if (value instanceof Date) ms = value.getTime();
  else if (typeof value === 'number' || typeof value === 'bigint') {
    ms = Number(value);
    if (Math.abs(ms) < 1e11) ms *= 1000;
  } else if (typeof value === 'string') {
    let s = value.trim();
    if (/^-?\d+(\.\d+)?$/.test(s)) return canonicalTime(Number(s));
    s = s.replace(/^(\d{4}-\d\d-\d\d) /, '$1T');
    if (/T\d\d:\d\d(:\d\d(\.\d+)?)?$/.test(s)) s += 'Z';
    ms = Date.parse(s);
  } else return null;
  if (!Number.isFinite(ms)) return null;
  const d = new Date(ms);
  if (Number.isNaN(d.getTime())) return null;
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

/** The v1 order of two blocks of a canvas: y_order ascending (missing last), then id as text, bytewise. */
export function compareV1Order(a: { order: number | null; id: string }, b: { order: number | null; id: string }): number {
  if (a.order !== b.order) {
    if (a.order === null) return 1;
    if (b.order === null) return -1;
    return a.order < b.order ? -1 : 1;
  }
  return Buffer.compare(Buffer.from(a.id, 'utf8'), Buffer.from(b.id, 'utf8'));
}
