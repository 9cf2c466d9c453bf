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
  const tokens = text.toLowerCase().normalize('NFKC').match(/[\p{L}\p{N}]+/gu) ?? [];
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
 * Concurrent embed() calls within `batchWindowMs` are sent together, up to `batchSize` inputs per
 * request; each request has a timeout. Errors are ProviderErrors (the circuit breaker counts them).
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
    const all = texts.map((text) => new Promise<number[]>((resolve, reject) => this.#queue.push({ text, resolve, reject })));
    if (this.#queue.length >= this.opts.batchSize) this.#flush();
    else this.#timer ??= setTimeout(() => this.#flush(), this.opts.batchWindowMs);
    return Promise.all(all);
  }

  #flush() {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, this.opts.batchSize);
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
