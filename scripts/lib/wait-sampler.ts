// What a benchmark's backends are doing, sampled from pg_stat_activity: the share of samples each
// was running, idle, or waiting on each wait event (the method of the twentieth session's 16-client
// profile, docs/performance.md, which was a DO loop by hand). Used by bench:compare --waits.
import postgres from 'postgres';

/** Counts of backend states over the samples: `running`, `idle`, `idle in transaction`, `<wait_event_type>:<wait_event>`. */
export type WaitCounts = Map<string, number>;

/**
 * Samples, every `intervalMs` until `stop()`, the backends of database `database` whose
 * application_name is `applicationName` (pgbench's own is `pgbench`), over a connection of its own
 * to `url`. Each query reads a fresh snapshot of pg_stat_activity (autocommit). `stop()` resolves
 * to the counts; the sampler's own backend is never counted.
 */
export function sampleWaits(url: string, database: string, applicationName = 'pgbench', intervalMs = 50): { stop: () => Promise<WaitCounts> } {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  const counts: WaitCounts = new Map();
  let running = true;
  const loop = (async () => {
    while (running) {
      const rows = await sql<{ state: string | null; wait: string | null }[]>`
        select state, wait_event_type || ':' || wait_event as wait from pg_stat_activity
        where datname = ${database} and application_name = ${applicationName} and pid <> pg_backend_pid()`;
      for (const r of rows) {
        // an active backend with a wait event is waiting; without one it is on the CPU (or in the kernel)
        const key = r.state === 'active' ? (r.wait ?? 'running') : (r.state ?? 'unknown');
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      await sql.end();
      return counts;
    },
  };
}

/** Adds `more` into `into`. */
export function addWaits(into: WaitCounts, more: WaitCounts): void {
  for (const [k, v] of more) into.set(k, (into.get(k) ?? 0) + v);
}

/** The `top` most frequent states as "state 46 %", largest first, then the rest as "other". */
export function formatWaits(counts: WaitCounts, top = 6): string {
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  if (total === 0) return 'no samples';
  const sorted = [...counts].sort((a, b) => b[1] - a[1]);
  const pct = (n: number) => `${((100 * n) / total).toFixed(0)} %`;
  const shown = sorted.slice(0, top).map(([k, v]) => `${k} ${pct(v)}`);
  const rest = sorted.slice(top).reduce((a, [, v]) => a + v, 0);
  return [...shown, ...(rest > 0 ? [`other ${pct(rest)}`] : [])].join(', ');
}
