import { once } from 'node:events';
import { afterEach, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { InboundQueue } from '../../src/realtime/inbound-queue.ts';
import { until } from '../helpers/wait.ts';

// A socket's inbound frames through InboundQueue over a real ws connection: while the handler is
// stuck (a database that does not answer), the queue stops growing at its bound instead of holding
// every frame the client sends; once it answers, every frame is handled, in the order sent.

let wss: WebSocketServer | undefined;
let client: WebSocket | undefined;
afterEach(async () => {
  client?.terminate();
  await new Promise<void>((resolve) => (wss ? wss.close(() => resolve()) : resolve()));
});

it('past maxPending the socket stops reading; released, every frame is handled in order', async () => {
  wss = new WebSocketServer({ port: 0, host: '127.0.0.1', maxPayload: 1024 * 1024 });
  let release!: () => void;
  const stuck = new Promise<void>((resolve) => (release = resolve));
  const handled: number[] = [];
  let queue!: InboundQueue;
  let maxSize = 0;
  wss.on('connection', (ws) => {
    queue = new InboundQueue(ws, 8);
    ws.on('message', (data) => {
      queue.push(async () => {
        await stuck;
        handled.push(Number(String(data).slice(0, 8)));
      }, (err) => { throw err; });
      maxSize = Math.max(maxSize, queue.size);
    });
  });
  await once(wss, 'listening');
  client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  await once(client, 'open');
  const pad = 'x'.repeat(100_000);
  for (let i = 0; i < 400; i++) client.send(`${String(i).padStart(8, '0')}${pad}`); // 40 MB
  await until(() => queue?.size >= 8, 5000, 'the queue to fill');
  await new Promise((r) => setTimeout(r, 500)); // time for the rest to arrive, were the socket still read
  expect(maxSize).toBeLessThanOrEqual(8 + 2); // the bound, plus what ws had already read when paused
  expect(client.bufferedAmount).toBeGreaterThan(0); // the rest waits on the client's side
  release();
  await until(() => handled.length === 400, 20_000, 'every frame handled');
  expect(handled).toEqual(Array.from({ length: 400 }, (_, i) => i));
});

it('a failing item and a failing error handler do not stop the queue', async () => {
  wss = new WebSocketServer({ port: 0, host: '127.0.0.1' });
  await once(wss, 'listening');
  const got: string[] = [];
  const done = new Promise<void>((resolve) => wss!.on('connection', (ws) => {
    const queue = new InboundQueue(ws, 4);
    queue.push(async () => { throw new Error('one'); }, (err) => got.push(`handled ${(err as Error).message}`));
    queue.push(async () => { throw new Error('two'); }, () => { throw new Error('handler failed'); });
    queue.push(async () => { got.push('three'); resolve(); }, () => {});
  }));
  client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  await Promise.all([done, once(client, 'open')]);
  expect(got).toEqual(['handled one', 'three']);
});
