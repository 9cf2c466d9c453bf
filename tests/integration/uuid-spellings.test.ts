// Ids Postgres accepted are reachable on every surface. Postgres's uuid type takes any 32 hex digits
// (no RFC 9562 version or variant), and such ids exist: the v1 upgrade keeps a v1 id that is a UUID
// (src/upgrade/v1-ids.ts), a block created from SQL or PostgREST takes any uuid as its block_id,
// rows written by hand or imported. HTTP paths, query and bodies, the H1 socket and realtime topics
// must take them as the database does (one definition: src/uuid.ts), in any case, and keep refusing
// other spellings (braces, no dashes) naming the field; a token's scope names a canvas in any case.
// Real server (in process, with the realtime gateway), real Postgres, realtime-js.
import type { Sql } from 'postgres';
import { afterAll, beforeAll, expect, it } from 'vitest';
import WebSocket from 'ws';
import { createPotentiaClient } from '../../packages/client/src/index.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createUser, mutate } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { apiKey } from '../helpers/tokens.ts';

const db = testDatabase();
const realtime = realtimeClients();
let server: Server;
let sql: Sql;

beforeAll(async () => {
  server = await startTestServer({}, {});
  sql = db.sql;
}, 90_000);
afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
  await db.close();
});

/** 32 random hex digits in 8-4-4-4-12 with version nibble 1 and variant nibble c: Postgres takes it, RFC 9562's layout does not. */
function legacyId(): string {
  const hex = [...crypto.getRandomValues(new Uint8Array(16))].map((b) => b.toString(16).padStart(2, '0')).join('');
  const h = `${hex.slice(0, 12)}1${hex.slice(13, 16)}c${hex.slice(17)}`;
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** A workspace and canvas with legacy ids, written as the v1 upgrade or an import writes them; a block created from SQL with a legacy id. */
async function legacyCanvas() {
  const owner = await createUser(sql, 'owner');
  const workspaceId = legacyId();
  const canvasId = legacyId();
  const blockId = legacyId();
  await sql`insert into app.workspaces (workspace_id, name, created_by) values (${workspaceId}, 'legacy', ${owner})`;
  await sql`insert into app.workspace_members (workspace_id, user_id, role) values (${workspaceId}, ${owner}, 'owner')`;
  await sql`insert into app.canvases (canvas_id, workspace_id, title, created_by) values (${canvasId}, ${workspaceId}, 'legacy', ${owner})`;
  const made = await mutate(sql, owner, canvasId, { action: 'create', blockId, patch: { type: 'text', content: { text: 'a' } } });
  expect(made.status).toBe('success');
  expect(made.block_id).toBe(blockId);
  return { owner, workspaceId, canvasId, blockId };
}

async function call(token: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.url}${path}`, {
    method, headers: { Authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json().catch(() => null) as any };
}

it('HTTP paths, query and bodies reach ids of no RFC 9562 layout, in either case', async () => {
  const { owner, workspaceId, canvasId, blockId } = await legacyCanvas();
  const token = await tokenFor(server, owner);
  for (const id of [canvasId, canvasId.toUpperCase()]) {
    const got = await call(token, 'GET', `/api/v1/canvas/${id}`);
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.canvas.canvas_id).toBe(canvasId);
  }
  expect((await call(token, 'GET', `/api/v1/canvas/${canvasId}/blocks/${blockId.toUpperCase()}`)).status).toBe(200);
  expect((await call(token, 'GET', `/api/v1/canvas/${canvasId}/changes?since_canvas_seq=0`)).status).toBe(200);
  expect((await call(token, 'GET', `/api/v1/workspaces/${workspaceId}/members`)).status).toBe(200);
  expect((await call(token, 'DELETE', `/api/v1/workspaces/${workspaceId}/members/${legacyId()}`)).status).not.toBe(400);

  const child = legacyId();
  const created = await call(token, 'POST', `/api/v1/canvas/${canvasId}/mutate`, {
    action: 'create', client_op_id: 'c1', block_id: child, patch: { type: 'text', parent_id: blockId, after_id: null } });
  expect(created.status, JSON.stringify(created.body)).toBe(200);
  expect(created.body.block_id).toBe(child);
  const moved = await call(token, 'POST', `/api/v1/canvas/${canvasId}/mutate`, {
    action: 'move', client_op_id: 'c2', block_id: child.toUpperCase(), base_version: 1, patch: { parent_id: null, after_id: blockId.toUpperCase() } });
  expect(moved.status, JSON.stringify(moved.body)).toBe(200);
  expect(moved.body.block.block_id).toBe(child);

  const canvas = await call(token, 'POST', '/api/v1/canvas', { workspace_id: workspaceId, title: 'another' });
  expect(canvas.status, JSON.stringify(canvas.body)).toBe(201);
  // the file routes read their ids before anything else: not a 400 on the id (404 or 503 without a bucket)
  const file = await call(token, 'GET', `/api/v1/canvas/${canvasId}/files/${legacyId()}`);
  expect(file.body?.error?.code).not.toBe('invalid_input');
}, 60_000);

it('other spellings of an id are still refused naming the field', async () => {
  const { owner, canvasId, blockId } = await legacyCanvas();
  const token = await tokenFor(server, owner);
  const hex = canvasId.replace(/-/g, '');
  for (const [path, field] of [
    [`/api/v1/canvas/{${canvasId}}`, 'canvas_id'], [`/api/v1/canvas/${hex}`, 'canvas_id'],
    [`/api/v1/canvas/${canvasId}/blocks/${blockId.replace(/-/g, '')}`, 'block_id'],
  ] as const) {
    const got = await call(token, 'GET', path);
    expect(got.status, path).toBe(400);
    expect(got.body.error.code).toBe('invalid_input');
    expect(got.body.error.field).toBe(field);
  }
  const bad = await call(token, 'POST', `/api/v1/canvas/${canvasId}/mutate`, {
    action: 'update', client_op_id: 'x', block_id: `{${blockId}}`, base_version: 1, patch: { content: { a: 1 } } });
  expect(bad.status).toBe(400);
  expect(bad.body.error.field).toBe('block_id');
});

it('the H1 socket and a realtime topic reach a canvas and block of no RFC 9562 layout', async () => {
  const { owner, canvasId, blockId } = await legacyCanvas();
  const token = await tokenFor(server, owner);
  const h1 = await openH1(server.url, canvasId.toUpperCase(), token, '&since_seq=0');
  await h1.next((m) => m.type === 'resumed');
  h1.send({ type: 'mutate', client_op_id: 'h1-1', action: 'update', block_id: blockId, base_version: 1, patch: { content: { text: 'b' } } });
  const ack = await h1.next((m) => m.type === 'ack' || m.type === 'error' || m.type === 'rejected');
  expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack', client_op_id: 'h1-1' });
  h1.send({ type: 'mutate', client_op_id: 'h1-2', action: 'update', block_id: blockId.toUpperCase(), base_version: 2, patch: { content: { text: 'c' } } });
  const ack2 = await h1.next((m) => m.type === 'ack' || m.type === 'error' || m.type === 'rejected');
  expect(ack2, JSON.stringify(ack2)).toMatchObject({ type: 'ack', client_op_id: 'h1-2' });
  h1.send({ type: 'mutate', client_op_id: 'h1-3', action: 'update', block_id: blockId.replace(/-/g, ''), base_version: 3, patch: { content: { text: 'd' } } });
  const refused = await h1.next((m) => m.type === 'error' || m.type === 'rejected');
  expect(JSON.stringify(refused)).toContain('block_id');
  h1.ws.close();

  const channel = realtime.connect(server.url, token, '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } });
  expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
}, 60_000);

it('a token scope names a canvas in any case, as the HTTP path and the sub do (HTTP and H1)', async () => {
  const { owner, canvasId, blockId } = await legacyCanvas();
  const read = await tokenFor(server, owner, { scope: `canvas:${canvasId.toUpperCase()}:read` });
  const got = await call(read, 'GET', `/api/v1/canvas/${canvasId}`);
  expect(got.status, JSON.stringify(got.body)).toBe(200);
  const listed = await call(read, 'GET', '/api/v1/canvas');
  expect(listed.body.canvases.map((c: { canvas_id: string }) => c.canvas_id)).toEqual([canvasId]);
  // read only: a write is refused
  const refused = await call(read, 'POST', `/api/v1/canvas/${canvasId}/mutate`, {
    action: 'update', client_op_id: 's0', block_id: blockId, base_version: 1, patch: { content: { a: 1 } } });
  expect(refused.status).toBe(403);

  const write = await tokenFor(server, owner, { scope: [`canvas:${canvasId.toUpperCase()}:write`] });
  const wrote = await call(write, 'POST', `/api/v1/canvas/${canvasId}/mutate`, {
    action: 'update', client_op_id: 's1', block_id: blockId, base_version: 1, patch: { content: { a: 1 } } });
  expect(wrote.status, JSON.stringify(wrote.body)).toBe(200);
  const h1 = await openH1(server.url, canvasId, write, '&since_seq=0');
  const hello = h1.inbox.find((m) => m.type === 'hello') ?? await h1.next((m) => m.type === 'hello');
  expect(hello, JSON.stringify(hello)).toMatchObject({ can_write: true });
  await h1.next((m) => m.type === 'resumed');
  h1.send({ type: 'mutate', client_op_id: 's2', action: 'update', block_id: blockId, base_version: 2, patch: { content: { a: 2 } } });
  const ack = await h1.next((m) => m.type === 'ack' || m.type === 'error' || m.type === 'rejected');
  expect(ack, JSON.stringify(ack)).toMatchObject({ type: 'ack', client_op_id: 's2' });
  h1.ws.close();

  const channel = realtime.connect(server.url, read, '2.0.0').channel(`canvas:${canvasId}`, { config: { private: true } });
  expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
}, 60_000);

it('@potentia/client: one canvas and one block however the id is spelt, and a block id of no RFC 9562 layout', async () => {
  const anonKey = await apiKey(server.deps.config.auth.jwtSecret, 'anon');
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket: WebSocket as never, auth: { persistSession: false } });
  await client.auth.signUp(`uuid-${crypto.randomUUID()}@example.com`, 'correct horse battery');
  const ws = await client.workspaces.create('Spellings');
  const { canvas_id } = await client.canvases.create(ws.workspace_id, 'Spellings');
  const canvas = client.canvas(canvas_id.toUpperCase());
  try {
    expect(client.canvas(canvas_id)).toBe(canvas);
    await canvas.connect();
    const id = legacyId();
    const block = await canvas.create({ id: id.toUpperCase(), type: 'text', content: { text: 'a' } });
    expect(block.block_id).toBe(id);
    expect(canvas.block(id.toUpperCase())?.block_id).toBe(id);
    expect([...canvas.blocks().keys()]).toEqual([id]);
    const child = await canvas.create({ type: 'text', parent: id.toUpperCase() });
    expect(child.parent_id).toBe(id);
    const updated = await canvas.update(id.toUpperCase(), { content: { text: 'b' } });
    expect(updated.content).toEqual({ text: 'b' });
    await canvas.move(child.block_id.toUpperCase(), { parent: null, after: id.toUpperCase() });
    expect(canvas.block(child.block_id)?.parent_id).toBe(null);
    await expect(canvas.create({ id: `{${legacyId()}}`, type: 'text' })).rejects.toMatchObject({ code: 'invalid_input', field: 'id' });
  } finally {
    canvas.close();
  }
}, 60_000);
