import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type as textType } from 'ot-text-unicode';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { ConflictMessage, ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';

// The merge rule (docs/merge.md) as clients meet it: over HTTP (status codes and the error body a
// conflict UI reads) and over H1 (the conflict frame, text ops in acks and deltas).

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(2);
let server: Server;
let canvasId: string;
let owner: string;
let editor: string;

beforeAll(async () => {
  server = await startServer(config);
  ({ canvasId, users: { owner: owner!, editor: editor! } } = await createCanvas(db.sql, ['editor']) as any);
});
afterAll(async () => {
  await server?.stop();
  await db.close();
});

const token = (userId: string) => signAccessToken(config.auth.jwtSecret, { sub: userId });
async function post(userId: string, body: unknown) {
  const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
    method: 'POST', headers: { authorization: `Bearer ${await token(userId)}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() as any };
}
async function newBlock(content: Record<string, unknown>) {
  const r = await mutate(db.sql, owner, canvasId, { action: 'create', patch: { type: 'text', content } });
  return { id: r.block_id!, version: r.version! };
}

describe('merge over HTTP', () => {
  it('different content keys from one base both succeed (200); the same key gives 409 with base/theirs/mine', async () => {
    const b = await newBlock({ t: 'x' });
    const a = await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { content: { a: 'from a' } } });
    const c = await post(editor, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { content: { b: 'from b' } } });
    expect([a.status, c.status]).toEqual([200, 200]);
    expect(c.body.block.content).toEqual({ t: 'x', a: 'from a', b: 'from b' });

    const clash = await post(editor, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { content: { a: 'mine' } } });
    expect(clash.status).toBe(409);
    expect(clash.body.error).toMatchObject({
      code: 'conflict', version: 3, changed: ['content.a', 'content.b'],
      fields: { 'content.a': { base: null, theirs: 'from a', mine: 'mine' } },
    });
    expect(clash.body.error.block.content).toEqual({ t: 'x', a: 'from a', b: 'from b' });
  });

  it('a text operation from a stale version is transformed and answered as applied', async () => {
    const b = await newBlock({ t: 'hello' });
    const first = await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { text: { t: [5, ' world'] } } });
    const second = await post(editor, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { text: { t: [5, '!'] } } });
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(second.body.text).toEqual({ t: [5, '!'] }); // at one position the later committed insert goes first
    expect(second.body.block.content.t).toBe('hello! world');
    // a replica that applies what it receives, in order, has the server's text
    expect(textType.apply(textType.apply('hello', first.body.text.t), second.body.text.t)).toBe('hello! world');
  });

  it('bad text operations are 400 naming the field, and write nothing', async () => {
    const b = await newBlock({ t: 'abc', n: 1 });
    const cases: Array<[unknown, string]> = [
      [{ text: { t: [0, 'x'] } }, 'patch.text.t'],                 // a skip must be positive (zod)
      [{ text: { t: [10, 'x'] } }, 'patch.text.t'],                // past the end of the text
      [{ text: { n: ['x'] } }, 'patch.text.n'],                    // not a text
      [{ text: { t: ['x'] }, content: { t: 'y' } }, 'patch.text.t'], // set and edited at once
      [{ text: { t: [{ d: 0 }] } }, 'patch.text.t'],
    ];
    for (const [patch, field] of cases) {
      const r = await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch });
      expect({ patch, status: r.status, code: r.body.error?.code }).toEqual({ patch, status: 400, code: 'invalid_input' });
      expect(r.body.error.field, JSON.stringify(patch)).toMatch(new RegExp(`^(body\\.)?${field.replace(/\./g, '\\.')}`));
    }
    const [row] = await db.sql`select version, content from app.blocks where block_id = ${b.id}`;
    expect(row).toEqual({ version: 1, content: { t: 'abc', n: 1 } });
  });

  it('a content key that is not plain (a dot, a bracket, a quote, only digits, empty) is named in brackets: one reading of every field path', async () => {
    // `patch.text.a.b` named both the text key "a.b" and the key b of a; `patch.text.0` both the
    // key "0" and an element of an array
    // a canvas and owner of its own: the mutations per minute of the file's owner are spent
    const own = await createCanvas(db.sql);
    const writer = own.users.owner!;
    const post = async (_who: string, body: unknown) => {
      const res = await fetch(`${server.url}/api/v1/canvas/${own.canvasId}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${await token(writer)}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() as any };
    };
    const created = await mutate(db.sql, writer, own.canvasId, { action: 'create', patch: { type: 'text',
      content: { 'a.b': 'abc', a: { b: 'abc' }, '0': 'abc', 'x"]': 'abc', '': 'abc', 'é': 'abc', 'plain-key_1$': 'abc', n: 1 } } });
    const b = { id: created.block_id!, version: created.version! };
    const cases: Array<[unknown, string]> = [
      [{ text: { 'a.b': [10, 'x'] } }, 'patch.text["a.b"]'],          // past the end (SQL)
      [{ text: { a: ['x'] } }, 'patch.text.a'],                       // not a text (SQL)
      [{ text: { '0': [10, 'x'] } }, 'patch.text["0"]'],
      [{ text: { 'x"]': [10, 'x'] } }, 'patch.text["x\\"]"]'],
      [{ text: { '': [10, 'x'] } }, 'patch.text[""]'],
      [{ text: { 'é': [10, 'x'] } }, 'patch.text["é"]'],
      [{ text: { 'plain-key_1$': [10, 'x'] } }, 'patch.text.plain-key_1$'],
      [{ text: { 'a.b': ['x'] }, content: { 'a.b': 'y' } }, 'patch.text["a.b"]'], // set and edited at once (SQL)
      [{ text: { 'a.b': [0, 'x'] } }, 'patch.text["a.b"].0'],         // a skip must be positive (zod): the array element
      [{ content: { 'a.b': 'x\u0000' } }, 'patch.content["a.b"]'],   // NUL (the input policy)
      [{ content: { a: { b: 'x\u0000' } } }, 'patch.content.a.b'],
      [{ content: { list: ['x\u0000'] } }, 'patch.content.list.0'],
      [{ content: { list: { '0': 'x\u0000' } } }, 'patch.content.list["0"]'],
      [{ 'no.such': 1 }, 'patch["no.such"]'],                          // an unknown patch field (zod)
    ];
    for (const [patch, field] of cases) {
      const r = await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch });
      expect({ patch, status: r.status, code: r.body.error?.code, field: r.body.error?.field }).toEqual({ patch, status: 400, code: 'invalid_input', field });
      expect(r.body.error.message.startsWith(`${field}:`) || !r.body.error.message.includes('patch.text.a.b'), r.body.error.message).toBe(true);
    }
    // in a batch, and over SQL directly (api.mutate_blocks: what PostgREST's /rpc would call)
    const batch = await post(owner, { ops: [
      { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: b.version, patch: { text: { 'a.b': [99, 'x'] } } },
    ] });
    expect(batch.body.error).toMatchObject({ code: 'invalid_input', field: 'patch.text["a.b"]', failed_index: 0 });
    const [row] = await db.sql`select version from app.blocks where block_id = ${b.id}`;
    expect(row!.version).toBe(1);
  });

  it('a failed batch names the op at fault (failed_index) and applies none of it', async () => {
    const b = await newBlock({ t: 'batch' });
    const r = await post(owner, { ops: [
      { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 1, patch: { content: { a: 1 } } },
      { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 2, patch: { text: { t: [99, 'x'] } } },
    ] });
    expect(r.status).toBe(400);
    expect(r.body.error).toMatchObject({ code: 'invalid_input', field: 'patch.text.t', failed_index: 1 });
    const [row] = await db.sql`select version, content from app.blocks where block_id = ${b.id}`;
    expect(row).toEqual({ version: 1, content: { t: 'batch' } });
  });

  it("a batch refused for an op's shape names that op (failed_index) as the database's refusal does, and applies none of it", async () => {
    const b = await newBlock({ t: 'shape' });
    const ok = { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 1, patch: { content: { a: 1 } } };
    const cases: Array<[unknown[], string, number]> = [
      [[ok, { action: 'update', block_id: b.id, client_op_id: randomUUID(), patch: { content: { a: 2 } } }], 'ops.1.base_version', 1], // zod
      [[ok, ok, { action: 'rename', client_op_id: randomUUID() }], 'ops.2.action', 2],                                                // zod, no such action
      [[{ ...ok, block_id: 'not-a-uuid' }], 'ops.0.block_id', 0],
      [[ok, { ...ok, client_op_id: randomUUID(), patch: { content: { t: 'x\u0000' } } }], 'ops.1.patch.content.t', 1],             // NUL: the input policy
      [[ok, 7], 'ops.1', 1],
    ];
    for (const [ops, field, failedIndex] of cases) {
      const r = await post(owner, { ops });
      expect({ field, status: r.status, error: r.body.error }).toMatchObject({ field, status: 400,
        error: { code: 'invalid_input', field, failed_index: failedIndex } });
    }
    // about the batch, not one op: no failed_index
    for (const ops of [[], Array.from({ length: 101 }, () => ok)]) {
      const r = await post(owner, { ops });
      expect(r.body.error).toMatchObject({ code: 'invalid_input', field: 'ops' });
      expect(r.body.error).not.toHaveProperty('failed_index');
    }
    const [row] = await db.sql`select version, content from app.blocks where block_id = ${b.id}`;
    expect(row).toEqual({ version: 1, content: { t: 'shape' } });
  });

  it('an operation older than the log holds is 409 rebase_required with the current block', async () => {
    const b = await newBlock({ t: 'old' });
    const v2 = await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 1, patch: { content: { a: 1 } } });
    await post(owner, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 2, patch: { content: { b: 1 } } });
    await db.sql`delete from app.block_operations where server_seq = ${v2.body.server_seq}`; // as retention would
    const r = await post(editor, { action: 'update', block_id: b.id, client_op_id: randomUUID(), base_version: 1, patch: { text: { t: [3, '!'] } } });
    expect(r.status).toBe(409);
    expect(r.body.error).toMatchObject({ code: 'rebase_required', version: 3, block: { content: { t: 'old', a: 1, b: 1 } } });
  });
});

