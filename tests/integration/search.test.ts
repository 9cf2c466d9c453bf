// Semantic search: api.search_blocks (permission-filtered, nearest by cosine distance through the
// partial HNSW index) and GET /api/v1/canvas/{id}/search?q= (embeds q with the configured
// provider, the local one here). EXPLAIN (auto_explain on the real function call) shows the
// HNSW index on a canvas with enough rows, and the counts read from blocks_embedded_model_idx.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import pino from 'pino';
import postgres from 'postgres';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { withRequest } from '../../src/db/request.ts';
import { devToken } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { localEmbedding, LocalProvider, toVectorLiteral } from '../../src/worker/providers.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, callAs, claimsFor, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';

const ROWS = 2000;

describe('semantic search', () => {
  let db: Database;
  let server: Server;
  let canvas: Awaited<ReturnType<typeof createCanvas>>;
  let viewer: string;
  // the server's warnings, as JSON lines
  const warnings: Record<string, any>[] = [];
  const blocks: Record<string, string> = {};
  const texts = {
    garden: 'planting tomatoes and basil in the spring garden',
    rocket: 'rocket engine thrust and orbital launch windows',
    bread: 'sourdough bread starter with flour and water',
  };

  beforeAll(async () => {
    db = testDatabase(3);
    canvas = await createCanvas(db.sql);
    viewer = await addMember(db.sql, canvas.users.owner!, canvas.workspaceId, 'viewer');
    const ctx = { sql: db.sql, provider: new LocalProvider(), breaker: new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 }) };
    for (const [name, text] of Object.entries(texts)) {
      const r = await mutate(db.sql, canvas.users.owner!, canvas.canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
      blocks[name] = r.block_id!;
      expect(await embedBlock(ctx, r.block_id!)).toBe('embedded');
    }
    // enough embedded rows on the canvas for the planner to prefer the HNSW index; clustered like
    // real embeddings (around one direction, with noise): uniformly random 1536-d vectors are
    // HNSW's worst case, where even the obvious nearest neighbour can be missed
    await db.sql`
      insert into app.blocks (canvas_id, type, content, y_order, vector, embedded_hash, embedding_model)
      select ${canvas.canvasId}, 'text', jsonb_build_object('text', 'filler ' || i), 'b' || lpad(i::text, 5, '0') || 'z',
             (select array_agg(case when d % 97 = 0 then 1 else 0 end + (random() - 0.5) * 0.05)::extensions.vector
              from generate_series(1, 1536 + i * 0) d),
             md5(jsonb_build_object('text', 'filler ' || i)::text), 'random'
      from generate_series(1, ${ROWS}) i`;
    await db.sql`delete from app.embedding_outbox where canvas_id = ${canvas.canvasId}`;
    await db.sql`analyze app.blocks`;
    server = await startServer({ ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0 },
      { realtime: false, logger: pino({ level: 'warn' }, { write: (line: string) => { warnings.push(JSON.parse(line)); } }) });
  }, 180_000); // 2,000 HNSW inserts of 1,536 dimensions: 20-30 s on an idle 2-core machine, over a minute on a busy one
  afterAll(async () => {
    await server?.stop();
    await db?.close();
  });
  it('a block embedded by another model is embedded again when queued (a switch of provider), one by this model is skipped', async () => {
    const breaker = new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 });
    const r = await mutate(db.sql, canvas.users.owner!, canvas.canvasId, { action: 'create', patch: { type: 'text', content: { text: 'switching models' } } });
    expect(await embedBlock({ sql: db.sql, provider: new LocalProvider(), breaker }, r.block_id!)).toBe('embedded');
    const next = { sql: db.sql, provider: new LocalProvider('local-hash-v2'), breaker };
    expect(await embedBlock(next, r.block_id!)).toBe('embedded');
    expect(await embedBlock(next, r.block_id!)).toBe('unchanged');
    const [row] = await db.sql`select embedding_model, vector is not null as has_vector from app.blocks where block_id = ${r.block_id!}`;
    expect(row).toEqual({ embedding_model: 'local-hash-v2', has_vector: true });
  });


  const search = (user: string, q: string, limit = 3) =>
    callAs(db.sql, user, 'search_blocks', [canvas.canvasId, toVectorLiteral(localEmbedding(q)), limit, 'local-hash-v1']);

  it('finds the blocks nearest in meaning, for any reader of the canvas', async () => {
    const r = await search(viewer, 'when to plant basil in my garden');
    expect(r.items[0].block_id).toBe(blocks.garden);
    expect(r.items[0].distance).toBeLessThan(r.items[1].distance);
    expect(r.items).toHaveLength(3);
    expect((await search(canvas.users.owner!, 'launch of a rocket', 1)).items[0].block_id).toBe(blocks.rocket);
  });

  it('is permission-filtered: non-members and out-of-scope tokens are refused', async () => {
    const stranger = await createUser(db.sql, 'stranger');
    await expect(search(stranger, 'bread')).rejects.toMatchObject({ hint: 'not_found' });
    await expect(callAs(db.sql, viewer, 'search_blocks', [canvas.canvasId, toVectorLiteral(localEmbedding('bread')), 3],
      { scope: 'canvas:00000000-0000-0000-0000-000000000000:read' })).rejects.toMatchObject({ hint: 'forbidden' });
    await expect(callAs(db.sql, viewer, 'search_blocks', [canvas.canvasId, '[1,2,3]', 3])).rejects.toMatchObject({ hint: 'invalid_input' });
  });

  /** The canvas's embedded blocks another model than `model` embedded, and those models, as the database holds them. */
  async function leftOut(model: string, canvasId = canvas.canvasId) {
    const [r] = await db.sql`select count(*)::int as n, coalesce(array_agg(distinct embedding_model order by embedding_model), '{}') as models
                             from app.blocks where canvas_id = ${canvasId} and vector is not null and embedding_model <> ${model}`;
    return { other_model_blocks: r!.n as number, other_models: r!.models as string[] };
  }

  /** The plan of the nearest-blocks query inside api.search_blocks (auto_explain on the real call). */
  async function searchPlan(model: string) {
    const notices: string[] = [];
    const one = postgres(testDatabaseUrl(), { max: 1, onnotice: (n) => notices.push(String(n.message)) });
    let answer: any;
    try {
      await one`load 'auto_explain'`;
      await one`set auto_explain.log_min_duration = 0`;
      await one`set auto_explain.log_nested_statements = on`;
      await one`set auto_explain.log_level = 'notice'`;
      // the plan the indexes allow, not the one a small table makes cheapest: on a database
      // holding only this file's blocks (2,004 rows, nearly all this canvas's) a Seq Scan of the
      // whole table costs less than any index, and the planner rightly takes it; at scale (other
      // canvases' rows) it cannot. The test asks which index the queries can read, as the bus
      // catch-up's plan test does (realtime-bus-catchup.test.ts)
      await one`set enable_seqscan = off`;
      [{ r: answer }] = await withRequest(one, { claims: claimsFor(viewer) }, (tx) =>
        tx`select api.search_blocks(${canvas.canvasId}, ${toVectorLiteral(localEmbedding('sourdough'))}, 5, ${model}) as r`) as any;
    } finally {
      await one.end();
    }
    const plan = notices.find((n) => /blocks b/.test(n) && /<=>/.test(n) && /Limit/.test(n));
    expect(plan, notices.join('\n---\n')).toBeDefined();
    if (process.env.SHOW_PLAN) console.log(notices.join('\n---\n'));
    // the counts before the search: the model's blocks (up to the threshold + 1), the other
    // models' names and blocks, the vectors without a model's name
    const counts = notices.filter((n) => /Query Text:[^]*count\(\*\)[^]*from app\.blocks b/.test(n));
    return { plan: plan!, counts, answer };
  }

  it('uses blocks_vector_hnsw_idx above search_exact_max_blocks blocks of the query\'s model, and counts through blocks_embedded_model_idx (EXPLAIN of the real call, through auto_explain)', async () => {
    // this canvas has 2,004 embedded blocks, 2,000 of them by model 'random': searched exactly
    // under the default (5,000); with a lower threshold a 'random' query is a large canvas's and
    // goes through the index, filtered by model as by canvas during the scan
    await db.sql`update app.settings set value = '1000' where key = 'search_exact_max_blocks'`;
    try {
      const large = await searchPlan('random');
      expect(large.plan).toMatch(/Index Scan using blocks_vector_hnsw_idx/);
      expect(large.plan).toMatch(/embedding_model/);
      expect(large.answer.items).toHaveLength(5);
      expect(large.answer).toMatchObject(await leftOut('random'));
      expect(large.answer.other_model_blocks).toBeGreaterThanOrEqual(3);
      // the switch counts only the query's model: the canvas's three local-hash-v1 blocks are
      // compared one by one, not searched through an index of 2,004 vectors of two models
      const few = await searchPlan('local-hash-v1');
      expect(few.plan).not.toMatch(/blocks_vector_hnsw_idx/);
      expect(few.plan).toMatch(/blocks_embedded_model_idx/);
      expect(few.answer.items.map((b: any) => b.block_id)).toEqual([blocks.bread, expect.any(String), expect.any(String)]);
      expect(few.answer).toMatchObject(await leftOut('local-hash-v1'));
      expect(few.answer.other_model_blocks).toBeGreaterThanOrEqual(ROWS);
      // either way the counts read blocks_embedded_model_idx, never the canvas's rows (the table
      // whole, or by the canvas index: every embedded row of the canvas, 25-30 ms at 50,000)
      for (const { counts } of [large, few]) {
        expect(counts).toHaveLength(3);
        for (const plan of counts) {
          expect(plan).toMatch(/blocks_embedded_model_idx/);
          expect(plan).not.toMatch(/Seq Scan on blocks|blocks_canvas_id_block_id_key/);
        }
      }
    } finally {
      await db.sql`update app.settings set value = '5000' where key = 'search_exact_max_blocks'`;
    }
  });

  it('GET /api/v1/canvas/{id}/search?q= embeds the query and answers the nearest blocks', async () => {
    const token = await devToken(loadConfig(), { sub: viewer });
    const res = await fetch(`${server.url}/api/v1/canvas/${canvas.canvasId}/search?q=${encodeURIComponent('flour for bread')}&limit=2`,
      { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const body = await res.json() as { items: { block_id: string }[]; model: string; other_model_blocks: number; other_models: string[] };
    expect(body.items[0]!.block_id).toBe(blocks.bread);
    expect(body.items).toHaveLength(2);
    expect(body.model).toBe('local-hash-v1');
    // the filler's model 'random' (and the block the first test embedded again with local-hash-v2)
    expect(body).toMatchObject(await leftOut('local-hash-v1'));
    expect(body.other_model_blocks).toBeGreaterThanOrEqual(ROWS);
    const alias = await fetch(`${server.url}/functions/v1/search/${canvas.canvasId}?q=rocket`, { headers: { authorization: `Bearer ${token}` } });
    expect(((await alias.json()) as any).items[0].block_id).toBe(blocks.rocket);
    const bad = await fetch(`${server.url}/api/v1/canvas/${canvas.canvasId}/search`, { headers: { authorization: `Bearer ${token}` } });
    expect(bad.status).toBe(400);
    const anon = await fetch(`${server.url}/api/v1/canvas/${canvas.canvasId}/search?q=x`);
    expect(anon.status).toBe(401);
  });

  it('a query of another model than the blocks\' answers 200 with items [] and the count, and logs what to set; once a block has the model, it is found', async () => {
    // the worker embeds with another model than this server's provider (local-hash-v1): a
    // misconfigured search function, or a change of model the worker has not caught up with
    const other = await createCanvas(db.sql);
    const worker = { sql: db.sql, provider: new LocalProvider('worker-model'), breaker: new CircuitBreaker({ name: 't', failureThreshold: 3, cooldownMs: 1000 }) };
    const ids: Record<string, string> = {};
    for (const [name, text] of Object.entries(texts)) {
      const r = await mutate(db.sql, other.users.owner!, other.canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
      ids[name] = r.block_id!;
      expect(await embedBlock(worker, r.block_id!)).toBe('embedded');
    }
    const token = await devToken(loadConfig(), { sub: other.users.owner! });
    const ask = async (path: string) => {
      const res = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
      return await res.json() as { items: { block_id: string }[]; model: string; other_model_blocks: number; other_models: string[] };
    };
    warnings.length = 0;
    const mismatched = await ask(`/api/v1/canvas/${other.canvasId}/search?q=${encodeURIComponent('flour for bread')}`);
    expect(mismatched).toEqual({ items: [], model: 'local-hash-v1', other_model_blocks: 3, other_models: ['worker-model'] });
    expect(await ask(`/functions/v1/search/${other.canvasId}?q=bread`)).toEqual(mismatched);
    const warned = warnings.filter((w) => w.canvas_id === other.canvasId);
    expect(warned).toHaveLength(2);
    expect(warned[0]).toMatchObject({ level: 40, query_model: 'local-hash-v1', block_models: ['worker-model'], other_model_blocks: 3 });
    expect(warned[0]!.msg).toMatch(/worker-model.*local-hash-v1.*EMBEDDING_PROVIDER and EMBEDDING_MODEL/);
    // the worker embeds one block with the server's model: it alone is compared, and found
    expect(await embedBlock({ ...worker, provider: new LocalProvider() }, ids.bread!)).toBe('embedded');
    warnings.length = 0;
    const matched = await ask(`/api/v1/canvas/${other.canvasId}/search?q=${encodeURIComponent('flour for bread')}`);
    expect(matched.items.map((b) => b.block_id)).toEqual([ids.bread]);
    expect(matched).toMatchObject({ model: 'local-hash-v1', other_model_blocks: 2, other_models: ['worker-model'] });
    expect(warnings.filter((w) => w.canvas_id === other.canvasId)).toEqual([]);
  });

  it('takes its rate limit before embedding the query: 429 with Retry-After', async () => {
    const reader = await addMember(db.sql, canvas.users.owner!, canvas.workspaceId, 'viewer');
    const token = await devToken(loadConfig(), { sub: reader });
    const [saved] = await db.sql`select max_hits, window_seconds from app.endpoint_limits where endpoint = 'S2'`;
    await db.sql`update app.endpoint_limits set max_hits = 1, window_seconds = 60 where endpoint = 'S2'`;
    try {
      const ask = () => fetch(`${server.url}/api/v1/canvas/${canvas.canvasId}/search?q=bread`, { headers: { authorization: `Bearer ${token}` } });
      expect((await ask()).status).toBe(200);
      const limited = await ask();
      expect(limited.status).toBe(429);
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(((await limited.json()) as any).error.code).toBe('rate_limited');
    } finally {
      await db.sql`update app.endpoint_limits set max_hits = ${saved!.max_hits}, window_seconds = ${saved!.window_seconds} where endpoint = 'S2'`;
    }
  });
});
