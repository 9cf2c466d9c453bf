/**
 * This process's clock for its own intervals and deadlines: whole milliseconds since the epoch at
 * the process's start (like Date.now's), then the monotonic clock's (performance.now), so a step
 * of the host's wall clock (NTP correcting it, an operator's `date -s`, a VM resumed) moves none of
 * them. Before, a step forward past the realtime idle timeout ended every realtime-js socket at
 * once, and a step back held rate limits, throttled warnings and the replication stream's stall
 * probe for the step's length.
 *
 * The rule: an elapsed interval or a deadline inside one process (a socket's silence, a throttle,
 * a rate limit's refill, a wait's deadline, how long something took) is `monotonicNow()`; a time
 * compared with another host's or with a timestamp from a token or the database (a JWT's exp and
 * iat, an HTTP date, a log timestamp, the cluster's signed send time, a value written to the
 * database as a time) stays `Date.now()`. The two are never compared with each other. Works the
 * same in Deno (the edge build): performance is a web API.
 */
export function monotonicNow(): number {
  return Math.floor(performance.timeOrigin + performance.now());
}
