import { createClient, FunctionsHttpError, type SupabaseClient } from '@supabase/supabase-js';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Sql } from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueTokenPair } from '../../functions/auth.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { localEmbedding, LocalProvider, OpenAIProvider, type EmbeddingProvider } from '../../src/worker/providers.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { expectContract } from '../helpers/contract.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser } from '../helpers/fixtures.ts';
import { exchange, rawRequest, startTestServer, tokenFor } from '../helpers/http.ts';
import { cacheEdgeDependencies, edgeBundle, startEdgeFunction, startEdgeGateway, EDGE_FUNCTIONS, GATEWAY_CLIENT_ADDRESS, type EdgeFunction } from '../helpers/edge.ts';
import { apiKey } from '../helpers/tokens.ts';
import { awayFromWindowEdge, until } from '../helpers/wait.ts';

// The four Supabase edge functions served for real: each entry point under `deno run` (the Deno of
// the npm package `deno`, its npm imports from the registry as the Edge Runtime loads them), with
// the environment Supabase gives a function (docs/supabase.md, section 5), behind a stand-in for
// the platform's gateway (/functions/v1/<name>/… reaches the function as /<name>/…). The same
// requests go to the Node server (its /functions/v1 mount of the same routes) to compare answers.

const secret = randomBytes(36).toString('base64');
const MAX_BODY_BYTES = 65_536; // both sides: the functions read it from their environment
const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
const bundle = edgeBundle();
let server: Server;
let database: Database;
let sql: Sql;
let anonKey: string;
let gateway: Awaited<ReturnType<typeof startEdgeGateway>>;
const routes: Partial<Record<string, string[]>> = {};
const fns: Record<string, EdgeFunction> = {};
const running: EdgeFunction[] = []; // every Deno process this file started and has not stopped
let canvasB: EdgeFunction; // a second instance of `canvas` (the platform runs several isolates)
let env: Record<string, string>; // what Supabase gives every function
let signingKey: CryptoKey; // the private half of the project's asymmetric signing key (ES256), whose public half the JWKS serves

beforeAll(async () => {
  await cacheEdgeDependencies(bundle);
  server = await startTestServer({ auth: { ...base.auth, jwtSecret: secret }, maxBodyBytes: MAX_BODY_BYTES });
  database = testDatabase(3);
  sql = database.sql;
  anonKey = await apiKey(secret, 'anon');
  const pair = await generateKeyPair('ES256', { extractable: true });
  signingKey = pair.privateKey;
  gateway = await startEdgeGateway(routes, { keys: [{ ...(await exportJWK(pair.publicKey)), kid: 'project-key-1', alg: 'ES256', use: 'sig' }] });
  env = {
    SUPABASE_URL: gateway.url, SUPABASE_DB_URL: testDatabaseUrl(), SUPABASE_ANON_KEY: anonKey,
    SUPABASE_SERVICE_ROLE_KEY: await apiKey(secret, 'service_role'), JWT_SECRET: secret, TRUST_PROXY: '1', LOG_LEVEL: 'warn',
    MAX_BODY_BYTES: String(MAX_BODY_BYTES),
  };
  const settled = await Promise.allSettled([...EDGE_FUNCTIONS, 'canvas' as const].map((name) => startEdgeFunction(bundle, name, env)));
  for (const r of settled) if (r.status === 'fulfilled') running.push(r.value);
  const failed = settled.find((r) => r.status === 'rejected');
  if (failed) throw failed.reason; // afterAll stops the others
  for (const fn of running.slice(0, EDGE_FUNCTIONS.length)) {
    fns[fn.name] = fn;
    routes[fn.name] = [fn.url];
  }
  canvasB = running[EDGE_FUNCTIONS.length]!;
}, 300_000); // a cold Deno cache fetches the functions' npm packages first
afterAll(async () => {
  await Promise.all(running.map((fn) => fn.stop()));
  await gateway?.close();
  await server?.stop();
  await database?.close();
  bundle.remove();
});

/** A supabase-js client on `url` (the gateway, or the Node server) whose requests carry `token`. */
function client(url: string, token?: string): SupabaseClient {
  return createClient(url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as never }, // Node 20 has no global WebSocket (no connection is opened here)
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });
}

