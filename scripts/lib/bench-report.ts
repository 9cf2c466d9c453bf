// One row per measured ratio, shared by every benchmark so `npm run bench` (scripts/bench.ts)
// can collect them into docs/benchmarks.md. A benchmark run alone prints its rows; run by
// scripts/bench.ts (env BENCH_REPORT=<file>) it also appends them to that file as JSON lines.
import { appendFileSync } from 'node:fs';

/** A ratio target: `>=` for throughput-like ratios (higher is better), `<=` for latency-like ones. */
export type BenchTarget = { op: '>=' | '<='; value: number };

/** One measured ratio: `measured` against `baseline`, both in `unit`, taken in the same run. */
export type BenchRow = {
  /** Which benchmark measured it, e.g. "bench:mutate". */
  bench: string;
  /** What was measured, e.g. "api.upsert_block_atomic vs its own writes as plain SQL". */
  workload: string;
  measured: number;
  baseline: number;
  /** e.g. "mut/s", "ms p99", "subscribers". */
  unit: string;
  /** measured / baseline (or, for a count like "subscribers", measured / goal). */
  ratio: number;
  /** The target for the ratio; null when the row is informative only. */
  target: BenchTarget | null;
  /** The command that reproduces this row. */
  command: string;
  /** Anything a reader needs to judge the row (what the baseline is, missing/duplicated counts). */
  note?: string;
};

/** Whether a row meets its target (true when it has none). */
export function meetsTarget(row: Pick<BenchRow, 'ratio' | 'target'>): boolean {
  if (!row.target || !Number.isFinite(row.ratio)) return row.target === null;
  return row.target.op === '>=' ? row.ratio >= row.target.value : row.ratio <= row.target.value;
}

/** Prints the rows (one line each, prefixed "RATIO") and, under scripts/bench.ts, records them. */
export function reportRows(rows: BenchRow[]): void {
  for (const row of rows) {
    const target = row.target ? ` (target ${row.target.op} ${row.target.value}: ${meetsTarget(row) ? 'met' : 'NOT met'})` : '';
    console.log(`RATIO ${row.bench} | ${row.workload} | ${fmt(row.measured)} vs ${fmt(row.baseline)} ${row.unit} = ${row.ratio.toFixed(2)}x${target}`);
  }
  const file = process.env.BENCH_REPORT;
  if (file) appendFileSync(file, rows.map((r) => JSON.stringify(r) + '\n').join(''));
}

function fmt(n: number): string {
  return Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2);
}
