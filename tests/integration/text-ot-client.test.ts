import WebSocket from 'ws';
import type { TextOp } from 'ot-text-unicode';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { CanvasSync, type TextChange } from '../../packages/client/src/canvas-sync.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas, mutate } from '../helpers/fixtures.ts';
import { prng } from '../../src/prng.ts';
import { sleep, until } from '../helpers/wait.ts';

// CanvasSync's collaborative text (editText / textOf, packages/client/src/text-ot.ts) against the real
// server's text OT (api.upsert_block_atomic): concurrent typists converge on the server's text
// with every typed character in it (a dropped socket included), and a key set as a whole under
// an op in flight is reported as a loss, after which the client holds the server's text again.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(4);
let server: Server;
const KEY = 'body';
// Recorded seed of the typists' choices (what and where they type, and when).
const SEED = 20261202;
const TYPISTS = 5;
const EDITS = 40;

beforeAll(async () => {
  server = await startServer(config);
});
afterAll(async () => {
  await server?.stop();
  await db.close();
});

/** A canvas with one text block and `n` editors (each its own user: the limit is 100 mutations a minute per user). */
async function textBlock(n: number, body: string) {
  const { canvasId, workspaceId, users } = await createCanvas(db.sql);
  const editors: string[] = [];
  for (let i = 0; i < n; i++) editors.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', `typist-${i}`));
  const created = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { [KEY]: body } } });
  expect(created.status).toBe('success');
  return { canvasId, editors, blockId: created.block_id! };
}

async function serverBlock(blockId: string): Promise<{ text: string; version: number }> {
  const [row] = await db.sql<{ text: string; version: number }[]>`
    select content ->> ${KEY} as text, version from app.blocks where block_id = ${blockId}`;
  return row!;
}

/**
 * A client whose sockets can be reached (to terminate one) and whose mutate frames can be held
 * back (to keep an op in flight while something else commits).
 */
function client(canvasId: string, userId: string) {
  const sockets: WebSocket[] = [];
  const held: string[] = [];
  const sent: Array<{ client_op_id: string; base_version: number }> = [];
  const changes: TextChange[] = [];
  const errors: unknown[] = [];
  let hold = false;
  let cutNext = false;
  let cutOp: string | null = null;
  class TestSocket extends WebSocket {
    constructor(url: string) {
      super(url);
      sockets.push(this);
    }
    override send(data: any, ...rest: any[]): void {
      const frame = JSON.parse(String(data));
      if (frame.type === 'mutate') sent.push(frame);
      if (hold && frame.type === 'mutate') return void held.push(String(data));
      (super.send as any)(data, ...rest);
      if (cutNext && frame.type === 'mutate') {
        cutNext = false;
        cutOp = frame.client_op_id;
        this.terminate();
      }
    }
  }
  const tokenP = signAccessToken(config.auth.jwtSecret, { sub: userId });
  const sync = new CanvasSync({
    url: server.url, canvasId, token: () => tokenP, WebSocket: TestSocket as any,
    reconnectDelayMs: () => 50,
    onText: (c) => void changes.push(c),
    onError: (err) => void errors.push(err),
  });
  return {
    sync, sockets, changes, errors, sent,
    hold() { hold = true; },
    release() {
      hold = false;
      const socket = sockets[sockets.length - 1]!;
      for (const frame of held.splice(0)) socket.send(frame);
    },
    held,
    /** Terminates the socket right after the next mutate frame goes out. */
    cutAfterNextMutate() { cutNext = true; },
    /** The client_op_id of the frame after which the socket was cut, if it was. */
    cut: () => cutOp,
  };
}

/** Every text op acknowledged and the client at the server's version of the block. */
const settled = (sync: CanvasSync, blockId: string, version: number) => {
  const t = sync.textClient(blockId, KEY);
  return (!t || (t.state === 'synchronized' && t.version === version)) && sync.blocks.get(blockId)?.version === version;
};

