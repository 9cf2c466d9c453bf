import { afterAll, beforeAll } from 'vitest';
import WebSocket from 'ws';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import type { Server } from '../../src/server.ts';
import { startTestServer } from './http.ts';

/** A raw H1 socket for tests: every frame received, in order, and a cursor to wait on them. */
export type H1Conn = {
  ws: WebSocket;
  inbox: ServerMessage[];
  /** Resolves when the socket closes, with its close code, reason and the time (performance.now()). */
  closed: Promise<{ code: number; reason: string; at: number }>;
  /** The next frame (after the last one returned) matching `pred`; throws after `ms`. */
  next(pred: (m: ServerMessage) => boolean, ms?: number): Promise<ServerMessage>;
  send(m: object): void;
};

/**
 * For a test file of H1 sockets: a server with the realtime gateway on the test database
 * (startTestServer), started before the file's tests and stopped after them, then `close` (the
 * file's own pools, say). `server` is read inside a test: it is there once beforeAll ran.
 */
export function h1TestServer(close?: () => Promise<unknown>): { readonly server: Server } {
  let server: Server | undefined;
  beforeAll(async () => {
    server = await startTestServer({}, {});
  }, 90_000);
  afterAll(async () => {
    await server?.stop();
    await close?.();
  });
  return {
    get server(): Server {
      if (!server) throw new Error('h1TestServer: the server is started in beforeAll');
      return server;
    },
  };
}

/** Opens `/ws/canvas/{canvasId}` on `baseUrl` (http://…) with `token`; `query` is appended as is. */
export async function openH1(baseUrl: string, canvasId: string, token: string, query = ''): Promise<H1Conn> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${token}${query}`);
  const inbox: ServerMessage[] = [];
  const waiters: Array<() => void> = [];
  ws.on('message', (d) => {
    inbox.push(JSON.parse(String(d)));
    waiters.splice(0).forEach((w) => w());
  });
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason), at: performance.now() })));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${res.statusCode}`)));
    ws.once('error', reject);
  });
  let cursor = 0;
  return {
    ws,
    inbox,
    closed,
    send: (m) => ws.send(JSON.stringify(m)),
    async next(pred, ms = 10_000) {
      const end = Date.now() + ms;
      for (;;) {
        while (cursor < inbox.length) {
          const m = inbox[cursor++]!;
          if (pred(m)) return m;
        }
        if (Date.now() > end) throw new Error(`no matching message; got ${JSON.stringify(inbox.slice(-5))}`);
        await new Promise<void>((r) => { waiters.push(r); setTimeout(r, 50); });
      }
    },
  };
}

/** The server_seq of every delta `conn` has received so far, in arrival order. */
export function deltaSeqs(conn: H1Conn): number[] {
  return conn.inbox.flatMap((m) => (m.type === 'delta' ? [Number(m.server_seq)] : []));
}
