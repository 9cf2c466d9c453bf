// The presence state rules exist twice: in SQL (internal.is_display_text, internal.presence_state_error,
// what api.update_presence applies to H1 and HTTP presence) and in the gateway (isDisplayText of
// src/input-policy.ts, checkPresenceState of src/realtime/presence.ts, what a realtime-js track()
// meets, which does not always reach SQL). They must agree: over every Unicode code point, and over
// a set of states, hostile and ordinary.
import { afterAll, describe, expect, it } from 'vitest';
import { isDisplayText } from '../../src/input-policy.ts';
import { checkPresenceState } from '../../src/realtime/presence.ts';
import { testDatabase } from '../helpers/db.ts';

const db = testDatabase(1);
afterAll(() => db.close());

const SURROGATES = [0xd800, 0xdfff];
const codePoints = function* () {
  for (let cp = 1; cp <= 0x10ffff; cp++) if (cp < SURROGATES[0]! || cp > SURROGATES[1]!) yield cp;
};

describe('presence state: the gateway and SQL agree', () => {
  it('isDisplayText refuses exactly the code points internal.is_display_text refuses, in a name and alone', async () => {
    // in a name ('a' + c: the refused characters) and alone (c: also those that show nothing)
    const [row] = await db.sql`
      select array(select cp from generate_series(1, 1114111) cp
                   where (cp < 55296 or cp > 57343) and not internal.is_display_text('a' || chr(cp))) as within,
             array(select cp from generate_series(1, 1114111) cp
                   where (cp < 55296 or cp > 57343) and not internal.is_display_text(chr(cp))) as alone`;
    const within: number[] = [];
    const alone: number[] = [];
    for (const cp of codePoints()) {
      const c = String.fromCodePoint(cp);
      if (!isDisplayText(`a${c}`)) within.push(cp);
      if (!isDisplayText(c)) alone.push(cp);
    }
    expect(within).toEqual(row!.within);
    expect(alone).toEqual(row!.alone);
    expect(within.length).toBeGreaterThan(100); // the controls, the format characters, the fillers
  });

  const states: unknown[] = [
    {}, { name: 'Ann Lee', color: 'hsl(210 70% 45%)', typing: true, cursor: { x: 1, y: 2 }, selection: null },
    { name: '家族 👨‍👩‍👧', color: '#1A2b3C' }, { name: 'n'.repeat(100) }, { name: 'n'.repeat(101) }, { name: '😀'.repeat(100) },
    { name: '😀'.repeat(101) }, { name: '' }, { name: '   ' }, { name: '\u3000' }, { name: 'a\u0085b' }, { name: 'a\u202eb' },
    { name: 'a\u2028b' }, { name: 'a\u200db' }, { name: 1 }, { name: null }, { name: ['x'] },
    { color: 'red' }, { color: 'RebeccaPurple' }, { color: 'rgb(1 2 3 / 50%)' }, { color: 'oklch(70% 0.1 200)' }, { color: '#fff' },
    { color: '#ff' }, { color: '#fffffffff' }, { color: 'red;x:y' }, { color: 'url(a)' }, { color: 'var(--x)' }, { color: 'rgb(var(--x))' },
    { color: 'rgb("1")' }, { color: 'rgb(1,2,3)\t' }, { color: 'blac\u212a' }, { color: 'rgb(1 2 3)\u017f' }, { color: 'ſienna' }, { color: 're' }, { color: 'rgb()' }, { color: `rgb(${'1'.repeat(81)})` },
    { color: 'ʀed' }, { color: 5 }, { color: null },
    { typing: false }, { typing: 'no' }, { typing: null }, { cursor: null }, { cursor: [1] }, { cursor: 'x' }, { selection: {} },
    { selection: 3 }, { phx_ref: 'x' }, { phx_ref_prev: 'x' }, { presence_ref: 'x' }, { app: { name: '\u0007', color: 'url(x)' } },
    [], 'string', 1, null, true,
  ];

  it.each(states.map((s) => [JSON.stringify(s), s]))('%s: the same verdict and field', async (_name, state) => {
    const [row] = await db.sql`select internal.presence_state_error(${db.sql.json(state as any)}::jsonb, 'cursor') as error`;
    const sqlError = row!.error as { field: string; message: string } | null;
    const tsError = checkPresenceState(state, 'cursor');
    expect(tsError?.field ?? null).toBe(sqlError?.field ?? null);
  });
});
