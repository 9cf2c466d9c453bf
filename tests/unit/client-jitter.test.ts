import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { backoffStepMs } from '../../packages/client/src/backoff.ts';
import { CanvasSync, type WebSocketLike } from '../../packages/client/src/canvas-sync.ts';

// A resume the server refuses `rate_limited` (the user's snapshot limit, a gateway's limits after
// a restart) is sent again by @potentia/client on the same socket after retry_after_ms. Every tab
// refused in the same millisecond asked again in the same millisecond, and was refused together
// again: now each adds a random point of the backoff's step (full jitter: up to 250 ms, then
// 500 ms, 1 s for refusals in a row). On a clock of the test's (vitest's fake timers) each delay,
// from the refusal to the resume sent again, is recorded exactly; no time is measured.
// The same holds for a mutation refused "not now" where the refusal reached others too (the
// user's mutation limit, over all their tabs; a fault of the server, for every client).

const RETRY_AFTER_MS = 1000;

/** A socket the test plays the server of: what the client sent, and when (the fake clock). */
class ScriptedSocket implements WebSocketLike {
  static made: ScriptedSocket[] = [];
  readyState = 0;
  readonly sent: { at: number; m: { type: string } }[] = [];
  onopen: WebSocketLike['onopen'] = null;
  onclose: WebSocketLike['onclose'] = null;
  onmessage: WebSocketLike['onmessage'] = null;
  onerror: WebSocketLike['onerror'] = null;

  constructor(readonly url: string) {
    ScriptedSocket.made.push(this);
  }

  send(data: string): void {
    this.sent.push({ at: Date.now(), m: JSON.parse(data) });
  }

  close(): void {
    this.readyState = 3;
    this.onclose?.({ code: 1000 });
  }

  open(): void {
    this.readyState = 1;
    this.onopen?.({});
    this.receive({ type: 'hello', v: 1, canvas_id: 'c', user_id: 'u', can_write: true });
  }

  receive(m: object): void {
    this.onmessage?.({ data: JSON.stringify(m) });
  }

  resumes(): number[] {
    return this.sent.filter((s) => s.m.type === 'resume').map((s) => s.at);
  }
}

/** `n` clients joining, each on its open socket with its first resume sent. */
async function joining(n: number, random?: (i: number) => () => number) {
  const syncs = Array.from({ length: n }, (_, i) => new CanvasSync({
    url: 'http://gateway.test', canvasId: 'c', token: () => 't', WebSocket: ScriptedSocket, heartbeatMs: 0, onError: () => {},
    ...(random ? { random: random(i) } : {}),
  }));
  for (const s of syncs) s.join().catch(() => {}); // rejects at close(): never live here
  await vi.advanceTimersByTimeAsync(0); // token() answered: the sockets are made
  const sockets = ScriptedSocket.made.slice(-n);
  for (const ws of sockets) ws.open();
  for (const ws of sockets) expect(ws.resumes()).toHaveLength(1);
  return { syncs, sockets };
}

/**
 * Refuses every socket's last resume at the same moment, `times` times in a row; returns each
 * socket's delays, refusal to resume sent again, in order.
 */
async function refuseTogether(sockets: ScriptedSocket[], times: number): Promise<number[][]> {
  const delays = sockets.map(() => [] as number[]);
  for (let k = 0; k < times; k++) {
    const refusedAt = Date.now();
    for (const ws of sockets) ws.receive({ type: 'error', code: 'rate_limited', retry_after_ms: RETRY_AFTER_MS, message: 'snapshots per user (H4)' });
    // the longest a retry can wait: the server's delay and the whole step
    await vi.advanceTimersByTimeAsync(RETRY_AFTER_MS + backoffStepMs(k) + 1);
    for (const [i, ws] of sockets.entries()) {
      const resumes = ws.resumes();
      expect(resumes, `socket ${i}: one resume sent again per refusal`).toHaveLength(k + 2);
      delays[i]!.push(resumes[k + 1]! - refusedAt);
    }
  }
  return delays;
}

beforeEach(() => {
  vi.useFakeTimers();
  ScriptedSocket.made = [];
});
afterEach(() => {
  vi.useRealTimers();
});