type Answer = { status: number; body: any; headers: Headers };

/** functions.invoke, answering {status, body} for successes and errors alike. */
async function invoke(c: SupabaseClient, path: string, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', body?: unknown): Promise<Answer> {
  const { data, error, response } = await c.functions.invoke(path, { method, ...(body === undefined ? {} : { body: body as never }) });
  if (error) {
    if (!(error instanceof FunctionsHttpError)) throw error;
    const res = error.context as Response;
    return { status: res.status, body: await res.json(), headers: res.headers };
  }
  return { status: response!.status, body: data, headers: response!.headers };
}

/** Plain fetch of `base` + `path`, the answer checked against the OpenAPI document. */
async function call(baseUrl: string, method: string, path: string, opts: { token?: string; body?: string | object; headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
  // a request that is never answered fails the test, naming itself, before the test's own timeout
  const res = await fetch(`${baseUrl}${path}`, { method, headers, body: typeof opts.body === 'object' ? JSON.stringify(opts.body) : opts.body,
    signal: AbortSignal.timeout(10_000) }).catch((err) => { throw new Error(`${method} ${path}: no answer (${err})`); });
  const text = await res.text();
  let body: any = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: res.status, body, headers: res.headers };
}

/** The structure of a JSON value: keys and value types, no values (ids, times and tokens differ between two runs). */
function shape(value: unknown): unknown {
  if (Array.isArray(value)) return value.length ? [shape(value[0])] : [];
  if (value && typeof value === 'object') return Object.fromEntries(Object.keys(value).sort().map((k) => [k, shape((value as any)[k])]));
  return value === null ? null : typeof value;
}

const errorOf = (a: Answer) => ({ status: a.status, code: a.body?.error?.code, field: a.body?.error?.field });
const createOp = (text: string) => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text } } });

