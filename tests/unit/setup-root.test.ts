import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

// README, "Two commands": without root and without sudo, a step of scripts/setup that must install
// "prints the exact command to run". Its installs (scripts/lib/setup-root.sh) are run here as
// setup runs them, with no way to become root (SUDO=none, what setup finds without root or a
// password-less sudo), never scripts/setup itself. The command printed is then pasted, as a user
// would, into bash, where `sudo` records what it was asked to run: it must be what setup runs.
// Before: an apt install printed only `sudo apt-get update -qq`, and the next setup printed it
// again (the install was never named); runuser's psql -c lost its quoting; the sources list was
// `sudo tee FILE` with no input.

const run = promisify(execFile);
const root = resolve(fileURLToPath(import.meta.url), '../../..');
const dir = mkdtempSync(join(tmpdir(), 'setup-root-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs `call` after sourcing setup's output and root helpers with SUDO=none: its exit code and stderr. */
async function withoutRoot(call: string): Promise<{ code: number; stderr: string }> {
  const script = `cd ${JSON.stringify(root)}; source scripts/lib/setup-output.sh; source scripts/lib/setup-root.sh; SUDO=none; ${call}`;
  return run('bash', ['-c', script], { env: { ...process.env, NO_COLOR: '1' } })
    .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }));
}

/** The commands the failure tells the user to run: its indented lines after "run it yourself". */
function printedCommands(stderr: string): string[] {
  const lines = stderr.split('\n');
  const from = lines.findIndex((l) => l.includes('run it yourself, then run scripts/setup again:'));
  expect(from, stderr).toBeGreaterThanOrEqual(0);
  return lines.slice(from + 1).filter((l) => l.trim() !== '').map((l) => l.trim());
}

/** Pastes `commands` into bash with a `sudo` that records each argv (and what tee was given). */
async function pasted(commands: string[], name: string): Promise<{ argv: string[][]; input: string }> {
  const rec = join(dir, name);
  const sudo = `sudo() { printf '%s\\x1f' "$@" >> ${rec}; printf '\\n' >> ${rec}; if [[ $1 == tee ]]; then cat >> ${rec}.in; fi; }`;
  await run('bash', ['-c', `set -e; ${sudo}\n${commands.join('\n')}`]);
  const argv = readFileSync(rec, 'utf8').split('\n').filter(Boolean).map((l) => l.split('\x1f').slice(0, -1));
  let input = '';
  try { input = readFileSync(`${rec}.in`, 'utf8'); } catch { /* no tee */ }
  return { argv, input };
}

describe('scripts/setup without root: a step that must install prints the command that does it', () => {
  it('an apt install names the packages, with the update it needs, in one paste', async () => {
    const r = await withoutRoot('apt_install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl');
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('this step needs root: apt-get install postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl');
    const { argv } = await pasted(printedCommands(r.stderr), 'apt');
    expect(argv).toEqual([
      ['apt-get', 'update'],
      ['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', '--no-install-recommends', 'postgresql-15-pgtap', 'libtap-parser-sourcehandler-pgtap-perl'],
    ]);
  });

  it('a command with a quoted argument (the postgres password) is printed so that pasting it runs the same argv', async () => {
    const sql = "alter role postgres password 'it''s a pw'";
    const r = await withoutRoot(`as_root runuser -u postgres -- psql -X -qc ${JSON.stringify(sql).replace(/\$/g, '\\$')}`);
    expect(r.code).toBe(1);
    const { argv } = await pasted(printedCommands(r.stderr), 'runuser');
    expect(argv).toEqual([['runuser', '-u', 'postgres', '--', 'psql', '-X', '-qc', sql]]);
  });

  it('writing a root-owned file (the deb-src entry) prints a command that writes that content', async () => {
    const content = 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n';
    const r = await withoutRoot(`as_root_write /etc/apt/sources.list.d/potentia-trixie-src.sources $'${content.replace(/\n/g, '\\n')}'`);
    expect(r.code).toBe(1);
    const { argv, input } = await pasted(printedCommands(r.stderr), 'write');
    expect(argv).toEqual([['tee', '/etc/apt/sources.list.d/potentia-trixie-src.sources']]);
    expect(input).toBe(content);
  });
});
