import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// A clone is all a user has: every relative link in README.md and docs/ must resolve to a file of
// this repository, and none may point outside it.

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const docs = ['README.md', ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

describe('documentation links', () => {
  it.each(docs)('%s links only to files of this repository', (doc) => {
    const text = readFileSync(join(root, doc), 'utf8');
    const targets = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!)
      .filter((t) => !/^(https?:|mailto:|#)/.test(t))
      .map((t) => t.split('#')[0]!);
    const broken = targets.filter((t) => {
      const path = resolve(root, dirname(doc), t);
      return relative(root, path).startsWith('..') || !existsSync(path);
    });
    expect(broken).toEqual([]);
  });
});
