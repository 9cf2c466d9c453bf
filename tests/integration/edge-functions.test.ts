import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// The Supabase edge entry points type-check under Deno (from the npm package `deno`), with
// their own import maps: what `supabase functions deploy` would bundle.
const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;
const names = readdirSync(`${root}supabase/functions`, { withFileTypes: true }).filter((d) => d.isDirectory() && !d.name.startsWith('_')).map((d) => d.name);

describe('supabase/functions entry points', () => {
  it('exist for every HTTP function group', () => {
    expect(names.sort()).toEqual(['auth', 'canvas', 'search', 'workspaces']);
  });
  it.each(names)('%s passes deno check', async (name) => {
    const cwd = `${root}supabase/functions/${name}`;
    const { stderr } = await run(`${root}node_modules/.bin/deno`, ['check', '--config', 'deno.json', 'index.ts'], { cwd })
      .catch((err) => { throw new Error(`deno check failed for ${name}:\n${err.stderr ?? err}`); });
    expect(stderr).not.toMatch(/error/i);
  }, 120_000);
});
