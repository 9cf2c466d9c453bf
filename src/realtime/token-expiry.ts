import { CLOCK_LEEWAY_SECONDS } from '../auth/jwt.ts';

/** setTimeout's longest delay (about 24.8 days); a longer one fires at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * Calls `onExpired` when a token whose `exp` claim is `exp` (epoch seconds) stops verifying: exp
 * plus CLOCK_LEEWAY_SECONDS, as on every surface (src/auth/jwt.ts). A token valid for longer than
 * setTimeout can wait is waited for in steps, so it is not taken for expired after 24.8 days.
 * The timer does not keep the process alive. `cancel()` stops it.
 */
export function whenTokenExpires(exp: number, onExpired: () => void): { cancel(): void } {
  let timer: NodeJS.Timeout;
  const arm = () => {
    const ms = (exp + CLOCK_LEEWAY_SECONDS) * 1000 - Date.now();
    timer = ms > MAX_TIMER_MS ? setTimeout(arm, MAX_TIMER_MS) : setTimeout(onExpired, Math.max(0, ms));
    timer.unref();
  };
  arm();
  return { cancel: () => clearTimeout(timer) };
}
