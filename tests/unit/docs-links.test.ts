import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

// A clone is all a user has: every relative link of its Markdown files (README.md, docs/, and the
// READMEs of packages/client and deploy/) must resolve to a file of this repository, none may point
// outside it, and a link to a heading (`docs/realtime.md#paged-snapshots`, `#paged-lists`) must
// name a heading that file has, as GitHub spells its anchors: a renamed heading otherwise leaves
// links that open the page at its top. (packages/client/README.md and deploy/README.md were not
// checked, nor any anchor.)

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const docs = ['README.md', 'packages/client/README.md', 'deploy/README.md',
  ...readdirSync(join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];

/** GitHub's anchor of a heading: lower case, punctuation dropped (not `-` and `_`), spaces as `-`. */
function headingAnchor(heading: string): string {
  return heading.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
}

/** The anchors of a Markdown file's headings (outside code blocks), a repeated one as GitHub numbers it: `x`, `x-1`, … */
function anchorsOf(file: string): Set<string> {
  const anchors = new Set<string>();
  const seen = new Map<string, number>();
  let fenced = false;
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (/^ *```/.test(line)) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6}\s+(.*?)\s*#*\s*$/.exec(line);
    if (!heading) continue;
    const anchor = headingAnchor(heading[1]!);
    const n = seen.get(anchor);
    seen.set(anchor, (n ?? -1) + 1);
    anchors.add(n === undefined ? anchor : `${anchor}-${n + 1}`);
  }
  return anchors;
}

describe('documentation links', () => {
  it('a heading\'s anchor is spelled as GitHub spells it', () => {
    expect(headingAnchor('Cluster: running N gateways')).toBe('cluster-running-n-gateways');
    expect(headingAnchor('2. Push the database')).toBe('2-push-the-database');
    expect(headingAnchor('`canvas_seq`')).toBe('canvas_seq');
  });

  it.each(docs)('%s links only to files of this repository, and to headings they have', (doc) => {
    const text = readFileSync(join(root, doc), 'utf8');
    const targets = [...text.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((t) => !/^(https?:|mailto:)/.test(t));
    const broken = targets.filter((t) => {
      const [file, anchor] = t.split('#') as [string, string | undefined];
      const path = file === '' ? join(root, doc) : resolve(root, dirname(doc), file);
      if (relative(root, path).startsWith('..') || !existsSync(path)) return true;
      return anchor !== undefined && path.endsWith('.md') && statSync(path).isFile() && !anchorsOf(path).has(anchor);
    });
    expect(broken).toEqual([]);
  });
});
