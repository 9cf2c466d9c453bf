import { spawn, type ChildProcess } from 'node:child_process';
import type { Sql } from 'postgres';
import { afterAll } from 'vitest';
import { processTcpSockets } from './sockets.ts';

/**
 * Fault injection against real Potentia processes: start `npm start`'s entry point (or `npm run
 * worker`'s) as separate Node processes (the way production runs several gateways), find the
 * database connections each one holds (by application name and the client port the process
 * owns), and terminate them with pg_terminate_backend — what a managed Postgres does on restart,
 * failover or idle reaping.
 */
const root = new URL('../..', import.meta.url).pathname;

export type ScriptProcess = {
  /** The process running the script: what a signal sent to `child` reaches. */
  pid: number;
  child: ChildProcess;
  /** What the `ready` pattern matched in its output. */
  ready: RegExpExecArray;
  /** Everything the process printed (stdout + stderr). */
  output(): string;
  /** Exit code/signal once it exited, else null. */
  exited(): { code: number | null; signal: NodeJS.Signals | null } | null;
  /** SIGTERM, then SIGKILL after 10 s; resolves once it exited. */
  stop(): Promise<void>;
};
export type PotentiaProcess = ScriptProcess & { url: string };

/**
 * Every process started here that has not exited yet, with how to stop it. None outlives its test
 * file, whatever failed: several started in one Promise.all of which one failed or timed out (the
 * others went on starting, held by nobody: the file's afterAll stopped only what it had been
 * given, and they kept their ports, database connections and replication slots through the next
 * files), a beforeAll past its timeout, a test that never stopped its process.
 *  - after the file's tests (an afterAll of this module's, run after the file's own): each is
 *    stopped (SIGTERM, SIGKILL after 10 s), one still starting included; one started later still
 *    is stopped at once;
 *  - when the test process exits without that (process.exit, an uncaught error): SIGKILL;
 *  - when the test process dies without a word (SIGKILL, a worker torn down): each started
 *    process reads its stdin, a pipe from the test process, and stops itself when that closes
 *    (tests/helpers/die-with-parent.mjs, preloaded).
 */
const running = new Map<ChildProcess, () => Promise<void>>();
let filesEnd = false;

/** Stops every process started here that still runs (what the afterAll below does); resolves once all exited. */
export async function stopStartedProcesses(): Promise<void> {
  await Promise.all([...running.values()].map((stop) => stop()));
}

// (under vitest only: scripts/bench-realtime.ts starts processes with these helpers too, and stops them itself)
if (process.env.VITEST) {
  afterAll(async () => {
    filesEnd = true;
    await stopStartedProcesses();
  }, 30_000);
}
process.on('exit', () => {
  for (const child of running.keys()) {
    try { child.kill('SIGKILL'); } catch { /* gone already */ }
  }
});

const dieWithParent = new URL('./die-with-parent.mjs', import.meta.url).pathname;

/**
 * Runs `script` (a path from the repository root) with Node and tsx's loader in the same process
 * (`node --import tsx`), never through the `tsx` command: that one runs the script in a child
 * process of its own, so a SIGKILL (which it cannot relay) killed only the wrapper and left the
 * script running, and an exit seen was the wrapper's. Resolves once the output matches `ready`.
 * Its announcement (`… running (… pid N`, as src/main.ts and scripts/worker.ts print it) must name
 * this process's pid: a test that kills the process kills what it says it does.
 */
export async function startScriptProcess(script: string, env: Record<string, string>, ready: RegExp,
  timeoutMs = 60_000): Promise<ScriptProcess> {
  // stdin: a pipe this process never writes to, closed only when it dies (die-with-parent.mjs)
  const child = spawn(process.execPath, ['--import', 'tsx', '--import', dieWithParent, script], {
    cwd: root, env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'],
  });
  let out = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  child.stdin!.on('error', () => {}); // EPIPE once it exited
  const exited = new Promise<void>((resolve) => child.on('exit', (code, signal) => {
    exit = { code, signal };
    running.delete(child);
    resolve();
  }));
  let stopping: Promise<void> | undefined;
  const stop = () => stopping ??= (async () => {
    if (exit) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  })();
  if (child.pid === undefined) throw new Error(`${script} could not be started`);
  running.set(child, stop);
  if (filesEnd) void stop(); // started after the file's afterAll: it would be held by nobody
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${script} did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const check = () => {
      const m = ready.exec(out);
      if (m) { clearTimeout(timer); resolve(m); }
    };
    child.stdout!.on('data', check);
    void exited.then(() => { clearTimeout(timer); reject(new Error(`${script} exited before it was ready (${JSON.stringify(exit)}):\n${out}`)); });
  }).catch(async (err: Error) => { await stop(); throw err; });
  const announced = Number(/ running \((?:role \S+, )?pid (\d+)/.exec(out)?.[1]);
  if (announced !== child.pid) {
    await stop();
    throw new Error(`${script} announced pid ${announced}, but the process started is ${child.pid}: signals would miss it`);
  }
  return { pid: child.pid, child, ready: match, output: () => out, exited: () => exit, stop };
}

/** Starts `src/main.ts` (what `npm start` runs after setup) on a free port; resolves once it serves. */
export async function startPotentiaProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<PotentiaProcess> {
  const p = await startScriptProcess('src/main.ts', { HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', ...env },
    /health\s+(http:\/\/[\d.]+:\d+)\/health/, timeoutMs);
  return { ...p, url: p.ready[1]! };
}

/** Starts `scripts/worker.ts` (`npm run worker`); resolves once it runs. `ready[1]` is its worker id. */
export function startWorkerProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<ScriptProcess> {
  return startScriptProcess('scripts/worker.ts', env, /potentia worker (\S+) running \(pid \d+/, timeoutMs);
}

/** Local TCP ports of the connections `pid` holds to the database port. */
export function databaseClientPorts(pid: number, dbPort = 5432): number[] {
  return processTcpSockets(pid).filter((s) => s.remotePort === dbPort).map((s) => s.localPort);
}

/**
 * Terminates the backends serving `pid` whose application_name is one of `applicationNames`
 * (e.g. 'potentia-realtime-bus' for the replication stream, 'potentia-server' for the pool), on
 * `admin`'s database only (its walsender is on the database it decodes); returns how many were terminated.
 */
export async function terminateBackends(admin: Sql, pid: number, applicationNames: string[]): Promise<number> {
  const ports = databaseClientPorts(pid);
  if (ports.length === 0) return 0;
  const rows = await admin`
    select pg_terminate_backend(pid) as done from pg_stat_activity
    where datname = current_database() and application_name = any(${applicationNames}) and client_port = any(${ports})
      and pid <> pg_backend_pid()`;
  return rows.filter((r) => r.done).length;
}
