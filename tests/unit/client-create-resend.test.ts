import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { createPotentiaClient, PotentiaError } from '../../packages/client/src/index.ts';

// @potentia/client's canvases.create sends the same request (the same canvas_id) again while its
// outcome is unknown (503 unavailable: the server may have committed), after the server's delay,
// but never after one over 60 s (MAX_RESEND_DELAY_MS): it rejects instead of waiting unseen (a
// rate limit an operator set to a few an hour named hours). The server here is an HTTP stand-in
// answering the route's 503 as Potentia does ({error: {code, message, retry_after}} and
// Retry-After), to count what the client sends; the resend against the real server is
// tests/integration/idempotent-creates.test.ts.

let server: Server | undefined;
afterEach(async () => {
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  server = undefined;
});

/** A stand-in that answers each POST /functions/v1/canvas with the next of `answers`; the bodies it got. */
async function standIn(answers: { status: number; retryAfter?: number; body: unknown }[]) {
  const bodies: unknown[] = [];
  server = createServer((req, res) => {
    let text = '';
    req.on('data', (chunk) => (text += chunk));
    req.on('end', () => {
      if (req.method === 'OPTIONS') return void res.writeHead(204).end();
      bodies.push(JSON.parse(text));
      const answer = answers[Math.min(bodies.length - 1, answers.length - 1)]!;
      res.writeHead(answer.status, { 'content-type': 'application/json',
        ...(answer.retryAfter === undefined ? {} : { 'retry-after': String(answer.retryAfter) }) }).end(JSON.stringify(answer.body));
    });
  });
  await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server!.address() as AddressInfo).port}`, bodies };
}

const unavailable = (seconds: number) => ({ status: 503, retryAfter: seconds,
  body: { error: { code: 'unavailable', message: 'the database connection was lost', retry_after: seconds } } });
const workspaceId = '6f1c1a52-4a3e-4f43-9c5e-0d4b1f1f0001';

describe('canvases.create: the resend after an unknown outcome', () => {
  it('sends the same canvas_id again after the server\'s delay, and takes the answer', async () => {
    const canvasId = '6f1c1a52-4a3e-4f43-9c5e-0d4b1f1f0002';
    const { url, bodies } = await standIn([unavailable(0), { status: 201, body: { canvas_id: canvasId } }]);
    const client = createPotentiaClient({ url, anonKey: 'anon', auth: { persistSession: false, autoRefreshToken: false }, WebSocket: WebSocket as never });
    expect(await client.canvases.create(workspaceId, 'Mine')).toEqual({ canvas_id: canvasId });
    expect(bodies).toHaveLength(2);
    expect((bodies[0] as { canvas_id: string }).canvas_id).toBe((bodies[1] as { canvas_id: string }).canvas_id);
  });

  it('does not wait out a delay over 60 s: one request, the 503 rejects', async () => {
    const { url, bodies } = await standIn([unavailable(120)]);
    const client = createPotentiaClient({ url, anonKey: 'anon', auth: { persistSession: false, autoRefreshToken: false }, WebSocket: WebSocket as never });
    const err = await client.canvases.create(workspaceId, 'Mine').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PotentiaError);
    expect((err as PotentiaError).code).toBe('unavailable');
    expect(bodies).toHaveLength(1);
  });
});
