import { createClient, FunctionsHttpError, type SupabaseClient } from '@supabase/supabase-js';
import { SignJWT } from 'jose';
import { createHash, randomUUID } from 'node:crypto';
import net from 'node:net';
import WebSocket from 'ws';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueTokenPair } from '../../functions/auth.ts';
import type { Database } from '../../src/db/index.ts';
import { API_FUNCTION_ROUTES, SQL_ONLY_API_FUNCTIONS } from '../../src/http/not-found.ts';
import { API_RATE_LIMITS } from '../../src/metrics.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { algNoneToken, exchange, rawRequest, startTestServer, tokenFor } from '../helpers/http.ts';
import { awayFromWindowEdge, until } from '../helpers/wait.ts';

// The HTTP API against the running server (in-process, real Postgres): supabase-js
// `functions.invoke` on /functions/v1/<name>/... and plain fetch on /api/v1/...

const ERROR_CODES = ['invalid_input', 'unauthorized', 'forbidden', 'not_found', 'conflict', 'payload_too_large',
  'unsupported_media_type', 'rate_limited', 'internal', 'unavailable', 'timeout'];

let server: Server;
let echoServer: Server;
let database: Database;
let sql: Sql;
let anonKey: string;

beforeAll(async () => {
  server = await startTestServer();
  echoServer = await startTestServer({ debugEcho: true });
  database = testDatabase();
  sql = database.sql;
  // what a Supabase project hands out as its anon key: a signed token with role anon and no user
  anonKey = await new SignJWT({ role: 'anon', iss: 'supabase-demo' }).setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setIssuedAt().setExpirationTime('1h').sign(new TextEncoder().encode(server.deps.config.auth.jwtSecret));
});
afterAll(async () => {
  await server?.stop();
  await echoServer?.stop();
  await database?.close();
});

/** A supabase-js client whose requests carry `token` (like a signed-in user's session). */
function supabaseAs(token?: string): SupabaseClient {
  return createClient(server.url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as never }, // Node 20 has no global WebSocket (no connection is opened here)
    global: token ? { headers: { Authorization: `Bearer ${token}` } } : {},
  });
}

/** functions.invoke, answering {status, body} for successes and errors alike. */
async function invoke(client: SupabaseClient, path: string, options: { method: 'GET' | 'POST' | 'PATCH' | 'DELETE'; body?: unknown }) {
  const { data, error, response } = await client.functions.invoke(path, options as never);
  if (error) {
    if (!(error instanceof FunctionsHttpError)) throw error;
    const res = error.context as Response;
    return { status: res.status, body: await res.json(), headers: res.headers };
  }
  return { status: response!.status, body: data, headers: response!.headers };
}

/** fetch on the server with a bearer token and a JSON body. */
async function api(path: string, opts: { method?: string; token?: string; body?: unknown; headers?: Record<string, string> } = {}) {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined && !headers['content-type']) headers['content-type'] = 'application/json';
  const res = await fetch(`${server.url}${path}`, {
    method: opts.method ?? 'GET', headers,
    body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body),
  });
  const text = await res.text();
  let body: any = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  return { status: res.status, body, headers: res.headers };
}

/** The one error shape: exactly {error: {code, message, ...}} with a stable code. */
function expectError(res: { status: number; body: any }, status: number, code: string, field?: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(Object.keys(res.body)).toEqual(['error']);
  expect(ERROR_CODES).toContain(res.body.error.code);
  expect(res.body.error.code).toBe(code);
  expect(typeof res.body.error.message).toBe('string');
  expect(res.body.error.message.length).toBeGreaterThan(0);
  if (field !== undefined) expect(res.body.error.field).toBe(field);
}

/** A canvas (owner + optional members) and a token per user. */
async function setup(roles: ('admin' | 'editor' | 'viewer')[] = []) {
  const c = await createCanvas(sql, roles);
  const tokens: Record<string, string> = {};
  for (const [role, id] of Object.entries(c.users)) tokens[role] = await tokenFor(server, id);
  return { ...c, tokens };
}

const createOp = (patch: Record<string, unknown> = {}) =>
  ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: 'hello' }, ...patch } });

