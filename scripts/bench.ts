// npm run bench [-- --only mutate,http,rank,realtime] [--out docs/benchmarks.md]
//
// Runs every benchmark of the write path and the fan-out one after another (never part of npm
// test: about 15 minutes on 2 cores), collects the ratio rows each prints (scripts/lib/bench-report.ts,
// through the BENCH_REPORT file) and writes them as one table with the machine's description and
// the command that reproduces each row. Exits 1 when a benchmark failed, not when a target is
// missed: a missed target is a result, shown in the table. Every benchmark runs on the server of
// DATABASE_URL (in a database of its own), and the machine line names that server's version.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { cpus, totalmem, tmpdir, type as osType, release } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommandLine } from './lib/command-line.ts';
import postgres from 'postgres';
import { meetsTarget, type BenchRow } from './lib/bench-report.ts';
import { benchDatabaseUrl } from './lib/bench.ts';

/** Each benchmark with the arguments `npm run bench` gives it (each row names its own command). */
const STEPS: { name: string; script: string; args: string[] }[] = [
  { name: 'mutate', script: 'bench:mutate', args: ['--seconds', '4', '--rounds', '3', '--functions'] },
  { name: 'http', script: 'bench:http', args: ['--seconds', '5', '--rounds', '3'] },
  { name: 'rank', script: 'bench:rank', args: [] },
  { name: 'realtime', script: 'bench:realtime',
    args: ['--seconds', '15', '--subscribers', '1000', '--gateways', '1,2', '--rounds', '3', '--skip-cluster', '--scale', '1000,2000,3000,4000,5000'] },
];

const { values } = parseCommandLine({
  options: {
    only: { type: 'string' },
    out: { type: 'string', default: 'docs/benchmarks.md' },
  },
});
const root = fileURLToPath(new URL('..', import.meta.url));
const only = values.only ? new Set(values.only.split(',').map((s) => s.trim())) : null;
const unknown = only ? [...only].filter((n) => !STEPS.some((s) => s.name === n)) : [];
if (unknown.length) {
  console.error(`unknown benchmark ${unknown.join(', ')}: choose from ${STEPS.map((s) => s.name).join(', ')}`);
  process.exit(2);
}

// checked now, not after the benchmarks' minutes: --out relative to the repo, or absolute
const out = resolve(root, values.out!);
if (!existsSync(dirname(out))) {
  console.error(`--out ${values.out}: directory ${dirname(out)} does not exist; create it or choose another path`);
  process.exit(2);
}

const dir = mkdtempSync(join(tmpdir(), 'potentia-bench-'));
const reportFile = join(dir, 'rows.jsonl');
const failures: string[] = [];
const started = Date.now();
for (const step of STEPS.filter((s) => !only || only.has(s.name))) {
  console.log(`\n== npm run ${step.script} ${step.args.join(' ')}  (${((Date.now() - started) / 60000).toFixed(1)} min so far)`);
  const r = spawnSync('npm', ['run', '--silent', step.script, '--', ...step.args],
    { cwd: root, stdio: 'inherit', env: { ...process.env, BENCH_REPORT: reportFile } });
  if (r.status !== 0) failures.push(`npm run ${step.script} exited ${r.status ?? r.signal}`);
}
const rows: BenchRow[] = existsSync(reportFile)
  ? readFileSync(reportFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as BenchRow)
  : [];
rmSync(dir, { recursive: true, force: true });

// the server the benchmarks ran on (each one's default database is on it: benchDatabaseUrl)
const pg = postgres(benchDatabaseUrl('postgres'), { max: 1, onnotice: () => {} });
const version = (await pg<{ version: string }[]>`select version()`)[0]?.version ?? 'PostgreSQL (version unknown)';
await pg.end();
const cpu = cpus();
const machine = `${cpu.length} × ${cpu[0]?.model.trim() ?? 'unknown CPU'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, ` +
  `${osType()} ${release()}, Node ${process.version}, ${version.split(',')[0]}`;

const fmt = (n: number) => (Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2));
const lines = [
  '# Benchmarks',
  '',
  `Written by \`npm run bench\` on ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, in ${((Date.now() - started) / 60000).toFixed(1)} minutes.`,
  '',
  `Machine: ${machine}. Every ratio compares two measurements taken in the same run on this machine, so`,
  'they carry over to other machines better than the absolute numbers; on 2 cores the load generators',
  'share the CPU with Postgres and the server, so rerun a row before reading much into a small difference.',
  'This VM\'s speed also drifts by 10-20 % within minutes: bench:mutate and bench:http therefore run each scenario',
  'in 3 interleaved rounds and take each ratio over all of them, bench:realtime takes the median of 3 interleaved',
  'rounds; their notes list the ratio of each round (pgbench: of each pair), the spread a single run would show.',
  '',
  '| benchmark | workload | measured | baseline | unit | ratio | target | met | reproduce |',
  '|---|---|---:|---:|---|---:|---|---|---|',
  ...rows.map((r) => `| ${r.bench} | ${r.workload}${r.note ? ` (${r.note})` : ''} | ${fmt(r.measured)} | ${fmt(r.baseline)} | ${r.unit} | ` +
    `${r.ratio.toFixed(2)}× | ${r.target ? `${r.target.op} ${r.target.value}×` : '—'} | ${r.target ? (meetsTarget(r) ? 'yes' : '**no**') : '—'} | \`${r.command}\` |`),
  '',
  ...(failures.length ? ['Benchmarks that failed in this run:', '', ...failures.map((f) => `- ${f}`), ''] : []),
  'Each benchmark explains its workload and baseline in the header comment of its script',
  '(`scripts/bench-*.ts`); `npm run bench -- --only <name> --out <file>` reruns one into another file (without',
  '`--out`, it rewrites this one with that benchmark\'s rows only).',
  'What bounds each ratio, and the measurements that show it: [performance.md](performance.md).',
  '',
];
writeFileSync(out, lines.join('\n'));
console.log(`\n${rows.length} ratios, ${rows.filter((r) => r.target && !meetsTarget(r)).length} targets not met; written to ${values.out}`);
if (failures.length) {
  console.error(failures.join('\n'));
  process.exit(1);
}
