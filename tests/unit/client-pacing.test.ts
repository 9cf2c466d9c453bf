import { describe, expect, it } from 'vitest';
import { MessagePacer, READ_LAG_MS } from '../../packages/client/src/pacing.ts';
import { RateLimiter } from '../../src/realtime/rate-limit.ts';

// The client's mirror of the server's per-socket message bucket, on a clock of the test's. The
// server (RateLimiter, as h1-socket.ts uses it) reads each message at most READ_LAG_MS after it is
// sent; whatever the delays, a message the mirror lets through finds a token there.

/**
 * Sends `n` messages at `rate` a second (10, the default) as fast as the pacer allows, the i-th
 * after a pause of `pause(i)` ms, each read `delay(i)` ms after it is sent; returns the send times
 * and the server's refusals.
 */
function run(n: number, delay: (i: number) => number, { rate = 10, pause = () => 0 }: { rate?: number; pause?: (i: number) => number } = {}) {
  let clock = 0;
  let serverClock = 0;
  const pacer = new MessagePacer(rate, () => clock);
  const server = new RateLimiter(rate, rate, () => serverClock);
  const sentAt: number[] = [];
  let refused = 0;
  let lastRead = 0;
  for (let i = 0; i < n; i++) {
    clock += pause(i);
    for (let wait = pacer.take(); wait > 0; wait = pacer.take()) clock += wait;
    sentAt.push(clock);
    // a TCP stream: read in order, each at most READ_LAG_MS after it was sent
    lastRead = Math.max(lastRead, clock + delay(i));
    serverClock = lastRead;
    if (server.take() > 0) refused++;
  }
  return { sentAt, refused };
}

/** Numbers in [0, 1) from `seed` (mulberry32): the same runs every time. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
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

  it('never refused at any rate, 3/s and 7/s (which do not divide a second) too, whatever the read delays and pauses', () => {
    // before (a server counting in fractions of a token): at 3/s, a burst read READ_LAG_MS late and
    // then paced messages read at once, the server's refills and takes (1.002 - 1 + 1.146 - 1 +
    // 0.852) came to 0.9999999999999998 of a token where it had one; at 4, 8 and 10/s as well
    const random = seeded(121);
    const refusals: string[] = [];
    for (const rate of [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 17, 20, 30, 50]) {
      for (let k = 0; k < 300; k++) {
        const late = random(); // how often a message is read READ_LAG_MS (or up to it) late
        const delay = [
          () => (random() < late ? READ_LAG_MS : 0),
          () => Math.floor(random() * (READ_LAG_MS + 1)),
          () => random() * READ_LAG_MS,
        ][k % 3]!;
        const pause = () => (random() < 0.1 ? Math.floor(random() * 3000) : 0); // idle now and then
        if (run(60, delay, { rate, pause }).refused > 0) refusals.push(`${rate}/s, run ${k}`);
      }
    }
    expect(refusals).toEqual([]);
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
