import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPotentiaClient } from '../../packages/client/src/index.ts';
import { apiKeys } from '../../src/dev.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { startTestServer } from '../helpers/http.ts';

// The canvas lists (GET /api/v1/canvas, A4, api.list_my_canvases; GET /workspaces/{id}/canvases,
// W8, api.list_workspace_canvases) were every canvas in one answer, each with up to 16 KB of
// settings: thousands of canvases made one answer of tens of MB, built whole in Postgres and
// again in the server. A page now holds at most limit (default 100, at most 500) and about 4 MB
// (the first always on it), newest change first; next_cursor leads on, and the client's
// canvases.list() follows it to the end.

const db = testDatabase();
let server: DevServer;
let anonKey: string;
beforeAll(async () => {
  server = await startDevServer();
  anonKey = server.anonKey;
}, 90_000);
afterAll(async () => { await server?.stop(); await db.close(); });

const PAGE_BYTES = 4 * 1024 * 1024;

it('a page of canvases stops near 4 MB; the pages, and canvases.list(), hold every canvas once, newest change first', async () => {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  const { id: userId } = await client.auth.signUp(`lists-${randomUUID()}@example.com`, 'correct horse battery');
  const { workspace_id: workspaceId } = await client.workspaces.create('Lists');
  // 320 canvases of 15 KB settings each (about 5 MB), written directly: creating them through the API takes 10 s each (A5)
  await db.sql`insert into app.canvases (workspace_id, title, settings, created_by, updated_at)
    select ${workspaceId}, 'c' || i, jsonb_build_object('blob', repeat('s', 15000)), ${userId}, now() - make_interval(secs => i)
    from generate_series(1, 320) i`;
  const expected = (await db.sql`select canvas_id from app.canvases where workspace_id = ${workspaceId} and deleted_at is null
    order by updated_at desc, canvas_id`).map((r) => r.canvas_id as string);
  expect(expected.length).toBe(320);
  const token = (await client.supabase.auth.getSession()).data.session!.access_token;

  for (const path of ['/api/v1/canvas', `/api/v1/workspaces/${workspaceId}/canvases`]) {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const res = await fetch(`${server.url}${path}?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      const text = await res.text();
      expect(text.length).toBeLessThan(PAGE_BYTES + 100_000); // the page's bytes and the one canvas that crossed them
      const page = JSON.parse(text) as { canvases: Array<{ canvas_id: string }>; next_cursor: string | null };
      expect(page.canvases.length).toBeGreaterThan(0);
      seen.push(...page.canvases.map((c) => c.canvas_id));
      cursor = page.next_cursor;
      pages++;
    } while (cursor !== null);
    expect(pages).toBeGreaterThan(1);
    expect(seen).toEqual(expected);
  }
  expect((await client.canvases.list()).map((c) => c.canvas_id)).toEqual(expected);
  await client.auth.signOut();
}, 120_000);

it('a cursor the list did not return is a 400 naming it', async () => {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  await client.auth.signUp(`lists-${randomUUID()}@example.com`, 'correct horse battery');
  const token = (await client.supabase.auth.getSession()).data.session!.access_token;
  // a time past bigint's range (19 digits) was Postgres's 'out of range for type bigint', naming no field
  const uuid = '00000000-0000-0000-0000-000000000000';
  for (const cursor of ['x', '12.not-a-uuid', `9999999999999999999.${uuid}`, `-9999999999999999999.${uuid}`]) {
    for (const path of ['/api/v1/canvas', `/api/v1/workspaces/${randomUUID()}/canvases`]) {
      const res = await fetch(`${server.url}${path}?cursor=${encodeURIComponent(cursor)}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(400);
      expect(await res.json()).toMatchObject({ error: { code: 'invalid_input', field: 'cursor' } });
    }
  }
  await client.auth.signOut();
});

it('canvases.list() on the standard limits: a page refused by the list limit (A4, 2 a second) is asked again after its delay, and every canvas comes', async () => {
  const standard = await startTestServer(); // the standard profile: A4 as shipped
  try {
    const client = createPotentiaClient({ url: standard.url, anonKey: (await apiKeys(standard.deps.config)).anon, WebSocket,
      auth: { persistSession: false, autoRefreshToken: false } });
    const { id: userId } = await client.auth.signUp(`lists-${randomUUID()}@example.com`, 'correct horse battery');
    const { workspace_id: workspaceId } = await client.workspaces.create('Many');
    // 1,100 canvases: three pages of at most 500, asked for at once, so the third meets A4
    await db.sql`insert into app.canvases (workspace_id, title, created_by, updated_at)
      select ${workspaceId}, 'c' || i, ${userId}, now() - make_interval(secs => i) from generate_series(1, 1100) i`;
    const expected = (await db.sql`select canvas_id from app.canvases where workspace_id = ${workspaceId} and deleted_at is null
      order by updated_at desc, canvas_id`).map((r) => r.canvas_id as string);
    expect((await client.canvases.list()).map((c) => c.canvas_id)).toEqual(expected);
    await client.auth.signOut();
  } finally {
    await standard.stop();
  }
}, 120_000);
