import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CanvasSync } from '../../packages/client/src/canvas-sync.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { bigCanvas as makeBigCanvas, blocksView, canvasState, type PagedBlock } from '../helpers/big-canvas.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

// Faults between the parts of an H1 snapshot in parts: the client must never take a half
// snapshot for the canvas, and ends equal to the database once it has reconnected.

let server: Server;
const db = testDatabase();
beforeAll(async () => { server = await startTestServer({}, { realtime: {} }); });
afterAll(async () => { await server?.stop(); await db.close(); });

const bigCanvas = (n: number) => makeBigCanvas(db.sql, n);
const dbState = (canvasId: string) => canvasState(db.sql, canvasId);

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
    expect(blocksView(sync.blocks as Map<string, PagedBlock>)).toEqual(blocksView(truth.blocks));
  } finally {
    sync.close();
  }
}, 300_000);
