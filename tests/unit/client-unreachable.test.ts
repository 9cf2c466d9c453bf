import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { CanvasSync, createPotentiaClient, PotentiaError } from '../../packages/client/src/index.ts';

// A newcomer's first stumble with the quick start of packages/client/README.md: the server is not
// running yet, or POTENTIA_URL names another port (a second `npm start` on its own PORT, a
// process of another role). The quick start's first call, signUp, then failed with supabase-js's
// bare "fetch failed", which names neither the URL it tried nor why. Real fetch, a real closed
// port: nothing stands in.

/** A loopback port nothing listens on (one just closed). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

describe('@potentia/client against a URL where no server answers', () => {
  it('signUp and signIn reject with code network, naming the auth URL tried and the cause', async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    const client = createPotentiaClient({ url, anonKey: 'anon', WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
    for (const call of [() => client.auth.signUp('ada@example.com', 'correct horse battery'), () => client.auth.signIn('ada@example.com', 'correct horse battery')]) {
      const err = await call().then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(PotentiaError);
      expect((err as PotentiaError).code).toBe('network');
      expect((err as PotentiaError).message).toContain(`${url}/auth/v1`);
      expect((err as PotentiaError).message).toContain('ECONNREFUSED');
      expect((err as PotentiaError).message).toMatch(/is the server running/);
    }
  });
});

describe('CanvasSync against a URL whose server answers the socket upgrade with HTTP, not a WebSocket', () => {
  // A process of role api (docs/self-hosting.md: "A WebSocket upgrade gets 404"), or a proxy that
  // does not route /ws/ to the gateways: sign-in and the HTTP API work, and connect() then retried
  // for ever without a word, the quick start hanging after its first lines. The refusal is
  // reported (once per streak: the retries go on, as for any loss), the token left out.
  it('reports socket_refused with the status and the socket URL, once while it retries', async () => {
    let upgrades = 0;
    let threeUpgrades!: () => void;
    const third = new Promise<void>((resolve) => (threeUpgrades = resolve));
    const server = createServer((_req, res) => void res.writeHead(404).end());
    server.on('upgrade', (_req, socket) => {
      // the client drops a refused upgrade at once, which this end may read as ECONNRESET; an
      // upgrade's socket has no error listener of http's, so unheard it ends the test process
      socket.on('error', () => {});
      if (++upgrades === 3) threeUpgrades();
      socket.end('HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const errors: unknown[] = [];
    const sync = new CanvasSync({
      url, canvasId: '00000000-0000-4000-8000-00000000d003', token: () => 'secret-token', WebSocket: WebSocket as never,
      reconnectDelayMs: () => 10, onError: (err) => errors.push(err),
    });
    const joined = sync.join().then(() => 'live', () => 'ended');
    try {
      await third;
      expect(errors).toHaveLength(1);
      const err = errors[0] as PotentiaError;
      expect(err).toBeInstanceOf(PotentiaError);
      expect(err.code).toBe('socket_refused');
      expect(err.status).toBe(404);
      expect(err.message).toContain(`ws://127.0.0.1:${(server.address() as AddressInfo).port}/ws/canvas/00000000-0000-4000-8000-00000000d003`);
      expect(err.message).toContain('HTTP 404');
      expect(err.message).toContain('docs/self-hosting.md');
      expect(err.message).not.toContain('secret-token');
    } finally {
      sync.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(await joined).toBe('ended');
  });
});

describe('CanvasSync against a gateway that answers the upgrade 503 (starting, or its start being retried)', () => {
  it('reports socket_refused 503 saying the gateway is not serving yet and where to look', async () => {
    const server = createServer((_req, res) => void res.writeHead(503).end());
    let refused!: () => void;
    const once = new Promise<void>((resolve) => (refused = resolve));
    server.on('upgrade', (_req, socket) => {
      socket.on('error', () => {});
      socket.end('HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n');
      refused();
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const errors: PotentiaError[] = [];
    const sync = new CanvasSync({
      url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, canvasId: '00000000-0000-4000-8000-00000000d004',
      token: () => 'secret-token', WebSocket: WebSocket as never, reconnectDelayMs: () => 10_000, onError: (err) => errors.push(err as PotentiaError),
    });
    const joined = sync.join().then(() => 'live', () => 'ended');
    try {
      await once;
      for (let i = 0; i < 100 && errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(errors.map((e) => [e.code, e.status])).toEqual([['socket_refused', 503]]);
      expect(errors[0]!.message).toContain('realtime gateway is starting or not serving yet');
      expect(errors[0]!.message).toContain('GET /ready');
    } finally {
      sync.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(await joined).toBe('ended');
  });
});
