import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CanvasSync, type MutationOutcome } from '../../packages/client/src/canvas-sync.ts';
import { PotentiaError } from '../../packages/client/src/errors.ts';
import { until } from '../helpers/wait.ts';

// The H1 client (packages/client/src/canvas-sync.ts) against a broken or hostile server: a
// WebSocket server of the test's own that speaks H1 (hello, snapshot, resumed, acks) and then
// sends what the real one never would. The client must never throw out of its socket handlers
// (in Node an uncaught exception ends the process), must report each frame it cannot read as
// PotentiaError `invalid_message` (an `error` frame it does not act on, with the server's code),
// must keep its state as it was, and must go on: it reconnects, resumes and gets the answers it
// is owed on the next socket.

const CANVAS = '00000000-0000-4000-8000-000000000001';
const BLOCK = { block_id: '00000000-0000-4000-8000-0000000000b1', version: 1, type: 'text', content: { text: 'hi' }, parent_id: null, y_order: 'a' };
let wss: WebSocketServer;
let url: string;
/** Every socket the server accepted, in order. */
const sockets: WebSocket[] = [];
/** What the server answers a mutate with on its first sight of a client_op_id (later: a valid ack). */
let firstAnswer: ((clientOpId: string) => string) | null = null;
const answered = new Set<string>();
const faults: unknown[] = [];
const onFault = (err: unknown) => void faults.push(err);

beforeAll(async () => {
  process.on('uncaughtException', onFault);
  process.on('unhandledRejection', onFault);
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  wss.on('connection', (ws, req) => {
    sockets.push(ws);
    const since = new URL(req.url ?? '/', 'http://x').searchParams.get('since_canvas_seq');
    ws.send(JSON.stringify({ type: 'hello', v: 1, canvas_id: CANVAS, user_id: 'u1', can_write: true }));
    if (since !== null) ws.send(JSON.stringify({ type: 'resumed', watermark: Number(since), canvas_watermark: Number(since) }));
    ws.on('message', (data) => {
      const m = JSON.parse(String(data)) as { type: string; client_op_id?: string };
      if (m.type === 'ping') return ws.send('{"type":"pong"}');
      if (m.type === 'resume') {
        ws.send(JSON.stringify({ type: 'snapshot', canvas: {}, blocks: [BLOCK], watermark: 0, canvas_watermark: 0 }));
        return ws.send(JSON.stringify({ type: 'resumed', watermark: 0, canvas_watermark: 0 }));
      }
      if (m.type === 'mutate' && m.client_op_id) {
        const id = m.client_op_id;
        if (firstAnswer && !answered.has(id)) {
          answered.add(id);
          return ws.send(firstAnswer(id));
        }
        ws.send(JSON.stringify({ type: 'ack', client_op_id: id, status: 'duplicate', server_seq: 0, canvas_seq: 0, version: 2, block_id: BLOCK.block_id }));
      }
    });
  });
});
afterAll(async () => {
  process.off('uncaughtException', onFault);
  process.off('unhandledRejection', onFault);
  for (const ws of wss.clients) ws.terminate();
  await new Promise<void>((r) => wss.close(() => r()));
});
afterEach(() => {
  firstAnswer = null;
});

async function liveClient() {
  const errors: unknown[] = [];
  let live = false;
  const sync = new CanvasSync({
    url, canvasId: CANVAS, token: () => 't', WebSocket, reconnectDelayMs: () => 20, onError: (err) => void errors.push(err),
    onLive: (l) => void (live = l),
  });
  const first = sockets.length;
  await sync.join();
  return { sync, errors, socket: sockets[first]!, socketsSince: () => sockets.length - first, live: () => live };
}

const invalid = (errors: unknown[]) => errors.filter((e) => e instanceof PotentiaError && e.code === 'invalid_message');

/** Frames of a known type and the wrong shape, and frames that are no H1 message at all. */
const BROKEN: Array<[string, string | Buffer]> = [
  ['not JSON', '{"type":"delta",'],
  ['JSON that is not an object', '[1,2,3]'],
  ['a binary frame', Buffer.from('{"type":"pong"}')],
  ['a snapshot whose blocks is not an array', JSON.stringify({ type: 'snapshot', canvas: {}, blocks: null, watermark: 0, canvas_watermark: 0 })],
  ['a snapshot holding a block that is not an object', JSON.stringify({ type: 'snapshot', canvas: {}, blocks: [null], watermark: 0, canvas_watermark: 0 })],
  ['a delete whose deleted_ids is a number', JSON.stringify({ type: 'delta', server_seq: 1, canvas_seq: 1, action: 'delete', block_id: BLOCK.block_id, version: null, block: null, client_op_id: null, actor_id: null, deleted_ids: 5 })],
  ['a delta whose block is a string', JSON.stringify({ type: 'delta', server_seq: 1, canvas_seq: 1, action: 'update', block_id: BLOCK.block_id, version: 2, block: 'x', client_op_id: null, actor_id: null, deleted_ids: null })],
  ['a delta whose canvas_seq is a string', JSON.stringify({ type: 'delta', server_seq: 1, canvas_seq: '1', action: 'update', block_id: BLOCK.block_id, version: 2, block: { ...BLOCK, version: 2 }, client_op_id: null, actor_id: null, deleted_ids: null })],
  ['a delta whose canvas_seq is 1e400 (Infinity)', `{"type":"delta","server_seq":1,"canvas_seq":1e400,"action":"update","block_id":"${BLOCK.block_id}","version":2,"block":null,"client_op_id":null,"actor_id":null,"deleted_ids":null}`],
  ['a hello naming another canvas (a frame for a canvas never joined)', JSON.stringify({ type: 'hello', v: 1, canvas_id: '00000000-0000-4000-8000-000000000002', user_id: 'u1', can_write: true })],
  ['a presence whose user_id is an object', JSON.stringify({ type: 'presence', user_id: {}, cursor: null, typing: false })],
];

