import type { EmbeddingConfig } from '../config.ts';

/**
 * Embedding providers. Runtime-neutral (fetch only), so the search edge function can embed a
 * query under Deno with the same code the worker uses.
 */
export const EMBEDDING_DIMENSIONS = 1536;

export interface EmbeddingProvider {
  /** Model name stored with each vector (app.blocks.embedding_model). */
  readonly model: string;
  /** One unit vector of EMBEDDING_DIMENSIONS per text, in order. */
  embed(texts: string[], opts?: { signal?: AbortSignal }): Promise<number[][]>;
}

export class ProviderError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'ProviderError';
  }
}

/** The text of a block worth embedding: every string in its content, in document order. */
export function blockText(content: unknown): string {
  const parts: string[] = [];
  const walk = (v: unknown) => {
    if (typeof v === 'string') parts.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v as Record<string, unknown>).forEach(walk);
  };
  walk(content);
  return parts.join(' ').replace(/\s+/g, ' ').trim();
}

/**
 * The most UTF-8 bytes of one text an OpenAI-compatible provider is sent: OpenAI's embedding models
 * take at most 8,192 tokens per input (text-embedding-3-*, ada-002) and refuse a longer one with a
 * 400, and a token of their byte-level tokenizer is at least one byte, so 8,191 bytes is always
 * within it. A block's content may be 64 KB (max_content_bytes): its text was sent whole, refused
 * at every attempt (25, over days), and each refusal counted by the circuit breaker that guards
 * every other block's embedding and every search. A longer text is embedded by its beginning.
 */
export const MAX_INPUT_BYTES = 8191;

/**
 * At most this many UTF-8 bytes of all the inputs of one request: OpenAI refuses a request whose
 * inputs add up to more than 300,000 tokens (a batch of EMBEDDING_BATCH_SIZE long texts could).
 */
export const MAX_REQUEST_BYTES = 300_000;

const utf8 = new TextEncoder();

