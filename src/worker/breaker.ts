import { monotonicNow } from '../clock.ts';

/**
 * A circuit breaker in front of an external dependency (the embedding provider).
 * closed: calls pass; `failureThreshold` consecutive failures open it.
 * open: calls fail fast with CircuitOpenError (the job fails and Graphile Worker retries it later
 *   with its exponential backoff) until `cooldownMs` has passed.
 * half-open: one probe call passes (others still fail fast); success closes it, failure reopens.
 */
export type BreakerState = 'closed' | 'open' | 'half_open';

export class CircuitOpenError extends Error {
  constructor(readonly dependency: string, readonly retryInMs: number) {
    super(`circuit open: ${dependency} failed repeatedly; not calling it for another ${Math.ceil(retryInMs / 1000)} s`);
    this.name = 'CircuitOpenError';
  }
}

export type BreakerOptions = {
  name: string;
  failureThreshold: number;
  cooldownMs: number;
  now?: () => number;
  onStateChange?: (state: BreakerState) => void;
};

export class CircuitBreaker {
  #state: BreakerState = 'closed';
  #failures = 0;
  #openedAt = 0;
  #probing = false;
  readonly #opts: BreakerOptions;
  readonly #now: () => number;

  constructor(opts: BreakerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? monotonicNow;
  }

  get state(): BreakerState {
    if (this.#state === 'open' && this.#now() - this.#openedAt >= this.#opts.cooldownMs) return 'half_open';
    return this.#state;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    const state = this.state;
    if (state === 'open' || (state === 'half_open' && this.#probing)) {
      throw new CircuitOpenError(this.#opts.name, Math.max(0, this.#opts.cooldownMs - (this.#now() - this.#openedAt)));
    }
    const probe = state === 'half_open';
    if (probe) {
      this.#probing = true;
      this.#set('half_open');
    }
    try {
      const result = await fn();
      this.#failures = 0;
      this.#set('closed');
      return result;
    } catch (err) {
      this.#failures += 1;
      if (probe || this.#failures >= this.#opts.failureThreshold) {
        this.#openedAt = this.#now();
        this.#set('open');
      }
      throw err;
    } finally {
      if (probe) this.#probing = false;
    }
  }

  #set(state: BreakerState) {
    if (this.#state === state) return;
    this.#state = state;
    this.#opts.onStateChange?.(state);
  }
}