describe('@potentia/client: a refused resume is sent again after retry_after_ms plus full jitter', () => {
  it('the delay is the server\'s plus random() of the backoff\'s step, the step doubling with each refusal in a row', async () => {
    const draws = [0, 0.25, 0.5, 0.999];
    const { syncs, sockets } = await joining(draws.length, (i) => () => draws[i]!);
    try {
      const delays = await refuseTogether(sockets, 3);
      // before: 1000 ms for each, every time
      for (const [i, u] of draws.entries()) {
        expect(delays[i]).toEqual([0, 1, 2].map((k) => RETRY_AFTER_MS + Math.floor(u * backoffStepMs(k))));
      }
      expect([0, 1, 2].map(backoffStepMs)).toEqual([250, 500, 1000]);
    } finally {
      for (const s of syncs) s.close();
    }
  });

  it('the step stops growing at the server\'s delay (the limit\'s window): no window left unused by every tab', async () => {
    const { syncs, sockets } = await joining(1, () => () => 0.999);
    try {
      const [delays] = await refuseTogether(sockets, 6);
      // before: 250, 500, 1000, 2000, 4000, 5000 ms of jitter
      expect(delays!.map((d) => d - RETRY_AFTER_MS)).toEqual([249, 499, 999, 999, 999, 999]);
    } finally {
      for (const s of syncs) s.close();
    }
  });

  it('200 tabs refused in the same millisecond (Math.random): none before retry_after_ms, spread over the whole step', async () => {
    const { syncs, sockets } = await joining(200);
    try {
      const delays = await refuseTogether(sockets, 2);
      for (const k of [0, 1]) {
        const step = backoffStepMs(k);
        const ks = delays.map((d) => d[k]! - RETRY_AFTER_MS);
        expect(Math.min(...ks)).toBeGreaterThanOrEqual(0);
        expect(Math.max(...ks)).toBeLessThanOrEqual(step);
        // before: all 200 in one millisecond. Now each tenth of the step holds some of them
        // (uniform: 20 expected in each; none in one of ten has a chance of about 1e-8)
        const tenths = new Set(ks.map((d) => Math.min(9, Math.floor((d / step) * 10))));
        expect(tenths.size, `refusal ${k + 1}: tenths of the step used`).toBe(10);
        expect(new Set(ks).size).toBeGreaterThan(100);
      }
    } finally {
      for (const s of syncs) s.close();
    }
  });

  it('the count restarts once resumed: a refusal later in the socket\'s life waits the first step again', async () => {
    const { syncs, sockets } = await joining(1, () => () => 0.999);
    const ws = sockets[0]!;
    try {
      expect(await refuseTogether(sockets, 2)).toEqual([[RETRY_AFTER_MS + 249, RETRY_AFTER_MS + 499]]);
      ws.receive({ type: 'snapshot', canvas: {}, blocks: [], watermark: 0, canvas_watermark: 0 });
      ws.receive({ type: 'resumed', watermark: 0, canvas_watermark: 0 });
      await syncs[0]!.ready();
      // a gap: the client asks from its last canvas_seq, and that resume is refused
      ws.receive({ type: 'delta', server_seq: 2, canvas_seq: 2, action: 'create', block_id: 'b', version: 1, block: null, client_op_id: null, actor_id: null, deleted_ids: null });
      expect(ws.sent.at(-1)?.m).toEqual({ type: 'resume', since_canvas_seq: 0 });
      const refusedAt = Date.now();
      ws.receive({ type: 'error', code: 'rate_limited', retry_after_ms: RETRY_AFTER_MS, message: 'snapshots per user (H4)' });
      await vi.advanceTimersByTimeAsync(RETRY_AFTER_MS + 250);
      expect(ws.resumes().at(-1)! - refusedAt).toBe(RETRY_AFTER_MS + 249);
    } finally {
      for (const s of syncs) s.close();
    }
  });
});