describe('the edge functions under Deno', () => {
  /** One user's first session, through supabase-js on `url`: W2, A5, H2 create and update, H4, A4, W1; every answer. */
  async function session(url: string) {
    const user = await createUser(sql, 'edge');
    const token = await tokenFor(server, user);
    const c = client(url, token);
    const workspace = await invoke(c, 'workspaces', 'POST', { name: 'Edge workspace' });
    const canvas = await invoke(c, 'canvas', 'POST', { workspace_id: workspace.body?.workspace_id, title: 'Edge canvas' });
    const canvasId = canvas.body?.canvas_id as string;
    const created = await invoke(c, `canvas/${canvasId}/mutate`, 'POST', createOp('hello from deno'));
    const blockId = created.body?.block?.block_id as string;
    const updated = await invoke(c, `canvas/${canvasId}/mutate`, 'POST',
      { action: 'update', block_id: blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: 'edited under deno' } } });
    const snapshot = await invoke(c, `canvas/${canvasId}/snapshot`, 'GET');
    const canvases = await invoke(c, 'canvas', 'GET');
    const workspaces = await invoke(c, 'workspaces', 'GET');
    return { user, token, canvasId, blockId, answers: { workspace, canvas, created, updated, snapshot, canvases, workspaces } };
  }

  it('a signed-in user creates a workspace and a canvas, mutates a block and reads the snapshot through supabase-js; the rows are in Postgres, and the Node server answers the same statuses and shapes', async () => {
    const edge = await session(gateway.url);
    const { workspace, canvas, created, updated, snapshot } = edge.answers;
    expect(workspace.status, JSON.stringify(workspace.body)).toBe(201);
    expect(canvas.status, JSON.stringify(canvas.body)).toBe(201);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body).toMatchObject({ status: 'success', version: 1, block: { type: 'text', content: { text: 'hello from deno' } } });
    expect(updated.status, JSON.stringify(updated.body)).toBe(200);
    expect(updated.body).toMatchObject({ status: 'success', version: 2, block: { block_id: edge.blockId, content: { text: 'edited under deno' } } });
    expect(snapshot.status, JSON.stringify(snapshot.body)).toBe(200);
    expect(snapshot.body.blocks).toEqual([expect.objectContaining({ block_id: edge.blockId, version: 2, content: { text: 'edited under deno' } })]);
    expect(edge.answers.canvases.body.canvases.map((x: any) => x.canvas_id)).toEqual([edge.canvasId]);
    expect(edge.answers.workspaces.body.workspaces.map((x: any) => x.workspace_id)).toEqual([workspace.body.workspace_id]);
    // in Postgres, as the caller (the audit's address is X-Forwarded-For's: TRUST_PROXY=1 behind the gateway)
    const rows = await sql`select b.version, b.content, c.workspace_id, m.role from app.blocks b join app.canvases c using (canvas_id)
      join app.workspace_members m on m.workspace_id = c.workspace_id and m.user_id = ${edge.user}
      where b.block_id = ${edge.blockId}`;
    expect(rows).toEqual([{ version: 2, content: { text: 'edited under deno' }, workspace_id: workspace.body.workspace_id, role: 'owner' }]);
    const audit = await sql`select host(ip) as ip, request_id from app.system_audit where user_id = ${edge.user} and action = 'canvas.create'`;
    expect(audit).toEqual([{ ip: GATEWAY_CLIENT_ADDRESS, request_id: canvas.headers.get('x-request-id') }]);

    const node = await session(server.url);
    for (const [step, answer] of Object.entries(edge.answers)) {
      const other = node.answers[step as keyof typeof node.answers];
      expect({ step, status: answer.status, shape: shape(answer.body) }).toEqual({ step, status: other.status, shape: shape(other.body) });
      expect(answer.headers.get('content-type'), step).toBe(other.headers.get('content-type'));
    }
  });

  // docs/supabase.md, "Trying a function locally under Deno": curl of the function's own port with
  // the platform's path (/functions/v1/canvas, what supabase.functions.invoke and the Node server
  // use) was answered a bare `no route GET /functions/v1/canvas`, as if the route did not exist
  it('a function reached directly with /functions/v1/<name>/… (the platform\'s path) says it serves /<name>/… and where /functions/v1 goes', async () => {
    const { users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    for (const name of ['canvas', 'workspaces'] as const) {
      const wrong = await call(fns[name]!.url, 'GET', `/functions/v1/${name}`, { token });
      expect(wrong.status).toBe(404);
      expect(wrong.body.error.code).toBe('not_found');
      expect(wrong.body.error.message).toBe(`no route GET /functions/v1/${name}: this is the ${name} edge function, which serves its routes under `
        + `/${name} (what the platform passes on after /functions/v1): call /${name}/… on it directly, or /functions/v1/${name}/… through `
        + 'Supabase\'s gateway and supabase.functions.invoke (docs/supabase.md, "4. Deploy the edge functions")');
      // a path under its own prefix that no route serves stays the plain 404
      expect((await call(fns[name]!.url, 'GET', `/${name}/no/such/route`, { token })).body.error.message).toBe(`no route GET /${name}/no/such/route`);
      // and the right path is served
      expect((await call(fns[name]!.url, 'GET', `/${name}`, { token })).status).toBe(200);
    }
  });

  it('a token of the project\'s asymmetric signing key is verified against the JWKS under SUPABASE_URL; one of another key is not', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const now = Math.floor(Date.now() / 1000);
    const claims = { sub: users.owner!, role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 600 };
    const es256 = (key: CryptoKey) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'JWT', kid: 'project-key-1' }).sign(key);
    const accepted = await call(gateway.url, 'GET', `/functions/v1/canvas/${canvasId}/permissions`, { token: await es256(signingKey) });
    expect(accepted.status, JSON.stringify(accepted.body)).toBe(200);
    expect(accepted.body.role).toBe('owner');
    const stranger = await generateKeyPair('ES256');
    const refused = await call(gateway.url, 'GET', `/functions/v1/canvas/${canvasId}/permissions`, { token: await es256(stranger.privateKey) });
    expect(errorOf(refused)).toEqual({ status: 401, code: 'unauthorized', field: undefined });
  });

  it('a browser\'s preflight with supabase-js\'s headers is answered before auth, and answers are readable cross-origin, as on Node', async () => {
    const corsOf = (res: Response) => Object.fromEntries(['access-control-allow-origin', 'access-control-allow-headers', 'access-control-allow-methods',
      'access-control-expose-headers', 'access-control-max-age'].map((h) => [h, res.headers.get(h)]));
    const preflight = (url: string) => fetch(`${url}/functions/v1/canvas/${randomUUID()}/mutate`, { method: 'OPTIONS',
      headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, apikey, content-type, x-client-info, x-supabase-api-version' } });
    const [onEdge, onNode] = [await preflight(gateway.url), await preflight(server.url)];
    expect(onEdge.status).toBe(204);
    expect(corsOf(onEdge)['access-control-allow-headers']).toContain('apikey');
    expect(corsOf(onEdge)).toEqual(corsOf(onNode));
    const refused = await fetch(`${gateway.url}/functions/v1/workspaces`, { headers: { origin: 'http://localhost:5173' } });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe('*');
    expect(refused.headers.get('access-control-expose-headers')).toContain('X-Request-Id');
  });

  it('the answers match the OpenAPI document, as the Node server\'s do', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    for (const path of [`/functions/v1/canvas/${canvasId}`, `/functions/v1/canvas/${canvasId}/permissions`, `/functions/v1/canvas/${canvasId}/blocks`]) {
      const res = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      const text = await res.text();
      expect(res.status, text).toBe(200);
      expectContract('GET', path, { status: res.status, headers: res.headers, text });
    }
  });

  it('auth refreshes a session: the rotation is stored, the new access token is accepted by the canvas function', async () => {
    const { users } = await createCanvas(sql);
    const pair = await issueTokenPair(server.deps, { id: users.owner! });
    const refreshed = await invoke(client(gateway.url), 'auth/refresh', 'POST', { refresh_token: pair.refresh_token });
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    expect(refreshed.body).toMatchObject({ token_type: 'bearer', expires_in: base.auth.accessTtl });
    expect(refreshed.body.refresh_token).not.toBe(pair.refresh_token);
    const stored = await sql`select used_at is not null as used from app.refresh_tokens where user_id = ${users.owner!} order by created_at`;
    expect(stored.map((r) => r.used)).toEqual([true, false]);
    const listed = await invoke(client(gateway.url, refreshed.body.access_token), 'canvas', 'GET');
    expect(listed.status, JSON.stringify(listed.body)).toBe(200);
    expect(listed.body.canvases).toHaveLength(1);
    // the same shape as the Node server's H5
    const other = await issueTokenPair(server.deps, { id: (await createCanvas(sql)).users.owner! });
    const onNode = await invoke(client(server.url), 'auth/refresh', 'POST', { refresh_token: other.refresh_token });
    expect({ status: refreshed.status, shape: shape(refreshed.body) }).toEqual({ status: onNode.status, shape: shape(onNode.body) });
    // an unknown refresh token: 401, as on Node
    const unknown = { refresh_token: randomBytes(32).toString('base64url') };
    const [a, b] = [await call(gateway.url, 'POST', '/functions/v1/auth/refresh', { body: unknown }), await call(server.url, 'POST', '/functions/v1/auth/refresh', { body: unknown })];
    expect(errorOf(a)).toEqual({ status: 401, code: 'unauthorized', field: undefined });
    expect(errorOf(a)).toEqual(errorOf(b));
  });

  /** A canvas with two embedded blocks (as the worker embeds them, by default with the local provider), and the owner's token. */
  async function embeddedCanvas(worker: EmbeddingProvider = new LocalProvider()) {
    const { canvasId, users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    const c = client(gateway.url, token);
    const ids: Record<string, string> = {};
    for (const [name, text] of Object.entries({ garden: 'planting tomatoes and basil in the spring garden', rocket: 'rocket engine thrust and orbital launch windows' })) {
      const r = await invoke(c, `canvas/${canvasId}/mutate`, 'POST', createOp(text));
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      ids[name] = r.body.block.block_id;
      // the worker's embedding of the block (not an edge function)
      expect(await embedBlock({ sql, provider: worker, breaker: new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 }) }, ids[name]!)).toBe('embedded');
    }
    return { canvasId, token, ids };
  }

  it('search answers with the nearest block first', async () => {
    const { canvasId, token, ids } = await embeddedCanvas();
    const c = client(gateway.url, token);
    const found = await invoke(c, `search/${canvasId}?q=${encodeURIComponent('when to plant basil in my garden')}`, 'GET');
    expect(found.status, JSON.stringify(found.body)).toBe(200);
    expect(found.body.model).toBe('local-hash-v1');
    expect(found.body.items.map((i: any) => i.block_id)).toEqual([ids.garden, ids.rocket]);
    const onNode = await invoke(client(server.url, token), `search/${canvasId}?q=rocket`, 'GET');
    expect({ status: found.status, shape: shape(found.body) }).toEqual({ status: onNode.status, shape: shape(onNode.body) });
  });

  it('search with EMBEDDING_PROVIDER=openai embeds the query through the provider\'s API (fetch under Deno), compares it only with the blocks of its model (items [] with the count and a warning when the worker\'s is another); a failing provider is 503 unavailable', async () => {
    // an OpenAI-compatible embeddings endpoint (OPENAI_BASE_URL), answering with the local model's vectors
    const seen: { authorization?: string; body: any }[] = [];
    let failing = false;
    const provider = createServer((req: IncomingMessage, res) => {
      let body = '';
      req.on('data', (c: Buffer) => { body += c; });
      req.on('end', () => {
        const json = JSON.parse(body);
        seen.push({ authorization: req.headers.authorization, body: json });
        if (failing) return void res.writeHead(500).end('{"error":"down"}');
        res.writeHead(200, { 'content-type': 'application/json' })
          .end(JSON.stringify({ data: (json.input as string[]).map((text, index) => ({ index, embedding: localEmbedding(text) })) }));
      });
    });
    await new Promise<void>((resolve) => provider.listen(0, '127.0.0.1', resolve));
    const baseUrl = `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1`;
    // the worker embeds with the same provider (its vectors stored as text-embedding-3-small's)
    const { canvasId, token, ids } = await embeddedCanvas(new OpenAIProvider({ baseUrl, apiKey: 'sk-edge-test', model: 'text-embedding-3-small',
      timeoutMs: 10_000, batchSize: 64, batchWindowMs: 0 }));
    // and a canvas the worker embedded with local-hash-v1: the search function's secrets are not the worker's
    const local = await embeddedCanvas();
    seen.length = 0;
    const search = await startEdgeFunction(bundle, 'search', { ...env, EMBEDDING_PROVIDER: 'openai', OPENAI_API_KEY: 'sk-edge-test',
      OPENAI_BASE_URL: baseUrl, EMBEDDING_BREAKER_FAILURES: '100' });
    try {
      const found = await call(search.url, 'GET', `/search/${canvasId}?q=${encodeURIComponent('launch of a rocket')}`, { token });
      expect(found.status, JSON.stringify(found.body)).toBe(200);
      expect(found.body.model).toBe('text-embedding-3-small');
      expect(found.body.items.map((i: any) => i.block_id)).toEqual([ids.rocket, ids.garden]);
      expect(seen).toEqual([{ authorization: 'Bearer sk-edge-test',
        body: { model: 'text-embedding-3-small', input: ['launch of a rocket'], dimensions: 1536, encoding_format: 'float' } }]);
      expect(found.body).toMatchObject({ other_model_blocks: 0, other_models: [] });
      // local-hash-v1's vectors are not compared with an OpenAI query: 200, items [], counted, and the function warns
      const mismatched = await call(search.url, 'GET', `/search/${local.canvasId}?q=${encodeURIComponent('launch of a rocket')}`, { token: local.token });
      expect(mismatched.status, JSON.stringify(mismatched.body)).toBe(200);
      expect(mismatched.body).toEqual({ items: [], model: 'text-embedding-3-small', other_model_blocks: 2, other_models: ['local-hash-v1'] });
      await until(() => search.output().includes(local.canvasId), 10_000, 'the search function\'s warning');
      expect(search.output()).toMatch(/search compared no block: the canvas's 2 embedded blocks were embedded by local-hash-v1, queries here by text-embedding-3-small; set EMBEDDING_PROVIDER and EMBEDDING_MODEL/);
      failing = true;
      await awayFromWindowEdge(1, 500); // S2: 5 a second per user
      const refused = await call(search.url, 'GET', `/search/${canvasId}?q=garden`, { token });
      expect(errorOf(refused), JSON.stringify(refused.body)).toEqual({ status: 503, code: 'unavailable', field: undefined });
      expect(search.alive(), search.output()).toBe(true);
    } finally {
      await search.stop();
      await new Promise<void>((resolve) => provider.close(() => resolve()));
    }
  });
});

