import fc from 'fast-check';
import { type as textUnicode } from 'ot-text-unicode';
import { describe, expect, it } from 'vitest';
import { changedRange, diffToOp, shiftPosition, toCodePoints, toUtf16 } from '../../demo/src/text-diff.ts';

// The demo turns each textarea edit into a text-unicode operation by diffing old and new value;
// applied with the reference implementation the server's OT is checked against, it must give the
// new value exactly, in code points (emoji included).

const alphabet = fc.constantFrom('a', 'b', ' ', 'é', '😀', '👍🏽', '\n');
const text = fc.array(alphabet, { maxLength: 12 }).map((a) => a.join(''));

describe('demo textarea diff → text operation', () => {
  it('applied to the old value gives the new one, and is a valid normalized op', () => {
    fc.assert(fc.property(text, text, (before, after) => {
      const op = diffToOp(before, after);
      if (before === after) return op === null;
      expect(textUnicode.normalize(op as never)).toEqual(op);
      expect(textUnicode.apply(before, op as never)).toBe(after);
      return true;
    }), { numRuns: 2000 });
  });

  it('describes typing, deleting and replacing as the changed range only', () => {
    expect(diffToOp('hello', 'hello world')).toEqual([5, ' world']);
    expect(diffToOp('hello world', 'hello')).toEqual([5, { d: 6 }]);
    expect(diffToOp('a😀c', 'a😀Xc')).toEqual([2, 'X']); // the emoji is one code point
    expect(diffToOp('abc', 'aXc')).toEqual([1, { d: 1 }, 'X']);
    expect(diffToOp('same', 'same')).toBeNull();
  });

  it('merges with a concurrent edit elsewhere: both edits survive the transform', () => {
    const base = 'middle';
    const mine = diffToOp(base, 'start middle')!;
    const theirs = diffToOp(base, 'middle end')!;
    const mineAfter = textUnicode.transform(mine as never, theirs as never, 'left');
    expect(textUnicode.apply(textUnicode.apply(base, theirs as never), mineAfter)).toBe('start middle end');
  });

  it('keeps a caret in place across a remote change, converting UTF-16 offsets', () => {
    const change = changedRange('hello world', 'hey hello world')!;
    expect(shiftPosition(5, change)).toBe(9); // after the insert: shifted
    expect(shiftPosition(0, change)).toBe(0); // before it: stays
    expect(shiftPosition(3, changedRange('abcdef', 'af')!)).toBe(1); // inside a deleted range: its start
    expect(toCodePoints('😀ab', 3)).toBe(2);
    expect(toUtf16('😀ab', 2)).toBe(3);
  });
});
