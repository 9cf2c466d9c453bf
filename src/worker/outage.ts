import type { Logger } from 'pino';
import { monotonicNow } from '../clock.ts';
import { isConnectionFailure } from '../db/faults.ts';

/** The warn line that opens a database outage in the worker's log. */
export const OUTAGE_STARTED = 'database connection lost or refused: the worker retries (jobs wait, none is lost); logged again once the database answers';
/** The info line that closes it. */
export const OUTAGE_ENDED = 'database answers again: the worker runs jobs again';

/**
 * A database outage as the worker's log tells it: a restart or a purge of backends ends every
 * connection at once, and each of the worker's parts (its loops, Graphile Worker's pool, LISTEN
 * client, jobs and lock resets) met it and logged it, several at error with stacks, once per fault
 * and again for every refused try. One warn line when the first lost or refused connection is
 * seen (isConnectionFailure: by the error's code, never its text), the rest at debug, and one info
 * line when the database answers a query of the worker again. Any other error is not this class's:
 * its caller logs it as before (a task failing for its own reason stays an error).
 */
export class DatabaseOutage {
  readonly #log: Logger;
  #outage: { since: number; failures: number } | undefined;

  constructor(log: Logger) {
    this.#log = log;
  }

  /**
   * Whether `err` is a lost or refused connection; if so it is counted to the outage (opened,
   * logged at warn, if none is open; at debug otherwise) and the caller logs nothing more than debug.
   */
  failed(err: unknown, source: string): boolean {
    if (!isConnectionFailure(err)) return false;
    const fields = { source, code: (err as { code: string }).code, err: String((err as Error)?.message ?? err) };
    if (this.#outage) {
      this.#outage.failures += 1;
      this.#log.debug(fields, 'database connection lost or refused (the outage logged at warn)');
    } else {
      this.#outage = { since: monotonicNow(), failures: 1 };
      this.#log.warn(fields, OUTAGE_STARTED);
    }
    return true;
  }

  /** The database answered the worker: ends an open outage, logged at info with how long it lasted. */
  answered(): void {
    if (!this.#outage) return;
    const { since, failures } = this.#outage;
    this.#outage = undefined;
    this.#log.info({ failures, seconds: Math.round((monotonicNow() - since) / 1000) }, OUTAGE_ENDED);
  }
}
