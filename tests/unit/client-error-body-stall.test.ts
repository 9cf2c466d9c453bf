import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AbortError, createPotentiaClient, TimeoutError } from '../../packages/client/src/index.ts';

// An HTTP call answered with an error status whose body then stalls (a proxy or server that sent
// its head, a 500 or a 503, and went silent mid-body). functions.invoke answers an error status
// with the response unread, and the client read that body (the error's code and message) after
// the call's deadline and signal had been let go: the call waited for the body for good, deaf to
// its `signal` and to the client's `timeoutMs`, the two promised to end it "at any step". Real
// fetch, a real listener: nothing stands in.

let url: string;
const stalled = new Set<ServerResponse>();
const server = createServer((req, res) => {
  req.resume();
  // the head and half of the body, then nothing: the connection stays open
  res.writeHead(req.url?.includes('/workspaces') ? 503 : 500, { 'content-type': 'application/json', 'content-length': '64' });
  res.write('{"error":{"code":"internal",');
  stalled.add(res);
});
beforeAll(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  for (const res of stalled) res.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

describe('@potentia/client: an error answer whose body never ends', () => {
  it("the call's signal ends it (AbortError), while its body is awaited", async () => {
    const client = createPotentiaClient({ url, anonKey: 'anon', WebSocket, timeoutMs: 0, auth: { persistSession: false, autoRefreshToken: false } });
    const controller = new AbortController();
    const before = stalled.size;
    const call = client.canvases.list({ signal: controller.signal });
    const outcome = call.then(() => null, (e: unknown) => e);
    // the head has come (the server wrote it): abort while the client waits for the rest
    while (stalled.size === before) await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    controller.abort(new Error('page left'));
    const err = await outcome;
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).code).toBe('aborted');
  });

  it("the client's timeoutMs ends it (TimeoutError), and a create is not left hanging either", async () => {
    const client = createPotentiaClient({ url, anonKey: 'anon', WebSocket, timeoutMs: 300, auth: { persistSession: false, autoRefreshToken: false } });
    const err = await client.canvases.list().then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    const controller = new AbortController();
    const before = stalled.size;
    const create = client.workspaces.create('W', { signal: controller.signal }).then(() => null, (e: unknown) => e);
    while (stalled.size === before) await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    expect(await create).toBeInstanceOf(AbortError);
  });
});
