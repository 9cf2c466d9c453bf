import WebSocket from 'ws';
import { afterEach, describe, expect, it } from 'vitest';
import { createPotentiaClient } from '../../packages/client/src/index.ts';

// Node 20 has no global WebSocket. createPotentiaClient({ url, anonKey }) there threw supabase-js's
// "Node.js 20 detected without native WebSocket support … new RealtimeClient(url, { transport: ws })",
// an option of another API: the client's is `WebSocket`. Now it names its own option, before
// anything is made. (The global is taken away here, so the test says the same on Node 22+.)

const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
afterEach(() => { if (saved) Object.defineProperty(globalThis, 'WebSocket', saved); else delete (globalThis as { WebSocket?: unknown }).WebSocket; });
const options = { url: 'http://127.0.0.1:9', anonKey: 'anon', auth: { persistSession: false, autoRefreshToken: false } };

describe('@potentia/client without a WebSocket', () => {
  it('in a runtime without one, createPotentiaClient names its WebSocket option and the ws package', () => {
    delete (globalThis as { WebSocket?: unknown }).WebSocket;
    expect(() => createPotentiaClient(options)).toThrow(
      "createPotentiaClient: this runtime has no WebSocket (Node 20): pass one as the WebSocket option: import WebSocket from 'ws'; createPotentiaClient({ url, anonKey, WebSocket })");
  });

  it('given one, or where the runtime has one, it is made', () => {
    delete (globalThis as { WebSocket?: unknown }).WebSocket;
    expect(createPotentiaClient({ ...options, WebSocket }).supabase).toBeDefined();
    (globalThis as { WebSocket?: unknown }).WebSocket = WebSocket;
    expect(createPotentiaClient(options).supabase).toBeDefined();
  });
});