describe('merge over H1', () => {
  it('acks and deltas carry the text operation as applied; a clash is a conflict frame with base/theirs/mine', async () => {
    const b = await newBlock({ t: 'abc', k: 'v' });
    const writer = await openH1(server.url, canvasId, await token(editor));
    const reader = await openH1(server.url, canvasId, await token(owner), '&since_canvas_seq=0');
    await reader.next((m) => m.type === 'resumed');
    await mutate(db.sql, owner, canvasId, { blockId: b.id, action: 'update', baseVersion: 1, patch: { text: { t: ['>'] } } });

    const op = randomUUID();
    writer.send({ type: 'mutate', client_op_id: op, action: 'update', block_id: b.id, base_version: 1, patch: { text: { t: [3, '!'] } } });
    expect(await writer.next((m) => m.type === 'ack' && m.client_op_id === op)).toMatchObject({ status: 'success', version: 3, text: { t: [4, '!'] } });
    const delta: any = await reader.next((m) => m.type === 'delta' && m.client_op_id === op);
    expect(delta).toMatchObject({ version: 3, text: { t: [4, '!'] }, block: { content: { t: '>abc!', k: 'v' } } });

    await mutate(db.sql, owner, canvasId, { blockId: b.id, action: 'update', baseVersion: 3, patch: { content: { k: 'theirs' } } });
    const clash = randomUUID();
    writer.send({ type: 'mutate', client_op_id: clash, action: 'update', block_id: b.id, base_version: 3, patch: { content: { k: 'mine' } } });
    const conflict = await writer.next((m: ServerMessage) => m.type === 'conflict' && m.client_op_id === clash) as ConflictMessage;
    expect(conflict).toMatchObject({ code: 'conflict', version: 4, changed: ['content.k'], fields: { 'content.k': { base: 'v', theirs: 'theirs', mine: 'mine' } } });
    expect(conflict.block?.version).toBe(4);

    // a replayed delta carries the text op too (from the log)
    const late = await openH1(server.url, canvasId, await token(owner), '&since_canvas_seq=0');
    const replayed: any = await late.next((m) => m.type === 'delta' && m.client_op_id === op);
    expect(replayed).toMatchObject({ replaying: true, text: { t: [4, '!'] } });
    for (const c of [writer, reader, late]) c.ws.close();
  });
});
