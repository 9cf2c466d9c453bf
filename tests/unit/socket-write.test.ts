import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import WebSocket, { WebSocketServer } from 'ws';
import { writeShared, wireFrame } from '../../src/realtime/socket-write.ts';
import type { Encoded } from '../../src/realtime/serializer.ts';

// The fan-out write: one pre-built frame written raw to each socket must read back, in order with
// ws's own frames, exactly as ws.send would have sent it; a socket that does not read is dropped
// once it holds more than the bound, instead of buffering without end.
describe('socket-write', () => {
  let wss: WebSocketServer;
  let url: string;
  const server: WebSocket[] = [];

  beforeAll(async () => {
    wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
    url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
    wss.on('connection', (ws) => server.push(ws));
  });
  afterAll(async () => {
    for (const ws of wss.clients) ws.terminate();
    await new Promise<void>((resolve) => wss.close(() => resolve()));
  });

  async function connect(): Promise<{ client: WebSocket; peer: WebSocket }> {
    const before = server.length;
    const client = new WebSocket(url);
    await new Promise<void>((resolve, reject) => { client.once('open', () => resolve()); client.once('error', reject); });
    for (let i = 0; i < 100 && server.length === before; i++) await new Promise((r) => setTimeout(r, 5));
    return { client, peer: server[server.length - 1]! };
  }

  it('frames every payload length (7-bit, 16-bit, 64-bit) and keeps order with ws.send', async () => {
    const { client, peer } = await connect();
    const got: { text: string; binary: boolean }[] = [];
    client.on('message', (data: Buffer, isBinary) => got.push({ text: isBinary ? `bin:${data.toString('hex')}` : data.toString('utf8'), binary: isBinary }));
    const texts = ['', 'x'.repeat(125), 'é'.repeat(63), 'y'.repeat(126), 'z'.repeat(65_535), 'w'.repeat(65_536), '"ü"'.repeat(40_000)];
    const expected: string[] = [];
    for (const [i, t] of texts.entries()) {
      const e: Encoded = { data: Buffer.from(t, 'utf8'), binary: false };
      expect(writeShared(peer, e)).toBe(true);
      expect(wireFrame(e)).toBe(e.frame); // built once, reused
      expected.push(t);
      peer.send(`between ${i}`); // ws's own frames interleave in call order
      expected.push(`between ${i}`);
    }
    const bin: Encoded = { data: Buffer.from([4, 1, 2, 3]), binary: true };
    writeShared(peer, bin);
    expected.push('bin:04010203');
    for (let i = 0; i < 200 && got.length < expected.length; i++) await new Promise((r) => setTimeout(r, 10));
    expect(got.map((g) => g.text)).toEqual(expected);
    expect(got.at(-1)!.binary).toBe(true);
    client.close();
  });

  it('drops a socket holding more than the bound unsent', async () => {
    const { client, peer } = await connect();
    (client as any)._socket.pause(); // a client that stops reading
    const e: Encoded = { data: Buffer.alloc(256 * 1024, 0x61), binary: false };
    const closed = new Promise<void>((resolve) => peer.once('close', () => resolve()));
    let writes = 0;
    while (writeShared(peer, e, 1024 * 1024) && writes < 10_000) writes++;
    expect(writes).toBeLessThan(10_000);
    expect(peer.readyState === WebSocket.CLOSED || peer.readyState === WebSocket.CLOSING).toBe(true);
    await closed;
    client.terminate();
  });
});
