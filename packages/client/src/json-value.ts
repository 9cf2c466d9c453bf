/**
 * JSON text of a value the app hands the client, or what in it JSON would not carry faithfully.
 * JSON.stringify turns a number that is not finite (NaN, Infinity, 1e400, a boxed one too) into
 * `null`, which a JSON Merge Patch reads as "delete this key"; so does a toJSON that answers
 * null (an invalid Date); a Map, Set, Error or typed array becomes `{}` or an object of indexes; a
 * function or symbol is dropped (in an array: null); a BigInt or a cycle throws, as may a getter
 * or a Proxy. The server refuses what it can see (docs/mutations.md), but these never reach it as
 * such, so the client refuses them first, naming the field as the server would
 * (`patch.content.count`, `presence.cursor.x`), and never throws: every fault is an answer.
 *
 * Nesting is bounded as the server bounds a whole message (MAX_JSON_DEPTH = 64 levels,
 * src/input-policy.ts); `maxDepth` is what is left for the value where it sits in its message.
 */

/** Whether `v` is a JSON object: not null, not an array (a class instance passes: callers that care check its prototype). */
export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The server's bound on a message's nesting (src/input-policy.ts MAX_JSON_DEPTH). */
export const MESSAGE_MAX_DEPTH = 64;

/** `{ text }`: the JSON text; `{ field, message }`: the first value that cannot be sent as it is. */
export type JsonEncoding = { text: string } | { field: string; message: string };

type Place = { path: string; depth: number };

/**
 * A key's step in a field path, as the server writes it (fieldStep, src/input-policy.ts): `.key`
 * for a plain key (letters, digits, _ $ -, not only digits), else `["key"]` as its JSON string,
 * so that content key `a.b` is `patch.content["a.b"]`, never the key b of a.
 */
const keyStep = (key: string) => (/^(?![0-9]+$)[A-Za-z0-9_$-]+$/.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`);

/**
 * Encodes `value` (named `root`) as JSON.stringify would, refusing what it would not send
 * faithfully (the module comment). Objects may sit at most `maxDepth` levels below `value`.
 */
export function encodeJson(value: unknown, root: string, maxDepth = MESSAGE_MAX_DEPTH): JsonEncoding {
  const places = new Map<object, Place>();
  let problem: { field: string; message: string } | null = null;
  const refuse = (field: string, message: string): never => {
    problem = { field, message };
    throw new Error(message); // ends JSON.stringify; the problem is the answer
  };
  function replacer(this: unknown, key: string, v: unknown): unknown {
    const holder = this as Record<string, unknown>;
    const parent = places.get(holder);
    const inArray = Array.isArray(holder);
    const at: Place = parent ? { path: parent.path + (inArray ? `.${key}` : keyStep(key)), depth: parent.depth + 1 } : { path: root, depth: 0 };
    // v is after toJSON; the value as given, to tell a toJSON that answered null
    const given: unknown = holder[key];
    if (v === null) {
      if (given !== null && typeof given === 'object') refuse(at.path, `${at.path} turns into null as JSON (its toJSON answered null: an invalid Date?), which deletes the key: send a value`);
      return v;
    }
    if (v instanceof Number || v instanceof String || v instanceof Boolean || v instanceof BigInt) v = v.valueOf(); // JSON unwraps them
    switch (typeof v) {
      case 'string':
      case 'boolean':
        return v;
      case 'number':
        return Number.isFinite(v) ? v
          : refuse(at.path, `${at.path} is ${v}, which JSON cannot carry (it would be sent as null, which deletes the key): send a finite number`);
      case 'bigint':
        return refuse(at.path, `${at.path} is a BigInt, which JSON cannot carry: send a number or a string`);
      case 'undefined':
        // an object's key without a value is absent, as in JSON; in an array it would be null
        return inArray ? refuse(at.path, `${at.path} is undefined, which JSON sends as null: send null or leave it out`) : v;
      case 'function':
      case 'symbol':
        return refuse(at.path, `${at.path} is a ${typeof v}, which JSON cannot carry`);
      default:
        break;
    }
    const obj = v as object;
    const seen = places.get(obj);
    if (seen && (at.path === seen.path || at.path.startsWith(`${seen.path}.`))) refuse(at.path, `${at.path} refers back to ${seen.path} (a cycle), which JSON cannot carry`);
    if (!Array.isArray(obj)) {
      const proto: unknown = Object.getPrototypeOf(obj);
      if (proto !== Object.prototype && proto !== null) {
        const kind = (proto as { constructor?: { name?: unknown } }).constructor?.name;
        refuse(at.path, `${at.path} is ${typeof kind === 'string' && kind ? `a ${kind}` : 'not a plain object'}, which JSON does not carry as it is: send a plain object, an array or a string`);
      }
    }
    if (at.depth >= maxDepth) refuse(at.path, `${at.path} is nested deeper than the server's ${MESSAGE_MAX_DEPTH} levels of JSON`);
    places.set(obj, at);
    return obj;
  }
  try {
    const text = JSON.stringify(value, replacer);
    if (text === undefined) return { field: root, message: `${root} has no JSON value` };
    return { text };
  } catch (err) {
    if (problem) return problem;
    // a getter or Proxy that throws, a stack too deep for the engine
    return { field: root, message: `${root} cannot be sent as JSON: ${err instanceof Error ? err.message : String(err)}` };
  }
}
