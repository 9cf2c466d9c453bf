// A supervisor (systemd, a container runtime, a shell's `kill`) signals the process it started:
// for `npm run worker` or `npm run serve` that is npm. npm passes SIGTERM to its child, the shell
// running the script; the shell died of it without passing it on, and the `tsx` command under it
// ran the script in a child process of its own: the worker (or server) was left running, orphaned,
// still taking jobs. The scripts now `exec` Node with tsx's loader, so npm's child is the process
// that announces itself, and it stops gracefully.
import { spawn } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { until } from '../helpers/wait.ts';

const root = new URL('../..', import.meta.url).pathname;
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
const announced: number[] = [];
afterAll(() => { for (const pid of announced) if (alive(pid)) process.kill(pid, 'SIGKILL'); });

describe('SIGTERM to npm\'s own pid', () => {
  it.each([
    ['worker', [], /potentia worker \S+ running \(pid (\d+)/, /SIGTERM: stopping worker/],
    ['serve', ['--', '--role', 'api'], /running \(role api, pid (\d+)/, /SIGTERM/],
  ])('npm run %s: stops the process that announced itself, not only npm', async (script, args, ready, stopping) => {
    const npm = spawn('npm', ['run', '--silent', script, ...args], {
      cwd: root, stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, DATABASE_URL: testDatabaseUrl(), HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', WORKER_CRONTAB: '' },
    });
    let out = '';
    npm.stdout!.on('data', (d) => { out += d; });
    npm.stderr!.on('data', (d) => { out += d; });
    await until(() => ready.test(out) || npm.exitCode !== null, 60_000, `npm run ${script} to announce itself`);
    const pid = Number(ready.exec(out)?.[1]);
    expect(pid, out).toBeGreaterThan(0);
    announced.push(pid);
    npm.kill('SIGTERM');
    await until(() => !alive(pid), 20_000, `pid ${pid} (npm run ${script}) to exit after npm got SIGTERM; output:\n${out}`);
    expect(out).toMatch(stopping);
  }, 90_000);
});
