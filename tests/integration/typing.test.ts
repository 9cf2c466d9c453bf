import { randomUUID } from 'node:crypto';
import { type } from 'ot-text-unicode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { DeltaMessage, ServerMessage, TextOp } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { prng } from '../../src/prng.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { sleep, until } from '../helpers/wait.ts';

// The acceptance test of concurrent typing: 100 clients each type 20 characters into one block
// at the same time, through HTTP and through H1. Each client types like a person: it starts at a
// random position of the initial text and inserts one character after another at its own cursor,
// sending each op against the last version it knew; the server transforms it against everything
// committed since (sql/rpc/mutate.sql, merge rule) and answers with the op as applied, whose
// leading skip is where the character landed — the client's next cursor is just after it.
// Expected: the final text holds the initial text and all 2,000 characters, each client's in the
// order it typed them, and every subscriber (an H1 socket, a realtime-js channel) that applies
// the broadcast text ops in canvas_seq order ends with exactly the server's text.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(4);
const CLIENTS = 100;
const CHARS = 20;
const INITIAL = 'The quick brown fox jumps over a lazy dog'.slice(0, 40); // 40 ASCII code points
// A failing run is replayed with TYPING_SEED=<the seed printed>; the interleaving of the clients
// is the server's, so a replay repeats the positions and characters, not necessarily the order.
const SEED = Number(process.env.TYPING_SEED ?? Math.floor(Math.random() * 2 ** 32));
// Each op is transformed against the ~99 committed while it was in flight, under the canvas lock:
// ~12 ops/s on 2 cores, so one case takes ~2.5-3 minutes (more on a loaded machine).
const CASE_TIMEOUT = 600_000;

const realtime = realtimeClients({ timeoutMs: 10_000 });
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub });
const cps = (s: string) => Array.from(s); // code points, the unit of text-unicode positions

let server: Server;
beforeAll(async () => {
  console.log(`typing.test.ts seed: ${SEED} (replay with TYPING_SEED=${SEED})`);
  server = await startServer(config);
  await server.gateway!.bus.ready();
}, 90_000);
const sockets: H1Conn[] = []; // every H1 socket a case opened, closed in afterAll whatever happened
afterAll(async () => {
  for (const c of sockets.splice(0)) c.ws.terminate();
  await realtime.disconnectAll();
  await server?.stop();
  await db.close();
});

/**
 * Client i's 20 characters, unique across all clients: CJK ideographs from its own slice of
 * U+4E00.., and every fourth one an astral emoji (a surrogate pair in JS, one code point on the
 * server) from its own slice of U+1F300..
 */
function charsOf(i: number): string[] {
  return Array.from({ length: CHARS }, (_, j) =>
    String.fromCodePoint(j % 4 === 3 ? 0x1f300 + i * 5 + (j >> 2) : 0x4e00 + i * CHARS + j));
}

/** What a writer needs back from one mutation: the new version, canvas_seq and the op as applied. */
type Answer = { version: number; canvas_seq: number; op: TextOp };
type Send = (op: TextOp, baseVersion: number, clientOpId: string) => Promise<Answer>;
let retries = 0; // answers that said "resend later" (429/503, H1 rate_limited/unavailable/timeout)

/** A replica of the block's text fed by broadcasts, applied strictly in canvas_seq order. */
class Replica {
  text: string | null = null;
  applied = 0; // the last canvas_seq applied
  readonly pending = new Map<number, { content: string | undefined; op: TextOp | undefined }>();
  readonly problems: string[] = [];
  outOfOrder = 0;
  readonly opsById = new Map<string, TextOp>();
  block: string | null = null; // the block of the first op (the create); every later op must be on it
  private lastArrived = 0;

  constructor(readonly name: string) {}

  /** One broadcast operation; buffered until every lower canvas_seq has been applied. */
  receive(seq: number, blockId: string, content: string | undefined, op: TextOp | undefined, clientOpId: string | null) {
    if (seq !== this.lastArrived + 1) this.outOfOrder++;
    this.lastArrived = Math.max(this.lastArrived, seq);
    this.block ??= blockId;
    if (blockId !== this.block) return this.problems.push(`${this.name}: op ${seq} on another block ${blockId}`);
    if (seq <= this.applied || this.pending.has(seq)) return this.problems.push(`${this.name}: canvas_seq ${seq} twice`);
    if (clientOpId && op) this.opsById.set(clientOpId, op);
    this.pending.set(seq, { content, op });
    for (let next = this.pending.get(this.applied + 1); next; next = this.pending.get(this.applied + 1)) {
      this.pending.delete(this.applied + 1);
      this.applied++;
      if (this.text === null) this.text = next.content ?? null; // the create
      else if (next.op) this.text = type.apply(this.text, next.op);
      else this.problems.push(`${this.name}: canvas_seq ${this.applied} without a text op`);
      // the broadcast block carries the content as applied: the replica must already agree
      if (next.content !== undefined && next.content !== this.text) {
        this.problems.push(`${this.name}: after canvas_seq ${this.applied} replica differs from the broadcast block`);
      }
    }
  }
}

