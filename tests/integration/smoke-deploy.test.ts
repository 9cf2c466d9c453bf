import { execFile } from 'node:child_process';
import { createServer } from 'node:net';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

// scripts/smoke-deploy.ts (docs/self-hosting.md, "Trying it") "exits 1 and names the step that
// failed": a failure used to print only the client's message, which for a 500 from /auth/v1 is
// supabase-js's "{}", and no step.
const run = promisify(execFile);
const root = new URL('../..', import.meta.url).pathname;

/** A port nothing listens on: taken, then released. */
const freePort = () => new Promise<number>((resolve) => {
  const s = createServer().listen(0, '127.0.0.1', () => { const { port } = s.address() as { port: number }; s.close(() => resolve(port)); });
});

describe('scripts/smoke-deploy.ts', () => {
  it('exits 1 naming the step that failed', async () => {
    const port = await freePort();
    const err = await run(`${root}node_modules/.bin/tsx`, ['scripts/smoke-deploy.ts', '--url', `http://127.0.0.1:${port}`, '--anon-key', 'x', '--rounds', '1'],
      { cwd: root, timeout: 60_000 }).then(() => null, (e: { code?: number; stderr?: string }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/^smoke test FAILED while signing up two users \(POST \/auth\/v1\/signup\): /m);
  }, 90_000);
});
