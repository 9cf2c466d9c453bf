/**
 * A UUID as PostgreSQL's uuid type reads it, in its canonical 8-4-4-4-12 form: 32 hex digits in
 * any case, with no version or variant required (uuid_in takes any 128 bits, and such ids exist:
 * the v1 upgrade keeps a v1 id that is a UUID, a block created from SQL or PostgREST takes any
 * uuid as its block_id, rows imported or written by hand). The one definition of "an id" for the
 * HTTP schemas (src/http/schemas.ts Uuid: paths, query, bodies), the H1 protocol, the realtime
 * canvas topic, the token's sub and scope; @potentia/client checks the same pattern
 * (packages/client/src/uuid.ts, compared with this one by tests/unit/uuid-pattern.test.ts).
 * The other spellings uuid_in also reads (braces, no dashes, dashes elsewhere) are refused: the
 * OpenAPI document says format uuid. Compare ids as text only in canonicalUuid's spelling.
 * (zod's uuid() is not this: it requires RFC 9562's variant 10 and a version 1 to 8, and refused
 * ids the database holds.)
 */
// both cases spelled out, no i flag: the OpenAPI document carries the source as its pattern, which
// JSON Schema reads without flags
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
export const UUID = new RegExp(UUID_PATTERN);
/** What a refusal says of a value that is not one (prefixed with the field). */
export const UUID_MESSAGE = 'must be a UUID: 32 hex digits as 8-4-4-4-12, either case (no braces)';

/** Whether `s` is a UUID in the standard 8-4-4-4-12 form, in any case. */
export const isUuid = (s: string): boolean => UUID.test(s);

/** The canonical spelling of UUID `s` (lower case, as PostgreSQL prints a uuid), or null when it is not one. */
export const canonicalUuid = (s: string): string | null => (isUuid(s) ? s.toLowerCase() : null);

/** `id` in canonicalUuid's spelling when it is a UUID (lower case); anything else as it is (@potentia/client's idKey too). */
export const idKey = (id: string): string => canonicalUuid(id) ?? id;
