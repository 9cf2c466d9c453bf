import { describe, expect, it } from 'vitest';
import { MessagePacer, READ_LAG_MS } from '../../packages/client/src/pacing.ts';
import { RateLimiter } from '../../src/realtime/rate-limit.ts';

// The client's mirror of the server's per-socket message bucket, on a clock of the test's. The
// server (RateLimiter, as h1-socket.ts uses it) reads each message at most READ_LAG_MS after it is
// sent; whatever the delays, a message the mirror lets through finds a token there.

/** Sends `n` messages as fast as the pacer allows from `start`, each read `delay(i)` ms later; returns the send times and the server's refusals. */
function run(n: number, delay: (i: number) => number, start = 0) {
  let clock = start;
  let serverClock = start;
  const pacer = new MessagePacer(10, () => clock);
  const server = new RateLimiter(10, 10, () => serverClock);
  const sentAt: number[] = [];
  let refused = 0;
  let lastRead = start;
  for (let i = 0; i < n; i++) {
    for (let wait = pacer.take(); wait > 0; wait = pacer.take()) clock += wait;
    sentAt.push(clock);
    // a TCP stream: read in order, each at most READ_LAG_MS after it was sent
    lastRead = Math.max(lastRead, clock + delay(i));
    serverClock = lastRead;
    if (server.take() > 0) refused++;
  }
  return { sentAt, refused };
}

describe('MessagePacer', () => {
  it('a full bucket: a burst of 10 at once, as the server allows', () => {
    const { sentAt, refused } = run(10, () => 0);
    expect(sentAt).toEqual(Array(10).fill(0));
    expect(refused).toBe(0);
  });

  it('after a burst: the same rate (one per 100 ms), READ_LAG_MS behind', () => {
    const { sentAt } = run(15, () => 0);
    expect(sentAt.slice(10)).toEqual([100 + READ_LAG_MS, 200 + READ_LAG_MS, 300 + READ_LAG_MS, 400 + READ_LAG_MS, 500 + READ_LAG_MS]);
  });

  it('never refused when the server reads a burst late: the last of it READ_LAG_MS after it was sent', () => {
    // before: the 11th went out at 100 ms, read when the server had 0.5 of a token
    for (const late of [1, 10, 25, READ_LAG_MS]) {
      expect(run(40, (i) => (i === 9 ? late : 0)).refused, `the burst's last read ${late} ms late`).toBe(0);
      expect(run(40, (i) => (i % 7 === 3 ? late : 0)).refused, `every 7th read ${late} ms late`).toBe(0);
    }
  });

  it('after an idle bucket has been full READ_LAG_MS, a full burst again', () => {
    let clock = 0;
    const pacer = new MessagePacer(10, () => clock);
    for (let i = 0; i < 10; i++) expect(pacer.take()).toBe(0);
    clock = 1000; // full again, not for READ_LAG_MS yet: the reserve holds one back
    for (let i = 0; i < 9; i++) expect(pacer.take()).toBe(0);
    expect(pacer.take()).toBeGreaterThan(0);
    clock = 1900 + READ_LAG_MS; // full since 1900 (the 9th at 1000 left one token)
    for (let i = 0; i < 10; i++) expect(pacer.take()).toBe(0);
    expect(pacer.take()).toBe(100 + READ_LAG_MS);
  });

  it('a rate of 1 a second (a reserve of more than the bucket): waits until the bucket has been full READ_LAG_MS', () => {
    let clock = 0;
    const pacer = new MessagePacer(1, () => clock);
    expect(pacer.take()).toBe(0);
    expect(pacer.take()).toBe(1000 + READ_LAG_MS);
    clock = 1000 + READ_LAG_MS;
    expect(pacer.take()).toBe(0);
  });
});
