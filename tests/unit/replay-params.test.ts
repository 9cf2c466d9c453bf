import { describe, expect, it } from 'vitest';
import { parseReplay } from '../../src/realtime/replay.ts';

// realtime-js `config.broadcast.replay: { since, limit }` (src/realtime/replay.ts): what reaches
// the database is always a timestamp PostgreSQL can hold. A `since` of -8e15 ms (a valid Date)
// passed the check, then failed in PostgreSQL (timestamp out of range), logged as an error and
// answered "unable to replay" instead of either replaying or saying the parameters are invalid.
describe('parseReplay', () => {
  it('reads a since before 1970 as everything (0), within what PostgreSQL holds', () => {
    expect(parseReplay({ broadcast: { replay: { since: -8e15, limit: 5 } } }, true)).toEqual({ since: 0, limit: 5 });
    expect(parseReplay({ broadcast: { replay: { since: -1 } } }, true)).toMatchObject({ since: 0 });
  });
  it('keeps a since in range, and refuses one no Date can hold', () => {
    expect(parseReplay({ broadcast: { replay: { since: 1_796_000_000_000, limit: 10 } } }, true)).toEqual({ since: 1_796_000_000_000, limit: 10 });
    expect(typeof parseReplay({ broadcast: { replay: { since: 9e15 } } }, true)).toBe('string');
    expect(typeof parseReplay({ broadcast: { replay: { since: 1.5 } } }, true)).toBe('string');
  });
});
