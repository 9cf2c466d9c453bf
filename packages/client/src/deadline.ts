import { TimeoutError } from './errors.ts';

/**
 * Deadlines of the client's HTTP calls (createPotentiaClient's `timeoutMs`). A server that accepts
 * a request and never answers, or a request stuck behind a database lock, left the app's promise
 * pending for good: fetch has no deadline of its own. Two layers use these:
 *  - withDeadline bounds one call as the app sees it (functions.invoke with the session lookup in
 *    front of it, a sign-in): it rejects with TimeoutError when `timeoutMs` passes, whatever the
 *    library underneath does, and aborts the request through the signal it hands on;
 *  - withRequestDeadline bounds each request supabase-js sends under some paths (auth-js's sign-in
 *    and refresh requests, which take no signal from their callers): aborted, the connection is
 *    closed rather than left waiting for an answer nobody will read.
 */

/** Whether `ms` is a deadline the client applies: a positive finite number (0 and Infinity: none). */
export const appliesDeadline = (ms: number): boolean => Number.isFinite(ms) && ms > 0;

/** The URL of a fetch input (a string, a URL or a Request), as a string. */
export function requestUrl(input: Parameters<typeof fetch>[0]): string {
  return typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
}

/**
 * Runs `run` with an AbortSignal that aborts after `timeoutMs` (or when `outer` aborts), and
 * settles as it settles, or rejects with a TimeoutError naming `what` once `timeoutMs` has passed,
 * even if `run` ignores its signal (its later outcome is then dropped). No deadline when
 * `timeoutMs` is 0 or Infinity.
 */
export function withDeadline<T>(timeoutMs: number, what: string, run: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal | null): Promise<T> {
  const controller = new AbortController();
  if (outer) {
    if (outer.aborted) controller.abort(outer.reason);
    else outer.addEventListener('abort', () => controller.abort(outer.reason), { once: true });
  }
  if (!appliesDeadline(timeoutMs)) return run(controller.signal);
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      const err = new TimeoutError(`${what}: no answer within ${timeoutMs} ms (the client's timeoutMs); the request was abandoned, so whether the server did it is unknown`, timeoutMs);
      reject(err); // first: the caller hears of the deadline, not of the abort it causes
      controller.abort(err);
    }, timeoutMs);
    let settled: Promise<T>;
    try {
      settled = run(controller.signal);
    } catch (err) {
      settled = Promise.reject(err);
    }
    settled.then(
      (value) => {
        clearTimeout(timer);
        resolve(value);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/**
 * `base` with a deadline of `timeoutMs` on every request whose URL starts with one of `prefixes`
 * (the whole of what `base` does: with withAuthAnswers inside, the reading of the body too). The
 * request's own signal, if it has one, still aborts it. Other requests go through as they are.
 */
export function withRequestDeadline(base: typeof fetch, timeoutMs: number, prefixes: readonly string[]): typeof fetch {
  if (!appliesDeadline(timeoutMs)) return base;
  return (input, init) => {
    const url = requestUrl(input);
    if (!prefixes.some((p) => url.startsWith(p))) return base(input, init);
    const outer = init?.signal ?? (input instanceof Request ? input.signal : undefined);
    const path = url.replace(/^[a-z]+:\/\/[^/]+/i, '').replace(/\?.*$/, '');
    return withDeadline(timeoutMs, `${init?.method ?? 'GET'} ${path}`, (signal) => base(input, { ...init, signal }), outer);
  };
}