describe('hostile input on the edge functions', () => {
  it('bad JSON, an oversized body, a wrong content-type, a missing or garbage token, odd bytes in the path: the Node server\'s 4xx with its code and field, nothing written, and the process answers the next request', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    const path = `/functions/v1/canvas/${canvasId}/mutate`;
    const op = JSON.stringify(createOp('never written'));
    const big = JSON.stringify({ ...createOp('x'), patch: { type: 'text', content: { text: 'x'.repeat(MAX_BODY_BYTES) } } });
    const cases: { name: string; path?: string; headers?: Record<string, string>; body?: string; chunked?: boolean; token?: string | null;
      expected: [number, string, string?] }[] = [
      { name: 'bad JSON', body: '{"action": "create", ', expected: [400, 'invalid_input', 'body'] },
      { name: 'not JSON at all', body: 'hello', expected: [400, 'invalid_input', 'body'] },
      { name: 'oversized body', body: big, expected: [413, 'payload_too_large'] },
      { name: 'oversized body, chunked (no Content-Length)', body: big, chunked: true, expected: [413, 'payload_too_large'] },
      { name: 'a body just under the limit, not JSON', body: `"${'x'.repeat(MAX_BODY_BYTES - 100)}`, expected: [400, 'invalid_input', 'body'] },
      { name: 'text/plain', body: op, headers: { 'content-type': 'text/plain' }, expected: [415, 'unsupported_media_type'] },
      { name: 'JSON with a trailing ";"', body: '{"action": "create"', headers: { 'content-type': 'application/json; charset=utf-8;' }, expected: [400, 'invalid_input', 'body'] },
      { name: 'JSON with a space before ";"', body: '{"action": "create"', headers: { 'content-type': 'application/json ; charset=utf-8' }, expected: [400, 'invalid_input', 'body'] },
      { name: 'another charset', body: op, headers: { 'content-type': 'application/json; charset=utf-16' }, expected: [415, 'unsupported_media_type', 'content-type'] },
      { name: 'gzip', body: op, headers: { 'content-encoding': 'gzip' }, expected: [415, 'unsupported_media_type', 'content-encoding'] },
      { name: 'no token', body: op, token: null, expected: [401, 'unauthorized'] },
      { name: 'garbage token', body: op, token: 'not.a.token', expected: [401, 'unauthorized'] },
      { name: 'token signed with another secret', body: op, token: await tokenFor(server, users.owner!, {}, { secret: randomBytes(36).toString('base64') }), expected: [401, 'unauthorized'] },
      { name: 'an undecodable path', path: `/functions/v1/canvas/${canvasId}%FF/snapshot`, expected: [400, 'invalid_input', 'path'] },
      { name: 'NUL in the path', path: `/functions/v1/canvas/${canvasId}%00/snapshot`, expected: [400, 'invalid_input', 'path'] },
      { name: 'not a uuid', path: '/functions/v1/canvas/..%2F..%2Fetc/snapshot', expected: [400, 'invalid_input', 'canvas_id'] },
    ];
    for (const k of cases) {
      const headers = { ...(k.body === undefined ? {} : { 'content-type': 'application/json' }), ...k.headers,
        ...(k.token === null ? {} : { authorization: `Bearer ${k.token ?? token}` }) };
      const req = { method: k.body === undefined ? 'GET' : 'POST', path: k.path ?? path, headers, chunked: k.chunked,
        ...(k.body === undefined ? {} : { body: k.body }) };
      const onEdge = await rawRequest(gateway.url, req);
      const onNode = await rawRequest(server.url, req);
      const parse = (r: { status: number; text: string }) => { try { return { status: r.status, body: JSON.parse(r.text) }; } catch { return { status: r.status, body: r.text }; } };
      const [e, n] = [parse(onEdge), parse(onNode)];
      const [status, code, field] = k.expected;
      expect({ case: k.name, ...errorOf(e as Answer) }, JSON.stringify(e.body)).toEqual({ case: k.name, status, code, field: field ?? e.body?.error?.field });
      expect({ case: k.name, ...errorOf(e as Answer) }).toEqual({ case: k.name, ...errorOf(n as Answer) });
      expect(Object.keys(e.body)).toEqual(['error']);
    }
    // odd bytes straight to the function: a raw byte above 0x7f and a control character in the request line
    const canvasFn = fns.canvas!;
    for (const target of [`/canvas/${canvasId}/snap\xffshot`, `/canvas/${canvasId}/snap\x01shot`]) {
      const r = await exchange(canvasFn.url, `GET ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`);
      expect(r.status, `${JSON.stringify(target)} → ${r.head}\n${r.body}`).toBeGreaterThanOrEqual(400);
      expect(r.status).toBeLessThan(500);
    }
    const [{ n, ops }] = await sql`select (select count(*)::int from app.blocks where canvas_id = ${canvasId}) as n,
      (select count(*)::int from app.block_operations where canvas_id = ${canvasId}) as ops` as unknown as [{ n: number; ops: number }];
    expect({ n, ops }).toEqual({ n: 0, ops: 0 });
    expect(canvasFn.alive(), canvasFn.output()).toBe(true);
    const next = await call(gateway.url, 'POST', path, { token, body: createOp('after the hostile ones') });
    expect(next.status, JSON.stringify(next.body)).toBe(200);
  });
});

