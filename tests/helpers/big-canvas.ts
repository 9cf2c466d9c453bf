import type { Sql } from 'postgres';
import { expect } from 'vitest';
import { createCanvasWithEditors, mutate } from './fixtures.ts';

/** A block as the API shows it, the parts a paged snapshot's tests compare. */
export type PagedBlock = { block_id: string; version: number; y_order: string; content: Record<string, unknown> };

/**
 * A canvas of `n` blocks of about 60 KB content each (about n × 60 KB of snapshot: 70 blocks
 * fill a ~4 MB page), made by editors through the RPC (a user may make 100 changes a minute).
 */
export async function bigCanvas(sql: Sql, n: number) {
  const { canvasId, workspaceId, users } = await createCanvasWithEditors(sql, Math.ceil(n / 80));
  for (let i = 0; i < n; i++) {
    const r = await mutate(sql, users[1 + (i % (users.length - 1))]!, canvasId, { action: 'create', patch: { type: 'note', content: { text: `${i}:${'x'.repeat(60_000)}` } } });
    expect(r.status).toBe('success');
  }
  return { canvasId, workspaceId, users, owner: users[0]! };
}

/** The canvas as the database holds it now, its blocks as the API shows them, and its canvas_seq. */
export async function canvasState(sql: Sql, canvasId: string) {
  const [c] = await sql`select last_canvas_seq from app.canvases where canvas_id = ${canvasId}`;
  const rows = await sql`select internal.block_json(b) as b from app.blocks b where canvas_id = ${canvasId}`;
  return { canvasSeq: Number(c!.last_canvas_seq), blocks: new Map(rows.map((r) => [r.b.block_id as string, r.b as PagedBlock])) };
}

/** Blocks by id as [version, y_order, content as JSON]: what two copies of a canvas must agree on. */
export function blocksView(blocks: ReadonlyMap<string, PagedBlock>): Map<string, [number, string, string]> {
  return new Map([...blocks].map(([id, b]) => [id, [b.version, b.y_order, JSON.stringify(b.content)]]));
}