describe('happy paths', () => {
  it('H2 creates, updates and deletes a block through supabase-js functions.invoke', async () => {
    const { canvasId, tokens } = await setup();
    const sb = supabaseAs(tokens.owner);
    const created = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: createOp() });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ status: 'success', version: 1, block: { type: 'text', content: { text: 'hello' } } });
    expect(typeof created.body.server_seq).toBe('number');
    const blockId = created.body.block.block_id as string;

    const updated = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: {
      action: 'update', block_id: blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: 'world' } } } });
    expect(updated.status).toBe(200);
    expect(updated.body).toMatchObject({ status: 'success', version: 2, block: { block_id: blockId, content: { text: 'world' } } });
    expect(updated.body.server_seq).toBeGreaterThan(created.body.server_seq);

    const deleted = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: {
      action: 'delete', block_id: blockId, client_op_id: randomUUID(), base_version: 2 } });
    expect(deleted.status).toBe(200);
    expect(deleted.body).toMatchObject({ status: 'success' });
    expect(deleted.body.server_seq).toBeGreaterThan(updated.body.server_seq);
    const [row] = await sql`select count(*)::int as n from app.blocks where block_id = ${blockId}`;
    expect(row!.n).toBe(0);
  });

  it('H2 applies a batch all-or-nothing over /api/v1', async () => {
    const { canvasId, tokens } = await setup();
    const res = await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: tokens.owner, body: { ops: [createOp(), createOp()] } });
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('success');
    expect(res.body.results).toHaveLength(2);
    const [row] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(row!.n).toBe(2);
  });

  it('H3 broadcasts presence and H6 removes it', async () => {
    const { canvasId, tokens, users } = await setup();
    const presence = await api(`/api/v1/canvas/${canvasId}/presence`, { method: 'POST', token: tokens.owner, body: { cursor: { x: 10, y: 20 }, typing: true } });
    expect(presence.status).toBe(200);
    expect(presence.body).toMatchObject({ broadcast: true, last_active_at_updated: true });
    const [before] = await sql`select typing from app.presence where canvas_id = ${canvasId} and user_id = ${users.owner!}`;
    expect(before?.typing).toBe(true);

    const left = await api(`/api/v1/canvas/${canvasId}/leave`, { method: 'POST', token: tokens.owner });
    expect(left.status).toBe(200);
    expect(left.body).toEqual({ left: true });
    const after = await sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${users.owner!}`;
    expect(after).toHaveLength(0);
  });

  it('H4 returns the full state and the operations after since_seq', async () => {
    const { canvasId, tokens, users } = await setup();
    const first = await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } });
    const second = await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } });
    expect(first.status).toBe('success');
    expect(second.status).toBe('success');
    const sb = supabaseAs(tokens.owner);
    const res = await invoke(sb, `canvas/${canvasId}/snapshot?since_seq=${first.server_seq}`, { method: 'GET' });
    expect(res.status).toBe(200);
    expect(res.body.canvas.canvas_id).toBe(canvasId);
    expect(res.body.blocks.map((b: any) => b.block_id).sort()).toEqual([first.block_id, second.block_id].sort());
    expect(res.body.watermark).toBe(second.server_seq);
    // exactly the operations after since_seq
    expect(res.body.since.changes.map((ch: any) => ch.server_seq)).toEqual([second.server_seq]);
    expect(res.body.since.changes[0].block_id).toBe(second.block_id);
  });

  it('H4 by canvas_seq: GET …/changes?since_canvas_seq= answers the operations after it, as api.get_canvas_changes_since', async () => {
    // docs/realtime.md: a block_op client that sees a canvas_seq gap fetches the gap by canvas_seq;
    // supabase-js users had no HTTP way to (only the snapshot, by server_seq, with every block)
    const { canvasId, tokens, users } = await setup();
    const ops = [];
    for (let i = 0; i < 3; i++) ops.push(await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } }));
    const sb = supabaseAs(tokens.owner);
    const res = await invoke(sb, `canvas/${canvasId}/changes?since_canvas_seq=${ops[0]!.canvas_seq}&limit=1`, { method: 'GET' });
    expect(res.status).toBe(200);
    expect(res.body).toEqual({ changes: [expect.objectContaining({ canvas_seq: ops[1]!.canvas_seq, block_id: ops[1]!.block_id })],
      has_more: true, watermark: ops[1]!.server_seq, canvas_watermark: ops[1]!.canvas_seq, snapshot_required: false });
    const rest = await api(`/api/v1/canvas/${canvasId}/changes?since_canvas_seq=${res.body.canvas_watermark}`, { token: tokens.owner });
    expect(rest.status).toBe(200);
    expect(rest.body.changes.map((ch: any) => ch.canvas_seq)).toEqual([ops[2]!.canvas_seq]);
    expect(rest.body).toMatchObject({ has_more: false, canvas_watermark: ops[2]!.canvas_seq, snapshot_required: false });
    // ahead of the canvas: the log cannot continue from there
    const ahead = await api(`/api/v1/canvas/${canvasId}/changes?since_canvas_seq=${ops[2]!.canvas_seq! + 5}`, { token: tokens.owner });
    expect(ahead.body).toMatchObject({ changes: [], snapshot_required: true });
    expectError(await api(`/api/v1/canvas/${canvasId}/changes`, { token: tokens.owner }), 400, 'invalid_input', 'since_canvas_seq');
    expectError(await api(`/api/v1/canvas/${canvasId}/changes?since_canvas_seq=-1`, { token: tokens.owner }), 400, 'invalid_input', 'since_canvas_seq');
    expectError(await api(`/api/v1/canvas/${canvasId}/changes?since_canvas_seq=0&limit=1001`, { token: tokens.owner }), 400, 'invalid_input', 'limit');
    // read under the caller's role, as the snapshot: a stranger learns nothing
    expectError(await api(`/api/v1/canvas/${canvasId}/changes?since_canvas_seq=0`, { token: await tokenFor(server, await createUser(sql, 'stranger')) }), 404, 'not_found', 'canvas_id');
  });

  it('A1 loads the canvas and its blocks', async () => {
    const { canvasId, tokens, users } = await setup();
    const op = await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { a: 1 } } });
    const res = await api(`/api/v1/canvas/${canvasId}`, { token: tokens.owner });
    expect(res.status).toBe(200);
    expect(res.body.canvas).toMatchObject({ canvas_id: canvasId, title: 'Test canvas', role: 'owner' });
    expect(res.body.blocks).toEqual([expect.objectContaining({ block_id: op.block_id, content: { a: 1 } })]);
  });

  it('A2 pages blocks with a keyset cursor and A3 reads one block', async () => {
    const { canvasId, tokens, users } = await setup();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text' } })).block_id!);
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 5; page++) {
      const res: { status: number; body: any } = await api(`/api/v1/canvas/${canvasId}/blocks?limit=2${cursor ? `&cursor=${cursor}` : ''}`, { token: tokens.owner });
      expect(res.status).toBe(200);
      seen.push(...res.body.items.map((b: any) => b.block_id));
      cursor = res.body.next_cursor;
      if (!cursor) break;
    }
    expect(seen.sort()).toEqual([...ids].sort());

    const one = await api(`/api/v1/canvas/${canvasId}/blocks/${ids[1]}`, { token: tokens.owner });
    expect(one.status).toBe(200);
    expect(one.body).toMatchObject({ block_id: ids[1], canvas_id: canvasId, version: 1 });
    expectError(await api(`/api/v1/canvas/${canvasId}/blocks/${randomUUID()}`, { token: tokens.owner }), 404, 'not_found', 'block_id');
  });

  it('A4 lists the caller\'s canvases and A5 creates one', async () => {
    const { canvasId, workspaceId, tokens } = await setup();
    const sb = supabaseAs(tokens.owner);
    const created = await invoke(sb, 'canvas', { method: 'POST', body: { workspace_id: workspaceId, title: 'Second' } });
    expect(created.status).toBe(201);
    expect(created.body.canvas_id).toMatch(/^[0-9a-f-]{36}$/);
    const list = await invoke(sb, 'canvas', { method: 'GET' });
    expect(list.status).toBe(200);
    expect(list.body.canvases.map((c: any) => c.canvas_id).sort()).toEqual([canvasId, created.body.canvas_id].sort());
    expect(list.body.canvases.find((c: any) => c.canvas_id === created.body.canvas_id)).toMatchObject({ title: 'Second', role: 'owner' });
  });

  it('A6 changes the title and settings, A7 soft-deletes (204) and the canvas is gone', async () => {
    const { canvasId, tokens } = await setup();
    const patched = await api(`/api/v1/canvas/${canvasId}`, { method: 'PATCH', token: tokens.owner, body: { title: 'Renamed', settings: { grid: true } } });
    expect(patched.status).toBe(200);
    expect(patched.body).toMatchObject({ canvas_id: canvasId, title: 'Renamed', settings: { grid: true }, version: 2 });

    const deleted = await api(`/api/v1/canvas/${canvasId}`, { method: 'DELETE', token: tokens.owner });
    expect(deleted.status).toBe(204);
    expect(deleted.body).toBeNull();
    const [row] = await sql`select deleted_at from app.canvases where canvas_id = ${canvasId}`;
    expect(row!.deleted_at).not.toBeNull();
    expectError(await api(`/api/v1/canvas/${canvasId}`, { token: tokens.owner }), 404, 'not_found');
  });

  it('A8 tells who may write', async () => {
    const { canvasId, tokens, users } = await setup(['viewer']);
    const owner = await invoke(supabaseAs(tokens.owner), `canvas/${canvasId}/permissions`, { method: 'GET' });
    expect(owner.status).toBe(200);
    expect(owner.body).toMatchObject({ can_write: true, role: 'owner' });
    expect(owner.body.users.map((u: any) => [u.user_id, u.role]).sort()).toEqual([[users.owner, 'owner'], [users.viewer, 'viewer']].sort());
    const viewer = await api(`/api/v1/canvas/${canvasId}/permissions`, { token: tokens.viewer });
    expect(viewer.status).toBe(200);
    expect(viewer.body).toMatchObject({ can_write: false, role: 'viewer' });
  });

  it('/health and /ready answer', async () => {
    const health = await api('/health');
    expect(health.status).toBe(200);
    expect(health.body).toEqual({ status: 'ok' });
    const ready = await api('/ready');
    expect(ready.status).toBe(200);
    expect(ready.body).toMatchObject({ status: 'ready', checks: { database: 'ok' } });
  });

  it('/metrics from loopback is Prometheus text with the request counters', async () => {
    await api('/health');
    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    const text = await res.text();
    expect(text).toMatch(/^# TYPE potentia_http_requests_total counter$/m);
    expect(text).toMatch(/^potentia_http_requests_total\{[^}]*route="\/health"[^}]*status="200"[^}]*\} [1-9]/m);
    expect(text).toContain('potentia_http_request_duration_seconds_bucket');
    // every request counted once in each: the counter's series are the histogram's _count series
    const series = (name: string) => Object.fromEntries([...text.matchAll(new RegExp(`^${name}(\\{[^}]*\\}) (\\S+)$`, 'gm'))].map((m) => [m[1], m[2]]));
    const counted = series('potentia_http_requests_total');
    expect(Object.keys(counted).length).toBeGreaterThan(0);
    expect(counted).toEqual(series('potentia_http_request_duration_seconds_count'));
  });

  it('/metrics with INTERNAL_TOKEN set: the token is required from loopback too (behind a proxy every caller is loopback)', async () => {
    const internalToken = 'metrics-token-0123456789';
    const guarded = await startTestServer({ internalToken });
    try {
      expect((await fetch(`${guarded.url}/metrics`)).status).toBe(404);
      expect((await fetch(`${guarded.url}/metrics`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(404);
      // the token sent twice (or beside another): 400 naming the header, as on every surface (token-policy.test.ts)
      const twice = await fetch(`${guarded.url}/metrics`, { headers: [['authorization', `Bearer ${internalToken}`], ['authorization', `Bearer ${internalToken}`]] });
      expect(twice.status).toBe(400);
      expect(await twice.json()).toMatchObject({ error: { code: 'invalid_input', field: 'authorization' } });
      const res = await fetch(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${internalToken}` } });
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text).toMatch(/^# TYPE potentia_http_requests_total counter$/m);
      // a fresh server, no request refused yet: every endpoint it can refuse is a series at 0 (rate()
      // and alerts need one before the first refusal), and none of the gateway's (it serves no realtime)
      const rejections = [...text.matchAll(/^potentia_rate_limit_rejections_total\{endpoint="([^"]+)"\} (\S+)$/gm)];
      expect(Object.fromEntries(rejections.map((m) => [m[1], m[2]]))).toEqual(Object.fromEntries(API_RATE_LIMITS.map((e) => [e, '0'])));
      // and those are the endpoint limits of the seed (app.endpoint_limits; M3 is never counted, docs/limits.md)
      const seeded = await sql<{ endpoint: string }[]>`select endpoint from app.endpoint_limits where endpoint <> 'M3' order by endpoint`;
      expect([...API_RATE_LIMITS].filter((e) => e !== 'auth').sort()).toEqual(seeded.map((r) => r.endpoint));
    } finally {
      await guarded.stop();
    }
  });

  it('/debug/echo is 404 unless the server enables it', async () => {
    expectError(await api('/debug/echo', { method: 'POST', body: { hello: 'world' } }), 404, 'not_found');
    const res = await fetch(`${echoServer.url}/debug/echo`, {
      method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'echo-test-1' }, body: JSON.stringify({ hello: 'world' }),
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ echo: { hello: 'world' }, request_id: 'echo-test-1' });
  });

  it('a PostgREST path (/rest/v1, Supabase only) is a 404 in PostgREST\'s error shape that says where the work is served', async () => {
    // what supabase-js `supabase.schema('api').rpc('upsert_block_atomic', …)` sends; postgrest-js
    // reads {code, message, details, hint} into `error` (in our own shape its code and message were undefined)
    const { error, status } = await supabaseAs().schema('api').rpc('upsert_block_atomic', { p_canvas_id: randomUUID() });
    expect(status).toBe(404);
    expect(error).toMatchObject({ code: 'not_found', message: expect.stringMatching(/does not serve PostgREST .*POST \/api\/v1\/canvas\/\{id\}\/mutate/),
      hint: expect.stringContaining('docs/mutations.md') });
    for (const path of ['/rest/v1', '/rest/v1/rpc/upsert_block_atomic', '/rest/v1/blocks?select=*']) {
      const res = await api(path, { method: path.includes('rpc') ? 'POST' : 'GET', body: path.includes('rpc') ? {} : undefined });
      expect(res.status).toBe(404);
      expect(res.body).toMatchObject({ code: 'not_found', details: null });
      expect(res.body.message).toContain('/api/v1/canvas/{id}/mutate');
      expect(res.body.message).toContain('docs/mutations.md');
    }
    // refused before any route (an undecodable URL), or by Node's parser (a supabase-js filter
    // `in.(…)` of 450 ids is a 17 KB URL: 431; an unknown method): the same shape
    const bad = await api('/rest/v1/rpc/%ff');
    expect(bad.status).toBe(400);
    expect(bad.body).toMatchObject({ code: 'invalid_input', details: null });
    const ids = Array.from({ length: 450 }, () => randomUUID()).join(',');
    for (const [request, status, code] of [[{ method: 'GET', path: `/rest/v1/blocks?block_id=in.(${ids})` }, 431, 'payload_too_large'],
      [{ method: 'FOO', path: '/rest/v1/blocks' }, 400, 'invalid_input']] as const) {
      const res = await rawRequest(server.url, request);
      expect({ status: res.status, body: JSON.parse(res.text) }).toMatchObject({ status, body: { code, details: null } });
    }
    // elsewhere Node's refusals keep the API's shape
    const other = await rawRequest(server.url, { method: 'FOO', path: '/api/v1/canvas' });
    expect(JSON.parse(other.text)).toMatchObject({ error: { code: 'invalid_input' } });
    // an Expect header Node refuses (417): the same shapes, naming the header
    const expectation = await rawRequest(server.url, { method: 'POST', path: '/api/v1/canvas', headers: { expect: 'x-evil' }, body: '{}' });
    expect({ status: expectation.status, type: expectation.headers['content-type'], body: JSON.parse(expectation.text) }).toEqual({
      status: 417, type: 'application/json',
      body: { error: { code: 'invalid_input', field: 'expect', message: 'the Expect header is not supported here: send only Expect: 100-continue, or none' } } });
    const expectationRest = await rawRequest(server.url, { method: 'GET', path: '/rest/v1/blocks', headers: { expect: 'x-evil' } });
    expect({ status: expectationRest.status, body: JSON.parse(expectationRest.text) }).toMatchObject({ status: 417, body: { code: 'invalid_input', details: null } });
    // the other Supabase services supabase-js reaches by itself say what serves that work here:
    // supabase.storage (storage-js shows this message as its error's), and under realtime-js's
    // REST API (served: tests/integration/realtime-rest-broadcast.test.ts) the routes it has
    const storage = await api('/storage/v1/object/potentia-files/a.txt', { method: 'POST', body: {} });
    expect(storage.status).toBe(404);
    expect(storage.body.error.message).toContain('POST /api/v1/canvas/{id}/files and presigned URLs (docs/files.md)');
    const tenants = await api('/realtime/v1/api/tenants', { method: 'GET' });
    expect(tenants.status).toBe(404);
    expect(tenants.body).toEqual({ code: 'not_found', message: expect.stringContaining('POST /realtime/v1/api/broadcast/{topic}/events/{event}') });
    // any other unknown path keeps the plain answer
    expect((await api('/nowhere')).body.error.message).toBe('no route GET /nowhere');
  });

  it('supabase-js .rpc() of an api function is told its own HTTP route (a read was told to mutate blocks); every client-callable function has one or is SQL only', async () => {
    // docs/realtime.md sends the canvas_seq gap fetch (api.get_canvas_changes_since, PostgREST on
    // Supabase) to the snapshot route locally: the 404's hint said to mutate blocks
    const { error, status } = await supabaseAs().schema('api').rpc('get_canvas_changes_since', { p_canvas_id: randomUUID(), p_since_canvas_seq: 3 });
    expect(status).toBe(404);
    expect(error).toMatchObject({ code: 'not_found',
      message: expect.stringContaining('api.get_canvas_changes_since is served here as GET /api/v1/canvas/{id}/changes?since_canvas_seq={canvas_seq}'),
      hint: 'locally, use GET /api/v1/canvas/{id}/changes?since_canvas_seq={canvas_seq} or SQL (docs/mutations.md); PostgREST is served on Supabase' });
    expect(error!.message).not.toContain('Mutate blocks');
    // every api function a signed-in user may execute is named, and each named route is served
    const granted = (await sql<{ name: string }[]>`
      select distinct p.proname as name from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname = 'api' and has_function_privilege('authenticated', p.oid, 'execute') order by 1`).map((r) => r.name);
    expect(granted.filter((name) => !Object.hasOwn(API_FUNCTION_ROUTES, name) && !SQL_ONLY_API_FUNCTIONS.includes(name))).toEqual([]);
    const openapi = (await api('/api/v1/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    const served = new Set(Object.entries(openapi.paths).flatMap(([path, ops]) => Object.keys(ops).map((m) => `${m.toUpperCase()} ${path.replace(/\{[^}]+\}/g, '{}')}`)));
    for (const [name, route] of Object.entries(API_FUNCTION_ROUTES)) {
      expect(served, `${name}: ${route}`).toContain(route.replace(/\?.*$/, '').replace(/\{[^}]+\}/g, '{}'));
    }
  });

  it('a missing, repeated or malformed Host, or a request target that is not a URL, is a 400 in the one shape naming it (it was an empty 400)', async () => {
    /** One request written by hand (Node's client writes one Host) on its own connection. */
    const raw = (head: string) => exchange(server.url, `${head}\r\n`);
    const cases: [string, string, string][] = [
      ['GET /health HTTP/1.1\r\n', '/health', 'host'],                                   // none (RFC 9112 §3.2)
      ['GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n', '/health', 'host'],             // two
      ['GET /health HTTP/1.1\r\nHost: a b\r\n', '/health', 'host'],
      ['GET /health HTTP/1.1\r\nHost: x:99999\r\n', '/health', 'host'],
      ['GET /health HTTP/1.1\r\nHost: user@evil.example\r\n', '/health', 'host'],
      ['GET /health HTTP/1.1\r\nHost: evil.example/x\r\n', '/health', 'host'],
      [`GET /api/v1/canvas/${randomUUID()} HTTP/1.1\r\nHost: [::1\r\n`, '/api', 'host'],
      ['GET /a\\b HTTP/1.1\r\nHost: x\r\n', '/a', 'path'],
      ['GET ftp://x/health HTTP/1.1\r\nHost: x\r\n', 'ftp:', 'path'],
      ['GET /rest/v1/blocks HTTP/1.1\r\nHost: a\r\nHost: b\r\n', '/rest/v1', 'host'],
    ];
    for (const [head, path, field] of cases) {
      const res = await raw(head);
      expect(res.status, head).toBe(400);
      expect(res.head, head).toMatch(/\r\ncontent-type: application\/json/i);
      expect(res.head, head).toMatch(/\r\nconnection: close/i);
      const body = JSON.parse(res.body);
      if (path === '/rest/v1') expect(body).toMatchObject({ code: 'invalid_input', details: null, message: expect.stringMatching(/^host: /) });
      else expect(body).toEqual({ error: { code: 'invalid_input', field, message: expect.stringMatching(new RegExp(`^${field}: `)) } });
    }
    // one Host, in any form a URL holds, and HTTP/1.0 without one, are served
    for (const head of ['GET /health HTTP/1.1\r\nHost: localhost:1234\r\n', 'GET /health HTTP/1.1\r\nHost: [::1]:80\r\n', 'GET /health HTTP/1.0\r\n']) {
      const res = await raw(`${head}Connection: close\r\n`);
      expect({ head, status: res.status, body: res.body }).toEqual({ head, status: 200, body: '{"status":"ok"}' });
    }
  });

  it('/api/v1/openapi.json is an OpenAPI 3.1 document listing the canvas paths', async () => {
    const res = await api('/api/v1/openapi.json');
    expect(res.status).toBe(200);
    expect(res.body.openapi).toBe('3.1.0');
    const paths = Object.keys(res.body.paths);
    for (const path of ['/api/v1/canvas', '/api/v1/canvas/{canvas_id}', '/api/v1/canvas/{canvas_id}/mutate',
      '/api/v1/canvas/{canvas_id}/presence', '/api/v1/canvas/{canvas_id}/snapshot', '/api/v1/canvas/{canvas_id}/leave',
      '/api/v1/canvas/{canvas_id}/blocks', '/api/v1/canvas/{canvas_id}/blocks/{block_id}', '/api/v1/canvas/{canvas_id}/permissions',
      '/api/v1/auth/refresh']) {
      expect(paths).toContain(path);
    }
    const canvas = res.body.paths['/api/v1/canvas/{canvas_id}'];
    expect(Object.keys(canvas).sort()).toEqual(['delete', 'get', 'patch']);
    expect(res.body.paths['/api/v1/canvas/{canvas_id}/mutate'].post.requestBody.content['application/json'].schema).toBeDefined();
    expect(res.body.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
  });
});

