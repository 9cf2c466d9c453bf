// A private PostgreSQL cluster for counting instructions: initdb in a temporary directory, its own
// port, and a server that can run under valgrind's callgrind, which writes one profile per backend
// when it exits. The instructions a backend executes for the same code and data repeat to within
// about 1 % from run to run (random ids and a growing log are the rest), where time on a shared VM
// drifts by 10-20 % within minutes: a change of 2 % to the mutation RPC is readable here and not
// in transactions per second. What it does not count: waits (locks, the WAL flush), cache misses,
// and the client's and the kernel's share.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runPgbench } from './bench.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** `command` as the postgres user when this process is root (initdb and the server refuse root). */
function asServerUser(command: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', 'postgres', '--', command, ...args]] : [command, args];
}

export class CallgrindCluster {
  private server: ChildProcess | null = null;
  private readonly data: string;
  private readonly profiles: string;

  private constructor(private readonly dir: string, private readonly bindir: string, readonly port: number) {
    this.data = join(dir, 'data');
    this.profiles = join(dir, 'profiles');
  }

  /**
   * initdb a cluster under a new temporary directory with the binaries of `bindir` (e.g.
   * /usr/lib/postgresql/15/bin), listening on 127.0.0.1:`port` with trust authentication.
   * Autovacuum is off so that nothing changes the tables between two measured runs but the runs.
   */
  static create(bindir: string, port: number): CallgrindCluster {
    for (const tool of ['valgrind', 'callgrind_annotate']) {
      try {
        execFileSync('which', [tool], { stdio: 'ignore' });
      } catch {
        throw new Error(`${tool} not found: install valgrind (Debian: apt-get install valgrind) to count instructions`);
      }
    }
    const dir = mkdtempSync(join(tmpdir(), 'potentia-callgrind-'));
    const cluster = new CallgrindCluster(dir, bindir, port);
    if (process.getuid?.() === 0) {
      const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      chownSync(dir, uid, gid);
    }
    execFileSync(...asServerUser(join(bindir, 'initdb'), ['-D', cluster.data, '-A', 'trust', '-U', 'postgres', '--no-sync']),
      { stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync(...asServerUser('mkdir', [cluster.profiles]));
    writeFileSync(join(cluster.data, 'postgresql.auto.conf'), [
      `port = ${port}`, `listen_addresses = '127.0.0.1'`, `unix_socket_directories = '${dir}'`,
      // as production has it (the realtime gateway reads the WAL)
      'wal_level = logical', 'max_replication_slots = 8', 'max_wal_senders = 8',
      'autovacuum = off', 'fsync = off', '',
    ].join('\n'));
    return cluster;
  }

  /** postgres://postgres@127.0.0.1:<port>/<database> */
  url(database: string): string {
    return `postgres://postgres@127.0.0.1:${this.port}/${database}`;
  }

  /** Starts the server, under callgrind when `callgrind` (about 50 times slower), and waits until it accepts connections. */
  async start(callgrind: boolean): Promise<void> {
    const postgresArgs = [join(this.bindir, 'postgres'), '-D', this.data];
    const [command, args] = callgrind
      ? asServerUser('valgrind', ['--tool=callgrind', `--callgrind-out-file=${this.profiles}/callgrind.%p`, ...postgresArgs])
      : asServerUser(postgresArgs[0]!, postgresArgs.slice(1));
    this.server = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    this.server.stderr!.on('data', (chunk: Buffer) => { stderr = (stderr + chunk.toString()).slice(-4000); });
    for (let waited = 0; ; waited += 250) {
      try {
        execFileSync(join(this.bindir, 'pg_isready'), ['-q', '-h', '127.0.0.1', '-p', String(this.port)]);
        return;
      } catch {
        if (this.server.exitCode !== null || waited > 120_000) throw new Error(`the private cluster did not start:\n${stderr}`);
        await sleep(250);
      }
    }
  }

  /** Stops the server (fast shutdown) and waits for it to exit. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server || server.exitCode !== null) return;
    const exited = new Promise((resolve) => server.once('exit', resolve));
    execFileSync(...asServerUser(join(this.bindir, 'pg_ctl'), ['-D', this.data, '-m', 'fast', '-w', 'stop']), { stdio: 'ignore' });
    await exited;
    this.server = null;
  }

  /** Stops the server and removes the cluster's directory. */
  async destroy(): Promise<void> {
    try {
      await this.stop();
    } finally {
      rmSync(this.dir, { recursive: true, force: true });
    }
  }

  /**
   * Instructions per transaction of pgbench script `file` on `database` (server under callgrind):
   * one client runs it `transactions[0]` times, then, on a new connection, `transactions[1]`
   * times, and the difference of the two backends' totals over the difference of the counts is
   * the answer (connection start and each function's first compilation cancel out). With
   * `keepAs`, each backend's profile is copied to `<keepAs>-<transactions>.callgrind`.
   */
  async instructionsPerTransaction(pgbench: string, o: { database: string; file: string; defines: Record<string, number>;
    transactions: [number, number]; pgOptions?: string; keepAs?: string }): Promise<number> {
    const totals: number[] = [];
    for (const n of o.transactions) {
      const before = new Set(readdirSync(this.profiles));
      const { failed } = await runPgbench(pgbench, { url: this.url(o.database), file: o.file, transactions: n, clients: 1,
        defines: o.defines, pgOptions: o.pgOptions });
      if (failed > 0) throw new Error(`pgbench ${o.file} on ${o.database}: ${failed} failed transactions`);
      const { instructions, file } = await this.backendProfile(before);
      totals.push(instructions);
      if (o.keepAs) copyFileSync(join(this.profiles, file), `${o.keepAs}-${n}.callgrind`);
    }
    return (totals[1]! - totals[0]!) / (o.transactions[1] - o.transactions[0]);
  }

  /**
   * The instructions of the largest profile written since `before`: the pgbench backend's (pgbench's
   * own first connection, which checks the server, writes a small one too). A profile is written
   * when its backend exits; this waits until every new one is complete and none has appeared for
   * two seconds.
   */
  private async backendProfile(before: Set<string>): Promise<{ instructions: number; file: string }> {
    let seen = '';
    let stableSince = Date.now();
    for (const started = Date.now(); Date.now() - started < 60_000; await sleep(200)) {
      const files = readdirSync(this.profiles).filter((f) => !before.has(f)).sort();
      const totals = files.map((f) => {
        const text = existsSync(join(this.profiles, f)) ? readFileSync(join(this.profiles, f), 'utf8') : '';
        // complete once its last line (totals) is written
        return /^totals: \d+$/m.test(text) ? Number(/^summary: (\d+)$/m.exec(text)?.[1] ?? 0) : 0;
      });
      const key = totals.join(',');
      if (key !== seen) {
        seen = key;
        stableSince = Date.now();
      } else if (totals.length > 0 && !totals.includes(0) && Date.now() - stableSince >= 2000) {
        const best = Math.max(...totals);
        return { instructions: best, file: files[totals.indexOf(best)]! };
      }
    }
    throw new Error('no complete callgrind profile from the pgbench backend within 60 s');
  }
}
