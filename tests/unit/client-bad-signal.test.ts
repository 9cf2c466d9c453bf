import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { createPotentiaClient, PotentiaError } from '../../packages/client/src/index.ts';

// A `signal` that is not an AbortSignal (an object of the app's own, a controller passed for its
// signal, a string): a canvas change threw a bare TypeError synchronously ("signal?.addEventListener
// is not a function") from a method that returns a promise, and an HTTP call rejected with that
// TypeError, where every other bad option (timeoutMs, clientOpId) is refused as invalid_input
// naming it. Nothing is sent: no server is needed (the URL is never reached).

const client = createPotentiaClient({ url: 'http://127.0.0.1:9', anonKey: 'anon', WebSocket, auth: { persistSession: false, autoRefreshToken: false } });
const bad: unknown[] = [{}, new AbortController(), 'abort', { aborted: false }];

describe('@potentia/client: a signal that is not an AbortSignal', () => {
  it('a canvas change rejects invalid_input on signal (no throw), nothing changed', async () => {
    const canvas = client.canvas('00000000-0000-4000-8000-0000000000b1');
    for (const signal of bad) {
      let change: Promise<unknown> | undefined;
      expect(() => { change = canvas.create({ type: 'text' }, { signal: signal as AbortSignal }); }).not.toThrow();
      const err = await change!.then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(PotentiaError);
      expect(err).toMatchObject({ code: 'invalid_input', field: 'signal' });
    }
    expect(canvas.pending).toBe(0);
    expect(canvas.blocks().size).toBe(0);
    canvas.close();
  });

  it('an HTTP call rejects invalid_input on signal, nothing sent', async () => {
    for (const signal of bad) {
      for (const call of [() => client.canvases.list({ signal: signal as AbortSignal }), () => client.workspaces.create('W', { signal: signal as AbortSignal }),
        () => client.auth.signIn('ada@example.com', 'correct horse battery', { signal: signal as AbortSignal }),
        () => client.auth.signOut({ signal: signal as AbortSignal }), () => client.auth.accessToken({ signal: signal as AbortSignal })]) {
        const err = await call().then(() => null, (e: unknown) => e);
        expect(err).toBeInstanceOf(PotentiaError);
        expect(err).toMatchObject({ code: 'invalid_input', field: 'signal' });
      }
    }
  });
});
