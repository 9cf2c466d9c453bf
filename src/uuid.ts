/**
 * UUIDs as text: 8-4-4-4-12 hex digits, any case (what PostgreSQL's uuid input admits in its
 * standard form). One pattern for every place that checks an id before it reaches SQL.
 */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `s` is a UUID in the standard 8-4-4-4-12 form, in any case. */
export const isUuid = (s: string): boolean => UUID.test(s);

/** The canonical spelling of UUID `s` (lower case, as PostgreSQL prints a uuid), or null when it is not one. */
export const canonicalUuid = (s: string): string | null => (isUuid(s) ? s.toLowerCase() : null);
