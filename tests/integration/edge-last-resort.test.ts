import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { cacheEdgeDependencies, DENO, denoEnv, EDGE_PERMISSIONS, edgeBundle } from '../helpers/edge.ts';

// A Supabase edge function's isolate outlives a rejection nobody handled: under Deno (the Edge
// Runtime's engine) an unhandled rejection ends the isolate, with every request it is serving,
// as Node 20 ends its process; createEdgeApp installs the same last resort as the Node entry
// points (src/last-resort.ts), which logs it as a bug. Run for real: the edge entry under `deno
// run` with a function's import map and permissions, a rejection left unhandled, then a later turn
// of the event loop.

const run = promisify(execFile);
// the app is made, not used: its database is where nothing listens (no connection of the probe's
// shows up among another file's edge functions' backends)
const nowhere = (() => { const url = new URL(testDatabaseUrl()); url.port = '1'; return url.toString(); })();
const bundle = edgeBundle();

beforeAll(async () => {
  await cacheEdgeDependencies(bundle);
}, 300_000); // a cold Deno cache fetches the functions' npm packages first
afterAll(() => bundle.remove());

/** Runs `body` (a module's statements) beside the canvas function's entry point under Deno; its exit code and output. */
async function deno(body: string): Promise<{ code: number; output: string }> {
  const dir = bundle.entry('canvas');
  writeFileSync(`${dir}/probe.ts`, body);
  try {
    const { stdout, stderr } = await run(DENO, ['run', '--config', 'deno.json', ...EDGE_PERMISSIONS, 'probe.ts'], { cwd: dir, env: denoEnv({}), timeout: 120_000 });
    return { code: 0, output: stdout + stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

const REJECT_THEN_WAIT = `
Promise.reject(new Error('nobody handles this rejection'));
await new Promise((resolve) => setTimeout(resolve, 200));
console.log('still serving');
`;

describe('an edge function and a rejection nobody handled', () => {
  it('without the last resort Deno ends the isolate (what the handler is for)', async () => {
    const { code, output } = await deno(REJECT_THEN_WAIT);
    expect(code).not.toBe(0);
    expect(output).toContain('nobody handles this rejection');
    expect(output).not.toContain('still serving');
  }, 180_000);

  it('createEdgeApp keeps the isolate serving and logs the rejection as a bug', async () => {
    const { code, output } = await deno(`
import { createEdgeApp } from '../../../src/http/edge.ts';
const app = createEdgeApp('canvas', { SUPABASE_DB_URL: ${JSON.stringify(nowhere)}, JWT_SECRET: '${'s'.repeat(40)}', LOG_LEVEL: 'silent' });
${REJECT_THEN_WAIT}
const res = await app.fetch(new Request('http://edge.test/canvas/health'));
console.log('answered', res.status);
`);
    expect(output).toContain('BUG: unhandled rejection');
    expect(output).toContain('nobody handles this rejection');
    expect(output).toContain('still serving');
    expect(output).toMatch(/answered \d{3}/);
    expect(code).toBe(0);
  }, 180_000);

  it('a function whose environment is refused stops at start, naming the variable, never as a bug', async () => {
    // the entry point as deployed, without JWT_SECRET (nor SUPABASE_URL's JWKS): the last resort
    // caught loadConfig's refusal as an "unhandled rejection", printed "BUG: … the process keeps
    // serving; please report this" and the function exited 0 without ever listening
    const { code, output } = await deno(`
import { createEdgeApp } from '../../../src/http/edge.ts';
createEdgeApp('canvas', { SUPABASE_DB_URL: ${JSON.stringify(nowhere)}, LOG_LEVEL: 'silent' });
console.log('made');
`);
    expect(output).toContain('invalid environment: JWT_SECRET: must be set in production');
    expect(output).not.toContain('BUG');
    expect(output).not.toContain('made');
    expect(code).not.toBe(0);
  }, 180_000);
});
