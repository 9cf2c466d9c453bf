import { AbortError, PotentiaError, TimeoutError } from './errors.ts';
import { isObject } from './json-value.ts';

/**
 * Deadlines and abort signals of the client's HTTP calls (createPotentiaClient's `timeoutMs`, each
 * call's `signal`). A server that accepts a request and never answers, or a request stuck behind a
 * database lock, left the app's promise pending for good: fetch has no deadline of its own. Two
 * layers use these:
 *  - withDeadline bounds one call as the app sees it (functions.invoke with the session lookup in
 *    front of it, a sign-in): it rejects with TimeoutError when `timeoutMs` passes, or with
 *    AbortError when the caller's signal aborts, whichever comes first, whatever the library
 *    underneath does, and aborts the request through the signal it hands on;
 *  - withRequestDeadline bounds each request supabase-js sends under some paths (auth-js's sign-in
 *    and refresh requests, which take no signal from their callers): aborted, the connection is
 *    closed rather than left waiting for an answer nobody will read. CallSignals hands such a
 *    request the signal of the call it was sent for.
 */

/** Whether `ms` is a deadline the client applies: a positive finite number (0 and Infinity: none). */
export const appliesDeadline = (ms: number): boolean => Number.isFinite(ms) && ms > 0;

/** setTimeout's longest delay (2^31 - 1 ms, about 24.8 days): a longer one fires after 1 ms, in Node and browsers alike. */
export const TIMER_MAX_MS = 2_147_483_647;

/**
 * Runs `fn` once `ms` have passed, however long: a delay past TIMER_MAX_MS is waited out in
 * steps (one setTimeout would fire it at once: a timeoutMs of 30 days ended every call after
 * 1 ms). Returns the function that cancels it. `unref`: the timers never keep a Node process alive.
 */
export function after(ms: number, fn: () => void, unref = false): () => void {
  let timer: ReturnType<typeof setTimeout> | null = null;
  const wait = (left: number) => {
    timer = setTimeout(() => {
      if (left > TIMER_MAX_MS) return wait(left - TIMER_MAX_MS);
      timer = null;
      fn();
    }, Math.min(left, TIMER_MAX_MS));
    if (unref) (timer as { unref?: () => void }).unref?.();
  };
  wait(ms);
  return () => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
}

/** The URL of a fetch input (a string, a URL or a Request), as a string. */
export function requestUrl(input: Parameters<typeof fetch>[0]): string {
  return typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
}

/**
 * Whether `signal` (a call's or a change's option) is unusable: given (not undefined or null) but
 * not an AbortSignal (one of the app's own objects, the AbortController itself, a string). Read as
 * one, it threw a bare TypeError from inside the call ("addEventListener is not a function"),
 * synchronously from a canvas change; it is refused as invalid_input naming `signal`, as a bad
 * timeoutMs or clientOpId is. Read by shape, not instanceof: an AbortSignal of another realm or
 * a polyfill's is one.
 */
export function badSignal(signal: unknown): PotentiaError | null {
  if (signal === undefined || signal === null) return null;
  const s = signal as { aborted?: unknown; addEventListener?: unknown; removeEventListener?: unknown };
  if (typeof signal === 'object' && typeof s.aborted === 'boolean' && typeof s.addEventListener === 'function'
    && typeof s.removeEventListener === 'function') return null;
  return new PotentiaError('invalid_input', `signal must be an AbortSignal (controller.signal, AbortSignal.timeout(ms)), got ${describeValue(signal)}`, 'signal');
}

const describeValue = (v: unknown): string => (typeof v === 'object' ? (v as object).constructor?.name ?? 'an object' : typeof v);

/** The AbortError of `what`, ended by `signal` (its reason kept); `clientOpId` for a canvas change. */
export function abortedBy(what: string, signal: AbortSignal, clientOpId?: string): AbortError {
  return new AbortError(`${what}: aborted by the caller's signal`, signal.reason, clientOpId);
}

/**
 * Runs `run` with an AbortSignal that aborts after `timeoutMs` or when `outer` (the caller's
 * signal) aborts, and settles as it settles, or rejects first: with a TimeoutError naming `what`
 * once `timeoutMs` has passed, with an AbortError when `outer` aborts, even if `run` ignores its
 * signal (its later outcome is then dropped). An `outer` already aborted rejects without calling
 * `run`: nothing is sent. No deadline when `timeoutMs` is 0 or Infinity.
 */
