// A private PostgreSQL cluster: initdb in a temporary directory, its own port, a server this
// process starts, stops, and crashes. For what the shared server cannot be used for: counting a
// server's instructions (callgrind-cluster.ts) and crashing the server under a running Potentia
// (tests/integration/postgres-crash.test.ts).
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `command` as the postgres user when this process is root (initdb and the server refuse root). */
export function asServerUser(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

/** The directory of the PostgreSQL server binaries (initdb, postgres, pg_ctl): `pg_config --bindir`, else Debian's for 15. */
export function serverBindir(): string {
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    return '/usr/lib/postgresql/15/bin';
  }
}

export type PrivateClusterOptions = {
  /** Extra postgresql.conf lines (e.g. `autovacuum = off`). */
  settings?: string[];
  /** pg_hba.conf's lines in place of initdb's (trust for everyone), e.g. scram-sha-256 for a role. */
  hba?: string[];
};

export class PrivateCluster {
  private server: ChildProcess | null = null;
  private stderr = '';
  protected readonly data: string;

  protected constructor(protected readonly dir: string, protected readonly bindir: string, readonly port: number) {
    this.data = join(dir, 'data');
  }

  /**
   * initdb a cluster under a new temporary directory with the binaries of `bindir`, listening on
   * 127.0.0.1:`port` with trust authentication and `wal_level = logical`, as production has it
   * (the realtime gateway reads the WAL).
   */
  static create(bindir: string, port: number, options: PrivateClusterOptions = {}): PrivateCluster {
    const cluster = new PrivateCluster(PrivateCluster.makeDir(), bindir, port);
    cluster.init(options);
    return cluster;
  }

  protected static makeDir(): string {
    const dir = mkdtempSync(join(tmpdir(), 'potentia-cluster-'));
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      chownSync(dir, uid, gid);
    }
    return dir;
  }

  protected init(options: PrivateClusterOptions): void {
    execFileSync(...asServerUser(join(this.bindir, 'initdb'), ['-D', this.data, '-A', 'trust', '-U', 'postgres', '--no-sync']),
      { stdio: ['ignore', 'ignore', 'inherit'] });
    writeFileSync(join(this.data, 'postgresql.auto.conf'), [
      `port = ${this.port}`, `listen_addresses = '127.0.0.1'`, `unix_socket_directories = '${this.dir}'`,
      'wal_level = logical', 'max_replication_slots = 8', 'max_wal_senders = 8', ...(options.settings ?? []), '',
    ].join('\n'));
    if (options.hba) writeFileSync(join(this.data, 'pg_hba.conf'), [...options.hba, ''].join('\n'));
  }

  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** The server's command line; a subclass may wrap it (valgrind). */
  protected serverCommand(): [string, string[]] {
    return asServerUser(join(this.bindir, 'postgres'), ['-D', this.data]);
  }

  /** Starts the server (after a crash, its recovery runs first) and waits until it accepts connections. */
  async start(): Promise<void> {
    const [command, args] = this.serverCommand();
    const server = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.server = server;
    this.stderr = '';
    server.stderr!.on('data', (chunk: Buffer) => { this.stderr = (this.stderr + chunk.toString()).slice(-4000); });
    for (let waited = 0; ; waited += 250) {
      try {
        execFileSync(join(this.bindir, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(this.port)]);
        return;
      } catch {
        if (server.exitCode !== null || waited > 120_000) throw new Error(`the private cluster did not start:\n${this.stderr}`);
        await sleep(250);
      }
    }
  }

  /** What the server printed last (up to 4,000 characters). */
  log(): string {
    return this.stderr;
  }

  /**
   * Stops the server in `mode` and waits for it to exit. `immediate` is a crash as far as the data
   * is concerned: no checkpoint, every backend killed, and the next start runs crash recovery
   * (which, among other things, empties every UNLOGGED table). `fast` waits for every walsender
   * to be confirmed what it sent (a replication client that never confirms it holds the shutdown):
   * it fails after `timeoutSeconds` (pg_ctl's default, 60). pg_ctl runs without blocking this
   * process, so its own clients keep being served meanwhile.
   */
  async stop(mode: 'fast' | 'immediate' = 'fast', timeoutSeconds = 60): Promise<void> {
    const server = this.server;
    if (!server || server.exitCode !== null) return;
    const exited = new Promise((resolve) => server.once('exit', resolve));
    const [command, args] = asServerUser(join(this.bindir, 'pg_ctl'), ['-D', this.data, '-m', mode, '-w', '-t', String(timeoutSeconds), 'stop']);
    await promisify(execFile)(command, args);
    await exited;
    this.server = null;
  }

  /** Stops the server and removes the cluster's directory. */
  async destroy(): Promise<void> {
    try {
      // a server whose fast shutdown is held (see stop) is killed: the directory goes either way
      await this.stop().catch(() => this.stop('immediate'));
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}