/** `n` clients live (snapshot, resumed), each with one mutation sent; returns the op ids too. */
async function liveWithOneMutation(n: number, random: (i: number) => () => number) {
  const { syncs, sockets } = await joining(n, random);
  for (const ws of sockets) {
    ws.receive({ type: 'snapshot', canvas: {}, blocks: [], watermark: 0, canvas_watermark: 0 });
    ws.receive({ type: 'resumed', watermark: 0, canvas_watermark: 0 });
  }
  await Promise.all(syncs.map((s) => s.ready()));
  const ids = syncs.map((s, i) => {
    const id = `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;
    s.mutate({ action: 'create', patch: { type: 'text' } }, id).catch(() => {});
    return id;
  });
  for (const [i, ws] of sockets.entries()) expect(mutates(ws, ids[i]!)).toHaveLength(1);
  return { syncs, sockets, ids };
}

const mutates = (ws: ScriptedSocket, id: string) =>
  ws.sent.filter((s) => s.m.type === 'mutate' && (s.m as { client_op_id?: string }).client_op_id === id).map((s) => s.at);

/** Refuses each socket's op with `refusal(id)` at once; returns each one's delay to its resend. */
async function refuseOps(sockets: ScriptedSocket[], ids: string[], refusal: (id: string) => object, waitMs: number): Promise<number[]> {
  const refusedAt = Date.now();
  const before = sockets.map((ws, i) => mutates(ws, ids[i]!).length);
  for (const [i, ws] of sockets.entries()) ws.receive(refusal(ids[i]!));
  await vi.advanceTimersByTimeAsync(waitMs);
  return sockets.map((ws, i) => {
    const sends = mutates(ws, ids[i]!);
    expect(sends, `socket ${i}: the op sent again once`).toHaveLength(before[i]! + 1);
    return sends.at(-1)! - refusedAt;
  });
}

const userLimit = (id: string) => ({ type: 'rejected', client_op_id: id, error: { code: 'rate_limited', message: 'mutations per user', retry_after: 1 } });
const fault = (id: string) => ({ type: 'error', code: 'unavailable', client_op_id: id, retry_after_ms: RETRY_AFTER_MS, message: 'the database is unavailable' });
const socketLimit = (id: string) => ({ type: 'error', code: 'rate_limited', client_op_id: id, retry_after_ms: RETRY_AFTER_MS, message: 'messages per socket' });

describe('@potentia/client: a mutation refused "not now" for many clients at once is sent again with full jitter', () => {
  it('the user\'s mutation limit and a fault: the server\'s delay plus random() of the step, doubling in a row, back to the first step once an op is answered', async () => {
    const draws = [0, 0.5, 0.999];
    const { syncs, sockets, ids } = await liveWithOneMutation(draws.length, (i) => () => draws[i]!);
    try {
      // the hold ends at a fraction of a millisecond: the resend comes at most 1 ms either side of it
      const expected = (k: number) => draws.map((u) => RETRY_AFTER_MS + Math.round(u * backoffStepMs(k)));
      const near = (delays: number[], k: number) => delays.map((d, i) => (Math.abs(d - expected(k)[i]!) <= 1 ? expected(k)[i] : d));
      // before: 1000 ms for each, every time
      expect(near(await refuseOps(sockets, ids, userLimit, RETRY_AFTER_MS + backoffStepMs(0) + 2), 0)).toEqual(expected(0));
      expect(near(await refuseOps(sockets, ids, fault, RETRY_AFTER_MS + backoffStepMs(1) + 2), 1)).toEqual(expected(1));
      for (const [i, ws] of sockets.entries()) ws.receive({ type: 'ack', client_op_id: ids[i], status: 'success', server_seq: 1, canvas_seq: 1, version: 1, block_id: 'b' });
      const next = await liveOps(syncs, sockets, 'second');
      expect(near(await refuseOps(sockets, next, userLimit, RETRY_AFTER_MS + backoffStepMs(0) + 2), 0)).toEqual(expected(0));
    } finally {
      for (const s of syncs) s.close();
    }
  });

  it('the socket\'s own message limit (its bucket is the pacer\'s mirror): the server\'s delay alone', async () => {
    const { syncs, sockets, ids } = await liveWithOneMutation(2, () => () => 0.999);
    try {
      expect(await refuseOps(sockets, ids, socketLimit, RETRY_AFTER_MS + 1)).toEqual([RETRY_AFTER_MS, RETRY_AFTER_MS]);
    } finally {
      for (const s of syncs) s.close();
    }
  });
});

/** One more mutation on each live client; returns their ids. */
async function liveOps(syncs: CanvasSync[], sockets: ScriptedSocket[], tag: string): Promise<string[]> {
  const ids = syncs.map((s, i) => {
    const id = `00000000-0000-4000-9000-${String(i).padStart(12, '0')}`;
    s.mutate({ action: 'create', patch: { type: 'text' } }, id).catch(() => {});
    return id;
  });
  await vi.advanceTimersByTimeAsync(0);
  for (const [i, ws] of sockets.entries()) expect(mutates(ws, ids[i]!), `${tag} op sent`).toHaveLength(1);
  return ids;
}
