// Search with text that has no letters or digits (emoji, punctuation: "🎉", "!!!"), on the blocks'
// side and on the query's. The local embedding (local-hash-v1, the provider of local runs and CI)
// made such a text the zero vector, whose cosine distance to anything is NaN: every search of a
// canvas holding a block "🎉🎉" answered `"distance": "NaN"` (a string where the API says a
// number), and a query "🎉" answered NaN for every block, in no order. Now such a text is embedded
// from its characters, and api.search_blocks refuses a query without a direction (invalid_input,
// field query) and compares no block stored without one (never a NaN distance).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { withRequest } from '../../src/db/request.ts';
import { devToken } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { LocalProvider } from '../../src/worker/providers.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { checkedFetch } from '../helpers/contract.ts';
import { testDatabase } from '../helpers/db.ts';
import { claimsFor, createCanvas, mutate } from '../helpers/fixtures.ts';

let db: Database;
let server: Server;
let canvas: Awaited<ReturnType<typeof createCanvas>>;
let token: string;
const blocks: Record<string, string> = {};

beforeAll(async () => {
  db = testDatabase(3);
  canvas = await createCanvas(db.sql);
  const ctx = { sql: db.sql, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 }) };
  for (const [name, text] of Object.entries({ party: '🎉🎉', words: 'sourdough bread with flour', cheer: '!!!' })) {
    const r = await mutate(db.sql, canvas.users.owner!, canvas.canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
    blocks[name] = r.block_id!;
    expect(await embedBlock(ctx, r.block_id!)).toBe('embedded');
  }
  server = await startServer({ ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' }, { realtime: false });
  token = await devToken(loadConfig(), { sub: canvas.users.owner! });
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await db?.close();
});

const search = (q: string) => checkedFetch(server.url, 'GET', `/api/v1/canvas/${canvas.canvasId}/search?q=${encodeURIComponent(q)}`, { token });
type Item = { block_id: string; distance: unknown };

describe('search with text that has no letters or digits', () => {
  it('a canvas holding an emoji-only block answers numbers for every distance, and a word query finds the words first', async () => {
    const res = await search('flour bread');
    expect(res.status, res.text).toBe(200);
    const items = res.body.items as Item[];
    expect(items[0]!.block_id).toBe(blocks.words);
    for (const item of items) expect(typeof item.distance, JSON.stringify(item)).toBe('number');
  });

  it('an emoji query finds the emoji block first, with number distances', async () => {
    const res = await search('🎉');
    expect(res.status, res.text).toBe(200);
    const items = res.body.items as Item[];
    for (const item of items) expect(typeof item.distance, JSON.stringify(item)).toBe('number');
    expect(items[0]!.block_id).toBe(blocks.party);
  });

  it('api.search_blocks called with a query of no direction (all zeros) is invalid_input naming query, and never answers NaN', async () => {
    const zero = `[${new Array(1536).fill(0).join(',')}]`;
    const err = await withRequest(db.sql, { claims: claimsFor(canvas.users.owner!) },
      (tx) => tx`select api.search_blocks(${canvas.canvasId}, ${zero}, 10, 'local-hash-v1')`).then(() => null, (e: { hint?: string; detail?: string }) => e);
    expect(err?.hint).toBe('invalid_input');
    expect(JSON.parse(err!.detail!)).toMatchObject({ field: 'query' });
    // a block stored with no direction (embedded before, or by hand) is not compared
    await db.sql`update app.blocks set vector = ${zero}::extensions.vector where block_id = ${blocks.cheer!}`;
    const res = await search('flour bread');
    expect(res.status, res.text).toBe(200);
    const items = res.body.items as Item[];
    expect(items.map((i) => i.block_id)).not.toContain(blocks.cheer);
    for (const item of items) expect(typeof item.distance, JSON.stringify(item)).toBe('number');
  });
});