/** Starts the subscribers (before anything is written), runs the 100 writers, checks everything. */
async function typingCase(name: string, connectWriter: (canvasId: string, blockId: string, userId: string) => Promise<Send>) {
  const { canvasId, workspaceId, users } = await createCanvas(db.sql);
  const owner = users.owner!;
  // one user per writer: the limit is 100 mutations a minute per user
  const writers: string[] = [];
  for (let i = 0; i < CLIENTS; i++) writers.push(await addMember(db.sql, owner, workspaceId, 'editor', `typist-${i}`));
  const listener = await addMember(db.sql, owner, workspaceId, 'viewer', 'typing-listener');

  const h1Replica = new Replica(`${name}/H1 subscriber`);
  const rtReplica = new Replica(`${name}/realtime-js subscriber`);

  // H1 subscriber: resumes from the canvas's beginning, so it also gets the create
  const h1 = await openH1(server.url, canvasId, await token(listener), '&since_canvas_seq=0');
  sockets.push(h1);
  await h1.next((m) => m.type === 'resumed');
  h1.ws.on('message', (d) => {
    const m = JSON.parse(String(d)) as ServerMessage;
    if (m.type !== 'delta') return;
    const delta = m as DeltaMessage;
    h1Replica.receive(delta.canvas_seq, delta.block_id, (delta.block?.content as any)?.t, delta.text?.t, delta.client_op_id);
  });

  // realtime-js subscriber on the private canvas channel, as a member
  const channel = realtime.connect(server.url, await token(listener), '2.0.0')
    .channel(`canvas:${canvasId}`, { config: { private: true } })
    .on('broadcast', { event: 'block_op' }, ({ payload }) =>
      rtReplica.receive(Number(payload.canvas_seq), payload.block_id, payload.block?.content?.t, payload.text?.t, payload.client_op_id));
  expect((await subscribed(channel)).status).toBe('SUBSCRIBED');

  const created = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text', content: { t: INITIAL } } });
  expect(created.status).toBe('success');
  const blockId = created.block_id ?? (created.block!.block_id as string);
  const firstVersion = created.version!;

  const random = prng(SEED);
  const plans = writers.map((userId, i) => ({ userId, chars: charsOf(i), start: Math.floor(random() * (cps(INITIAL).length + 1)) }));
  const sends = await Promise.all(plans.map((p) => connectWriter(canvasId, blockId, p.userId)));
  const acks = new Map<string, TextOp>(); // client_op_id → the op as the writer was told it applied

  const latencies: number[] = [];
  retries = 0;
  const started = performance.now();
  await Promise.all(plans.map(async (plan, i) => {
    let cursor = plan.start;
    let base = firstVersion;
    for (const [j, ch] of plan.chars.entries()) {
      const op: TextOp = cursor === 0 ? [ch] : [cursor, ch];
      const clientOpId = randomUUID();
      const sent = performance.now();
      const answer = await sends[i]!(op, base, clientOpId);
      latencies.push(performance.now() - sent);
      const where = `seed ${SEED}, client ${i} char ${j} (${ch}) sent ${JSON.stringify(op)} at base_version ${base}`;
      // a single insert stays a single insert when transformed: [skip?, ch]
      const skip = typeof answer.op[0] === 'number' ? answer.op[0] : 0;
      expect(answer.op, where).toEqual(skip === 0 ? [ch] : [skip, ch]);
      acks.set(clientOpId, answer.op);
      cursor = skip + 1;
      base = answer.version;
    }
  }));
  const seconds = (performance.now() - started) / 1000;
  const ops = CLIENTS * CHARS;
  latencies.sort((a, b) => a - b);
  const ms = (q: number) => Math.round(latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]!);
  console.log(`${name}: ${ops} typed characters by ${CLIENTS} concurrent clients in ${seconds.toFixed(1)} s = ${(ops / seconds).toFixed(1)} ops/s; `
    + `per op p50 ${ms(0.5)} ms, p95 ${ms(0.95)} ms, max ${ms(1)} ms; ${retries} resends`);

  const [row] = await db.sql<{ t: string; version: number }[]>`
    select content ->> 't' as t, version from app.blocks where block_id = ${blockId}`;
  const [canvas] = await db.sql<{ last: number }[]>`select last_canvas_seq::int as last from app.canvases where canvas_id = ${canvasId}`;
  const serverText = row!.t;
  expect(canvas!.last).toBe(1 + ops); // the create, then one applied op per character
  expect(row!.version).toBe(firstVersion + ops);

  // every character once, each client's in typing order, the initial text intact and in order
  const text = cps(serverText);
  expect(text.length, `seed ${SEED}`).toBe(cps(INITIAL).length + ops);
  const owners = new Map<string, number>();
  plans.forEach((p, i) => p.chars.forEach((c) => owners.set(c, i)));
  const byClient: string[][] = plans.map(() => []);
  const rest: string[] = [];
  for (const c of text) {
    const i = owners.get(c);
    if (i === undefined) rest.push(c);
    else byClient[i]!.push(c);
  }
  expect(rest.join(''), `seed ${SEED}: the text without the typed characters`).toBe(INITIAL);
  byClient.forEach((got, i) => expect(got.join(''), `seed ${SEED}: client ${i}'s characters in order`).toBe(plans[i]!.chars.join('')));

  // the subscribers reach the last canvas_seq and hold exactly the server's text
  for (const r of [h1Replica, rtReplica]) {
    await until(() => r.applied >= 1 + ops, 60_000, `${r.name} at canvas_seq ${1 + ops} (at ${r.applied}, ${r.pending.size} buffered)`);
    expect(r.problems, r.name).toEqual([]);
    expect(r.block, r.name).toBe(blockId);
    expect(r.pending.size, r.name).toBe(0);
    expect(r.text === serverText, `${r.name}: replica equals the server text (seed ${SEED})`).toBe(true);
    // what each writer was told it applied is what was broadcast for its op
    const differing = [...acks].filter(([id, op]) => JSON.stringify(r.opsById.get(id)) !== JSON.stringify(op));
    expect(differing.slice(0, 5), `${r.name}: acked ops equal broadcast ops`).toEqual([]);
    console.log(`${r.name}: ${r.applied} ops applied, ${r.outOfOrder} arrived out of canvas_seq order`);
  }
  for (const c of sockets.splice(0)) c.ws.terminate();
  await channel.unsubscribe();
}