describe('CanvasSync text OT against the server', () => {
  it(`${TYPISTS} typists on one text, one of them cut off mid-way: all end on the server's text, with every character typed in it`, async () => {
    const initial = 'ABCDE';
    const { canvasId, editors, blockId } = await textBlock(TYPISTS, initial);
    const typists = editors.map((e) => client(canvasId, e));
    try {
      await Promise.all(typists.map((t) => t.sync.join()));
      const inserted: string[] = [];
      const deleted = new Set<string>();

      await Promise.all(typists.map(async (t, c) => {
        const random = prng(SEED + c);
        for (let i = 0; i < EDITS; i++) {
          await sleep(10 + Math.floor(random() * 80));
          const chars = [...t.sync.textOf(blockId, KEY)!];
          let op: TextOp;
          if (chars.length > 0 && random() < 0.3) {
            const at = Math.floor(random() * chars.length);
            const n = Math.min(1 + Math.floor(random() * 2), chars.length - at);
            for (const ch of chars.slice(at, at + n)) deleted.add(ch);
            op = at > 0 ? [at, { d: n }] : [{ d: n }];
          } else {
            // characters only this typist types, each once: BMP CJK, and every third from plane 2 (a surrogate pair)
            const ch = String.fromCodePoint((i % 3 === 2 ? 0x20000 : 0x4e00) + c * 1000 + i);
            inserted.push(ch);
            const at = Math.floor(random() * (chars.length + 1));
            op = at > 0 ? [at, ch] : [ch];
          }
          // half-way, typist 0's socket is cut right after its next op is sent, before any answer:
          // the client finds out by itself (as from a network loss), resumes, and resends the op
          if (c === 0 && i === EDITS / 2) t.cutAfterNextMutate();
          t.sync.editText(blockId, KEY, op);
        }
      }));
      const dropped = typists[0]!.cut();
      expect(dropped).not.toBeNull();

      let final = await serverBlock(blockId);
      await until(async () => {
        final = await serverBlock(blockId);
        return typists.every((t) => settled(t.sync, blockId, final.version));
      }, 20_000, 'every typist acknowledged and at the server version');

      for (const t of typists) expect(t.sync.textOf(blockId, KEY)).toBe(final.text);
      expect(typists[0]!.sockets.length).toBeGreaterThan(1); // it did reconnect ...
      expect(typists[0]!.sent.filter((f) => f.client_op_id === dropped).length).toBe(2); // ... and resend the op in flight
      expect(typists.flatMap((t) => t.changes.filter((ch) => ch.source === 'reset'))).toEqual([]); // nothing lost, nothing repaired
      expect(typists.flatMap((t) => t.errors)).toEqual([]);
      // every character typed is there once, but those someone deleted
      const chars = [...final.text];
      expect(chars.length).toBe(new Set(chars).size);
      const expected = [...initial, ...inserted].filter((ch) => !deleted.has(ch));
      expect([...chars].sort()).toEqual(expected.sort());
      expect(inserted.length).toBeGreaterThan(TYPISTS * EDITS * 0.5);
      // the edits went through the OT path: text ops from every typist (edits made while one was in
      // flight composed into the next), some of them on a stale base, transformed by the server
      const ops = await db.sql<{ actor_id: string; client_op_id: string; new_version: number }[]>`
        select actor_id, client_op_id, new_version from app.block_operations
        where block_id = ${blockId} and status = 'success' and patch ? 'text'`;
      expect(new Set(ops.map((o) => o.actor_id)).size).toBe(TYPISTS);
      const bases = new Map(typists.flatMap((t) => t.sent).map((f) => [f.client_op_id, f.base_version]));
      expect(ops.filter((o) => bases.get(o.client_op_id)! < o.new_version - 1).length).toBeGreaterThan(0);
    } finally {
      for (const t of typists) t.sync.close();
    }
  });

  it('a key set as a whole while an op is in flight: the client reports its edit lost and holds the server text (the delta shows it, or the conflict answer does)', async () => {
    const { canvasId, editors, blockId } = await textBlock(2, 'hello');
    const a = client(canvasId, editors[0]!);
    const b = client(canvasId, editors[1]!);
    try {
      await Promise.all([a.sync.join(), b.sync.join()]);

      // 1. a types while its frame is held; b replaces the text; a sees b's delta, then its frame goes
      a.hold();
      expect(a.sync.editText(blockId, KEY, [5, ' world'])).toBe('hello world');
      await until(() => a.held.length === 1, 5000, 'the op held');
      const set = await b.sync.mutate({ action: 'update', block_id: blockId, base_version: b.sync.blocks.get(blockId)!.version, patch: { content: { [KEY]: 'replaced' } } });
      expect(set.type).toBe('ack');
      await until(() => a.changes.some((c) => c.lost), 5000, 'a reports the loss');
      const lost = a.changes.find((c) => c.lost)!;
      expect(lost).toMatchObject({ source: 'reset', text: 'replaced', op: null, lost: { reason: 'overwritten', localText: 'hello world', op: [5, ' world'] } });
      expect(a.sync.textOf(blockId, KEY)).toBe('replaced');
      a.release(); // the server answers the stale op with a conflict: nothing more is lost, nothing changes
      await until(() => a.sync.textClient(blockId, KEY)?.state === 'synchronized', 5000, 'a synchronized');
      await sleep(200);
      expect(a.changes.filter((c) => c.lost)).toHaveLength(1);
      const [answer] = await db.sql<{ status: string; error_code: string }[]>`
        select status, error_code from app.block_operations where client_op_id = ${lost.lost!.clientOpId!}`;
      expect(answer).toEqual({ status: 'conflict', error_code: 'conflict' });

      // 2. the same, but b sets the key to the text it already has: the delta changes nothing
      // visible, so only the server's conflict answer tells a that its op cannot be merged
      a.hold();
      expect(a.sync.editText(blockId, KEY, ['>'])).toBe('>replaced');
      await until(() => a.held.length === 1, 5000, 'the op held');
      const same = await b.sync.mutate({ action: 'update', block_id: blockId, base_version: b.sync.blocks.get(blockId)!.version, patch: { content: { [KEY]: 'replaced' } } });
      expect(same.type).toBe('ack');
      await until(() => a.sync.blocks.get(blockId)?.version === (same as { version: number }).version, 5000, 'a saw the set');
      expect(a.changes.filter((c) => c.lost)).toHaveLength(1); // not yet
      a.release();
      await until(() => a.changes.filter((c) => c.lost).length === 2, 5000, 'a reports the conflict');
      expect(a.changes.filter((c) => c.lost)[1]).toMatchObject({ source: 'reset', text: 'replaced', lost: { reason: 'conflict', op: ['>'], localText: '>replaced' } });

      // 3. and goes on: its next edit, and b's concurrent one, both land
      a.sync.editText(blockId, KEY, [8, '!']);
      b.sync.editText(blockId, KEY, [0, '<']);
      let final = await serverBlock(blockId);
      await until(async () => {
        final = await serverBlock(blockId);
        return settled(a.sync, blockId, final.version) && settled(b.sync, blockId, final.version);
      }, 10_000, 'both acknowledged');
      expect(final.text).toBe('<replaced!');
      expect(a.sync.textOf(blockId, KEY)).toBe(final.text);
      expect(b.sync.textOf(blockId, KEY)).toBe(final.text);
      expect([...a.errors, ...b.errors]).toEqual([]);
    } finally {
      a.sync.close();
      b.sync.close();
    }
  });
});