describe('auth matrix', () => {
  it('no token → 401 on every canvas endpoint, through fetch and supabase-js', async () => {
    const { canvasId } = await setup();
    const block = randomUUID();
    for (const [method, path] of [['GET', ''], ['GET', `/${canvasId}`], ['PATCH', `/${canvasId}`], ['DELETE', `/${canvasId}`],
      ['POST', ''], ['POST', `/${canvasId}/mutate`], ['POST', `/${canvasId}/presence`], ['GET', `/${canvasId}/snapshot`],
      ['POST', `/${canvasId}/leave`], ['GET', `/${canvasId}/blocks`], ['GET', `/${canvasId}/blocks/${block}`],
      ['GET', `/${canvasId}/permissions`]] as const) {
      const res = await api(`/api/v1/canvas${path}`, { method, body: method === 'GET' || method === 'DELETE' ? undefined : {} });
      expectError(res, 401, 'unauthorized');
      expect(res.headers.get('www-authenticate')).toBe('Bearer'); // RFC 6750 §3: no error code without a token
    }
    // supabase-js without a user session sends the anon key: a valid signature, but no user
    expectError(await invoke(supabaseAs(), `canvas/${canvasId}`, { method: 'GET' }), 401, 'unauthorized');
  });

  it('expired, badly signed, alg:none, wrong-audience and no-user tokens → 401', async () => {
    const { canvasId, users } = await setup();
    const owner = users.owner!;
    const tokens = {
      expired: await tokenFor(server, owner, {}, { expiresInSeconds: -120 }),
      badSignature: await tokenFor(server, owner, {}, { secret: 'another-secret-that-is-at-least-32-characters' }),
      algNone: algNoneToken(owner, server.deps.config.auth.audience),
      wrongAudience: await tokenFor(server, owner, {}, { audience: 'someone-else' }),
      garbage: 'not-a-jwt',
      // validly signed, but naming no user or a role the API never runs as
      anonRole: await tokenFor(server, owner, { role: 'anon' }),
      superuserRole: await tokenFor(server, owner, { role: 'postgres' }),
      subNotAUser: await tokenFor(server, 'not-a-uuid'),
    };
    for (const [kind, token] of Object.entries(tokens)) {
      const res = await api(`/api/v1/canvas/${canvasId}`, { token });
      expectError(res, 401, 'unauthorized');
      expect(res.body.error.message, kind).not.toMatch(/internal/);
      expect(res.headers.get('www-authenticate'), kind).toBe('Bearer error="invalid_token"');
      expectError(await invoke(supabaseAs(token), `canvas/${canvasId}/mutate`, { method: 'POST', body: createOp() }), 401, 'unauthorized');
    }
    // the same owner with a good token is let in: the rejections were about the token
    expect((await api(`/api/v1/canvas/${canvasId}`, { token: await tokenFor(server, owner) })).status).toBe(200);
    const [row] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(row!.n).toBe(0);
  });

  it('a token scoped to another canvas → 403 on mutate; scoped to this one → 200', async () => {
    const { canvasId, users } = await setup();
    const other = randomUUID();
    const scoped = await tokenFor(server, users.owner!, { scope: `canvas:${other}:write` });
    expectError(await invoke(supabaseAs(scoped), `canvas/${canvasId}/mutate`, { method: 'POST', body: createOp() }), 403, 'forbidden');
    const readOnly = await tokenFor(server, users.owner!, { scope: `canvas:${canvasId}:read` });
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: readOnly, body: createOp() }), 403, 'forbidden');
    const right = await tokenFor(server, users.owner!, { scope: `canvas:${canvasId}:write` });
    expect((await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: right, body: createOp() })).status).toBe(200);
    const [row] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(row!.n).toBe(1);
  });

  it('a viewer writing → 403, and nothing is written', async () => {
    const { canvasId, workspaceId, tokens } = await setup(['viewer']);
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: tokens.viewer, body: createOp() }), 403, 'forbidden');
    expectError(await api(`/api/v1/canvas/${canvasId}`, { method: 'PATCH', token: tokens.viewer, body: { title: 'mine' } }), 403, 'forbidden');
    expectError(await api(`/api/v1/canvas/${canvasId}`, { method: 'DELETE', token: tokens.viewer }), 403, 'forbidden');
    expectError(await api('/api/v1/canvas', { method: 'POST', token: tokens.viewer, body: { workspace_id: workspaceId } }), 403, 'forbidden');
    const [row] = await sql`select (select count(*)::int from app.blocks where canvas_id = ${canvasId}) as blocks,
                                   (select count(*)::int from app.canvases where workspace_id = ${workspaceId}) as canvases,
                                   (select title from app.canvases where canvas_id = ${canvasId}) as title,
                                   (select deleted_at from app.canvases where canvas_id = ${canvasId}) as deleted_at`;
    expect(row).toEqual({ blocks: 0, canvases: 1, title: 'Test canvas', deleted_at: null });
  });

  it('a non-member reading → 404 (existence is not revealed)', async () => {
    const { canvasId } = await setup();
    const stranger = await tokenFor(server, await createUser(sql, 'stranger'));
    for (const path of ['', '/blocks', '/permissions', '/snapshot']) {
      expectError(await api(`/api/v1/canvas/${canvasId}${path}`, { token: stranger }), 404, 'not_found');
    }
    // exactly as for a canvas that does not exist
    expectError(await api(`/api/v1/canvas/${randomUUID()}`, { token: stranger }), 404, 'not_found');
    const list = await api('/api/v1/canvas', { token: stranger });
    expect(list.status).toBe(200);
    expect(list.body).toEqual({ canvases: [], next_cursor: null });
  });
});

