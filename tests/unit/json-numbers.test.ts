import { describe, expect, it } from 'vitest';
import { readJson } from '../../src/input-policy.ts';
import { mayHoldUnsafeNumber } from '../../src/json-numbers.ts';

// The checked parse of untrusted JSON (src/input-policy.ts parseJson, src/json-numbers.ts): the
// exact reading runs only when needed, and then reads everything but numbers as JSON.parse does.

const read = (text: string) => readJson(new TextEncoder().encode(text));

describe('the checked JSON parse', () => {
  it('takes the fast path for ordinary bodies (ids, text, short numbers)', () => {
    const body = JSON.stringify({ block_id: '3f2a5e9c-1e2b-4c3d-8e9f-0a1b2c3d4e5f', t: 'h1e2 12345678901234567890', n: [1.5, -2, 123456789012345] });
    expect(mayHoldUnsafeNumber(body)).toBe(false);
    for (const text of ['1e400', '{"a":1E5}', '[0.1000000000000000055511151231257827]', '{"a": -12345678901234567}', '[1,\n 2.5e-3]']) {
      expect(mayHoldUnsafeNumber(text), text).toBe(true);
    }
  });

  it.each([
    ['{"big":1e400}', 'big'], ['{"neg":-1e400}', 'neg'], ['{"tiny":1e-400}', 'tiny'], ['[12345678901234567890123]', '0'],
    ['{"pi":3.141592653589793238462643383279}', 'pi'], ['{"n":9007199254740993}', 'n'], ['1e400', 'body'], ['{"a":1,"a":1e400}', 'a'],
  ])('%s is refused on field %s, advising a string', (text, field) => {
    expect(read(text)).toEqual({ field, message: expect.stringMatching(new RegExp(`^${field}: .*double.*send it as a string$`)) });
  });

  it('keeps every number a double holds exactly, however it is written (JSON.stringify\'s output included)', () => {
    for (const text of ['1e20', '1e+21', '-1.5e300', '100000000000000000000', '9007199254740992', '5e-324', '0.10', '1.50E2', '0.0', '-0']) {
      expect(read(`[${text}]`), text).toEqual({ value: [Number(text)] });
    }
    for (const n of [Number.MAX_VALUE, -Number.MIN_VALUE, 2 ** 70, 0.1 + 0.2, 1 / 3, 1e21, 123456789.123456789]) {
      expect(read(JSON.stringify({ n })), String(n)).toEqual({ value: { n } });
    }
  });

  it('refuses what the double would change: one digit more than it holds, or a value between two doubles', () => {
    for (const text of ['9007199254740993', '0.1000000000000000055511151231257827', '4.9e-324', '1.0000000000000001', '123456789012345678e3']) {
      expect(read(`[${text}]`), text).toMatchObject({ field: '0' });
    }
  });

  it('reads exact numbers, strings, keys and repeated keys as JSON.parse does, on either path', () => {
    for (const text of ['{"a":1e5,"b":-2.5E-3,"c":9007199254740991,"d":0.1,"e":-0,"f":"1e400","a":2}', '{"x":"\\ud83d\\ude00","y":[1,2,{"z":1.5e2}]}']) {
      expect(read(text)).toEqual({ value: JSON.parse(text) });
    }
  });

  it('refuses a __proto__ key by its path (JSON.parse keeps it as an own key; zod and assignment would not)', () => {
    expect(read('{"a":{"__proto__":{"x":1}}}')).toMatchObject({ field: 'a.__proto__' });
    expect(read('{"a":{"__proto__":{"x":1e400}}}')).toMatchObject({ field: 'a.__proto__' });
  });

  it('nesting too deep for the exact (recursive) reading is still refused for its depth', () => {
    const deep = '['.repeat(50_000) + '1e400' + ']'.repeat(50_000);
    expect(read(deep)).toMatchObject({ field: '0', message: expect.stringMatching(/nested deeper than 64/) });
  });
});
