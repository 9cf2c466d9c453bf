import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors, mutate } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// A page of GET /api/v1/canvas/{id}/blocks (A2, api.list_blocks) was bounded by its count only:
// 500 blocks of 64 KB made one answer of 32 MB, built whole in one jsonb and again in the server
// process. A page now also stops at about 4 MB of content (internal.changes_page_bytes, as the
// snapshot's and the log's pages; its first block always on it): the rest is on the next pages,
// each block exactly once and in rank order.

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server?.stop(); await db.close(); });

const PAGE_BYTES = 4 * 1024 * 1024;

it('a page of large blocks stops near 4 MB; the pages hold every block once, in rank order', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 2); // a user may make 100 changes a minute
  for (let i = 0; i < 110; i++) {
    const r = await mutate(db.sql, users[1 + (i % 2)]!, canvasId, { action: 'create', patch: { type: 'note', content: { text: `${i}:${'x'.repeat(60_000)}` } } });
    expect(r.status).toBe('success');
  }
  const token = await tokenFor(server, users[0]!);
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/blocks?limit=500${cursor ? `&cursor=${cursor}` : ''}`,
      { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.length).toBeLessThan(PAGE_BYTES + 200_000); // the page's bytes and the one block that crossed them
    const page = JSON.parse(text) as { items: Array<{ block_id: string; y_order: string }>; next_cursor: string | null };
    expect(page.items.length).toBeGreaterThan(0);
    if (page.next_cursor !== null) expect(page.next_cursor).toBe(page.items.at(-1)!.y_order);
    seen.push(...page.items.map((b) => b.block_id));
    cursor = page.next_cursor;
    pages++;
    await new Promise((r) => setTimeout(r, 110)); // A2: 10 a second
  } while (cursor !== null);
  expect(pages).toBeGreaterThan(1);
  const rows = await db.sql`select block_id from app.blocks where canvas_id = ${canvasId} order by y_order`;
  expect(seen).toEqual(rows.map((r) => r.block_id));
}, 120_000);
