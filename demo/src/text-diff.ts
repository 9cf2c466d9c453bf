/**
 * A textarea edit as a text-unicode operation (docs/merge.md): the changed range between the old
 * and the new value — common prefix and suffix kept, the middle deleted and inserted — so that
 * concurrent typing elsewhere in the text transforms past it instead of being overwritten.
 * Positions count Unicode code points, as the server does (a textarea counts UTF-16 units).
 */
export type TextOp = Array<number | string | { d: number }>;

export type TextChange = { start: number; deleted: number; inserted: string };

/** The changed range in code points; null when old === new. */
export function changedRange(oldText: string, newText: string): TextChange | null {
  if (oldText === newText) return null;
  const a = Array.from(oldText);
  const b = Array.from(newText);
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length;
  let endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  return { start, deleted: endA - start, inserted: b.slice(start, endB).join('') };
}

/** The operation turning oldText into newText (keep, delete, insert), or null for no change. */
export function diffToOp(oldText: string, newText: string): TextOp | null {
  const change = changedRange(oldText, newText);
  if (!change) return null;
  const op: TextOp = [];
  if (change.start > 0) op.push(change.start);
  if (change.deleted > 0) op.push({ d: change.deleted });
  if (change.inserted) op.push(change.inserted);
  return op;
}

/** UTF-16 offset (textarea selection) → code-point offset, in `text`. */
export function toCodePoints(text: string, utf16: number): number {
  return Array.from(text.slice(0, utf16)).length;
}

/** Code-point offset → UTF-16 offset, in `text`. */
export function toUtf16(text: string, codePoints: number): number {
  return Array.from(text).slice(0, codePoints).join('').length;
}

/**
 * Where a caret at `pos` (code points) goes when the text changes by `change` that someone else
 * made: before the range it stays, after it it shifts by the length difference, inside a deleted
 * range it goes to the range's start.
 */
export function shiftPosition(pos: number, change: TextChange): number {
  if (pos <= change.start) return pos;
  const insertedLength = Array.from(change.inserted).length;
  if (pos >= change.start + change.deleted) return pos - change.deleted + insertedLength;
  return change.start + insertedLength;
}
