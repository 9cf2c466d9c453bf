// npx tsx scripts/cpuprofile-shares.ts --profile DIR/http.cpuprofile [--per N] [--functions a,b,c] [--top 30]
//
// Where a V8 CPU profile's busy time went (one of those `npx tsx scripts/bench-http.ts --cpu-prof DIR`
// writes per phase): self time by package or source file (node_modules/<package>, src/…, node:…,
// the engine's own frames), and, for each function named in --functions, its inclusive share of the
// busy time (samples under a frame of that name, each sample counted once per name). Busy: every
// sample but (idle), (program) and the profiler's own (under node:inspector's frames). With --per N (the phase's
// mutations, from the bench's "run    HTTP: N mutations" line) times are also given per mutation, in
// µs; they are inflated when the machine is loaded, the shares much less.
import { readFileSync } from 'node:fs';
import { parseCommandLine, wholeNumber } from './lib/command-line.ts';

const { values, number } = parseCommandLine({
  options: {
    profile: { type: 'string' },
    per: { type: 'string' },
    functions: { type: 'string', default: '' },
    top: { type: 'string', default: '30' },
  },
});
if (!values.profile) {
  console.error('--profile FILE is required (a .cpuprofile, e.g. DIR/http.cpuprofile from bench-http.ts --cpu-prof DIR)');
  process.exit(2);
}
const per = number('per', wholeNumber(1), undefined);
const top = number('top', wholeNumber(0));
const functions = values.functions!.split(',').filter((f) => f !== '');

type Node = { id: number; callFrame: { functionName: string; url: string }; children?: number[] };
const profile = JSON.parse(readFileSync(values.profile, 'utf8')) as { nodes: Node[]; samples: number[]; timeDeltas: number[] };
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map<number, number>(); // node id -> µs
profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));

const NOT_BUSY = new Set(['(idle)', '(program)']);
/** node_modules/<package>, the path under the repository, node:…, or the frame's own name (engine frames). */
function place(url: string, name: string): string {
  const inModules = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (inModules) return inModules[1]!;
  const inRepo = /\/((?:src|functions|scripts)\/.*)$/.exec(url);
  if (inRepo) return inRepo[1]!;
  return url || name || '(anonymous)';
}

/** A sample of the profiler's own work (node:inspector's frames, and the engine's under them). */
function underInspector(id: number): boolean {
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) if (byId.get(at)!.callFrame.url.includes('inspector')) return true;
  return false;
}

let busy = 0;
const byPlace = new Map<string, number>();
const inclusive = new Map<string, number>(functions.map((f) => [f, 0]));
for (const [id, us] of self) {
  const { functionName, url } = byId.get(id)!.callFrame;
  if (NOT_BUSY.has(functionName) || underInspector(id)) continue;
  busy += us;
  const where = place(url, functionName);
  byPlace.set(where, (byPlace.get(where) ?? 0) + us);
  const seen = new Set<string>();
  for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
    const name = byId.get(at)!.callFrame.functionName;
    if (inclusive.has(name) && !seen.has(name)) {
      seen.add(name);
      inclusive.set(name, inclusive.get(name)! + us);
    }
  }
}

const perMutation = (us: number) => (per === undefined ? '' : `${(us / per).toFixed(1).padStart(9)} µs`);
const share = (us: number) => `${((100 * us) / busy).toFixed(2).padStart(6)} %`;
console.log(`busy ${(busy / 1000).toFixed(0)} ms${per === undefined ? '' : `, ${(busy / per).toFixed(0)} µs per mutation`}`);
console.log('\nself time by place');
for (const [where, us] of [...byPlace].sort((a, b) => b[1] - a[1]).slice(0, top)) console.log(`${share(us)}${perMutation(us)}  ${where}`);
if (functions.length > 0) {
  console.log('\ninclusive, by function name');
  for (const [name, us] of inclusive) console.log(`${share(us)}${perMutation(us)}  ${name}`);
}
