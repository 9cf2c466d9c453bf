import { expect, it } from 'vitest';
import { KeyedRateLimiter } from '../../src/realtime/rate-limit.ts';

// The buckets of a limit across sockets (src/realtime/admission.ts): one per caller, kept only
// while it holds less than a full burst, so memory follows the callers of the last few seconds.

it('each key has its own bucket: one caller\'s burst does not spend another\'s', () => {
  let t = 0;
  const limiter = new KeyedRateLimiter(1, 3, () => t);
  expect([limiter.take('a'), limiter.take('a'), limiter.take('a')]).toEqual([0, 0, 0]);
  expect(limiter.take('a')).toBe(1000);
  expect(limiter.take('b')).toBe(0);
  t += 1000;
  expect(limiter.take('a')).toBe(0);
});

it('a refilled bucket is dropped once the map grows past maxKeys; a spent one is kept', () => {
  let t = 0;
  const limiter = new KeyedRateLimiter(10, 20, () => t, 100);
  for (let i = 0; i < 20; i++) limiter.take('spender');
  for (let i = 0; i < 99; i++) limiter.take(`caller-${i}`);
  expect(limiter.size).toBe(100);
  t += 500; // the callers' single tokens are back; the spender holds 5 of 20
  limiter.take('newcomer');
  expect(limiter.size).toBe(2); // the spender and the newcomer
  expect(limiter.take('spender')).toBe(0);
  for (let i = 0; i < 4; i++) limiter.take('spender');
  expect(limiter.take('spender')).toBeGreaterThan(0); // its bucket was kept, not reset to a full burst
});

it('with every caller active, the map grows (no caller loses its bucket) and prunes again later', () => {
  let t = 0;
  const limiter = new KeyedRateLimiter(1, 1, () => t, 10);
  for (let i = 0; i < 25; i++) limiter.take(`k${i}`);
  expect(limiter.size).toBe(25);
  t += 1000;
  for (let i = 0; i < 10; i++) limiter.take(`j${i}`);
  expect(limiter.size).toBeLessThanOrEqual(10);
});

it('takes n tokens at once, all or none (a REST broadcast\'s messages, src/realtime/rest-broadcast.ts)', () => {
  let t = 0;
  const limiter = new KeyedRateLimiter(10, 20, () => t);
  expect(limiter.take('a', 15)).toBe(0);
  // 5 left: 10 are refused whole, and take none of them (the wait is for the 5 missing)
  expect(limiter.take('a', 10)).toBe(500);
  expect(limiter.take('a', 5)).toBe(0);
  expect(limiter.take('a')).toBe(100);
  t += 1000;
  expect(limiter.take('a', 10)).toBe(0);
});
