import { afterEach, describe, expect, it, vi } from 'vitest';
import { whenTokenExpires } from '../../src/realtime/token-expiry.ts';

// A live socket closes when its token stops verifying (exp + the 5 s leeway). setTimeout cannot
// wait longer than ~24.8 days (a longer delay fires at once), so a capped timer closed a socket
// with a 40-day token as "expired" after 24.8 days.
describe('whenTokenExpires', () => {
  afterEach(() => { vi.useRealTimers(); });

  it('fires at exp + 5 s, also for a token valid longer than setTimeout can wait', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 11, 4) });
    const day = 86_400_000;
    const exp = Math.floor(Date.now() / 1000) + 40 * 86_400;
    const fired = vi.fn();
    whenTokenExpires(exp, fired);
    vi.advanceTimersByTime(25 * day);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(15 * day + 4_000);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1_500);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  // exp is a wall-clock time, the timer monotonic: a step of the host's clock (NTP, a VM resumed
  // after a pause) parts them. Before, the delay was read once, so a step forward past exp kept
  // the expired token's socket for the step's length, and a step back ended it that much early.
  it('follows a step of the wall clock: forward past exp fires within a minute, back does not fire early', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 11, 4) });
    const hour = 3_600_000;
    const exp = Math.floor(Date.now() / 1000) + 2 * 3_600;
    const forward = vi.fn();
    whenTokenExpires(exp, forward);
    vi.advanceTimersByTime(10 * 60_000);
    expect(forward).not.toHaveBeenCalled();
    vi.setSystemTime(Date.now() + 2 * hour);  // the wall clock steps past exp; no timer moves
    vi.advanceTimersByTime(61_000);  // (the next reading of the clock, then one tick)
    expect(forward).toHaveBeenCalledTimes(1);

    const back = vi.fn();
    const exp2 = Math.floor(Date.now() / 1000) + 3_600;
    whenTokenExpires(exp2, back);
    vi.setSystemTime(Date.now() - hour);  // the wall clock steps back an hour
    vi.advanceTimersByTime(hour + 10_000);  // where exp + 5 s would have been before the step
    expect(back).not.toHaveBeenCalled();
    vi.advanceTimersByTime(hour);
    expect(back).toHaveBeenCalledTimes(1);
  });

  it('fires at once for a token already past its leeway, and not at all once cancelled', () => {
    vi.useFakeTimers({ now: Date.UTC(2026, 11, 4) });
    const past = vi.fn();
    whenTokenExpires(Math.floor(Date.now() / 1000) - 60, past);
    vi.advanceTimersByTime(0);
    expect(past).toHaveBeenCalledTimes(1);
    const cancelled = vi.fn();
    whenTokenExpires(Math.floor(Date.now() / 1000) + 1, cancelled).cancel();
    vi.advanceTimersByTime(60_000);
    expect(cancelled).not.toHaveBeenCalled();
  });
});
