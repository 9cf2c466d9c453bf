// The shell blocks of README.md and docs/ set the variables Potentia reads so that the command
// after them sees them. (A block of assignments alone is a list of settings, as in potentia.env.) A line of bare assignments (`DATABASE_URL='…'` alone on its line) sets a
// shell variable only: npm, node and npx started on a later line do not get it, and the process
// falls back to its default (for DATABASE_URL, the local dev database). docs/supabase.md's worker
// step did that with DATABASE_URL and DIRECT_DATABASE_URL: the worker meant for the project's
// database connected to postgres://postgres:postgres@127.0.0.1:5432/potentia instead.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { EnvSchema } from '../../src/config.ts';

const root = new URL('../..', import.meta.url).pathname;
const files = ['README.md', 'packages/client/README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
/** What the processes read: the schema's variables and the ones self-hosting.md lists as read outside it. */
const selfHosting = readFileSync(join(root, 'docs/self-hosting.md'), 'utf8');
const outside = selfHosting.slice(selfHosting.indexOf('Read outside `src/config.ts`'), selfHosting.indexOf('## Backup and restore'));
const read = new Set([...Object.keys(EnvSchema.shape), ...[...outside.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1]!)]);

const assignment = String.raw`[A-Z_][A-Z0-9_]*=(?:'[^']*'|"[^"]*"|[^\s'"]*)`;
/** A line that is nothing but assignments (and a comment), not continued onto the next line. */
const bareAssignments = new RegExp(String.raw`^\s*(?:${assignment}\s*)+(?:#.*)?$`);

/** A line that starts a Potentia process or script (after any VAR=value prefixes). */
const startsProcess = new RegExp(String.raw`^\s*(?:${assignment}\s+)*(?:npm|npx|node|tsx|bash scripts/|scripts/)`);

/** Variables Potentia reads, set on a line of their own and not exported, before a command in the same block. */
function unexported(file: string): string[] {
  const text = readFileSync(join(root, file), 'utf8');
  const found: string[] = [];
  for (const block of text.matchAll(/^ *```(?:sh|bash)\n([\s\S]*?)^ *```/gm)) {
    const pending: string[] = [];
    for (const line of block[1]!.split('\n')) {
      if (bareAssignments.test(line)) {
        const names = [...line.replace(/#.*$/, '').matchAll(/([A-Z_][A-Z0-9_]*)=/g)].map((m) => m[1]!);
        pending.push(...names.filter((n) => read.has(n)).map((n) => `${file}: ${n} in \`${line.trim()}\``));
      } else if (startsProcess.test(line)) {
        found.push(...pending.splice(0).map((p) => `${p}, then \`${line.trim()}\``));
      }
    }
  }
  return found;
}

describe('shell blocks in the docs', () => {
  it('export what Potentia reads, or set it on the command that reads it', () => {
    expect(read.has('DATABASE_URL') && read.has('S3_BUCKET')).toBe(true);
    expect(files.flatMap(unexported)).toEqual([]);
  });
});