/** `text` cut to at most `maxBytes` UTF-8 bytes, at a code point boundary (never half a character). */
export function truncateUtf8(text: string, maxBytes: number): string {
  if (text.length * 3 <= maxBytes) return text; // a UTF-16 code unit is at most 3 UTF-8 bytes
  const bytes = utf8.encode(text);
  if (bytes.length <= maxBytes) return text;
  let end = maxBytes;
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--; // a continuation byte: back to its character's first byte
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/** FNV-1a, 32-bit. */
function fnv1a(text: string, seed = 0x811c9dc5): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * The deterministic local provider (default; no network): feature hashing of lower-cased word
 * tokens and adjacent word pairs into 1536 signed buckets, L2-normalized. Texts sharing words
 * are near by cosine distance; the same text always gives the same vector.
 */
export function localEmbedding(text: string): number[] {
  const v = new Array<number>(EMBEDDING_DIMENSIONS).fill(0);
  const folded = text.toLowerCase().normalize('NFKC');
  // a text without letters or digits ("🎉🎉", "!!!") is read by its other visible characters, one
  // token each: it used to be the zero vector, whose cosine distance to anything is NaN (a search
  // answered "NaN" for it, and a query of it found nothing in any order). Texts with words are read
  // by their words alone, as before: their vectors, stored as local-hash-v1, are unchanged
  const tokens = folded.match(/[\p{L}\p{N}]+/gu) ?? folded.match(/\S/gu) ?? [];
  const add = (feature: string, weight: number) => {
    const h = fnv1a(feature);
    v[h % EMBEDDING_DIMENSIONS]! += (h & 0x80000000 ? -1 : 1) * weight;
  };
  tokens.forEach((t, i) => {
    add(t, 1);
    if (i > 0) add(`${tokens[i - 1]} ${t}`, 0.5);
  });
  const norm = Math.hypot(...v);
  return norm === 0 ? v : v.map((x) => x / norm);
}

export class LocalProvider implements EmbeddingProvider {
  readonly model: string;
  constructor(model = 'local-hash-v1') {
    this.model = model;
  }
  async embed(texts: string[]): Promise<number[][]> {
    return texts.map(localEmbedding);
  }
}

type Pending = { text: string; resolve: (v: number[]) => void; reject: (e: unknown) => void };

/**
 * An OpenAI-compatible embeddings API (POST {baseUrl}/embeddings {model, input[], dimensions}).
 * Concurrent embed() calls within `batchWindowMs` are sent together, up to `batchSize` inputs and
 * MAX_REQUEST_BYTES per request; each input is cut to MAX_INPUT_BYTES (OpenAI's limits: a text over
 * them would be refused whatever the attempt, and take the batch it is in down with it); each request
 * has a timeout. Errors are ProviderErrors (the circuit breaker counts them).
 */
export class OpenAIProvider implements EmbeddingProvider {
  readonly model: string;
  #queue: Pending[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly opts: {
    baseUrl: string; apiKey?: string; model: string; timeoutMs: number; batchSize: number; batchWindowMs: number;
    fetch?: typeof fetch;
  }) {
    this.model = opts.model;
  }

  embed(texts: string[]): Promise<number[][]> {
    if (texts.length === 0) return Promise.resolve([]);
    const all = texts.map((text) => new Promise<number[]>((resolve, reject) =>
      this.#queue.push({ text: truncateUtf8(text, MAX_INPUT_BYTES), resolve, reject })));
    if (this.#queue.length >= this.opts.batchSize) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.opts.batchWindowMs);
    return Promise.all(all);
  }

  #flush() {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#queue.length > 0) {
      // up to batchSize inputs, and no more bytes than one request may carry (at least one input)
      let count = 0;
      let bytes = 0;
      while (count < this.#queue.length && count < this.opts.batchSize) {
        const size = utf8.encode(this.#queue[count]!.text).length;
        if (count > 0 && bytes + size > MAX_REQUEST_BYTES) break;
        bytes += size;
        count += 1;
      }
      const batch = this.#queue.splice(0, count);
      this.#request(batch.map((p) => p.text)).then(
        (vectors) => batch.forEach((p, i) => p.resolve(vectors[i]!)),
        (err) => batch.forEach((p) => p.reject(err)),
      );
    }
  }

  async #request(input: string[]): Promise<number[][]> {
    const doFetch = this.opts.fetch ?? fetch;
    let res: Response;
    try {
      res = await doFetch(`${this.opts.baseUrl}/embeddings`, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          ...(this.opts.apiKey ? { authorization: `Bearer ${this.opts.apiKey}` } : {}),
        },
        body: JSON.stringify({ model: this.model, input, dimensions: EMBEDDING_DIMENSIONS, encoding_format: 'float' }),
        signal: AbortSignal.timeout(this.opts.timeoutMs),
      });
    } catch (err) {
      throw new ProviderError(`embedding request failed: ${(err as Error).message}`);
    }
    if (!res.ok) {
      const body = await res.text().catch(() => '');
      throw new ProviderError(`embedding provider answered ${res.status}: ${body.slice(0, 200)}`, res.status);
    }
    let json: { data?: { index: number; embedding: number[] }[] };
    try {
      json = await res.json() as typeof json;
    } catch (err) {
      throw new ProviderError(`embedding provider sent invalid JSON: ${(err as Error).message}`);
    }
    const data = [...(json.data ?? [])].sort((a, b) => a.index - b.index);
    if (data.length !== input.length || data.some((d) => d.embedding?.length !== EMBEDDING_DIMENSIONS)) {
      throw new ProviderError(`embedding provider returned ${data.length} vectors (wanted ${input.length} of ${EMBEDDING_DIMENSIONS} dimensions)`);
    }
    return data.map((d) => d.embedding);
  }
}

/** The provider the configuration selects. */
export function createProvider(config: EmbeddingConfig): EmbeddingProvider {
  if (config.provider === 'openai') {
    return new OpenAIProvider({
      baseUrl: config.openai.baseUrl, apiKey: config.openai.apiKey, model: config.model,
      timeoutMs: config.timeoutMs, batchSize: config.batchSize, batchWindowMs: config.batchWindowMs,
    });
  }
  return new LocalProvider(config.model);
}

/** pgvector's text form. */
export const toVectorLiteral = (v: number[]) => `[${v.join(',')}]`;