describe('contract', () => {
  it('invalid input is a 400 naming the field', async () => {
    const { canvasId, workspaceId, tokens } = await setup();
    const t = tokens.owner;
    expectError(await api('/api/v1/canvas/not-a-uuid/mutate', { method: 'POST', token: t, body: createOp() }), 400, 'invalid_input', 'canvas_id');
    expectError(await api('/api/v1/canvas/not-a-uuid', { token: t }), 400, 'invalid_input', 'canvas_id');
    expectError(await api(`/api/v1/canvas/${canvasId}/blocks/nope`, { token: t }), 400, 'invalid_input', 'block_id');
    expectError(await api(`/api/v1/canvas/${canvasId}/snapshot?since_seq=-1`, { token: t }), 400, 'invalid_input', 'since_seq');
    expectError(await api(`/api/v1/canvas/${canvasId}/blocks?limit=0`, { token: t }), 400, 'invalid_input', 'limit');
    // integer query parameters are read as sent: decimal digits, nothing Number() would also read
    // (an empty since_seq was 0, a replay from the start; 0x10 was 16, 1e1 10)
    for (const bad of ['', '%20', '0x10', '1e1', '%2B5', '5.0', '-0']) {
      const res = await api(`/api/v1/canvas/${canvasId}/snapshot?since_seq=${bad}`, { token: t });
      expectError(res, 400, 'invalid_input', 'since_seq');
      expect(res.body.error.message).toBe('since_seq: must be a whole number written in decimal digits');
    }
    // digits past every max say so (2^64 was "must be a whole number written in decimal digits")
    for (const [query, field, message] of [['snapshot?since_seq=18446744073709551616', 'since_seq', 'since_seq: must be at most 9007199254740991'],
      ['blocks?limit=99999999999999999999', 'limit', 'limit: must be at most 500']]) {
      const res = await api(`/api/v1/canvas/${canvasId}/${query}`, { token: t });
      expectError(res, 400, 'invalid_input', field);
      expect(res.body.error.message).toBe(message);
    }
    expect((await api(`/api/v1/canvas/${canvasId}/snapshot?since_seq=00000000000000000001`, { token: t })).status).toBe(200);
    expectError(await api(`/api/v1/canvas/${canvasId}/blocks?limit=0x10`, { token: t }), 400, 'invalid_input', 'limit');
    expect((await api(`/api/v1/canvas/${canvasId}/blocks?limit=007`, { token: t })).status).toBe(200);
    expectError(await api(`/api/v1/canvas/${canvasId}/presence`, { method: 'POST', token: t, body: { typing: 'yes' } }), 400, 'invalid_input', 'typing');
    expectError(await api('/api/v1/canvas', { method: 'POST', token: t, body: { workspace_id: 'x' } }), 400, 'invalid_input', 'workspace_id');
    expectError(await api(`/api/v1/canvas/${canvasId}`, { method: 'PATCH', token: t, body: { title: '' } }), 400, 'invalid_input', 'title');
    // an unknown body field is refused, not ignored
    const unknown = await api(`/api/v1/canvas/${canvasId}/presence`, { method: 'POST', token: t, body: { typing: true, admin: true } });
    expectError(unknown, 400, 'invalid_input');
    expect(unknown.body.error.field).toBeTruthy();
    expect(unknown.body.error.message).toContain('admin');
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: t, body: { ...createOp(), owner: 'me' } }), 400, 'invalid_input');
    expectError(await api('/api/v1/canvas', { method: 'POST', token: t, body: { workspace_id: workspaceId, created_by: randomUUID() } }), 400, 'invalid_input');
    // text Postgres cannot store (NUL) is invalid input, not a 500
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: t, body: '{"action":"create","client_op_id":"\\u0000","patch":{"type":"text"}}' }), 400, 'invalid_input');
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: t, body: { ...createOp(), patch: { type: 'text', content: { t: 'a\u0000b' } } } }), 400, 'invalid_input');
    expectError(await api(`/api/v1/canvas/${canvasId}`, { method: 'PATCH', token: t, body: { title: 'nul\u0000' } }), 400, 'invalid_input');
    // the database's own validation, answered the same way
    const block = (await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: t, body: createOp() })).body.block;
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: t, body: {
      action: 'update', block_id: block.block_id, client_op_id: randomUUID(), patch: { content: { a: 1 } } } }), 400, 'invalid_input', 'base_version');
  });

  it('JSON nested too deep is a 400 naming the field, never a 500; ordinary nesting is fine', async () => {
    const { canvasId, workspaceId, tokens } = await setup();
    const nest = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
    const post = (path: string, body: string) => api(path, { method: 'POST', token: tokens.owner, body });
    expectError(await post(`/api/v1/canvas/${canvasId}/presence`, `{"cursor":${nest(10_000)}}`), 400, 'invalid_input', 'cursor');
    expectError(await post(`/api/v1/canvas/${canvasId}/mutate`,
      `{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":${nest(5_000)}}}`), 400, 'invalid_input', 'patch.content');
    expectError(await post('/api/v1/canvas', `{"workspace_id":"${workspaceId}","settings":${nest(20_000)}}`), 400, 'invalid_input', 'settings');
    const fine = await post(`/api/v1/canvas/${canvasId}/mutate`,
      `{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":${nest(40)}}}`);
    expect(fine.status).toBe(200);
    const [row] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(row!.n).toBe(1);
  });

  it('a body that is not JSON is a 400 (malformed) or a 415 (another media type), never a 500', async () => {
    const { canvasId, tokens } = await setup();
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: tokens.owner, body: '{"action": ' }), 400, 'invalid_input', 'body');
    expectError(await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: tokens.owner, body: '[1,2]' }), 400, 'invalid_input');
    expectError(await api(`/api/v1/canvas/${canvasId}/presence`, {
      method: 'POST', token: tokens.owner, body: '{"typing":true}', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type', 'content-type');
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: 'refresh_token=abc' ,
      headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type', 'content-type');
  });

  it('unknown routes are 404 in the same shape', async () => {
    expectError(await api('/api/v1/nothing-here'), 404, 'not_found');
    expectError(await api('/functions/v1/canvas-nope/x'), 404, 'not_found');
  });

  it('H2 retried with the same client_op_id returns the same server_seq and the version does not move', async () => {
    const { canvasId, tokens } = await setup();
    const sb = supabaseAs(tokens.owner);
    const created = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: createOp() });
    const blockId = created.body.block.block_id as string;
    const op = { action: 'update', block_id: blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: 'once' } } };
    const first = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: op });
    const retry = await invoke(sb, `canvas/${canvasId}/mutate`, { method: 'POST', body: op });
    const viaApi = await api(`/api/v1/canvas/${canvasId}/mutate`, { method: 'POST', token: tokens.owner, body: op });
    expect(first.status).toBe(200);
    expect(first.body).toMatchObject({ status: 'success', version: 2 });
    for (const again of [retry, viaApi]) {
      expect(again.status).toBe(200);
      expect(again.body.server_seq).toBe(first.body.server_seq);
      expect(again.body.version).toBe(2);
    }
    const block = await api(`/api/v1/canvas/${canvasId}/blocks/${blockId}`, { token: tokens.owner });
    expect(block.body).toMatchObject({ version: 2, content: { text: 'once' } });
    const [row] = await sql`select count(*)::int as n from app.block_operations where client_op_id = ${op.client_op_id} and status = 'success'`;
    expect(row!.n).toBe(1);
  });

  it('H2 reusing a client_op_id for another block is a 400 on client_op_id, and the other block stays as it was', async () => {
    const { canvasId, tokens } = await setup();
    const path = `/api/v1/canvas/${canvasId}/mutate`;
    const first = (await api(path, { method: 'POST', token: tokens.owner, body: createOp() })).body.block.block_id as string;
    const second = (await api(path, { method: 'POST', token: tokens.owner, body: createOp() })).body.block.block_id as string;
    const clientOpId = randomUUID();
    const applied = await api(path, { method: 'POST', token: tokens.owner, body: {
      action: 'update', block_id: first, client_op_id: clientOpId, base_version: 1, patch: { content: { text: 'first' } } } });
    expect(applied.status).toBe(200);
    const reused = await api(path, { method: 'POST', token: tokens.owner, body: {
      action: 'update', block_id: second, client_op_id: clientOpId, base_version: 1, patch: { content: { text: 'second' } } } });
    expectError(reused, 400, 'invalid_input', 'client_op_id');
    expect(reused.body.error.message).toContain(first);
    const other = await api(`/api/v1/canvas/${canvasId}/blocks/${second}`, { token: tokens.owner });
    expect(other.body).toMatchObject({ version: 1, content: { text: 'hello' } });
  });

  it('H2 with a stale base_version → 409 carrying the current block', async () => {
    const { canvasId, tokens } = await setup();
    const path = `/api/v1/canvas/${canvasId}/mutate`;
    const created = await api(path, { method: 'POST', token: tokens.owner, body: createOp() });
    const blockId = created.body.block.block_id as string;
    const update = (base: number, text: string) =>
      api(path, { method: 'POST', token: tokens.owner, body: { action: 'update', block_id: blockId, client_op_id: randomUUID(), base_version: base, patch: { content: { text } } } });
    expect((await update(1, 'first writer')).status).toBe(200);
    const stale = await update(1, 'second writer');
    expectError(stale, 409, 'conflict');
    expect(stale.body.error.block).toMatchObject({ block_id: blockId, version: 2, content: { text: 'first writer' } });
    const [row] = await sql`select version, content from app.blocks where block_id = ${blockId}`;
    expect(row).toEqual({ version: 2, content: { text: 'first writer' } });
  });

  it('a rate limit → 429 with Retry-After (H4: 1 per second)', async () => {
    const { canvasId, tokens } = await setup();
    const results: { status: number; body: any; headers: Headers }[] = [];
    // the window is a fixed second: a handful of back-to-back calls always puts two in one window
    for (let i = 0; i < 5; i++) results.push(await api(`/api/v1/canvas/${canvasId}/snapshot?since_seq=0`, { token: tokens.owner }));
    expect(results[0]!.status).toBe(200);
    const limited = results.find((r) => r.status === 429);
    expect(limited, JSON.stringify(results.map((r) => r.status))).toBeDefined();
    expectError(limited!, 429, 'rate_limited');
    const retryAfter = Number(limited!.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(2);
    // limits are per user: someone else is not affected
    const { canvasId: other, tokens: otherTokens } = await setup();
    expect((await api(`/api/v1/canvas/${other}/snapshot`, { token: otherTokens.owner })).status).toBe(200);
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    expect(metrics).toMatch(/^potentia_rate_limit_rejections_total\{endpoint="H4"\} [1-9]/m);
  });

  it('a limit changed in app.endpoint_limits holds (A5 over supabase-js), and is restored', async () => {
    const { workspaceId, tokens } = await setup();
    const [saved] = await sql`select max_hits, window_seconds from app.endpoint_limits where endpoint = 'A5'`;
    try {
      await sql`update app.endpoint_limits set max_hits = 2, window_seconds = 60 where endpoint = 'A5'`;
      const sb = supabaseAs(tokens.owner);
      const statuses: number[] = [];
      await awayFromWindowEdge(60); // all three in one window of the limit
      for (let i = 0; i < 3; i++) statuses.push((await invoke(sb, 'canvas', { method: 'POST', body: { workspace_id: workspaceId } })).status);
      expect(statuses).toEqual([201, 201, 429]);
      const [row] = await sql`select count(*)::int as n from app.canvases where workspace_id = ${workspaceId}`;
      expect(row!.n).toBe(3); // the fixture's canvas and two more
    } finally {
      await sql`update app.endpoint_limits set max_hits = ${saved!.max_hits}, window_seconds = ${saved!.window_seconds} where endpoint = 'A5'`;
    }
  });

  it('a body over the size limit → 413, with or without Content-Length', async () => {
    const { canvasId, tokens } = await setup();
    const limit = server.deps.config.maxBodyBytes;
    const big = JSON.stringify({ ...createOp(), patch: { type: 'text', content: { text: 'x'.repeat(limit + 10) } } });
    const path = `/api/v1/canvas/${canvasId}/mutate`;
    const headers = { authorization: `Bearer ${tokens.owner}`, 'content-type': 'application/json' };
    for (const res of [
      await rawRequest(server.url, { method: 'POST', path, headers, body: big }),
      await rawRequest(server.url, { method: 'POST', path, headers, body: big, chunked: true }),
    ]) {
      expectError({ status: res.status, body: JSON.parse(res.text) }, 413, 'payload_too_large');
    }
    // keep-alive clients: the 413 closes the connection (the rest of the body is never read), so the
    // next request must go out on a fresh one instead of failing on the closing socket
    for (let i = 0; i < 5; i++) {
      const res = await api(path, { method: 'POST', token: tokens.owner, body: big });
      expectError(res, 413, 'payload_too_large');
      expect(res.headers.get('connection')).toBe('close');
      expect((await api('/health')).status).toBe(200);
    }
    // also over /functions/v1 through supabase-js
    expectError(await invoke(supabaseAs(tokens.owner), `canvas/${canvasId}/mutate`, { method: 'POST', body: JSON.parse(big) }), 413, 'payload_too_large');
    const [row] = await sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(row!.n).toBe(0);
  });

  it('a body the client stops sending (connection closed mid-body) is answered 400 invalid_input, never a 5xx', async () => {
    const { canvasId, tokens } = await setup();
    /** Status counts of requests answered so far, by status (potentia_http_requests_total). */
    const answered = async () => {
      const counts: Record<string, number> = {};
      for (const v of (await server.deps.metrics.httpRequests.get()).values) counts[String(v.labels.status)] = (counts[String(v.labels.status)] ?? 0) + v.value;
      return counts;
    };
    const before = await answered();
    const paths = [`/api/v1/canvas/${canvasId}/mutate`, '/auth/v1/token?grant_type=password'];
    for (const path of paths) {
      for (const framing of ['Transfer-Encoding: chunked\r\n\r\n5\r\n{"act\r\n', 'Content-Length: 100\r\n\r\n{"act']) {
        const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
        await new Promise((resolve) => socket.once('connect', resolve));
        // Expect: 100-continue: the server's "100 Continue" says it has taken the request to its handler
        socket.write(`POST ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${tokens.owner}\r\napikey: ${anonKey}\r\n` +
          `Expect: 100-continue\r\nContent-Type: application/json\r\n${framing}`);
        await new Promise((resolve) => socket.once('data', resolve));
        socket.destroy();
      }
    }
    await until(async () => Object.values(await answered()).reduce((a, b) => a + b, 0) - Object.values(before).reduce((a, b) => a + b, 0) === 4,
      5000, 'the four requests to be answered');
    const after = await answered();
    expect(after['400'] ?? 0).toBe((before['400'] ?? 0) + 4);
    for (const status of Object.keys(after).filter((s) => s >= '500')) expect(after[status], `status ${status}`).toBe(before[status] ?? 0);
    expect((await api('/health')).status).toBe(200);
  });
});

