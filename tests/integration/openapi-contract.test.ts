import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueTokenPair } from '../../functions/auth.ts';
import type { Database } from '../../src/db/index.ts';
import { createApp } from '../../src/http/app.ts';
import { buildApiDocument } from '../../src/http/build-document.ts';
import type { Server } from '../../src/server.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { checkedFetch, contract } from '../helpers/contract.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { rawRequest, startTestServer, tokenFor } from '../helpers/http.ts';

// The OpenAPI document is the contract: every route of the API is in it with an operationId, and
// every endpoint's success and main error answers match it — the status is documented for the
// operation and the body validates against that status's schema (checkedFetch asserts it; the
// server here also runs with validateResponses, as every test run does, see scripts/test).

let server: Server;
let database: Database;
let sql: Sql;

beforeAll(async () => {
  server = await startTestServer({ validateResponses: true });
  database = testDatabase();
  sql = database.sql;
});
afterAll(async () => {
  await server?.stop();
  await database?.close();
});

const call = (method: string, path: string, opts: Parameters<typeof checkedFetch>[3] = {}) => checkedFetch(server.url, method, path, opts);
const expectError = (res: { status: number; body: any }, status: number, code: string, details: Record<string, unknown> = {}) => {
  expect({ status: res.status, code: res.body?.error?.code }, JSON.stringify(res.body)).toEqual({ status, code });
  expect(res.body.error).toMatchObject(details);
};