describe('CanvasSync against frames the server never sends', () => {
  it.each(BROKEN)('%s: reported as invalid_message, nothing thrown, the state kept; it reconnects and goes on', async (_what, frame) => {
    const { sync, errors, socket, socketsSince, live } = await liveClient();
    try {
      socket.send(frame);
      await until(() => invalid(errors).length > 0, 5000, 'an invalid_message error');
      expect(faults).toEqual([]);
      expect(sync.canvasSeq).toBe(0);
      expect([...sync.blocks.values()]).toEqual([BLOCK]);
      // still working: live on a new socket (resumed from canvas_seq 0), and a delta there is applied
      await until(() => socketsSince() === 2 && live(), 10_000, 'live again on a second socket');
      const block = { ...BLOCK, version: 2, content: { text: 'next' } };
      sockets[sockets.length - 1]!.send(JSON.stringify({ type: 'delta', server_seq: 1, canvas_seq: 1, action: 'update', block_id: BLOCK.block_id, version: 2, block, client_op_id: null, actor_id: null, deleted_ids: null }));
      await until(() => sync.canvasSeq === 1, 5000, 'the next delta applied');
      expect(sync.blocks.get(BLOCK.block_id)).toEqual(block);
      expect(faults).toEqual([]);
    } finally {
      sync.close();
    }
  });

  it.each([
    ['a rejected without its error', (id: string) => JSON.stringify({ type: 'rejected', client_op_id: id })],
    ['an ack whose canvas_seq is a string', (id: string) => JSON.stringify({ type: 'ack', client_op_id: id, status: 'success', server_seq: 1, canvas_seq: 'x', version: 2, block_id: BLOCK.block_id })],
    ['a conflict whose fields is a string', (id: string) => JSON.stringify({ type: 'conflict', client_op_id: id, code: 'conflict', message: 'm', block: null, server_seq: null, version: 2, fields: 'x' })],
  ])('%s to a pending mutation: invalid_message, and the mutation is answered on the next socket', async (_what, answer) => {
    const { sync, errors } = await liveClient();
    try {
      firstAnswer = answer;
      let outcome: MutationOutcome | null = null;
      void sync.mutate({ action: 'update', block_id: BLOCK.block_id, base_version: 1, patch: { content: { text: 'x' } } }).then((o) => (outcome = o));
      await until(() => invalid(errors).length > 0, 5000, 'an invalid_message error');
      expect(faults).toEqual([]);
      await until(() => outcome !== null, 10_000, 'the mutation answered on a later socket');
      expect(outcome).toMatchObject({ type: 'ack', status: 'duplicate' });
    } finally {
      sync.close();
    }
  });

  it('unknown frame types, an ack to a client_op_id never sent and a pong nobody asked for are ignored: same socket, no error', async () => {
    const { sync, errors, socket, socketsSince } = await liveClient();
    try {
      socket.send(JSON.stringify({ type: 'some_future_frame', x: 1 }));
      socket.send(JSON.stringify({ type: 'ack', client_op_id: 'never-sent', status: 'success', server_seq: 9, canvas_seq: 9, version: 1, block_id: null }));
      socket.send(JSON.stringify({ type: 'conflict', client_op_id: 'never-sent', code: 'conflict', message: 'm', block: null, server_seq: null, version: 1 }));
      socket.send('{"type":"pong"}');
      const block = { ...BLOCK, version: 2 };
      socket.send(JSON.stringify({ type: 'delta', server_seq: 1, canvas_seq: 1, action: 'update', block_id: BLOCK.block_id, version: 2, block, client_op_id: null, actor_id: null, deleted_ids: null }));
      await until(() => sync.canvasSeq === 1, 5000, 'the delta after them applied');
      expect(errors).toEqual([]);
      expect(socketsSince()).toBe(1);
      expect(faults).toEqual([]);
    } finally {
      sync.close();
    }
  });

  it('an error frame the client does not act on (a presence refused, an unknown code) reaches onError as a PotentiaError with its code and field', async () => {
    const { sync, errors, socket, live } = await liveClient();
    try {
      socket.send(JSON.stringify({ type: 'error', code: 'invalid_input', field: 'cursor.name', message: 'name has control characters' }));
      socket.send(JSON.stringify({ type: 'error', code: 'something_new', message: 'a newer server' }));
      await until(() => errors.length >= 2, 5000, 'both errors reported');
      expect(errors.map((e) => e instanceof PotentiaError && [e.code, e.field])).toEqual([['invalid_input', 'cursor.name'], ['something_new', undefined]]);
      expect(live()).toBe(true);
      expect(faults).toEqual([]);
    } finally {
      sync.close();
    }
  });
});
