export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it holds; throws naming `what` after `ms`. */
export async function until(check: () => boolean | Promise<boolean>, ms = 10_000, what = 'condition', everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Waits, if needed, until at least `marginMs` remain in the current fixed rate-limit window of
 * `windowSeconds` (windows start at multiples of it since the epoch, internal.rate_window_start):
 * a test that expects its N+1-th call to be refused must not have its calls straddle a window
 * boundary, where the count starts over (this machine's clock is the database's).
 */
export async function awayFromWindowEdge(windowSeconds: number, marginMs = 2_000): Promise<void> {
  const windowMs = windowSeconds * 1000;
  const left = windowMs - (Date.now() % windowMs);
  if (left < marginMs) await sleep(left + 50);
}

/**
 * Waits for the next fixed rate-limit window of `windowSeconds` to start (and 50 ms more): a test
 * that needs a window its own user has not used yet, after earlier tests of the same user
 * (awayFromWindowEdge keeps the current window, which they may have filled).
 */
export async function freshWindow(windowSeconds: number): Promise<void> {
  const windowMs = windowSeconds * 1000;
  await sleep(windowMs - (Date.now() % windowMs) + 50);
}