describe('the document', () => {
  it('is served as built in-process (what packages/client/src/api-types.ts is generated from)', async () => {
    const res = await call('GET', '/health'); // any call: the server is up
    expect(res.status).toBe(200);
    const served = await (await fetch(`${server.url}/api/v1/openapi.json`)).json();
    const built = JSON.parse(JSON.stringify(buildApiDocument()));
    expect(built.servers[0]).toMatchObject({ url: 'http://{host}:{port}', variables: { host: { default: '127.0.0.1' }, port: { default: '54321' } } });
    // served, the server variables default to the host and port the request reached (this server's own
    // port, not 54321), so /docs/api's "Try it out" calls this server; the rest is the document as built
    const { hostname, port } = new URL(server.url);
    expect(served.servers[0].variables).toEqual({ host: { default: hostname }, port: { default: port } });
    expect({ ...served, servers: built.servers }).toEqual(built);
    expect(served.openapi).toBe('3.1.0');
    expect(served.servers[0].url).toBe('http://{host}:{port}');
    expect(served.servers[0].description).toContain('/functions/v1');
    // the Host header decides (a proxy in front, a name instead of the address)
    const proxied = JSON.parse((await rawRequest(server.url, { method: 'GET', path: '/api/v1/openapi.json', headers: { host: 'potentia.test:8080' } })).text);
    expect(proxied.servers[0].variables).toEqual({ host: { default: 'potentia.test' }, port: { default: '8080' } });
  });

  it('lists every API route of the app once, each with a unique operationId', () => {
    const doc = buildApiDocument();
    const documented = new Map<string, string>();
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const [method, op] of Object.entries(item as Record<string, { operationId?: string }>)) {
        expect(op.operationId, `${method} ${path}`).toMatch(/^[a-z][A-Za-z]+$/);
        documented.set(`${method.toUpperCase()} ${path}`, op.operationId!);
      }
    }
    expect(new Set(documented.values()).size).toBe(documented.size);
    // the routes the app really serves: the API (/api/v1, /functions/v1 = the same routes) and the ops endpoints
    const app = createApp(server.deps);
    const served = new Set(app.routes.filter((r) => r.method !== 'ALL')
      .map((r) => `${r.method} ${r.path.replace(/:(\w+)/g, '{$1}').replace(/^\/functions\/v1\//, '/api/v1/').replace(/(.)\/$/, '$1')}`)
      .filter((key) => /^\w+ \/(api|functions)\//.test(key) || ['GET /health', 'GET /ready', 'GET /metrics'].includes(key)));
    // not operations of this API: the document itself; /auth/v1 is GoTrue's API (supabase-js auth, described by Supabase);
    // /debug/echo is a test aid, off unless DEBUG_ECHO
    served.delete('GET /api/v1/openapi.json');
    expect([...served].filter((key) => !documented.has(key)), 'served but not documented').toEqual([]);
    expect([...documented.keys()].filter((key) => !served.has(key)), 'documented but not served').toEqual([]);
    expect(documented.size).toBeGreaterThanOrEqual(28);
  });

  it('has a schema for every response, and every $ref resolves', () => {
    const doc = buildApiDocument();
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const [method, op] of Object.entries(item as Record<string, { responses: Record<string, any> }>)) {
        for (const [status, response] of Object.entries(op.responses)) {
          if (status === '204') expect(response.content, `${method} ${path} ${status}`).toBeUndefined();
          else expect(Object.values(response.content ?? {}).every((m: any) => m.schema), `${method} ${path} ${status}`).toBe(true);
        }
      }
    }
    // every schema compiles (a dangling $ref throws)
    const { checkResponse } = contract();
    for (const [path, item] of Object.entries(doc.paths ?? {})) {
      for (const [method, op] of Object.entries(item as Record<string, { responses: Record<string, any> }>)) {
        for (const status of Object.keys(op.responses)) {
          const concrete = path.replace(/\{\w+\}/g, randomUUID());
          expect(() => checkResponse({ method: method.toUpperCase(), path: concrete, status: Number(status), contentType: 'application/json', body: '{}' }))
            .not.toThrow();
        }
      }
    }
  });

  it('writes every pattern as JSON Schema reads it (an ECMA-262 regex, no /…/flags), and the client-chosen ids\' pattern takes what the server takes', () => {
    // ClientId's regex had the i flag: the document's pattern came out as "^…$/i", which no id
    // matches, so a client validating against the document refused every workspace_id / canvas_id
    const doc = buildApiDocument();
    const patterns: { at: string; pattern: string }[] = [];
    const walk = (node: unknown, at: string): void => {
      if (Array.isArray(node)) node.forEach((n, i) => walk(n, `${at}/${i}`));
      else if (node && typeof node === 'object') {
        for (const [k, v] of Object.entries(node)) {
          if (k === 'pattern' && typeof v === 'string') patterns.push({ at, pattern: v });
          else walk(v, `${at}/${k}`);
        }
      }
    };
    walk(doc, '');
    expect(patterns.length).toBeGreaterThan(0);
    for (const { at, pattern } of patterns) {
      expect(() => new RegExp(pattern, 'u'), at).not.toThrow();
      expect(pattern, at).not.toMatch(/\$\/[a-z]+$/);
    }
    const v7 = '017f22e2-79b0-7cc3-98c4-dc0c0c07398f';
    for (const [path, field] of [['/api/v1/canvas', 'canvas_id'], ['/api/v1/workspaces', 'workspace_id']] as const) {
      const schema = (doc.paths![path] as any).post.requestBody.content['application/json'].schema.properties[field];
      const re = new RegExp(schema.pattern, 'u');
      const id = randomUUID();
      expect([id, id.toUpperCase(), v7].map((v) => re.test(v)), `${path} ${field}`).toEqual([true, true, true]);
      // refused by the server too: a version 1 id, the nil UUID
      expect(['6ba7b810-9dad-11d1-80b4-00c04fd430c8', '00000000-0000-0000-0000-000000000000'].map((v) => re.test(v)), `${path} ${field}`).toEqual([false, false]);
    }
  });

  it('requires what the server requires: base_version on update/move/delete, patch.type on create, a move patch of placement only', () => {
    const schemas = buildApiDocument().components!.schemas as Record<string, any>;
    for (const name of ['UpdateOp', 'MoveOp', 'DeleteOp']) expect(schemas[name].required).toEqual(expect.arrayContaining(['block_id', 'base_version']));
    expect(schemas.CreateOp.required).not.toContain('base_version');
    expect(schemas.CreateOp.properties.patch.required).toEqual(['type']);
    expect(Object.keys(schemas.MoveOp.properties.patch.properties).sort()).toEqual(['after_id', 'parent_id', 'y_order']);
    expect(schemas.MutationOp.discriminator.propertyName).toBe('action');
    expect(Object.keys(schemas.BatchResult.properties).sort()).toEqual(['canvas_seq', 'results', 'server_seq', 'status']);
    expect(Object.keys(schemas.ConflictField.properties).sort()).toEqual(['base', 'mine', 'theirs']);
  });

  it('checks bodies for real: an undocumented field, a missing one or an undocumented status is a violation', () => {
    const { checkResponse } = contract();
    const path = `/api/v1/canvas/${randomUUID()}/blocks/${randomUUID()}`;
    const check = (status: number, body: unknown) => checkResponse({ method: 'GET', path, status, contentType: 'application/json', body: JSON.stringify(body) });
    expect(check(404, { error: { code: 'not_found', message: 'm', field: 'block_id' } })).toBeNull();
    expect(check(404, { error: { code: 'not_found', message: 'm', extra: 1 } })?.errors).toEqual(['/error must NOT have additional properties: extra']);
    expect(check(404, { error: { code: 'nope', message: 'm' } })?.errors[0]).toMatch(/^\/error\/code must be equal to one of the allowed values/);
    expect(check(200, { block_id: randomUUID() })?.errors.join()).toContain("must have required property 'canvas_id'");
    expect(check(418, {})?.errors[0]).toMatch(/^status 418 is not documented/);
    // the same check answers through /functions/v1
    expect(checkResponse({ method: 'GET', path: path.replace('/api/v1/', '/functions/v1/'), status: 418, contentType: 'application/json', body: '{}' })).not.toBeNull();
  });
});

