// Under load, every change a @potentia/client Canvas resolved can be read at once over another
// connection: a create finds its block, an update its version (or a later one), a move its parent,
// a delete no row. Before changes resolved at the server's answer (they resolved at their own delta,
// which logical decoding reads once the commit is flushed, before the transaction is visible to
// other sessions), this missed reads of every kind on two shared cores (the client of 3e44164^:
// 19+ of these 320, 25 of 400 creates alone). Several canvases, each with many changes in flight,
// so the server's lanes group-commit and the deltas' decoding races the commits' visibility.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPotentiaClient } from '../../packages/client/src/index.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { startTestServer } from '../helpers/http.ts';

const db = testDatabase(8);
let server: Server;
beforeAll(async () => {
  server = await startTestServer({ profile: 'development' }, { realtime: {} });
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

describe('@potentia/client under load: after a change resolves, every read sees it', () => {
  it('creates, updates, moves and deletes on 4 canvases (a user each: 80 changes, under the 100 a minute), 20 blocks each in flight: each read right after its promise finds the change', async () => {
    const anonKey = (await apiKeys(server.deps.config)).anon;
    const canvases = await Promise.all([0, 1, 2, 3].map(async (i) => {
      const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
      await client.auth.signUp(`load-${i}-${randomUUID()}@example.com`, 'correct horse battery');
      const { workspace_id } = await client.workspaces.create('Load');
      const { canvas_id } = await client.canvases.create(workspace_id, 'Load');
      const canvas = client.canvas(canvas_id);
      await canvas.connect();
      return canvas;
    }));
    const misses: string[] = [];
    let reads = 0;
    const version = async (id: string) => (await db.sql<{ version: number }[]>`select version from app.blocks where block_id = ${id}`)[0]?.version;
    await Promise.all(canvases.flatMap((canvas) => Array.from({ length: 20 }, async () => {
      const id = randomUUID();
      const created = await canvas.create({ type: 'text', id });
      reads++;
      if (!((await version(id))! >= created.version)) misses.push(`create ${id}`);
      const updated = await canvas.update(id, { content: { n: 1 } });
      reads++;
      if (!((await version(id))! >= updated.version)) misses.push(`update ${id} to version ${updated.version}`);
      const moved = await canvas.move(id, { after: null });
      reads++;
      if (!((await version(id))! >= moved.version)) misses.push(`move ${id} to version ${moved.version}`);
      await canvas.delete(id);
      reads++;
      if ((await version(id)) !== undefined) misses.push(`delete ${id}`);
    })));
    expect(reads).toBe(4 * 20 * 4);
    expect(misses).toEqual([]);
    for (const c of canvases) c.close();
  }, 120_000);
});
