/**
 * The client's backoff: one exponential step (from 250 ms, doubling, capped at 5 s) for its
 * reconnects and its resumes sent again, each with jitter so that clients cut off or refused
 * together do not come back together.
 */
const BASE_MS = 250;
const CAP_MS = 5000;

/** The backoff's step for attempt `attempt` (0 for the first): 250 ms, 500 ms, 1 s, … at most 5 s. */
export function backoffStepMs(attempt: number): number {
  return Math.min(CAP_MS, BASE_MS * 2 ** Math.min(Math.max(attempt, 0), 16));
}

/** A draw of `random` kept in [0, 1] (a source that returns NaN or strays draws 0 or its bound). */
function draw(random: () => number): number {
  const r = random();
  return Number.isFinite(r) ? Math.min(Math.max(r, 0), 1) : 0;
}

/**
 * The default reconnect delay: the step with "equal jitter" (a random point in its upper half),
 * so that a reconnect never comes at once. `random`: uniform in [0, 1), default Math.random.
 */
export function defaultReconnectDelayMs(attempt: number, random: () => number = Math.random): number {
  const step = backoffStepMs(attempt);
  return step / 2 + draw(random) * (step / 2);
}

/**
 * "Full jitter": a random point of the whole step, 0 included. Added to a delay the server named
 * (retry_after_ms), which already keeps the retry from coming early. `capMs`: a bound on the step
 * (ms) below the backoff's own 5 s.
 */
export function fullJitterMs(attempt: number, random: () => number = Math.random, capMs = CAP_MS): number {
  return draw(random) * Math.min(backoffStepMs(attempt), capMs);
}
