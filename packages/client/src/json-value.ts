/**
 * What JSON.stringify would not send faithfully. A number that is not finite (NaN, Infinity,
 * 1e400) becomes `null`, which a JSON Merge Patch reads as "delete this key"; a function, symbol or
 * undefined inside an array becomes `null` too, and as an object's value the key is dropped
 * silently (undefined: the key is absent, as JSON has it, and is allowed); a BigInt or a cycle
 * makes it throw. The server refuses non-finite numbers it can see (docs/mutations.md), but
 * these never reach it as such, so the client refuses them first, naming the field as the server
 * would (`patch.content.count`, `cursor.x`).
 */

/** The first value under `value` that JSON cannot carry, as `{ field, message }`; null when there is none. */
export function jsonProblem(value: unknown, field: string): { field: string; message: string } | null {
  return walk(value, field, new Set());
}

function walk(value: unknown, field: string, open: Set<object>): { field: string; message: string } | null {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return null;
    case 'number':
      return Number.isFinite(value) ? null
        : { field, message: `${field} is ${value}, which JSON cannot carry (it would be sent as null, which deletes the key): send a finite number` };
    case 'bigint':
      return { field, message: `${field} is a BigInt, which JSON cannot carry: send a number or a string` };
    case 'function':
    case 'symbol':
      return { field, message: `${field} is a ${typeof value}, which JSON cannot carry` };
    case 'undefined':
      return null; // an object's key with no value is absent; in an array the caller checks it
    default:
      break;
  }
  if (value === null) return null;
  const obj = value as object;
  if (open.has(obj)) return { field, message: `${field} refers to itself (a cycle), which JSON cannot carry` };
  // toJSON decides what is sent (Date: its ISO string)
  if (typeof (obj as { toJSON?: unknown }).toJSON === 'function') return null;
  open.add(obj);
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        const item: unknown = obj[i];
        if (item === undefined) return { field: `${field}.${i}`, message: `${field}.${i} is undefined, which JSON sends as null: send null or leave it out` };
        const bad = walk(item, `${field}.${i}`, open);
        if (bad) return bad;
      }
      return null;
    }
    for (const [key, item] of Object.entries(obj)) {
      const bad = walk(item, `${field}.${key}`, open);
      if (bad) return bad;
    }
    return null;
  } finally {
    open.delete(obj);
  }
}
