/**
 * The client's clock for its own intervals and deadlines (the server's src/clock.ts rule): whole
 * milliseconds since the epoch at the page's or process's start, then the monotonic clock's
 * (performance.now), so a step of the host's wall clock (NTP correcting it, `date -s`, a laptop
 * resumed with a drifted clock) moves none of them. Before, the heartbeat, the message pacer, the
 * "not now" holds and presence's throttle read Date.now: a step forward past twice the heartbeat
 * dropped every live socket at once, and a step back hid a dead socket from the heartbeat and held
 * messages (the pacer, after one burst) and presence for about the step's length.
 *
 * The rule: an interval or a deadline inside this client (a socket's silence, a pacing wait, a
 * hold) is `monotonicNow()`; a time shown to a person or compared with the server's (a token's
 * exp, `PresencePeer.lastSeen`) stays `Date.now()`. The two are never compared with each other.
 * `performance` is a web API: browsers, Node 16+, Deno.
 */
export function monotonicNow(): number {
  return Math.floor(performance.timeOrigin + performance.now());
}
