import { readdirSync, readFileSync } from 'node:fs';

/** The pids of the live processes whose environment holds POTENTIA_TEST_ORPHAN=`mark` (Linux /proc; zombies have none). */
export function markedProcesses(mark: string): number[] {
  const wanted = `POTENTIA_TEST_ORPHAN=${mark}\0`;
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/environ`, 'latin1').includes(wanted)) found.push(Number(entry));
    } catch { /* gone, or not ours to read */ }
  }
  return found;
}
