// Semantic search (GET /api/v1/canvas/{id}/search) while the embedding provider fails: a real
// server configured with the OpenAI-compatible provider, pointed at an HTTP server that answers
// every embedding request 500. The answer is 503 unavailable with a retry hint, as every other 503
// of the API (retry_after and Retry-After): 1 s for a call that failed, and once the circuit
// breaker opened, the seconds until it lets a call through again. It said "retry later" with
// neither, the only 503 of the API without one.
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, createUser } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';

const COOLDOWN_MS = 60_000;
const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
let provider: HttpServer;
let server: Server;
let database: Database;
let requests = 0;

beforeAll(async () => {
  provider = createServer((req, res) => {
    requests += 1;
    req.resume();
    res.writeHead(500, { 'content-type': 'application/json' }).end('{"error":{"message":"the provider is down"}}');
  });
  await new Promise<void>((resolve) => provider.listen(0, '127.0.0.1', resolve));
  server = await startTestServer({ embedding: { ...base.embedding, provider: 'openai', model: 'text-embedding-3-small',
    openai: { baseUrl: `http://127.0.0.1:${(provider.address() as AddressInfo).port}/v1`, apiKey: 'sk-test' },
    breaker: { failureThreshold: 2, cooldownMs: COOLDOWN_MS } } });
  database = testDatabase(2);
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await database?.close();
  await new Promise<void>((resolve) => provider?.close(() => resolve()));
});

describe('a stranger\'s search', () => {
  it('is refused 404 before the query is embedded: the provider is never called', async () => {
    // the membership was checked by api.search_blocks, after the embedding: a stranger made us pay
    // for an embedding (here: a failing provider's 503, not the 404), and answered later than for
    // a canvas with nothing to embed
    const { canvasId } = await createCanvas(database.sql);
    const stranger = await createUser(database.sql, 'search-stranger');
    const before = requests;
    const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/search?q=hello`,
      { headers: { authorization: `Bearer ${await tokenFor(server, stranger)}` } });
    expect(res.status, await res.clone().text()).toBe(404);
    expect(await res.json()).toMatchObject({ error: { code: 'not_found', field: 'canvas_id' } });
    expect(requests).toBe(before);
  });
});

describe('search while the embedding provider fails', () => {
  it('503 unavailable with retry_after and Retry-After: 1 s after a failed call, the breaker\'s cooldown once it is open', async () => {
    const { canvasId, users } = await createCanvas(database.sql);
    const token = await tokenFor(server, users.owner!);
    const search = async () => {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/search?q=hello`, { headers: { authorization: `Bearer ${token}` } });
      return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() as { error: Record<string, unknown> } };
    };
    // two calls that reach the provider and fail: the breaker opens after the second
    for (let i = 0; i < 2; i++) {
      expect(await search()).toEqual({ status: 503, retryAfter: '1',
        body: { error: { code: 'unavailable', retry_after: 1, message: expect.stringContaining('did not answer') } } });
    }
    expect(requests).toBeGreaterThanOrEqual(2);
    const reached = requests;
    // open: refused without calling the provider, with the time left of its cooldown
    const open = await search();
    expect(open).toMatchObject({ status: 503, body: { error: { code: 'unavailable', message: expect.stringContaining('is failing') } } });
    const seconds = open.body.error.retry_after as number;
    expect(seconds).toBeGreaterThan(1);
    expect(seconds).toBeLessThanOrEqual(COOLDOWN_MS / 1000);
    expect(open.retryAfter).toBe(String(seconds));
    expect(requests).toBe(reached);
  });
});
