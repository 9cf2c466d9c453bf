import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

// README.md's Layout is where a newcomer looks for a directory: every top-level directory of the
// repository (but .ci, the CI machine's) has a line there. It lacked packages/ (the client the
// README's quick start loads), docs/, deploy/ and patches/.
const root = new URL('../..', import.meta.url).pathname;

describe('README.md, Layout', () => {
  it('names every top-level directory the repository holds', () => {
    const tracked = execFileSync('git', ['ls-files'], { cwd: root, encoding: 'utf8' }).split('\n');
    const dirs = [...new Set(tracked.filter((f) => f.includes('/')).map((f) => f.split('/')[0]!))].filter((d) => d !== '.ci').sort();
    const readme = readFileSync(`${root}/README.md`, 'utf8');
    const layout = /## Layout\n\n```\n([\s\S]*?)```/.exec(readme)![1]!;
    const listed = new Set(layout.split('\n').map((l) => l.split('/')[0]!).filter(Boolean));
    expect(dirs.filter((d) => !listed.has(d))).toEqual([]);
  });
});
