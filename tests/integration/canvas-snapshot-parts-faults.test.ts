import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors, mutate } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// Faults between the parts of an H1 snapshot in parts: the client must never take a half
// snapshot for the canvas, and ends equal to the database once it has reconnected.

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer({}, { realtime: {} }); });
afterAll(async () => { await server?.stop(); await db.close(); });

type Block = { block_id: string; version: number; y_order: string; content: Record<string, unknown> };

async function bigCanvas(n: number) {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, Math.ceil(n / 80));
  for (let i = 0; i < n; i++) {
    const r = await mutate(db.sql, users[1 + (i % (users.length - 1))]!, canvasId, { action: 'create', patch: { type: 'note', content: { text: `${i}:${'x'.repeat(60_000)}` } } });
    expect(r.status).toBe('success');
  }
  return { canvasId, owner: users[0]! };
}

async function dbState(canvasId: string) {
  const [c] = await db.sql`select last_canvas_seq from app.canvases where canvas_id = ${canvasId}`;
  const rows = await db.sql`select internal.block_json(b) as b from app.blocks b where canvas_id = ${canvasId}`;
  return { canvasSeq: Number(c!.last_canvas_seq), blocks: new Map(rows.map((r) => [r.b.block_id as string, r.b as Block])) };
}
const view = (m: Map<string, Block>) => new Map([...m].map(([id, b]) => [id, [b.version, b.y_order, JSON.stringify(b.content)]]));

it('CanvasSync: a socket lost after the first part is not kept as the canvas; after reconnecting the client equals the database', async () => {
  const { canvasId, owner } = await bigCanvas(150); // 3 parts
  const token = await tokenFor(server, owner);
  const initial = await dbState(canvasId);
  let sockets = 0;
  let cut = false;
  class CutAfterFirstPart extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets++;
      this.on('message', (data) => {
        const m = JSON.parse(String(data));
        if (!cut && m.type === 'snapshot' && m.has_more) { cut = true; this.terminate(); }
      });
    }
  }
  const told: number[] = [];
  const sync = new CanvasSync({ url: server.url, canvasId, token: () => token, WebSocket: CutAfterFirstPart as any,
    onChange: (blocks) => told.push([...initial.blocks.keys()].filter((id) => blocks.has(id)).length) });
  try {
    await sync.join();
    const truth = await dbState(canvasId);
    while (sync.canvasSeq < truth.canvasSeq) await new Promise((r) => setTimeout(r, 50));
    expect(cut).toBe(true);
    expect(sockets).toBeGreaterThan(1);
    expect(told.length).toBeGreaterThan(0);
    expect(told).toEqual(told.map(() => initial.blocks.size)); // only whole states told
    expect(view(sync.blocks as Map<string, Block>)).toEqual(view(truth.blocks));
  } finally {
    sync.close();
  }
}, 300_000);
