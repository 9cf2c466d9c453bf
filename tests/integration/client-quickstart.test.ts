import { execFile } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';

// The quick start of packages/client/README.md is run as a reader runs it: its code block, copied
// as is into a file of this repository (where `@potentia/client` is the workspace's package), run
// with tsx against `npm start`'s server process (the development profile), twice: the second run
// meets the user the first signed up. Each run must exit by itself, ending with what the README says.

const run = promisify(execFile);
const root = resolve(fileURLToPath(import.meta.url), '../../..');
const readme = readFileSync(join(root, 'packages/client/README.md'), 'utf8');
let server: DevServer;
let anonKey: string;
let dir: string;

/** The first ```ts block after the "## Quick start" heading. */
function quickStart(): string {
  const section = readme.slice(readme.indexOf('## Quick start'));
  const block = /```ts\n([\s\S]*?)```/.exec(section);
  if (!block) throw new Error('packages/client/README.md has no ```ts block under "## Quick start"');
  return block[1]!;
}

beforeAll(async () => {
  server = await startDevServer();
  anonKey = server.anonKey;
  mkdirSync(join(root, 'test-results'), { recursive: true });
  dir = mkdtempSync(join(root, 'test-results', 'quickstart-')); // inside the repository: node_modules resolve as at its root
}, 90_000);

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('the quick start of packages/client/README.md', () => {
  it('runs as written, twice, and ends with the documented output', async () => {
    const code = quickStart();
    expect(readme).toContain('its last two lines of output are `Hello, world` and `status 1 blocks`');
    const lines = code.split('\n').filter((l) => l.trim() !== '').length;
    expect(readFileSync(join(root, 'README.md'), 'utf8')).toContain(`in ${lines} lines`); // the README's count stays true
    writeFileSync(join(dir, 'quickstart.ts'), code);
    // the command npm start's banner gives as the next step, with the variables it sets: the anon
    // key, and the URL since this server is not on the default port (the banner named neither the
    // quick start nor how to run it)
    const command = /^ {2}((?:\w+=\S+ )+)npx tsx quickstart\.ts$/m.exec(server.output());
    expect(command, server.output()).not.toBeNull();
    expect(server.output()).toContain('save the Quick start of packages/client/README.md as quickstart.ts at the repository root, then run');
    const vars = Object.fromEntries(command![1]!.trim().split(' ').map((v) => [v.slice(0, v.indexOf('=')), v.slice(v.indexOf('=') + 1)]));
    expect(vars).toEqual({ POTENTIA_URL: server.url, ANON_KEY: anonKey });
    expect(readme).toContain('save this as\n`quickstart.ts` and run `ANON_KEY=<the anon key> npx tsx quickstart.ts`');
    for (const attempt of ['sign-up', 'sign-in']) {
      // --conditions=source: the package's TypeScript sources, so the test runs this commit's client
      // (`npx tsx quickstart.ts` loads dist/, built from them by npm ci)
      const { stdout } = await run(join(root, 'node_modules/.bin/tsx'), ['--conditions=source', 'quickstart.ts'], {
        cwd: dir, timeout: 60_000, env: { ...process.env, ...vars },
      }).catch((err: { stdout?: string; stderr?: string }) => {
        throw new Error(`the quick start failed (${attempt}):\n${err.stdout}\n${err.stderr}`);
      });
      expect(stdout, attempt).toContain('snapshot 0 blocks');
      expect(stdout.trimEnd().split('\n').slice(-2), attempt).toEqual(['Hello, world', 'status 1 blocks']);
    }
  }, 150_000);

  it('the API section\'s two `signal` samples run as written, given the client and a canvas they leave to the reader', async () => {
    // They were run by no test: an indented ```ts block under createPotentiaClient's `signal` and
    // one under Canvas's connect(). Each gets `potentia` (signed in, as after the quick start) and
    // `canvas` (one of Ada's) before it, and says it got through after it.
    const api = readme.slice(readme.indexOf('## API'));
    const samples = [...api.matchAll(/^ {2}```ts\n([\s\S]*?)^ {2}```/gm)].map((m) => m[1]!.replace(/^ {2}/gm, ''));
    expect(samples.map((s) => s.split('\n')[0])).toEqual([
      'const controller = new AbortController();', 'const leave = new AbortController(); // e.g. aborted when the page is left']);
    const given = `import { createPotentiaClient, type PotentiaError } from '@potentia/client';
import WebSocket from 'ws';
const potentia = createPotentiaClient({ url: process.env.POTENTIA_URL!, anonKey: process.env.ANON_KEY!, WebSocket });
const email = \`signal-\${crypto.randomUUID()}@example.com\`;
await potentia.auth.signUp(email, 'correct horse battery');
const { workspace_id } = await potentia.workspaces.create('Signals');
const canvas = potentia.canvas((await potentia.canvases.create(workspace_id, 'Signals')).canvas_id);
`;
    writeFileSync(join(dir, 'signals.ts'), `${given}${samples[0]}console.log('list sample done');
${samples[1]}console.log('connect sample done', canvas.status);
canvas.close();
`);
    const { stdout } = await run(join(root, 'node_modules/.bin/tsx'), ['--conditions=source', 'signals.ts'], {
      cwd: dir, timeout: 60_000, env: { ...process.env, POTENTIA_URL: server.url, ANON_KEY: anonKey },
    }).catch((err: { stdout?: string; stderr?: string }) => { throw new Error(`the samples failed:\n${err.stdout}\n${err.stderr}`); });
    expect(stdout.trim().split('\n')).toEqual(['list sample done', 'connect sample done live']);
  }, 90_000);

  it('run with a key that is not the anon key (a paste cut short), fails saying which key to send', async () => {
    // The local /auth/v1 answers GoTrue's 401 {message: 'Invalid API key', hint}, as Supabase's
    // gateway does; auth-js keeps only the message, so the quick start ended on a bare "Invalid
    // API key" that did not say which key it wants or where to find it.
    writeFileSync(join(dir, 'quickstart.ts'), quickStart());
    const failed = await run(join(root, 'node_modules/.bin/tsx'), ['--conditions=source', 'quickstart.ts'], {
      cwd: dir, timeout: 60_000, env: { ...process.env, POTENTIA_URL: server.url, ANON_KEY: anonKey.slice(0, -4) },
    }).then(() => null, (err: { stderr?: string }) => err.stderr ?? '');
    expect(failed).not.toBeNull();
    expect(failed).toContain('Invalid API key: Double check your anon or service_role API key (npm start prints them).');
  }, 90_000);
});
