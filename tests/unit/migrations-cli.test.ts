// `supabase db push` (docs/supabase.md) does not run a migration the way `npm run db:migrate` does:
// it splits the file into statements and sends them as one pipeline, an implicit transaction that
// is not a transaction block, where `begin … commit` of our migrator is one. A statement that needs
// a block is refused there (LOCK TABLE: "can only be used in transaction blocks", which stopped a
// fresh push at 20261202015448) or does nothing but warn (SET LOCAL, SET CONSTRAINTS), so no
// migration may hold one at the top level; inside a do block or a function body they work alike.
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { splitStatements } from '../../src/db/split-statements.ts';

const dir = join(fileURLToPath(new URL('../..', import.meta.url)), 'supabase/migrations');
const NEEDS_BLOCK = /^(lock\b|set\s+(local|transaction|constraints)\b|savepoint\b|release\b|rollback\s+to\b|declare\b)/i;

describe('splitStatements (as the Supabase CLI splits a migration)', () => {
  it('splits at top-level semicolons only', () => {
    expect(splitStatements(`-- a comment; not a split
create function f() returns text language sql as $$ select 'a;b' $$;
/* one /* nested; */ comment */ select 'it''s;', E'\\';', "odd;name" from t;
do $x$ begin lock table t; end $x$;
select $1; select 2`)).toEqual([
      "create function f() returns text language sql as $$ select 'a;b' $$",
      `select 'it''s;', E'\\';', "odd;name" from t`,
      'do $x$ begin lock table t; end $x$',
      'select $1',
      'select 2',
    ]);
  });
});

describe('every migration runs under supabase db push', () => {
  it('holds no top-level statement that needs a transaction block', () => {
    const found: string[] = [];
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.sql')).sort()) {
      for (const statement of splitStatements(readFileSync(join(dir, file), 'utf8'))) {
        if (NEEDS_BLOCK.test(statement)) found.push(`${file}: ${statement.split('\n')[0]} (put it in a do block)`);
      }
    }
    expect(found).toEqual([]);
  });
});
