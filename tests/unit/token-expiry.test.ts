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
