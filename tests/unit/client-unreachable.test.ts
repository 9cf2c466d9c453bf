import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { createPotentiaClient, PotentiaError } from '../../packages/client/src/index.ts';

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
