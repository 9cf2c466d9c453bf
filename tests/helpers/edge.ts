import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, request, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FUNCTIONS } from '../../src/http/common.ts';

// The Supabase edge functions (supabase/functions/<name>/index.ts) run by the real Deno binary of
// the npm package `deno`, as `supabase functions deploy` ships them and the platform runs them.

const root = new URL('../..', import.meta.url).pathname;
export const DENO = `${root}node_modules/.bin/deno`;
export type EdgeFunctionName = keyof typeof FUNCTIONS;
export const EDGE_FUNCTIONS = Object.keys(FUNCTIONS) as EdgeFunctionName[];

/**
 * What `supabase functions deploy` uploads, laid out as in the repository: each entry point with
 * its deno.json, and the sources they import (src/, functions/, supabase/functions/_vendor/), in a temporary directory with no
 * package.json and no node_modules above it. Deno then resolves every `npm:` import of the import
 * map from the registry (its own cache), unpatched, as the Edge Runtime does, never from this
 * repository's node_modules (patch-package'd, with packages the functions do not declare).
 */
export function edgeBundle(): { dir: string; entry(name: EdgeFunctionName): string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'potentia-edge-'));
  for (const name of EDGE_FUNCTIONS) {
    for (const file of ['index.ts', 'deno.json']) cpSync(`${root}supabase/functions/${name}/${file}`, `${dir}/supabase/functions/${name}/${file}`);
  }
  for (const tree of ['src', 'functions', 'supabase/functions/_vendor']) cpSync(`${root}${tree}`, `${dir}/${tree}`, { recursive: true });
  return {
    dir,
    entry: (name) => `${dir}/supabase/functions/${name}`,
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * Fetches the npm packages of every entry point's import map into Deno's cache (DENO_DIR, by
 * default ~/.cache/deno): a no-op when they are there, the registry otherwise (the first run on a
 * machine). Separate from starting the functions, so a cold cache is not counted in their start.
 */
export async function cacheEdgeDependencies(bundle: ReturnType<typeof edgeBundle>): Promise<void> {
  const run = promisify(execFile);
  for (const name of EDGE_FUNCTIONS) {
    // this machine's whole environment: reaching the registry may take its proxy and CA settings
    await run(DENO, ['install', '--config', 'deno.json', '--entrypoint', 'index.ts'], { cwd: bundle.entry(name), env: { ...process.env, NO_COLOR: '1' } })
      .catch((err) => { throw new Error(`deno install failed for ${name}:\n${err.stderr ?? err}`); });
  }
}

/** The least the Deno process needs from this machine's environment (its cache, the binary's PATH) plus `env`. */
export function denoEnv(env: Record<string, string>): Record<string, string> {
  const keep = ['PATH', 'HOME', 'DENO_DIR', 'TMPDIR'];
  return { ...Object.fromEntries(keep.filter((k) => process.env[k] !== undefined).map((k) => [k, process.env[k]!])), NO_COLOR: '1', ...env };
}

/**
 * The permissions each function runs with, the least that work: the database and its own listener,
 * both on loopback; the environment (process.env is read whole); the host name, which pino reads
 * as it loads. No file system.
 */
export const EDGE_PERMISSIONS = ['--allow-net=127.0.0.1', '--allow-env', '--allow-sys=hostname'];

export type EdgeFunction = {
  name: EdgeFunctionName;
  /** http://127.0.0.1:<port>: the function serves /<name>/… here, as the platform hands it requests. */
  url: string;
  process: ChildProcess;
  /** Everything the process wrote to stdout and stderr so far. */
  output(): string;
  /** Whether the process is still running. */
  alive(): boolean;
  stop(): Promise<void>;
};

/**
 * Starts one function under `deno run` with only `env` (what Supabase gives a function, and its
 * secrets), on a free loopback port (DENO_SERVE_ADDRESS: the entry point's Deno.serve takes no
 * address); resolves once it listens, rejects with its output if it exits first or does not listen
 * within 60 s (then it is killed).
 */
export function startEdgeFunction(bundle: ReturnType<typeof edgeBundle>, name: EdgeFunctionName, env: Record<string, string>): Promise<EdgeFunction> {
  const child = spawn(DENO, ['run', '--no-prompt', ...EDGE_PERMISSIONS, '--config', 'deno.json', 'index.ts'], {
    cwd: bundle.entry(name), env: denoEnv({ ...env, DENO_SERVE_ADDRESS: 'tcp:127.0.0.1:0' }), stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  let exited = false;
  child.on('exit', () => { exited = true; });
  const fn: Omit<EdgeFunction, 'url'> = {
    name,
    process: child,
    output: () => output,
    alive: () => !exited,
    async stop() {
      if (exited) return;
      const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(timer);
    },
  };
  return new Promise((resolve, reject) => {
    const late = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`edge function ${name} did not listen within 60 s:\n${output}`));
    }, 60_000);
    child.once('exit', () => clearTimeout(late));
    const onData = (chunk: Buffer) => {
      output += chunk.toString('utf8');
      const m = /Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(output);
      if (m) {
        child.stdout!.off('data', onData);
        child.stderr!.off('data', onData);
        child.stdout!.on('data', (c: Buffer) => { output += c.toString('utf8'); });
        child.stderr!.on('data', (c: Buffer) => { output += c.toString('utf8'); });
        clearTimeout(late);
        resolve({ ...fn, url: `http://127.0.0.1:${m[1]}` });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('exit', (code, signal) => reject(new Error(`edge function ${name} exited (${code ?? signal}) before it listened:\n${output}`)));
    child.once('error', reject);
  });
}

/** The client address the gateway stand-in reports (a documentation address, RFC 5737: never the connection's own). */
export const GATEWAY_CLIENT_ADDRESS = '203.0.113.7';

/**
 * A stand-in for Supabase's gateway in front of the functions (not Potentia's code): /functions/v1/<name>/…
 * is passed to a function `name` as /<name>/… (the bytes of the path as received), in turn across
 * its instances, with X-Forwarded-For set to the client's address as the platform's edge sets it
 * (GATEWAY_CLIENT_ADDRESS). It also serves the project's JWKS (`jwks`: the public keys of Supabase
 * Auth's asymmetric signing keys) at /auth/v1/.well-known/jwks.json, where the functions look for it
 * (SUPABASE_URL + that path). Anything else is 404. `routes` may be filled in after the gateway is
 * listening (its URL is the functions' SUPABASE_URL).
 */
export async function startEdgeGateway(routes: Partial<Record<EdgeFunctionName, string[]>>, jwks: { keys: object[] } = { keys: [] }):
  Promise<{ url: string; close(): Promise<void> }> {
  const turn = new Map<string, number>();
  const server: HttpServer = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/auth/v1/.well-known/jwks.json') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
      return;
    }
    const m = /^\/functions\/v1\/([a-z]+)((?:[/?].*)?)$/s.exec(req.url ?? '');
    const upstreams = m ? routes[m[1] as EdgeFunctionName] : undefined;
    if (!m || !upstreams?.length) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ message: 'function not found' }));
      return;
    }
    const i = turn.get(m[1]!) ?? 0;
    turn.set(m[1]!, i + 1);
    const upstream = new URL(upstreams[i % upstreams.length]!);
    const headers = { ...req.headers, host: upstream.host, 'x-forwarded-for': GATEWAY_CLIENT_ADDRESS };
    const out = request({ host: upstream.hostname, port: upstream.port, method: req.method, path: `/${m[1]}${m[2]}`, headers, agent: false }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', () => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: 'the function did not answer' }));
    });
    req.pipe(out);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}