describe('H5 refresh', () => {
  /** As if REFRESH_TOKEN_REUSE_INTERVAL_SECONDS had passed since `token` was rotated. */
  const pastReuseInterval = (token: string) => sql`update app.refresh_tokens
    set used_at = used_at - make_interval(secs => ${server.deps.config.auth.refreshReuseInterval + 1})
    where token_hash = ${createHash('sha256').update(token).digest('hex')}`;

  it('rotates the refresh token; reuse of a rotated one revokes the whole family', async () => {
    const userId = await createUser(sql, 'refresher');
    const { canvasId } = await createCanvas(sql);
    const first = await issueTokenPair(server.deps, { id: userId });
    expect(first).toMatchObject({ token_type: 'bearer', expires_in: server.deps.config.auth.accessTtl });
    // the refresh token is stored hashed only
    const stored = await sql`select token_hash from app.refresh_tokens where user_id = ${userId}`;
    expect(stored).toHaveLength(1);
    expect(stored[0]!.token_hash).not.toBe(first.refresh_token);

    const refreshed = await invoke(supabaseAs(), 'auth/refresh', { method: 'POST', body: { refresh_token: first.refresh_token } });
    expect(refreshed.status).toBe(200);
    const second = refreshed.body;
    expect(second).toMatchObject({ token_type: 'bearer' });
    expect(second.refresh_token).not.toBe(first.refresh_token);
    // the new access token works on the API and is this user's
    const list = await api('/api/v1/canvas', { token: second.access_token });
    expect(list.status).toBe(200);
    expect(list.body).toEqual({ canvases: [], next_cursor: null });
    expectError(await api(`/api/v1/canvas/${canvasId}`, { token: second.access_token }), 404, 'not_found');

    // the rotated token sent again after the reuse interval (its rotation set back past it) while `second` is unused:
    // a late retry of a lost answer, answered `second` again (GoTrue's rule; tests/integration/refresh-reuse.test.ts)
    await pastReuseInterval(first.refresh_token);
    const late = await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: first.refresh_token } });
    expect(late.status).toBe(200);
    expect(late.body.refresh_token).toBe(second.refresh_token);
    // once `second` was used too, the rotated token is reuse: refused, and the family is revoked
    await sql`delete from app.rate_limits where user_id = ${userId} and bucket = 'endpoint:H5'`;
    const third = await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: second.refresh_token } });
    expect(third.status).toBe(200);
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: first.refresh_token } }), 401, 'unauthorized');
    // so the newest token of the family no longer works either
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: third.body.refresh_token } }), 401, 'unauthorized');
    const rows = await sql`select revoked_at from app.refresh_tokens where user_id = ${userId}`;
    expect(rows).toHaveLength(3);
    expect(rows.every((r) => r.revoked_at !== null)).toBe(true);
  });

  it('another sign-in of the same user is a separate family, untouched by the revocation; the limit is per user', async () => {
    const userId = await createUser(sql, 'two-devices');
    const laptop = await issueTokenPair(server.deps, { id: userId });
    const phone = await issueTokenPair(server.deps, { id: userId });
    const rotated = await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: laptop.refresh_token } });
    expect(rotated.status).toBe(200);
    // the laptop rotates its successor too (its rate-limit window cleared for it), which fills the window again
    await sql`delete from app.rate_limits where user_id = ${userId} and bucket = 'endpoint:H5'`;
    expect((await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: rotated.body.refresh_token } })).status).toBe(200);
    // reuse (past the 10 s reuse interval, its successor used) is detected even within the 30 s rate-limit window
    await pastReuseInterval(laptop.refresh_token);
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: laptop.refresh_token } }), 401, 'unauthorized');
    // H5 allows one rotation per 30 s per user: the phone is told to come back, and its token stays valid
    const fromPhone = await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: phone.refresh_token } });
    expectError(fromPhone, 429, 'rate_limited');
    expect(Number(fromPhone.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const rows = await sql`select token_hash, used_at, revoked_at from app.refresh_tokens where user_id = ${userId} and parent_hash is null`;
    expect(rows).toHaveLength(2);
    const phoneRow = rows.find((r) => r.token_hash === createHash('sha256').update(phone.refresh_token).digest('hex'));
    expect(phoneRow).toMatchObject({ used_at: null, revoked_at: null });
    const laptopRow = rows.find((r) => r !== phoneRow);
    expect(laptopRow!.revoked_at).not.toBeNull();
  });

  it('an unknown refresh token → 401; a malformed body → 400', async () => {
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: 'x'.repeat(43) } }), 401, 'unauthorized');
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: { refresh_token: 'short' } }), 400, 'invalid_input', 'refresh_token');
    expectError(await api('/api/v1/auth/refresh', { method: 'POST', body: {} }), 400, 'invalid_input', 'refresh_token');
  });
});
