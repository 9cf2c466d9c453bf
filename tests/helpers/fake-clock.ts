import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Debian's libfaketime (installed by scripts/setup), by architecture. */
const LIBFAKETIME = ['/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1', '/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1',
  '/usr/lib/faketime/libfaketime.so.1'].find((p) => existsSync(p));

/**
 * A wall clock a test can step, for a process started with `env`: libfaketime preloaded, reading
 * its offset from a file of its own. The file is read again every second (FAKETIME_CACHE_DURATION)
 * and monotonic clocks are not faked, as a host whose clock NTP or an operator steps.
 */
export type SteppedClock = {
  /** The environment to start the process with (startPotentiaProcess). */
  env: Record<string, string>;
  /** Sets the offset from the real clock: libfaketime's `+15m`, `-10m`, `+0`. */
  step(offset: string): void;
  /** Removes the offset file's folder. */
  remove(): void;
};

export function steppedClock(): SteppedClock {
  if (!LIBFAKETIME) throw new Error('libfaketime not found: run scripts/setup, or apt-get install libfaketime');
  const dir = mkdtempSync(join(tmpdir(), 'potentia-clock-'));
  const offsetFile = join(dir, 'offset');
  const step = (offset: string) => writeFileSync(offsetFile, `${offset}\n`);
  step('+0');
  return {
    env: { LD_PRELOAD: LIBFAKETIME, FAKETIME_TIMESTAMP_FILE: offsetFile, FAKETIME_CACHE_DURATION: '1', FAKETIME_DONT_FAKE_MONOTONIC: '1' },
    step,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** How far the wall clock of the server at `url` is from the test's (its HTTP Date header, whole seconds). */
export async function clockOffMs(url: string): Promise<number> {
  const res = await fetch(`${url}/health`);
  await res.text();
  return Date.parse(res.headers.get('date')!) - Date.now();
}
