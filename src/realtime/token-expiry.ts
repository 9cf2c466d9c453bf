import { CLOCK_LEEWAY_SECONDS } from '../auth/jwt.ts';

/**
 * The longest a timer waits before the wall clock is read again. `exp` is a wall-clock time and a
 * timer runs on the monotonic clock (src/clock.ts): after a step of the host's clock (NTP, a VM
 * resumed after a pause) the two part. So the time left is read again at least this often: a
 * step forward past `exp` ends the socket within this, a step back never ends it early. (It also
 * keeps each delay under setTimeout's longest, about 24.8 days, past which it fires at once.)
 */
const RECHECK_MS = 60_000;

/**
 * Calls `onExpired` when a token whose `exp` claim is `exp` (epoch seconds) stops verifying: exp
 * plus CLOCK_LEEWAY_SECONDS by the wall clock, as on every surface (src/auth/jwt.ts), read again
 * at least every RECHECK_MS. Never synchronously, not even for a token already expired. The timer
 * does not keep the process alive. `cancel()` stops it.
 */
export function whenTokenExpires(exp: number, onExpired: () => void): { cancel(): void } {
  let timer: NodeJS.Timeout;
  const arm = () => {
    const ms = (exp + CLOCK_LEEWAY_SECONDS) * 1000 - Date.now();
    timer = ms <= 0 ? setTimeout(onExpired, 0) : setTimeout(arm, Math.min(ms, RECHECK_MS));
    timer.unref();
  };
  arm();
  return { cancel: () => clearTimeout(timer) };
}
