import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import type { Sql } from 'postgres';

/**
 * Fault injection against real Potentia processes: start `npm start`'s entry point as separate
 * Node processes (the way production runs several gateways), find the database connections each
 * one holds (by application name and the client port the process owns), and terminate them with
 * pg_terminate_backend — what a managed Postgres does on restart, failover or idle reaping.
 */
const root = new URL('../..', import.meta.url).pathname;

export type PotentiaProcess = {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Everything the process printed (stdout + stderr). */
  output(): string;
  /** Exit code/signal once it exited, else null. */
  exited(): { code: number | null; signal: NodeJS.Signals | null } | null;
  stop(): Promise<void>;
};

/** Starts `src/main.ts` (what `npm start` runs after setup) on a free port; resolves once it serves. */
export async function startPotentiaProcess(env: Record<string, string>, timeoutMs = 60_000): Promise<PotentiaProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: root,
    env: { ...process.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const exited = new Promise<void>((resolve) => child.on('exit', (code, signal) => { exit = { code, signal }; resolve(); }));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`process did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs);
    const check = () => {
      const m = /health\s+(http:\/\/[\d.]+:\d+)\/health/.exec(out);
      if (m) { clearTimeout(timer); resolve(m[1]!); }
    };
    child.stdout!.on('data', check);
    void exited.then(() => { clearTimeout(timer); reject(new Error(`process exited before serving (${JSON.stringify(exit)}):\n${out}`)); });
  });
  return {
    url,
    pid: child.pid!,
    child,
    output: () => out,
    exited: () => exit,
    async stop() {
      if (exit) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/**
 * Local TCP ports of the connections `pid` holds to the database port (from /proc: the process's
 * socket inodes matched against /proc/net/tcp{,6}). Linux only, like the machines tests run on.
 */
export function databaseClientPorts(pid: number, dbPort = 5432): number[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch { /* fd closed meanwhile */ }
  }
  const ports: number[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = readFileSync(table, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const local = parseInt(f[1]!.split(':')[1]!, 16);
      const remote = parseInt(f[2]!.split(':')[1]!, 16);
      if (remote === dbPort && inodes.has(f[9]!)) ports.push(local);
    }
  }
  return ports;
}

/**
 * Terminates the backends serving `pid` whose application_name is one of `applicationNames`
 * (e.g. 'potentia-realtime-bus' for the replication stream, 'potentia-server' for the pool);
 * returns how many were terminated.
 */
export async function terminateBackends(admin: Sql, pid: number, applicationNames: string[]): Promise<number> {
  const ports = databaseClientPorts(pid);
  if (ports.length === 0) return 0;
  const rows = await admin`
    select pg_terminate_backend(pid) as done from pg_stat_activity
    where application_name = any(${applicationNames}) and client_port = any(${ports}) and pid <> pg_backend_pid()`;
  return rows.filter((r) => r.done).length;
}
