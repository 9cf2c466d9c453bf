// A block whose text is longer than an OpenAI embedding model takes (8,192 tokens; a block's
// content may be 64 KB, max_content_bytes), embedded by the embed_block task's code (embedBlock,
// what the worker runs for the job the database queues) through the OpenAI-compatible provider, to
// an HTTP server that answers as OpenAI's embeddings API does: 400 for an input over 8,192 tokens or
// a request over 300,000, counting a token per UTF-8 byte (the most a byte-level tokenizer makes of
// a text). The text was sent whole: refused at every attempt (Graphile retries it 25 times, over
// days), each refusal counted by the circuit breaker that guards every other block's embedding and
// every search. Now it is embedded by its beginning (MAX_INPUT_BYTES), and a batch is split so that
// no request carries more than the provider takes.
import { createServer, type Server as HttpServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { CircuitBreaker } from '../../src/worker/breaker.ts';
import { OpenAIProvider } from '../../src/worker/providers.ts';
import { embedBlock } from '../../src/worker/tasks.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';

const MODEL = 'text-embedding-3-small';
let openai: HttpServer;
let baseUrl: string;
let database: Database;
const requests: { inputs: number; bytes: number; refused: boolean; tail: string }[] = [];

beforeAll(async () => {
  openai = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const { input } = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { input: string[] };
      const sizes = input.map((t) => Buffer.byteLength(t));
      const total = sizes.reduce((a, b) => a + b, 0);
      const refusal = sizes.some((n) => n > 8192)
        ? `This model's maximum context length is 8192 tokens, however you requested ${Math.max(...sizes)} tokens`
        : total > 300_000 ? `Requested ${total} tokens, max 300000 tokens per request` : null;
      requests.push({ inputs: input.length, bytes: total, refused: refusal !== null, tail: input.at(-1)!.slice(-3) });
      if (refusal) {
        res.writeHead(400, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: refusal, type: 'invalid_request_error' } }));
        return;
      }
      const vector = Array.from({ length: 1536 }, (_, i) => (i === 0 ? 1 : 0));
      res.writeHead(200, { 'content-type': 'application/json' })
        .end(JSON.stringify({ data: input.map((_, index) => ({ index, embedding: vector })), model: MODEL }));
    });
  });
  await new Promise<void>((resolve) => openai.listen(0, '127.0.0.1', resolve));
  baseUrl = `http://127.0.0.1:${(openai.address() as AddressInfo).port}/v1`;
  database = testDatabase(2);
});
afterAll(async () => {
  await database?.close();
  await new Promise<void>((resolve) => openai?.close(() => resolve()));
});

const provider = (batchSize = 64) => new OpenAIProvider({ baseUrl, apiKey: 'sk-test', model: MODEL, timeoutMs: 10_000, batchSize, batchWindowMs: 10 });

describe('texts longer than the provider takes', () => {
  it('a 60 KB block is embedded (by its beginning), not refused at every attempt; the breaker counts no failure', async () => {
    const { canvasId, users } = await createCanvas(database.sql);
    // 60,000 bytes: words, then characters of 2, 3 and 4 bytes where the cut falls (mid-😀), then words
    const words = (n: number) => Array.from({ length: n }, (_, i) => `word${i % 997}`).join(' ').slice(0, n);
    const text = `${words(8185)}${'é€😀'.repeat(2000)}${words(33_815)}`;
    expect(Buffer.byteLength(text)).toBe(60_000);
    const { block_id } = await mutate(database.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text } } });
    const failures: string[] = [];
    const breaker = new CircuitBreaker({ name: 'test', failureThreshold: 1, cooldownMs: 60_000, onStateChange: (s) => failures.push(s) });
    const from = requests.length;
    expect(await embedBlock({ sql: database.sql, provider: provider(), breaker }, block_id!)).toBe('embedded');
    const [row] = await database.sql`select embedding_model, embedded_hash = content_hash as current from app.blocks where block_id = ${block_id!}`;
    expect(row).toEqual({ embedding_model: MODEL, current: true });
    // its first 8,190 bytes: the cut is moved back to the start of the 😀 it fell in, never half of it
    expect(requests.slice(from)).toEqual([{ inputs: 1, bytes: 8190, refused: false, tail: text.slice(8184, 8187) }]);
    expect(requests.at(-1)!.tail.endsWith('é€')).toBe(true);
    expect(breaker.state).toBe('closed');
    expect(failures).toEqual([]);
  });

  it('texts that add up to more than one request takes are sent in several, each answered', async () => {
    const texts = Array.from({ length: 40 }, (_, i) => `${i} ${'x'.repeat(8000)}`);
    const from = requests.length;
    const vectors = await provider().embed(texts);
    expect(vectors).toHaveLength(40);
    const sent = requests.slice(from);
    expect(sent.every((r) => !r.refused && r.bytes <= 300_000)).toBe(true);
    expect(sent.reduce((n, r) => n + r.inputs, 0)).toBe(40);
  });
});
