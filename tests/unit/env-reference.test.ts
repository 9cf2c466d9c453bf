// docs/self-hosting.md's environment reference against src/config.ts's EnvSchema: every variable
// the schema reads has a row, every schema-backed row names a real variable, and each documented
// default is the schema's (multi-line defaults: each line appears in the cell); it says a blank
// value counts as unset, and names each variable for which it is a value instead.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { EMPTY_IS_A_VALUE, EnvSchema } from '../../src/config.ts';
import { ROLES } from '../../src/roles.ts';

const doc = readFileSync(new URL('../../docs/self-hosting.md', import.meta.url), 'utf8');
const section = doc.slice(doc.indexOf('## Environment reference'), doc.indexOf('\nRead outside `src/config.ts`'));
/** The rows of the schema table: variable → default cell. */
const rows = new Map(section.split('\n')
  .map((line) => /^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| .* \|$/.exec(line))
  .filter((m): m is RegExpExecArray => m !== null)
  .map((m) => [m[1]!, m[2]!]));

const defaultOf = (schema: z.ZodType): unknown => (schema instanceof z.ZodDefault ? (schema.def.defaultValue as unknown) : undefined);

describe('docs/self-hosting.md environment reference', () => {
  const keys = Object.keys(EnvSchema.shape);

  it('has a row for every variable of EnvSchema, and none for a variable it does not read', () => {
    expect(keys.length).toBeGreaterThan(30);
    expect(keys.filter((k) => !rows.has(k)), 'variables missing from the doc').toEqual([]);
    expect([...rows.keys()].filter((k) => !keys.includes(k)), 'rows without a schema variable').toEqual([]);
  });

  it("documents each default as the schema's", () => {
    for (const key of keys) {
      const value = defaultOf(EnvSchema.shape[key as keyof typeof EnvSchema.shape]);
      const cell = rows.get(key) ?? '';
      if (value === undefined) {
        expect(cell, `${key} has no default: the doc says what happens when it is unset`).toMatch(/^\(unset/);
        continue;
      }
      for (const line of String(value).split('\n')) expect(cell, key).toContain(`\`${line}\``);
    }
  });

  it('says a blank value counts as unset, except for the variables that take it as a value', () => {
    const intro = section.slice(0, section.indexOf('| variable |'));
    expect(intro).toMatch(/A blank value \(`NAME=` in an env file[^)]*\) counts as\s+unset/);
    expect(EMPTY_IS_A_VALUE.length).toBeGreaterThan(0);
    for (const key of EMPTY_IS_A_VALUE) expect(intro, key).toMatch(new RegExp(`exceptions? (is|are) [^.]*\`${key}\``));
  });

  it('lists the process roles the entry point accepts', () => {
    expect(ROLES).toEqual(['all', 'api', 'gateway', 'worker']);
    for (const role of ROLES) expect(doc).toContain(`| \`${role}\` |`);
  });
});