export function withDeadline<T>(timeoutMs: number, what: string, run: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal | null): Promise<T> {
  const bad = badSignal(outer);
  if (bad) return Promise.reject(bad);
  if (outer?.aborted) return Promise.reject(abortedBy(what, outer));
  const controller = new AbortController();
  const deadline = appliesDeadline(timeoutMs);
  if (!deadline && !outer) return run(controller.signal);
  return new Promise<T>((resolve, reject) => {
    let cancel: (() => void) | null = null;
    const stop = () => {
      cancel?.();
      outer?.removeEventListener('abort', onAbort);
    };
    const end = (err: TimeoutError | AbortError) => {
      stop();
      reject(err); // first: the caller hears of the deadline or its abort, not of the abort it causes
      controller.abort(err);
    };
    const onAbort = () => end(abortedBy(what, outer!));
    outer?.addEventListener('abort', onAbort, { once: true });
    if (deadline) {
      cancel = after(timeoutMs, () => end(new TimeoutError(`${what}: no answer within ${timeoutMs} ms (the client's timeoutMs); the request was abandoned, so whether the server did it is unknown`, timeoutMs)));
    }
    let settled: Promise<T>;
    try {
      settled = run(controller.signal);
    } catch (err) {
      settled = Promise.reject(err);
    }
    settled.then(
      (value) => {
        stop();
        resolve(value);
      },
      (err: unknown) => {
        stop();
        reject(err);
      },
    );
  });
}

/** Waits `ms` (a resend's delay); rejects with AbortError, the timer cleared, as soon as `signal` aborts. */
export function pause(ms: number, what: string, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.reject(abortedBy(what, signal));
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedBy(what, signal!));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * `base` with a deadline of `timeoutMs` on every request whose URL starts with one of `prefixes`
 * (the whole of what `base` does: with withAuthAnswers inside, the reading of the body too). The
 * request's own signal, if it has one (CallSignals': its call's), still aborts it, with an
 * AbortError. Other requests go through as they are.
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

/** Picks out the requests sent for one call: its URL and init as fetch gets them. */
export type RequestMatch = (url: string, init: RequestInit | undefined) => boolean;

/** The `email` of a request's JSON body (auth-js's sign-in and sign-up send one), if it has one. */
export function bodyEmail(init: RequestInit | undefined): string | undefined {
  if (typeof init?.body !== 'string') return undefined;
  try {
    const body: unknown = JSON.parse(init.body);
    return isObject(body) && typeof body['email'] === 'string' ? body['email'] : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The caller's signals of calls whose requests a library sends without taking a signal from its
 * caller (auth-js's sign-up, sign-in and sign-out: they take none). While such a call runs
 * (`during`), each request that its RequestMatch picks out is sent with its signal too (wrap():
 * the fetch given to supabase-js), so that an abort closes that request's connection, as it does
 * for functions.invoke, rather than leaving it to finish (a sign-in answered after its abort
 * would still have signed the user in). Requests no running call picks out go as they are.
 *
 * Each such call sends one request, so a request carries the signal of one call: the first
 * running call that picks it out and has not sent its request yet (auth-js sends them in call
 * order; a call without a signal is not listed, and its request carries none). Two calls alike
 * (a sign-in sent twice with one address, the first then aborted) are told apart so: matched by
 * path and email alone, the second's request carried the first's signal too, and the first's
 * abort ended a call nobody aborted.
 */
export class CallSignals {
  private readonly calls = new Set<{ matches: RequestMatch; signal: AbortSignal; sent: boolean }>();

  /** Runs `run`; until it settles, the requests `matches` picks out carry `signal` (none: just runs it). */
  async during<T>(signal: AbortSignal | undefined, matches: RequestMatch, run: () => Promise<T>): Promise<T> {
    if (!signal) return run();
    const call = { matches, signal, sent: false };
    this.calls.add(call);
    try {
      return await run();
    } finally {
      this.calls.delete(call);
    }
  }

  /** `base` sending each request with the signal of the running call it is for (see the class), and its own. */
  wrap(base: typeof fetch): typeof fetch {
    return (input, init) => {
      if (this.calls.size === 0) return base(input, init);
      const url = requestUrl(input);
      // the call this request is for: the first it matches that has not sent its request yet (none:
      // a call without a signal sent it, which is not in this.calls, or another library request)
      const call = [...this.calls].find((c) => !c.sent && c.matches(url, init));
      if (!call) return base(input, init);
      call.sent = true;
      const own = init?.signal ?? (input instanceof Request ? input.signal : undefined);
      const joined = anySignal(own ? [own, call.signal] : [call.signal]);
      const sent = base(input, { ...init, signal: joined.signal });
      sent.then(joined.dispose, joined.dispose);
      return sent;
    };
  }
}

/**
 * A signal that aborts when any of `signals` does (with its reason), and `dispose` to stop
 * listening to them (AbortSignal.any is Node 20.3+ and recent browsers only).
 */
function anySignal(signals: AbortSignal[]): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const first = signals.find((s) => s.aborted);
  if (first) {
    controller.abort(first.reason);
    return { signal: controller.signal, dispose: () => {} };
  }
  const listeners = signals.map((s) => {
    const listener = () => controller.abort(s.reason);
    s.addEventListener('abort', listener, { once: true });
    return () => s.removeEventListener('abort', listener);
  });
  return { signal: controller.signal, dispose: () => listeners.forEach((remove) => remove()) };
}
