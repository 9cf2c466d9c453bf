/**
 * A UUID as PostgreSQL's uuid type reads it, in its canonical 8-4-4-4-12 form: 32 hex digits in
 * either case, any version and variant. The server's definition (src/uuid.ts, which the HTTP
 * schemas, the H1 protocol and the realtime topics use), copied because this package is built and
 * published on its own; tests/unit/uuid-pattern.test.ts holds the two to the same pattern. Ids come
 * back from the server in lower case (as Postgres prints a uuid): the client keys blocks and
 * canvases by that spelling, so an id given in upper case names the same block or canvas.
 */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
const UUID = new RegExp(UUID_PATTERN);

/** The canonical spelling of UUID `s` (lower case), or null when it is not one. */
export const canonicalUuid = (s: string): string | null => (typeof s === 'string' && UUID.test(s) ? s.toLowerCase() : null);

/** `id` as the server spells it when it is a UUID (lower case); anything else as it is (the server refuses it, naming the field). */
export const idKey = (id: string): string => canonicalUuid(id) ?? id;