/** HTTP: POST /api/v1/canvas/{id}/mutate; 429/503 are retried with the same client_op_id after Retry-After. */
async function httpWriter(canvasId: string, blockId: string, userId: string): Promise<Send> {
  const auth = `Bearer ${await token(userId)}`;
  return async (op, baseVersion, clientOpId) => {
    const body = JSON.stringify({ action: 'update', block_id: blockId, client_op_id: clientOpId, base_version: baseVersion, patch: { text: { t: op } } });
    for (let attempt = 0; ; attempt++) {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', headers: { authorization: auth, 'content-type': 'application/json' }, body,
      });
      const answer = await res.json() as any;
      if ((res.status === 429 || res.status === 503) && attempt < 20) {
        retries++;
        await sleep(Number(res.headers.get('retry-after') ?? 1) * 1000);
        continue;
      }
      if (res.status !== 200 || answer.status !== 'success' || !answer.text?.t) {
        throw new Error(`seed ${SEED}: HTTP ${res.status} for ${body}: ${JSON.stringify(answer)}`);
      }
      return { version: answer.version, canvas_seq: answer.canvas_seq, op: answer.text.t };
    }
  };
}

/**
 * H1: one socket per client sending `mutate` frames and reading its `ack` (one op in flight);
 * `error` frames that say "resend" (rate_limited, unavailable, timeout) are resent with the same
 * client_op_id after retry_after_ms. The socket never resumes, so it gets no deltas.
 */
async function h1Writer(canvasId: string, blockId: string, userId: string): Promise<Send> {
  const conn: H1Conn = await openH1(server.url, canvasId, await token(userId));
  sockets.push(conn);
  await conn.next((m) => m.type === 'hello');
  return async (op, baseVersion, clientOpId) => {
    const frame = { type: 'mutate', client_op_id: clientOpId, action: 'update', block_id: blockId, base_version: baseVersion, patch: { text: { t: op } } };
    for (let attempt = 0; ; attempt++) {
      conn.send(frame);
      const m: any = await conn.next((x: any) => x.client_op_id === clientOpId, 60_000);
      if (m.type === 'error' && ['rate_limited', 'unavailable', 'timeout'].includes(m.code) && attempt < 20) {
        retries++;
        await sleep(m.retry_after_ms ?? 1000);
        continue;
      }
      if (m.type !== 'ack' || !m.text?.t) throw new Error(`seed ${SEED}: H1 answered ${JSON.stringify(m)} to ${JSON.stringify(frame)}`);
      return { version: m.version, canvas_seq: m.canvas_seq, op: m.text.t };
    }
  };
}

describe('concurrent typing into one block: 100 clients x 20 characters', () => {
  it('over HTTP (POST /api/v1/canvas/{id}/mutate)', () => typingCase('HTTP', httpWriter), CASE_TIMEOUT);
  it('over H1 (mutate frames on /ws/canvas/{id})', () => typingCase('H1', h1Writer), CASE_TIMEOUT);
});
