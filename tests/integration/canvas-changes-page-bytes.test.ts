import { afterAll, beforeAll, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, mutate } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// A page of a canvas's log (GET /api/v1/canvas/{id}/changes, api.get_canvas_changes_since, the H1
// resume and the snapshot's `since`) was bounded by its count only: 1,000 changes of 64 KB blocks
// made one answer of 120 MB, built whole in one jsonb and then parsed and serialized again in the
// server process (about 700 MB of it, measured, for one request; a user may send ten a second,
// H7). A page now also stops at about 4 MB of changes (internal.changes_page_bytes; its first
// change always on it): the rest is on the next pages, each change exactly once and in order.

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server?.stop(); await db.close(); });

const PAGE_BYTES = 4 * 1024 * 1024;

it('a page of large changes stops near 4 MB; the pages hold every change once, in order', async () => {
  const { canvasId, users } = await createCanvas(db.sql, []);
  const owner = users.owner!;
  const made = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'note' } });
  let version = made.version!;
  // 60 updates of a 60 KB content: each change carries the block and the patch, about 120 KB
  for (let n = 0; n < 60; n++) {
    const r = await mutate(db.sql, owner, canvasId, { action: 'update', blockId: made.block_id!, baseVersion: version,
      patch: { content: { text: `${n}:${'x'.repeat(60_000)}` } } });
    expect(r.status).toBe('success');
    version = r.version!;
  }
  const token = await tokenFor(server, owner);
  const seen: number[] = [];
  let since = 0;
  let pages = 0;
  for (;;) {
    const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/changes?since_canvas_seq=${since}&limit=1000`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const text = await res.text();
    // at most the page's bytes and one change past them (the one that crossed them)
    expect(text.length).toBeLessThan(PAGE_BYTES + 200_000);
    const page = JSON.parse(text) as { changes: Array<{ canvas_seq: number }>; has_more: boolean; canvas_watermark: number; snapshot_required: boolean };
    expect(page.snapshot_required).toBe(false);
    expect(page.changes.length).toBeGreaterThan(0);
    seen.push(...page.changes.map((c) => c.canvas_seq));
    expect(page.canvas_watermark).toBe(page.changes.at(-1)!.canvas_seq);
    since = page.canvas_watermark;
    pages++;
    if (!page.has_more) break;
    await new Promise((r) => setTimeout(r, 110)); // H7: 10 a second
  }
  expect(pages).toBeGreaterThan(1);
  expect(seen).toEqual(Array.from({ length: 61 }, (_, i) => i + 1));
  // by server_seq the same (api.get_canvas_changes: the snapshot's `since`, an H1 resume by server_seq)
  const bySeq = await callAs(db.sql, owner, 'get_canvas_changes', [canvasId, 0, 1000]);
  expect(bySeq.has_more).toBe(true);
  expect(JSON.stringify(bySeq).length).toBeLessThan(PAGE_BYTES + 200_000);
  expect(bySeq.watermark).toBe(bySeq.changes.at(-1).server_seq);
}, 120_000);

it('small changes: a page is still bounded by its limit alone', async () => {
  const { canvasId, users } = await createCanvas(db.sql, []);
  for (let n = 0; n < 5; n++) await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'note' } });
  const first = await callAs(db.sql, users.owner!, 'get_canvas_changes_since', [canvasId, 0, 3]);
  expect(first.changes.map((c: { canvas_seq: number }) => c.canvas_seq)).toEqual([1, 2, 3]);
  expect(first).toMatchObject({ has_more: true, canvas_watermark: 3 });
  const rest = await callAs(db.sql, users.owner!, 'get_canvas_changes_since', [canvasId, 3, 3]);
  expect(rest.changes.map((c: { canvas_seq: number }) => c.canvas_seq)).toEqual([4, 5]);
  expect(rest).toMatchObject({ has_more: false, canvas_watermark: 5 });
});
