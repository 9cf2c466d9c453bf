/**
 * The broadcast events the database sends on a private canvas channel (`realtime.send`, and the
 * mutation RPC's own insert): docs/realtime.md, "Events". A client hands each to
 * `.on('broadcast', { event }, cb)` and acts on it (applies a `block_op`, drops a deleted canvas),
 * and realtime-js calls the same callback for a client broadcast of that event name, matching
 * names case-insensitively. So on a private channel a client may not broadcast them: otherwise
 * any member, a viewer included, could make every other member apply a block operation that was
 * never made (under anyone's actor_id), or drop a canvas that still exists.
 * tests/unit/database-events.test.ts checks this list against the events sql/ sends.
 */
export const DATABASE_EVENTS: readonly string[] = ['block_op', 'presence', 'presence_leave', 'canvas_updated', 'canvas_deleted', 'access_changed'];

/**
 * Whether a client broadcast named `event` would reach listeners of a database event: compared as
 * realtime-js compares (toLocaleLowerCase) and as plain toLowerCase, so `BLOCK_OP` or `BLOC\u212A_OP`
 * (the Kelvin sign lowers to `k`) are refused as `block_op` is.
 */
export function isDatabaseEvent(event: string): boolean {
  return DATABASE_EVENTS.includes(event.toLowerCase()) || DATABASE_EVENTS.includes(event.toLocaleLowerCase());
}

/** Why such a broadcast is refused (phx_reply / system reason). */
export function databaseEventRefusal(event: string): string {
  return `invalid_input: payload.event: ${JSON.stringify(event)} is an event the database sends on this channel (${DATABASE_EVENTS.join(', ')}): ` +
    'clients may not broadcast it; name your own event otherwise (cursor, selection, …)';
}
