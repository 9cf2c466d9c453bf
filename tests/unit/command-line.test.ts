import { execFile } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { readdirSync, readFileSync, statSync, utimesSync } from 'node:fs';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// Every script under scripts/ reads its command line through scripts/lib/command-line.ts: --help
// prints the usage and exits 0, a mistyped option names itself and the usage and exits 2. Before,
// `npm run db:migrate -- --databse-url …` or `npm run bench:compare -- --help` ended in a stack trace.

const repoRoot = new URL('../..', import.meta.url).pathname;
const run = promisify(execFile);
/** For a case that starts several Node processes one after another: each takes seconds on a loaded machine. */
const SPAWNS_TIMEOUT = 120_000;

async function script(file: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('node_modules/.bin/tsx', [file, ...args], { cwd: repoRoot });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('scripts: the command line', () => {
  it('no script calls parseArgs itself', () => {
    const scripts = readdirSync(`${repoRoot}/scripts`).filter((f) => f.endsWith('.ts'));
    const direct = scripts.filter((f) => /\bparseArgs\(/.test(readFileSync(`${repoRoot}/scripts/${f}`, 'utf8')));
    expect(direct).toEqual([]);
  });

  it('every script reads its command line through it, whatever options it has (none included)', () => {
    // bench-join-flood and build-demo read process.argv themselves and worker not at all: --help
    // ran the benchmark (or started the worker), and --socket 50 or --quite was silently ignored
    const scripts = readdirSync(`${repoRoot}/scripts`).filter((f) => f.endsWith('.ts'));
    expect(scripts.filter((f) => !/\bparseCommandLine\(/.test(readFileSync(`${repoRoot}/scripts/${f}`, 'utf8')))).toEqual([]);
  });

  it('the scratch database of every benchmark is on the server of DATABASE_URL (README, Other commands): none names a server of its own', () => {
    // bench:wal's default was postgres://postgres@127.0.0.1:5432/potentia_bench_wal, whatever
    // DATABASE_URL said: with the dev database on another server (or port, or password) it dropped,
    // made and loaded a database on the local one, or failed to reach it
    const scripts = readdirSync(`${repoRoot}/scripts`).filter((f) => /^bench.*\.ts$/.test(f));
    expect(scripts.filter((f) => /['"`]postgres(ql)?:\/\//.test(readFileSync(`${repoRoot}/scripts/${f}`, 'utf8')))).toEqual([]);
  });

  it('a script without options, or with hand-read ones before, answers --help and a mistyped option', async () => {
    const worker = await script('scripts/worker.ts', '--help');
    expect(worker.code).toBe(0);
    expect(worker.stdout).toMatch(/^usage: npm run worker/);
    const flood = await script('scripts/bench-join-flood.ts', '--socket', '50');
    expect(flood.code).toBe(2);
    expect(flood.stderr).toContain("Unknown option '--socket'");
    expect((await script('scripts/build-demo.ts', '--quite')).stderr).toContain("Unknown option '--quite'");
  }, SPAWNS_TIMEOUT);

  it('a mistyped option is named with the usage, exit 2, no stack trace', async () => {
    const r = await script('scripts/migrate.ts', '--databse-url', 'postgres://nowhere/x');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("Unknown option '--databse-url'");
    expect(r.stderr).toContain('usage: npm run db:migrate [-- [--database-url URL] [--strict] [--lock-wait SECONDS] [--accept-drift] [--quiet] | --check]');
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('an option given blank (an unset shell variable) is named, exit 2, no stack trace, nothing done', async () => {
    // `npm run db:migrate -- --database-url "$OWNER_URL"` (docs/self-hosting.md) with OWNER_URL
    // unset ended in TypeError: Invalid URL and a stack trace
    const r = await script('scripts/migrate.ts', '--strict', '--database-url', '');
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^--database-url is empty \(an unset shell variable\?\): give it a value, or leave the option out\nusage: npm run db:migrate /);
    expect(r.stderr).not.toMatch(/^\s+at /m);
  });

  it('a blank option is refused the same way in every command line: npm run serve\'s --role too', async () => {
    // `npm run serve -- --role="$ROLE"` with ROLE unset printed `unknown role : expected one of …`,
    // as if '' were a role mistyped, where every script's options say what happened
    for (const args of [['--role='], ['--role', ''], ['--role', ' ']]) {
      const r = await script('src/main.ts', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toMatch(/^--role is empty \(an unset shell variable\?\): give it a value, or leave the option out\nusage: npm run serve -- \[--role /);
    }
    // and a script's option given blank with =, as with a space
    const migrate = await script('scripts/migrate.ts', '--database-url=');
    expect(migrate.code).toBe(2);
    expect(migrate.stderr).toMatch(/^--database-url is empty \(an unset shell variable\?\): give it a value, or leave the option out\nusage: npm run db:migrate /);
  }, SPAWNS_TIMEOUT);

  it('a --database-url that is not a postgres:// URL is refused naming it, exit 2, no stack trace, as DATABASE_URL is', async () => {
    // a database name where the URL goes (DATABASE_URL=potentia is refused so): it ended in
    // TypeError: Invalid URL and a stack trace
    for (const file of ['scripts/migrate.ts', 'scripts/token.ts']) {
      const name = await script(file, '--database-url', 'potentia');
      expect(name.code, file).toBe(2);
      expect(name.stderr, file).toMatch(/^--database-url: expected a postgres:\/\/ URL, e.g. postgres:\/\/user:password@host:5432\/database \(got "potentia"\)\n/);
      expect(name.stderr, file).not.toMatch(/^\s+at /m);
    }
  }, SPAWNS_TIMEOUT);

  it('a numeric option parses as env numbers do (decimal digits only): 0x10, 1e3 and Infinity are refused naming the option, the form and what was given', async () => {
    // `--lock-wait 0x10` waited 16 s and `--lock-wait Infinity` for ever (Number() reads both); env
    // numbers refuse them since src/env-values.ts's envInteger, and options now go through it
    for (const given of ['0x10', 'Infinity', '1e3', '-1', '']) {
      const r = await script('scripts/migrate.ts', `--lock-wait=${given}`, '--database-url', 'postgres://postgres@127.0.0.1:1/nowhere');
      expect(r.code, given).toBe(2);
      expect(r.stderr, given).toMatch(given === ''
        ? /^--lock-wait is empty \(an unset shell variable\?\)/
        : new RegExp(`^--lock-wait: expected a number of at least 0 \\(got ${JSON.stringify(given)}\\)\nusage: npm run db:migrate `));
      expect(r.stderr, given).not.toMatch(/^\s+at /m);
    }
    const list = await script('scripts/bench-wal.ts', '--slots', '1,0x2');
    expect(list.code).toBe(2);
    expect(list.stderr).toMatch(/^--slots: expected a whole number of at least 1, each of a comma-separated list \(got "1,0x2"\)\nusage: /);
    const ttl = await script('scripts/token.ts', '--ttl', '1e3');
    expect(ttl.code).toBe(2);
    expect(ttl.stderr).toMatch(/^--ttl: expected a whole number of at least 1 \(got "1e3"\)/);
  }, SPAWNS_TIMEOUT);

  it('npm run serve -- --port N (or --host, --database-url) says to set it in the environment, and --help names them', async () => {
    // a newcomer splitting roles on one machine (docs/self-hosting.md) tried --port, as the systemd
    // instance names suggest, and got `unknown argument --port` and a usage naming --role alone
    for (const [args, env] of [[['--role', 'api', '--port', '8000'], 'PORT'], [['--port=8000'], 'PORT'], [['--host', '0.0.0.0'], 'HOST'], [['--database-url', 'postgres://x'], 'DATABASE_URL']] as const) {
      const r = await script('src/main.ts', ...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr, args.join(' ')).toContain(`${args.find((a) => a.startsWith('--') && a !== '--role')!.split('=')[0]} is not an option of npm run serve: set ${env} in the environment`);
    }
    const help = await script('src/main.ts', '--help');
    expect(help.stdout).toContain('PORT=8000 npm run serve -- --role api');
  }, SPAWNS_TIMEOUT);

  it('no script reads a number from its command line by itself (Number(), parseInt, parseFloat): each goes through command-line.ts', () => {
    const scripts = readdirSync(`${repoRoot}/scripts`).filter((f) => f.endsWith('.ts'));
    const own = scripts.filter((f) => /\b(?:Number|parseInt|parseFloat)\((?:values|args|opt)\b|\.map\(Number\)|Number\.parse(?:Int|Float)\(/.test(readFileSync(`${repoRoot}/scripts/${f}`, 'utf8')));
    expect(own).toEqual([]);
  });

  it('--help prints the usage and exits 0, with the script\'s own usage where it has one', async () => {
    const compare = await script('scripts/bench-compare.ts', '--help');
    expect(compare.code).toBe(0);
    expect(compare.stdout).toMatch(/^usage: npm run bench:compare -- --base <commit>/);
    const serve = await script('src/main.ts', '--help'); // npm run serve / npm start: its own role reader, the same answer
    expect(serve.code).toBe(0);
    expect(serve.stdout).toContain('usage: npm run serve -- [--role all|api|gateway|worker]');
    const migration = await script('scripts/db-migration.ts', '--help'); // it printed [--check] only, not the <name> it is for
    expect(migration.code).toBe(0);
    expect(migration.stdout).toMatch(/^usage: npm run db:migration -- <name>/);
    // smoke-deploy's --help printed the generic [--url URL] [--anon-key ANON_KEY] … [--help], its
    // refusal the real usage (on stdout); now both the real one, the refusal on stderr
    const smoke = await script('scripts/smoke-deploy.ts', '--help');
    expect(smoke.code).toBe(0);
    expect(smoke.stdout).toMatch(/^usage: npx tsx scripts\/smoke-deploy.ts --url BASE_URL --anon-key KEY/);
    const smokeBare = await script('scripts/smoke-deploy.ts');
    expect(smokeBare.code).toBe(2);
    expect(smokeBare.stderr).toMatch(/^usage: npx tsx scripts\/smoke-deploy.ts --url BASE_URL --anon-key KEY/);
    // db:migrate's was the generic one: nothing on what --strict (the deploy steps' option) does, or which URL it takes
    const migrate = await script('scripts/migrate.ts', '--help');
    expect(migrate.code).toBe(0);
    expect(migrate.stdout).toMatch(/^usage: npm run db:migrate /);
    expect(migrate.stdout).toMatch(/--database-url URL +the database \(default: DIRECT_DATABASE_URL, else DATABASE_URL\)/);
    expect(migrate.stdout).toMatch(/--strict +deploys and CI: refuse/);
    // db-push's was the generic one, and nothing said a pgTAP file needs 000_helpers run before it on
    // the pushed database (alone it fails `schema "tests" does not exist`); the README's command is this one
    const push = await script('scripts/db-push.ts', '--help');
    expect(push.code).toBe(0);
    const pgtap = 'pg_prove --dbname URL supabase/tests/000_helpers.test.sql supabase/tests/<file>.test.sql';
    expect(push.stdout).toMatch(/^usage: npx tsx scripts\/db-push.ts --database-url URL \[--seed\]\n/);
    expect(push.stdout).toContain(`one file: ${pgtap}`);
    expect(readFileSync(`${repoRoot}/README.md`, 'utf8')).toContain('pg_prove --dbname "$TAP" supabase/tests/000_helpers.test.sql supabase/tests/');
    // a script without a usage of its own printed only its option names: bench:rank's said neither its
    // defaults nor that it drops and recreates its database; its header comment, which says both, is its help
    const rank = await script('scripts/bench-rank.ts', '--help');
    expect(rank.code).toBe(0);
    expect(rank.stdout).toMatch(/^usage: npx tsx scripts\/bench-rank.ts \[--inserts INSERTS\] \[--blocks BLOCKS\] \[--database-url DATABASE_URL\]\n/);
    expect(rank.stdout).toContain('\nnpx tsx scripts/bench-rank.ts [--inserts 1000] [--blocks 100] [--database-url URL]\n');
    expect(rank.stdout).toContain('(default potentia_bench_rank on the server of DATABASE_URL: dropped, created and migrated here)');
    const keys = await script('scripts/api-keys.ts', '-h');
    expect(keys.code).toBe(0);
    expect(keys.stdout).toContain('usage: JWT_SECRET=... npx tsx scripts/api-keys.ts [--years N]');
    // without JWT_SECRET (the shipped env file's is empty; locally none is set) it said only
    // "must be set": neither how to make one nor that npm start prints the local server's keys
    const unset = await run('node_modules/.bin/tsx', ['scripts/api-keys.ts'], { cwd: repoRoot, env: { ...process.env, JWT_SECRET: '' } })
      .then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
    expect(unset.code).toBe(2);
    expect(unset.stderr).toContain('JWT_SECRET: must be set');
    expect(unset.stderr).toContain('openssl rand -base64 48');
    expect(unset.stderr).toContain('npm start prints');
  }, SPAWNS_TIMEOUT);

  it('a bad environment is named, exit 2, no stack trace, in every script that reads it (as the server roles do)', async () => {
    // npm run db:migrate with the shipped potentia.env (JWT_SECRET empty, NODE_ENV=production), as
    // self-hosting.md's install steps run it, ended in a stack trace with exit 1
    const env = { ...process.env, NODE_ENV: 'production', JWT_SECRET: '' };
    for (const file of ['scripts/migrate.ts', 'scripts/worker.ts', 'scripts/codegen.ts']) {
      const r = await run('node_modules/.bin/tsx', [file], { cwd: repoRoot, env }).then(() => ({ code: 0, stderr: '' }), (e: { code: number; stderr: string }) => e);
      expect(r.code, file).toBe(2);
      expect(r.stderr, file).toContain('invalid environment: JWT_SECRET: must be set in production (it is empty)');
      expect(r.stderr, file).not.toMatch(/^\s+at /m);
    }
  }, SPAWNS_TIMEOUT);

  it('npm run upgrade:v1 that fails before writing says nothing was written, and names a missing SQLite file by where it looked', async () => {
    // docs/upgrade-v1.md: a missing --from file said only "unable to open database file", and every
    // failure, a dry run's included, ended "the one in flight was rolled back"; npm run starts the
    // script in the repository root, so a relative path is looked for there, not in the reader's directory
    const to = 'postgres://postgres@127.0.0.1:1/h_none';
    const missing = await script('scripts/upgrade-v1.ts', '--from', 'no-such-v1.sqlite', '--to', to);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`--from no-such-v1.sqlite: no such file (looked for ${repoRoot}no-such-v1.sqlite: npm run starts in the repository root, so give an absolute path)`);
    expect(missing.stderr).toContain('Nothing was written: fix the cause, then run the same command again.');
    expect(missing.stderr).not.toContain('in flight');
    expect(missing.stderr).not.toMatch(/^\s+at /m);
    const unreachable = await script('scripts/upgrade-v1.ts', '--from', `${repoRoot}package.json`, '--to', to, '--dry-run');
    expect(unreachable.code).toBe(2);
    expect(unreachable.stderr).toContain('Nothing was written');
    expect(unreachable.stderr).not.toContain('in flight');
  }, SPAWNS_TIMEOUT);

  it('npm run worker that cannot start says what to do, exit 1, no stack trace, as npm run serve -- --role worker does', async () => {
    // it ended in an uncaught PostgresError (schema "internal" does not exist) on a database never
    // migrated, in an uncaught ECONNREFUSED with no server, and in an uncaught EADDRINUSE, with its
    // worker already running, on a WORKER_METRICS_PORT in use
    const worker = (env: Record<string, string>) => run('node_modules/.bin/tsx', ['scripts/worker.ts'], { cwd: repoRoot, timeout: 60_000, env: { ...process.env, ...env } })
      .then((r) => ({ code: 0, ...r }), (e: { code: number; stdout: string; stderr: string }) => e);
    const down = await worker({ DATABASE_URL: 'postgres://postgres:postgres@127.0.0.1:1/potentia' });
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('the database server does not answer (DATABASE_URL=postgres://postgres:***@127.0.0.1:1/potentia): start PostgreSQL');
    expect(down.stderr).not.toMatch(/^\s+at /m);
    // a database that answers without Potentia's schema: the server's maintenance database
    const blank = new URL(process.env.TEST_DATABASE_URL ?? 'postgres://postgres:postgres@127.0.0.1:5432/potentia_test');
    blank.pathname = '/postgres';
    const unmigrated = await worker({ DATABASE_URL: blank.toString() });
    expect(unmigrated.code).toBe(1);
    expect(unmigrated.stderr).toMatch(/the database is not migrated \(DATABASE_URL=.*\): run npm run db:migrate/);
    expect(unmigrated.stderr).not.toMatch(/^\s+at /m);
    const holder = createServer();
    await new Promise<void>((resolve) => holder.listen(0, '127.0.0.1', resolve));
    try {
      const port = (holder.address() as AddressInfo).port;
      // the port first: refused before the database is asked anything
      const taken = await worker({ DATABASE_URL: 'postgres://postgres:postgres@127.0.0.1:1/potentia', HOST: '127.0.0.1', WORKER_METRICS_PORT: String(port) });
      expect(taken.code).toBe(1);
      expect(taken.stderr).toContain(`WORKER_METRICS_PORT ${port} on 127.0.0.1 is in use: stop that process or set WORKER_METRICS_PORT to a free port`);
      expect(taken.stderr).not.toMatch(/^\s+at /m);
    } finally {
      holder.close();
    }
  }, SPAWNS_TIMEOUT);

  it('the bash npm scripts (npm start, npm test, setup, bench:bus) answer --help and refuse what they do not take, before doing anything', async () => {
    // they read no arguments before: `npm start -- --help` set up the machine, migrated and seeded
    // the dev database and started the server; `npm test -- tests/unit/x.test.ts` ran the whole
    // suite; `npm run bench:bus -- --help` dropped and re-created a database and ran pgbench -T --help
    const pkg = JSON.parse(readFileSync(`${repoRoot}/package.json`, 'utf8')) as { scripts: Record<string, string> };
    const bash = Object.entries(pkg.scripts).filter(([, command]) => /^(exec )?bash /.test(command));
    expect(bash.map(([name]) => name).sort()).toEqual(['bench:bus', 'setup', 'start', 'test']);
    for (const [name, command] of bash) {
      const file = command.replace(/^(exec )?bash /, '');
      const help = await bashScript(file, '--help');
      expect(help.code, name).toBe(0);
      expect(help.stdout, name).toMatch(/^usage: npm (start|test|run setup|run bench:bus)/);
      const wrong = await bashScript(file, '--quite');
      expect(wrong.code, name).toBe(2);
      expect(wrong.stderr, name).toMatch(/'--quite'/);
      expect(wrong.stdout, name).toBe(''); // nothing ran: no setup step printed
    }
  });
  it('bench:bus takes its scratch database from BENCH_BUS_DATABASE, refusing a name without "bench" before doing anything', async () => {
    // its database was always potentia_bench_bus (dropped and made again): two people, or a checkout
    // and CI, on one server could not run it apart, and nobody could keep their databases to names
    // of their own. The server here is a closed port: had the name been taken, nothing would connect.
    const env = { ...process.env, DATABASE_URL: 'postgres://postgres:postgres@127.0.0.1:1/potentia', BENCH_BUS_DATABASE: 'my_dev' };
    const refused = await run('bash', ['scripts/bench-bus'], { cwd: repoRoot, timeout: 20_000, env })
      .then(() => ({ code: 0, stdout: '', stderr: '' }), (e: { code: number; stdout: string; stderr: string }) => e);
    expect(refused.code).toBe(2);
    expect(refused.stdout).toBe('');
    expect(refused.stderr).toContain('BENCH_BUS_DATABASE: refusing to drop and recreate "my_dev": the bench database name must contain "bench"');
    const help = await run('bash', ['scripts/bench-bus', '--help'], { cwd: repoRoot, timeout: 20_000 });
    expect(help.stdout).toContain('BENCH_BUS_DATABASE');
  });
  it('scripts/pgbouncer (README, Connection pooling) answers --help, and a command it lacks, like the npm scripts', async () => {
    // `scripts/pgbouncer --help` answered `pgbouncer: usage: …` on stderr with exit 1, as a failure
    const help = await bashScript('scripts/pgbouncer', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: scripts\/pgbouncer start\|stop\|status\|url\n {2}start /);
    const wrong = await bashScript('scripts/pgbouncer', 'strat');
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toMatch(/^Unknown command 'strat'\nusage: scripts\/pgbouncer/);
    expect(wrong.stdout).toBe('');
  });
  it('setup names the database server without its password', async () => {
    // it printed `ok PostgreSQL answers at postgres://user:password@host:5432` (and the same in
    // its failures) into terminals and CI logs
    const r = await run('bash', ['scripts/setup'], { cwd: repoRoot, timeout: 20_000, env: { ...process.env, DATABASE_URL: 'postgres://u:s3cr/t@x@db.invalid:5432/x' } })
      .then(() => ({ code: 0, stdout: '', stderr: '' }), (e: { code: number; stdout: string; stderr: string }) => e);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('does not answer: postgres://u@db.invalid:5432');
    expect(r.stdout + r.stderr).not.toContain('s3cr');
    // no colour codes when not on a terminal (npm start > log, CI): they were written as escapes
    expect(r.stdout + r.stderr).not.toContain('\x1b[');
    // and it stopped at the server, before the install step (killed by this test's timeout, an
    // npm ci would leave the checkout's node_modules half removed)
    expect(r.stdout).not.toContain('npm ci');
  });
  it('setup rebuilds the client package when its sources are newer than dist/ (a git pull), and only then', async () => {
    // npm ci builds dist/ only when it installs: after a pull the README's quick start
    // (`npx tsx quickstart.ts`) loaded the old client, and without dist/ it failed ERR_MODULE_NOT_FOUND
    const out = `${repoRoot}/packages/client/dist/index.js`;
    // older than any source, however long ago this checkout was made (an hour ago was newer than a
    // checkout's untouched sources after an hour, and nothing was rebuilt)
    const past = new Date('2000-01-01T00:00:00Z');
    utimesSync(out, past, past);
    const stale = await run('bash', ['scripts/setup', '--quiet'], { cwd: repoRoot, timeout: 60_000 });
    expect(stale.stdout).toContain('building the client package');
    expect(statSync(out).mtimeMs).toBeGreaterThan(past.getTime() + 1000);
    const again = await run('bash', ['scripts/setup', '--quiet'], { cwd: repoRoot, timeout: 60_000 });
    expect(again.stdout).not.toContain('client package');
  }, 130_000);
});

async function bashScript(file: string, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('bash', [file, ...args], { cwd: repoRoot, timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}
