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
