// A server configured with asymmetric signing keys (SUPABASE_JWKS_URL) while the JWKS endpoint
// fails: an HTTP server standing in for Supabase's /auth/v1/.well-known/jwks.json answers 500,
// an HTML error page, or resets the connection. A user's token signed by the project's key cannot
// be checked then; it was answered 401 unauthorized "token is not a valid signed JWT" (and /auth/v1
// 403 bad_jwt), which tells the client its session is over. Now 503 unavailable with a retry hint
// (retry_after, Retry-After; GoTrue's 503 under /auth/v1, which auth-js reads as retryable), and
// once the endpoint answers the same token is accepted. A token the keys do refuse is still 401.
import { createClient, isAuthRetryableFetchError } from '@supabase/supabase-js';
import { SignJWT, type CryptoKey } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createUser } from '../helpers/fixtures.ts';
import { startJwksStandIn, type JwksStandIn } from '../helpers/jwks.ts';
import { startTestServer } from '../helpers/http.ts';

const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
let jwks: JwksStandIn;
let server: Server;
let database: Database;
let project: { publicKey: CryptoKey; privateKey: CryptoKey };
let stranger: { publicKey: CryptoKey; privateKey: CryptoKey };
let userId: string;

beforeAll(async () => {
  jwks = await startJwksStandIn('status 500');
  ({ project, stranger } = jwks);
  server = await startTestServer({ auth: { ...base.auth, jwksUrl: jwks.url } });
  database = testDatabase(2);
  userId = await createUser(database.sql, 'jwks');
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await database?.close();
  await jwks?.close();
});

const sign = (key: CryptoKey, kid: string) => {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ sub: userId, role: 'authenticated', aud: 'authenticated', iat: now, exp: now + 600 })
    .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid }).sign(key);
};
const workspaces = async (token: string) => {
  const res = await fetch(`${server.url}/api/v1/workspaces`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() as Record<string, any> };
};

describe('the JWKS endpoint fails', () => {
  it('a token of the project\'s key is 503 unavailable (retry), not 401, until the keys can be fetched; then accepted', async () => {
    const token = await sign(project.privateKey, 'project-1');
    const anonKey = (await apiKeys(server.deps.config)).anon;
    const auth = createClient(server.url, anonKey, { auth: { persistSession: false, autoRefreshToken: false },
      realtime: { transport: WebSocket as never } }).auth;
    for (const failing of ['status 500', 'html page', 'connection reset'] as const) {
      jwks.mode = failing;
      expect({ failing, ...(await workspaces(token)) }).toEqual({ failing, status: 503, retryAfter: '1',
        body: { error: { code: 'unavailable', retry_after: 1, message: expect.stringContaining('SUPABASE_JWKS_URL') } } });
      // supabase-js: retryable (AuthRetryableFetchError, 503), not an API error about the token
      const { data, error } = await auth.getUser(token);
      expect({ failing, user: data.user, retryable: isAuthRetryableFetchError(error), status: error?.status })
        .toEqual({ failing, user: null, retryable: true, status: 503 });
    }
    jwks.mode = 'ok';
    expect((await workspaces(token)).status).toBe(200);
    const { data, error } = await auth.getUser(token);
    expect({ error, id: data.user?.id }).toEqual({ error: null, id: userId });
  });

  it('a token the keys refuse is still 401 (another key under the project\'s kid, an unknown kid)', async () => {
    jwks.mode = 'ok';
    for (const token of [await sign(stranger.privateKey, 'project-1'), await sign(stranger.privateKey, 'unknown-kid')]) {
      expect(await workspaces(token)).toMatchObject({ status: 401, body: { error: { code: 'unauthorized' } } });
    }
  });
});
