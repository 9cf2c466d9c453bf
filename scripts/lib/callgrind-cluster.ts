// A private PostgreSQL cluster (private-cluster.ts) for counting instructions: its own
// server can run under valgrind's callgrind, which writes one profile per backend
// when it exits. The instructions a backend executes for the same code and data repeat to within
// about 1 % from run to run (random ids and a growing log are the rest), where time on a shared VM
// drifts by 10-20 % within minutes: a change of 2 % to the mutation RPC is readable here and not
// in transactions per second. What it does not count: waits (locks, the WAL flush), cache misses,
// and the client's and the kernel's share.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { runPgbench } from './bench.ts';
import { asServerUser, PrivateCluster } from './private-cluster.ts';

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class CallgrindCluster extends PrivateCluster {
  private readonly profiles = join(this.dir, 'profiles');
  private callgrind = false;

  /**
   * initdb a cluster under a new temporary directory with the binaries of `bindir` (e.g.
   * /usr/lib/postgresql/15/bin), listening on 127.0.0.1:`port` with trust authentication.
   * Autovacuum is off so that nothing changes the tables between two measured runs but the runs.
   */
  static override create(bindir: string, port: number): CallgrindCluster {
    for (const tool of ['valgrind', 'callgrind_annotate']) {
      try {
        execFileSync('which', [tool], { stdio: 'ignore' });
      } catch {
        throw new Error(`${tool} not found: install valgrind (Debian: apt-get install valgrind) to count instructions`);
      }
    }
    const cluster = new CallgrindCluster(PrivateCluster.makeDir(), bindir, port);
    cluster.init({ settings: ['autovacuum = off', 'fsync = off'] });
    execFileSync(...asServerUser('mkdir', [cluster.profiles]));
    return cluster;
  }

  /** Starts the server, under callgrind when `callgrind` (about 50 times slower), and waits until it accepts connections. */
  override async start(callgrind = false): Promise<void> {
    this.callgrind = callgrind;
    await super.start();
  }

  protected override serverCommand(): [string, string[]] {
    if (!this.callgrind) return super.serverCommand();
    const postgresArgs = [join(this.bindir, 'postgres'), '-D', this.data];
    return asServerUser('valgrind', ['--tool=callgrind', `--callgrind-out-file=${this.profiles}/callgrind.%p`, ...postgresArgs]);
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