describe('every endpoint answers as documented', () => {
  it('ops: /health, /ready, /metrics', async () => {
    expect((await call('GET', '/health')).body).toEqual({ status: 'ok' });
    expect((await call('GET', '/ready')).body).toMatchObject({ status: 'ready', checks: { database: 'ok' } });
    const metrics = await call('GET', '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('potentia_http_requests_total');
  });

  it('canvases (A1–A8, H3, H4, H6): successes and 400/401/403/404/429', async () => {
    const { workspaceId, canvasId, users } = await createCanvas(sql, ['editor', 'viewer']);
    const [owner, editor, viewer] = await Promise.all([tokenFor(server, users.owner!), tokenFor(server, users.editor!), tokenFor(server, users.viewer!)]);
    const stranger = await tokenFor(server, await createUser(sql, 'stranger'));
    const blocks = [];
    for (const text of ['one', 'two']) blocks.push((await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text } } })).block_id!);

    expect((await call('GET', '/api/v1/canvas', { token: owner })).body.canvases.map((c: any) => c.canvas_id)).toContain(canvasId);
    expectError(await call('GET', '/api/v1/canvas'), 401, 'unauthorized');
    const created = await call('POST', '/api/v1/canvas', { token: owner, body: { workspace_id: workspaceId, title: 'Second', settings: { grid: true } } });
    expect(created.status).toBe(201);
    expectError(await call('POST', '/api/v1/canvas', { token: owner, body: { workspace_id: 'x' } }), 400, 'invalid_input', { field: 'workspace_id' });
    expectError(await call('POST', '/api/v1/canvas', { token: viewer, body: { workspace_id: workspaceId } }), 403, 'forbidden');
    expectError(await call('POST', '/api/v1/canvas', { token: stranger, body: { workspace_id: workspaceId } }), 404, 'not_found', { field: 'workspace_id' });

    const loaded = await call('GET', `/api/v1/canvas/${canvasId}`, { token: viewer });
    expect(loaded.body).toMatchObject({ canvas: { canvas_id: canvasId, role: 'viewer' }, canvas_watermark: 2 });
    expect(loaded.body.since).toBeUndefined();
    expectError(await call('GET', `/api/v1/canvas/${canvasId}`, { token: stranger }), 404, 'not_found', { field: 'canvas_id' });
    expectError(await call('GET', '/api/v1/canvas/not-a-uuid', { token: owner }), 400, 'invalid_input', { field: 'canvas_id' });

    const snapshot = await call('GET', `/api/v1/canvas/${canvasId}/snapshot?since_seq=0`, { token: editor });
    expect(snapshot.body.since.changes.map((c: any) => c.canvas_seq)).toEqual([1, 2]);
    const limited = [];
    for (let i = 0; i < 4; i++) limited.push(await call('GET', `/api/v1/canvas/${canvasId}/snapshot`, { token: editor })); // H4: 1 per second
    expectError(limited.find((r) => r.status === 429)!, 429, 'rate_limited');
    expect(limited.find((r) => r.status === 429)!.body.error.retry_after).toBeGreaterThanOrEqual(1);

    const page = await call('GET', `/api/v1/canvas/${canvasId}/blocks?limit=1`, { token: owner });
    expect(page.body.next_cursor).toEqual(expect.any(String));
    expect((await call('GET', `/api/v1/canvas/${canvasId}/blocks?cursor=${page.body.next_cursor}`, { token: owner })).body.next_cursor).toBeNull();
    expect((await call('GET', `/api/v1/canvas/${canvasId}/blocks/${blocks[0]}`, { token: owner })).body.block_id).toBe(blocks[0]);
    expectError(await call('GET', `/api/v1/canvas/${canvasId}/blocks/${randomUUID()}`, { token: owner }), 404, 'not_found', { field: 'block_id' });
    expect((await call('GET', `/api/v1/canvas/${canvasId}/permissions`, { token: editor })).body).toMatchObject({ can_write: true, role: 'editor' });

    expect((await call('POST', `/api/v1/canvas/${canvasId}/presence`, { token: editor, body: { cursor: { x: 1 }, typing: true } })).body.broadcast).toBe(true);
    expectError(await call('POST', `/api/v1/canvas/${canvasId}/presence`, { token: editor, body: { typing: 'yes' } }), 400, 'invalid_input', { field: 'typing' });
    expect((await call('POST', `/api/v1/canvas/${canvasId}/leave`, { token: editor })).body).toEqual({ left: true });

    expect((await call('PATCH', `/api/v1/canvas/${canvasId}`, { token: owner, body: { title: 'Renamed' } })).body).toMatchObject({ title: 'Renamed', version: 2 });
    expectError(await call('PATCH', `/api/v1/canvas/${canvasId}`, { token: editor, body: { title: 'No' } }), 403, 'forbidden');
    expectError(await call('PATCH', `/api/v1/canvas/${canvasId}`, { token: owner, body: { title: '' } }), 400, 'invalid_input', { field: 'title' });
    expectError(await call('DELETE', `/api/v1/canvas/${created.body.canvas_id}`, { token: editor }), 403, 'forbidden');
    const removed = await call('DELETE', `/api/v1/canvas/${created.body.canvas_id}`, { token: owner });
    expect([removed.status, removed.text]).toEqual([204, '']);
    // and through the edge-function path: the same operations
    expect((await call('GET', `/functions/v1/canvas/${canvasId}/permissions`, { token: owner })).body.role).toBe('owner');
  });

  it('mutations (H2): every action, batches, duplicates; conflicts with base/theirs/mine; field-precise 400s; 403/404/413', async () => {
    const { canvasId, users } = await createCanvas(sql, ['editor', 'viewer']);
    const [owner, editor, viewer] = await Promise.all([tokenFor(server, users.owner!), tokenFor(server, users.editor!), tokenFor(server, users.viewer!)]);
    const stranger = await tokenFor(server, await createUser(sql, 'stranger'));
    // H2 allows 10 calls a second per user: like any client, wait out a 429 (Retry-After) and resend
    const mutate = async (token: string, body: unknown) => {
      for (;;) {
        const res = await call('POST', `/api/v1/canvas/${canvasId}/mutate`, { token, body });
        if (res.status !== 429) return res;
        await new Promise((r) => setTimeout(r, 1000 * Number(res.body.error.retry_after ?? 1)));
      }
    };
    const op = () => randomUUID();

    const parent = await mutate(owner, { action: 'create', client_op_id: op(), patch: { type: 'text', content: { t: 'hello' } } });
    expect(parent.body).toMatchObject({ status: 'success', version: 1, canvas_seq: 1, block: { content: { t: 'hello' } } });
    const p = parent.body.block_id;
    const createId = op();
    const child = await mutate(owner, { action: 'create', client_op_id: createId, patch: { type: 'text', parent_id: p, after_id: null } });
    expect((await mutate(owner, { action: 'create', client_op_id: createId, patch: { type: 'text', parent_id: p } })).body)
      .toMatchObject({ duplicate: true, block_id: child.body.block_id });
    const text = await mutate(editor, { action: 'update', block_id: p, client_op_id: op(), base_version: 1, patch: { text: { t: [5, ' world'] } } });
    expect(text.body).toMatchObject({ version: 2, text: { t: [5, ' world'] }, block: { content: { t: 'hello world' } } });
    const stale = await mutate(owner, { action: 'update', block_id: p, client_op_id: op(), base_version: 1, patch: { text: { t: [5, '!'] } } });
    expect(stale.body.text).toEqual({ t: [5, '!'] }); // transformed against the concurrent insert
    expect((await mutate(owner, { action: 'move', block_id: child.body.block_id, client_op_id: op(), base_version: 1, patch: { parent_id: null } })).body.version).toBe(2);
    const batch = await mutate(owner, { ops: [
      { action: 'create', client_op_id: op(), patch: { type: 'heading', content: { t: 'a' } } },
      { action: 'update', block_id: p, client_op_id: op(), base_version: 3, patch: { content: { k: 'v' }, type: 'quote' } },
    ] });
    expect(batch.body).toMatchObject({ status: 'success', results: [{ status: 'success' }, { version: 4 }] });
    expect(batch.body.canvas_seq).toBe(batch.body.results[1].canvas_seq);

    // 409 conflict: the same key set on both sides since version 3
    await mutate(editor, { action: 'update', block_id: p, client_op_id: op(), base_version: 4, patch: { content: { k: 'theirs' } } });
    const conflict = await mutate(owner, { action: 'update', block_id: p, client_op_id: op(), base_version: 4, patch: { content: { k: 'mine' } } });
    expectError(conflict, 409, 'conflict', { version: 5, changed: ['content.k'], fields: { 'content.k': { base: 'v', theirs: 'theirs', mine: 'mine' } } });
    expect(conflict.body.error.block.version).toBe(5);
    const staleDelete = await mutate(owner, { action: 'delete', block_id: p, client_op_id: op(), base_version: 4 });
    expectError(staleDelete, 409, 'conflict', { fields: {}, changed: ['content.k'] });
    // 409 rebase_required: the log no longer holds what changed since (as retention would leave it)
    await sql`delete from app.block_operations where block_id = ${p} and new_version = 2`;
    expectError(await mutate(owner, { action: 'update', block_id: p, client_op_id: op(), base_version: 1, patch: { content: { z: 1 } } }),
      409, 'rebase_required', { version: 5 });

    // 400 naming the field, before the database when the schema knows
    const bad: Array<[unknown, string]> = [
      [{ action: 'update', block_id: p, client_op_id: op(), patch: { content: { a: 1 } } }, 'base_version'],
      [{ action: 'delete', block_id: p, client_op_id: op() }, 'base_version'],
      [{ action: 'move', client_op_id: op(), base_version: 1, patch: {} }, 'block_id'],
      [{ action: 'create', client_op_id: op(), patch: { content: {} } }, 'patch.type'],
      [{ action: 'create', client_op_id: op(), patch: { type: 'text', text: { t: ['x'] } } }, 'patch.text'],
      [{ action: 'move', block_id: p, client_op_id: op(), base_version: 5, patch: { content: { a: 1 } } }, 'patch.content'],
      [{ action: 'rename', client_op_id: op() }, 'action'],
      [{ client_op_id: op() }, 'action'],
      [{ action: 'update', block_id: p, client_op_id: op(), base_version: 5, patch: { text: { t: [0, 'x'] } } }, 'patch.text.t.0'],
      [{ ops: [{ action: 'update', block_id: p, client_op_id: op(), patch: {} }] }, 'ops.0.base_version'],
      [{ ops: [] }, 'ops'],
      [{ action: 'update', block_id: p, client_op_id: op(), base_version: 5, patch: {} }, 'patch'], // the database's: changes nothing
    ];
    for (const [body, field] of bad) expectError(await mutate(owner, body), 400, 'invalid_input', { field });

    expectError(await mutate(viewer, { action: 'create', client_op_id: op(), patch: { type: 'text' } }), 403, 'forbidden');
    expectError(await mutate(stranger, { action: 'create', client_op_id: op(), patch: { type: 'text' } }), 404, 'not_found', { field: 'canvas_id' });
    const huge = await mutate(owner, { action: 'create', client_op_id: op(), patch: { type: 'text', content: { t: 'x'.repeat(300_000) } } });
    expectError(huge, 413, 'payload_too_large');
    const deleted = await mutate(owner, { action: 'delete', block_id: p, client_op_id: op(), base_version: 5 });
    expect(deleted.body).toMatchObject({ block: null, version: 6, deleted_ids: [p] });
  });

  it('search (S2) at both paths, refresh (H5)', async () => {
    const { canvasId, users } = await createCanvas(sql);
    const ctx = { sql, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 'contract', failureThreshold: 3, cooldownMs: 1000 }) };
    const block = (await mutate(sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'sourdough bread' } } })).block_id!;
    expect(await embedBlock(ctx, block)).toBe('embedded');
    const owner = await tokenFor(server, users.owner!);
    const hits = await call('GET', `/api/v1/canvas/${canvasId}/search?q=bread&limit=5`, { token: owner });
    expect(hits.body).toMatchObject({ items: [{ block_id: block, distance: expect.any(Number) }], model: 'local-hash-v1' });
    await new Promise((r) => setTimeout(r, 1100)); // S2's own limit
    expect((await call('GET', `/api/v1/search/${canvasId}?q=bread`, { token: owner })).body.items).toHaveLength(1);
    expectError(await call('GET', `/api/v1/search/${canvasId}?q=`, { token: owner }), 400, 'invalid_input', { field: 'q' });

    const pair = await issueTokenPair(server.deps, { id: users.owner! });
    const refreshed = await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: pair.refresh_token } });
    expect(refreshed.body).toMatchObject({ token_type: 'bearer', expires_in: server.deps.config.auth.accessTtl });
    expectError(await call('POST', '/api/v1/auth/refresh', { body: { refresh_token: 'x'.repeat(43) } }), 401, 'unauthorized');
    expectError(await call('POST', '/api/v1/auth/refresh', { body: {} }), 400, 'invalid_input', { field: 'refresh_token' });
  });

  it('workspaces (W1–W10): successes, 409 already_member, 400 last_owner, 403, 404', async () => {
    const ownerId = await createUser(sql, 'ws-owner');
    const owner = await tokenFor(server, ownerId);
    const ws = await call('POST', '/api/v1/workspaces', { token: owner, body: { name: 'Contract' } });
    expect(ws.body).toMatchObject({ name: 'Contract', role: 'owner' });
    const id = ws.body.workspace_id;
    expect((await call('GET', '/api/v1/workspaces', { token: owner })).body.workspaces).toHaveLength(1);
    expect((await call('PATCH', `/api/v1/workspaces/${id}`, { token: owner, body: { name: 'Renamed' } })).body.name).toBe('Renamed');
    const memberId = await createUser(sql, 'ws-member');
    const [email] = (await sql`select email from auth.users where id = ${memberId}`).map((r) => r.email as string);
    const added = await call('POST', `/api/v1/workspaces/${id}/members`, { token: owner, body: { email, role: 'editor' } });
    expect(added.body).toMatchObject({ kind: 'member', member: { user_id: memberId, role: 'editor' } });
    expectError(await call('POST', `/api/v1/workspaces/${id}/members`, { token: owner, body: { email, role: 'viewer' } }), 409, 'conflict',
      { field: 'email', reason: 'already_member', user_id: memberId });
    const invited = await call('POST', `/api/v1/workspaces/${id}/members`, { token: owner, body: { email: `new-${randomUUID()}@test.local`, role: 'viewer' } });
    expect(invited.body).toMatchObject({ kind: 'invite', invite: { role: 'viewer' } });
    expect((await call('GET', `/api/v1/workspaces/${id}/invites`, { token: owner })).body.invites).toHaveLength(1);
    expect((await call('DELETE', `/api/v1/workspaces/${id}/invites/${invited.body.invite.invite_id}`, { token: owner })).status).toBe(204);
    expect((await call('GET', `/api/v1/workspaces/${id}/members`, { token: owner })).body.members).toHaveLength(2);
    expect((await call('PATCH', `/api/v1/workspaces/${id}/members/${memberId}`, { token: owner, body: { role: 'admin' } })).body.role).toBe('admin');
    expectError(await call('PATCH', `/api/v1/workspaces/${id}/members/${ownerId}`, { token: owner, body: { role: 'viewer' } }), 400, 'invalid_input',
      { field: 'role', reason: 'last_owner' });
    await call('POST', '/api/v1/canvas', { token: owner, body: { workspace_id: id } });
    expect((await call('GET', `/api/v1/workspaces/${id}/canvases`, { token: owner })).body.canvases[0]).toMatchObject({ role: 'owner' });
    const member = await tokenFor(server, memberId);
    expectError(await call('PATCH', `/api/v1/workspaces/${id}/members/${ownerId}`, { token: member, body: { role: 'viewer' } }), 403, 'forbidden');
    expect((await call('DELETE', `/api/v1/workspaces/${id}/members/${memberId}`, { token: owner })).status).toBe(204);
    expectError(await call('GET', `/api/v1/workspaces/${id}/members`, { token: member }), 404, 'not_found', { field: 'workspace_id' });
    expectError(await call('POST', '/api/v1/workspaces', { token: owner, body: { name: '' } }), 400, 'invalid_input', { field: 'name' });
    // a viewer of another workspace
    const other = await createCanvas(sql);
    const viewerId = await addMember(sql, other.users.owner!, other.workspaceId, 'viewer');
    expectError(await call('GET', `/api/v1/workspaces/${other.workspaceId}/invites`, { token: await tokenFor(server, viewerId) }), 403, 'forbidden');
  });
});