describe('database faults under the edge functions', () => {
  it('connections killed with requests in flight: those answer 503 unavailable (no hang), the process lives, the next request succeeds, no acknowledged mutation is lost', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    const canvasFn = fns.canvas!;
    const app = 'potentia-edge-canvas';
    const admin = testDatabase(2);
    const held = await reservedTransaction(admin.sql);
    const ops = Array.from({ length: 4 }, (_, i) => createOp(`in flight ${i}`));
    let answers: Answer[];
    let renamed: Answer;
    try {
      // the canvas row held: the mutations wait in the database, on the function's connections
      await held.conn`select 1 from app.canvases where canvas_id = ${canvasId} for update`;
      const sent = ops.map((op) => call(canvasFn.url, 'POST', `/canvas/${canvasId}/mutate`, { token, body: op }));
      // and a rename (A6: a plain request transaction, not a lane's), waiting on the same row
      const renaming = call(canvasFn.url, 'PATCH', `/canvas/${canvasId}`, { token, body: { title: 'renamed in flight' } });
      // (the second to come waits behind the first, on the row's tuple lock)
      await until(async () => (await admin.sql`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = ${app}
        and cardinality(pg_blocking_pids(pid)) > 0`)[0]!.n >= 2, 10_000, 'a mutation and the rename waiting on the canvas row');
      const [{ killed }] = await admin.sql`select count(pg_terminate_backend(pid))::int as killed from pg_stat_activity where datname = current_database() and application_name = ${app}` as unknown as [{ killed: number }];
      expect(killed).toBeGreaterThan(0);
      await held.end('rollback');
      answers = await Promise.all(sent);
      renamed = await renaming;
    } finally {
      await held.release();
    }
    for (const a of answers) {
      expect([200, 503], JSON.stringify(a.body)).toContain(a.status);
      if (a.status === 503) {
        expect(a.body.error.code).toBe('unavailable');
        expect(a.headers.get('retry-after')).toBe('1');
      }
    }
    expect(answers.some((a) => a.status === 503), JSON.stringify(answers.map((a) => a.body))).toBe(true);
    // its connection lost before COMMIT was sent, the rename ran again on another: done, once
    expect(renamed!.status, JSON.stringify(renamed!.body)).toBe(200);
    expect(renamed!.body.title).toBe('renamed in flight');
    const [{ title }] = await sql`select title from app.canvases where canvas_id = ${canvasId}` as unknown as [{ title: string }];
    expect(title).toBe('renamed in flight');
    expect(canvasFn.alive(), canvasFn.output()).toBe(true);
    // acknowledged: in the database; the unanswered ones resent with their client_op_id are applied once
    const acknowledged = answers.filter((a) => a.status === 200).map((a) => a.body.block.block_id as string);
    const present = await sql`select block_id from app.blocks where block_id = any(${acknowledged}::uuid[])`;
    expect(present).toHaveLength(acknowledged.length);
    for (const [i, a] of answers.entries()) {
      if (a.status === 200) continue;
      const again = await call(canvasFn.url, 'POST', `/canvas/${canvasId}/mutate`, { token, body: ops[i] });
      expect(again.status, JSON.stringify(again.body)).toBe(200);
    }
    const [{ n }] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}` as unknown as [{ n: number }];
    expect(n).toBe(ops.length);
    await admin.close();
  });

  it('idle connections of every function killed: each answers its next request', async () => {
    const { canvasId, users, workspaceId } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    const c = client(gateway.url, token);
    expect((await invoke(c, `canvas/${canvasId}`, 'GET')).status).toBe(200);
    expect((await invoke(c, `workspaces/${workspaceId}/members`, 'GET')).status).toBe(200);
    const killed = (await sql<{ pid: number }[]>`select pid from pg_stat_activity where datname = current_database() and application_name like 'potentia-edge-%'
      and pg_terminate_backend(pid)`).map((r) => r.pid);
    expect(killed.length).toBeGreaterThan(0);
    // the terminated backends gone (not every edge backend: a function may open a new one meanwhile)
    await until(async () => (await sql`select 1 from pg_stat_activity where pid = any(${killed}::int[])`).length === 0, 5000, 'the backends gone');
    const after = await invoke(c, `canvas/${canvasId}`, 'GET');
    expect(after.status, JSON.stringify(after.body)).toBe(200);
    expect((await invoke(c, `workspaces/${workspaceId}/members`, 'GET')).status).toBe(200);
    for (const fn of Object.values(fns)) expect(fn.alive(), fn.output()).toBe(true);
  });

  it('a function whose database does not answer: 503 unavailable at once for a read and a mutation, and it keeps serving', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const token = await tokenFor(server, users.owner!);
    const url = new URL(testDatabaseUrl());
    url.port = '1'; // nothing listens there
    const lost = await startEdgeFunction(bundle, 'canvas', { ...env, SUPABASE_DB_URL: url.toString() });
    try {
      for (let i = 0; i < 2; i++) {
        const read = await call(lost.url, 'GET', `/canvas/${canvasId}`, { token });
        const write = await call(lost.url, 'POST', `/canvas/${canvasId}/mutate`, { token, body: createOp('nowhere') });
        for (const a of [read, write]) {
          expect(errorOf(a), JSON.stringify(a.body)).toEqual({ status: 503, code: 'unavailable', field: undefined });
          expect(a.headers.get('retry-after')).toBe('1');
        }
      }
      expect(lost.alive(), lost.output()).toBe(true);
    } finally {
      await lost.stop();
    }
  });

  it('two instances of canvas share the per-user rate limit (it is in the database): A5, one canvas per 10 s, across both', async () => {
    const user = await createUser(sql, 'edge-limit');
    const token = await tokenFor(server, user);
    const ws = await call(fns.workspaces!.url, 'POST', '/workspaces', { token, body: { name: 'limits' } });
    expect(ws.status).toBe(201);
    await awayFromWindowEdge(10, 3000);
    const body = { workspace_id: ws.body.workspace_id };
    const [a, b] = await Promise.all([fns.canvas!, canvasB].map((fn) => call(fn.url, 'POST', '/canvas', { token, body })));
    expect([a!.status, b!.status].sort()).toEqual([201, 429]);
    const refused = a!.status === 429 ? a! : b!;
    expect(refused.body.error).toMatchObject({ code: 'rate_limited', limit: 1 });
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(0);
    const [{ n }] = await sql`select count(*)::int as n from app.canvases where workspace_id = ${ws.body.workspace_id}` as unknown as [{ n: number }];
    expect(n).toBe(1);
    expect(canvasB.alive(), canvasB.output()).toBe(true);
  });
});
