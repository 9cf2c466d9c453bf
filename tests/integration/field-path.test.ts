// An error's field path is written by the gateway and HTTP layer (fieldStep of src/input-policy.ts)
// and by SQL (internal.field_step, mutate's text keys): they must write every key the same way,
// and no two paths may read alike.
import { afterAll, describe, expect, it } from 'vitest';
import { encodeJson } from '../../packages/client/src/json-value.ts';
import { fieldPath, fieldStep } from '../../src/input-policy.ts';
import { testDatabase } from '../helpers/db.ts';

const db = testDatabase(1);
afterAll(() => db.close());

const KEYS = ['t', 'body', 'file_id', 'plain-key_1$', 'A9', '_', '0', '12', '007', '1e3', '', ' ', 'a.b', 'a b', '.', '..', '[0]', 'a[0]',
  'x"]', 'a"b', 'a\\b', '"', '\\', 'é', '日本', '😀', 'a\nb', 'a\tb', '\u0001', '\u007f', '\u2028', 'a\u202eb', '$.keyvalue()', '*'];

describe('field paths', () => {
  it('fieldStep and internal.field_step write every key alike', async () => {
    const rows = await db.sql`select k, internal.field_step(k) as step from unnest(${KEYS}::text[]) k`;
    expect(rows.map((r) => r.step)).toEqual(KEYS.map((k) => fieldStep(k)));
  });

  it('a plain key is written after a dot, any other in brackets as its JSON string; an array index after a dot', () => {
    expect(fieldPath(['patch', 'text', 't'])).toBe('patch.text.t');
    expect(fieldPath(['patch', 'text', 'a.b'])).toBe('patch.text["a.b"]');
    expect(fieldPath(['patch', 'text', 'a', 'b'])).toBe('patch.text.a.b');
    expect(fieldPath(['ops', 0, 'patch', 'content', '0'])).toBe('ops.0.patch.content["0"]');
    expect(fieldPath(['a.b'])).toBe('["a.b"]');
    expect(fieldPath(['x'], 'query')).toBe('query.x');
  });

  it('no two paths read alike: JSON.parse of each bracket gives back its key', () => {
    const seen = new Map<string, string>();
    for (const k of KEYS) {
      const step = fieldStep(k);
      expect(seen.has(step), `${JSON.stringify(k)} and ${JSON.stringify(seen.get(step))} both write ${step}`).toBe(false);
      seen.set(step, k);
      if (step.startsWith('[')) expect(JSON.parse(step.slice(1, -1))).toBe(k);
      else expect(step.slice(1)).toBe(k);
      // a step after a dot never holds a separator, and is never an array index
      if (step.startsWith('.')) expect(step.slice(1)).toMatch(/^(?![0-9]+$)[^.[\]"\s]+$/);
    }
  });

  it('@potentia/client names what it refuses itself with the same paths', () => {
    for (const k of KEYS) {
      expect(encodeJson({ [k]: NaN }, 'patch.content')).toMatchObject({ field: fieldPath([k], 'patch.content') });
      expect(encodeJson({ list: [{ [k]: 1n }] }, 'patch.content')).toMatchObject({ field: fieldPath(['list', 0, k], 'patch.content') });
    }
  });
});
