import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { recordFetches } from '../helpers/fetch-recorder.ts';

// @potentia/client refreshes the session on its own timer (setTimeout) shortly before the access
// token expires. A server whose access tokens live 30 days (ACCESS_TOKEN_TTL_SECONDS admits it)
// put that refresh more than 2^31 - 1 ms away, which setTimeout fires after 1 ms: the client
// refreshed at once, got another 30-day token, and refreshed again, without end (every refresh
// a request and a row). Counted here: the refresh requests while the client makes plain calls.

let server: DevServer;
let anonKey: string;
let fetches: ReturnType<typeof recordFetches>;
const refreshes = () => fetches.sent.filter((r) => r.includes('grant_type=refresh_token'));

beforeAll(async () => {
  fetches = recordFetches();
  server = await startDevServer({ ACCESS_TOKEN_TTL_SECONDS: String(30 * 24 * 3600) });
  anonKey = server.anonKey;
}, 90_000);
afterAll(async () => {
  fetches?.restore();
  await server?.stop();
});

it('a 30-day access token is refreshed near its end, not at once and again and again', async () => {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  await client.auth.signUp(`long-${randomUUID()}@example.com`, 'correct horse battery');
  const token = await client.auth.accessToken();
  expect(token).toBeTruthy();
  for (let i = 0; i < 5; i++) await client.workspaces.list();
  expect(refreshes()).toEqual([]);
  expect(await client.auth.accessToken()).toBe(token);
  await client.auth.signOut();
}, 60_000);
