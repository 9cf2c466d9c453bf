// tests/helpers/chaos.ts's processes never outlive their test file, whatever failed. A test file
// (tests/helpers/orphans/orphans.fixture.ts) runs in a vitest of its own, and this one then
// looks, by the environment variable they carry, for the processes it started:
// 1. two started in one Promise.all, one of which fails at once while the other is still starting:
//    the file's beforeAll fails and nothing holds the other. Seen failing before: it went on
//    starting and ran on after its vitest had exited (its port, its database connections).
// 2. one started, then the test process SIGKILLed (no hook, no exit handler runs): the process
//    started stops itself once its stdin (a pipe from the test process) closes. Seen failing
//    before: it ran on.
// What the fixture started and left behind is killed here at the end, whatever happened.
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { markedProcesses } from '../helpers/orphans/marked.ts';
import { until } from '../helpers/wait.ts';

const root = new URL('../..', import.meta.url).pathname;
const marks: string[] = [];
const dir = mkdtempSync(join(tmpdir(), 'potentia-orphans-'));
const seen = (mark: string) => { try { return readFileSync(join(dir, mark), 'utf8'); } catch { return ''; } };

afterAll(() => {
  for (const pid of marks.flatMap(markedProcesses)) process.kill(pid, 'SIGKILL');
  rmSync(dir, { recursive: true, force: true });
});

/** Runs the fixture in a vitest of its own; resolves with its exit code and output once it exited. */
function runFixture(mode: 'reject' | 'kill', mark: string): Promise<{ code: number | null; out: string }> {
  // the outer vitest's own variables would make the inner one take itself for a worker
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VITEST')));
  const child = spawn(process.execPath, [`${root}node_modules/vitest/vitest.mjs`, 'run', '--config', 'tests/helpers/orphans/vitest.config.ts'], {
    cwd: root, env: { ...env, ORPHANS_MODE: mode, ORPHANS_MARK: mark, ORPHANS_OUT: join(dir, mark) }, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => { out += d; });
  child.stderr.on('data', (d) => { out += d; });
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, out })));
}

describe('processes started by tests/helpers/chaos.ts', () => {
  it('are stopped after their file when one of a Promise.all of them failed', { timeout: 120_000 }, async () => {
    const mark = randomUUID();
    marks.push(mark);
    const { code, out } = await runFixture('reject', mark);
    expect(code, out).toBe(1);
    expect(out).toMatch(/unknown role router/);
    const left = /orphans marked: ([\d ]*)/.exec(seen(mark))?.[1]?.trim().split(' ').filter(Boolean).map(Number) ?? [];
    expect(left, out).toHaveLength(1); // the one still starting when the Promise.all rejected
    // its vitest has exited: the file's end stopped it (and waited for its exit)
    expect(markedProcesses(mark)).toEqual([]);
  });

  it('stop themselves when the test process is killed', { timeout: 120_000 }, async () => {
    const mark = randomUUID();
    marks.push(mark);
    const { code, out } = await runFixture('kill', mark);
    expect(code, out).not.toBe(0);
    const pid = Number(/started pid (\d+)/.exec(seen(mark))?.[1]);
    expect(pid, out).toBeGreaterThan(0);
    await until(() => markedProcesses(mark).length === 0, 30_000, `process ${pid} to stop itself`, 100);
  });
});
