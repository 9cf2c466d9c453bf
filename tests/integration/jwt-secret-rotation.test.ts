import { randomBytes } from 'node:crypto';
import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { apiKey, signClaims, userClaims } from '../helpers/tokens.ts';

// Rotating the HS256 JWT secret without refusing anyone (docs/self-hosting.md, "Rotating the JWT
// secret"): JWT_SECONDARY_SECRET is accepted beside JWT_SECRET, first holding the new secret while
// every process still signs with the old one, then the old one once they sign with the new; unset,
// the old secret's tokens are refused. Each phase is a real server started from its environment,
// and each is asked over HTTP and by the real realtime-js joining a member's private canvas channel.

const OLD = randomBytes(36).toString('base64');
const NEW = randomBytes(36).toString('base64');
const OTHER = randomBytes(36).toString('base64');
const db = testDatabase(2);

let canvasId: string;
let owner: string;
beforeAll(async () => {
  const canvas = await createCanvas(db.sql);
  canvasId = canvas.canvasId;
  owner = canvas.users.owner!;
}, 60_000);
afterAll(async () => { await db.close(); });

async function withServer(env: Record<string, string>, run: (server: Server) => Promise<void>): Promise<void> {
  const config = { ...loadConfig({ ...env, NODE_ENV: 'test' }), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
  const server = await startServer(config);
  try {
    await run(server);
  } finally {
    await server.stop();
  }
}

async function httpStatus(server: Server, secret: string): Promise<number> {
  const token = await signClaims(secret, userClaims(owner));
  const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  return res.status;
}

/** realtime-js as supabase-js drives it: the anon key as apikey, the user's token for the join. */
async function joinStatus(server: Server, apikeySecret: string, tokenSecret: string): Promise<string> {
  const client = new RealtimeClient(`${server.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: await apiKey(apikeySecret, 'anon') }, transport: WebSocket as any, timeout: 10_000,
  });
  try {
    await client.setAuth(await signClaims(tokenSecret, userClaims(owner)));
    return await new Promise<string>((resolve) => {
      client.channel(`canvas:${canvasId}`, { config: { private: true } }).subscribe((status) => {
        if (status !== 'CLOSED') resolve(status);
      });
    });
  } finally {
    await client.disconnect();
  }
}

/** The realtime connect upgrade's status for an anon key signed with `secret`. */
async function connectStatus(server: Server, secret: string): Promise<number> {
  const url = `${server.url.replace(/^http/, 'ws')}/realtime/v1/websocket?vsn=1.0.0&apikey=${await apiKey(secret, 'anon')}`;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.once('open', () => { ws.close(); resolve(101); });
    ws.once('unexpected-response', (_req, res) => { res.resume(); resolve(res.statusCode ?? 0); });
    ws.once('error', reject);
  });
}

/** What every surface answers to tokens signed with `accepted` (each admitted) and `refused` (each refused). */
async function expectSecrets(server: Server, accepted: string[], refused: string[]): Promise<void> {
  for (const secret of accepted) {
    expect(await httpStatus(server, secret)).toBe(200);
    expect(await connectStatus(server, secret)).toBe(101);
    expect(await joinStatus(server, secret, secret)).toBe('SUBSCRIBED');
  }
  for (const secret of refused) {
    expect(await httpStatus(server, secret)).toBe(401);
    expect(await connectStatus(server, secret)).toBe(401);
    // connected with an accepted anon key, the user's token is refused at phx_join
    expect(await joinStatus(server, accepted[0]!, secret)).toBe('CHANNEL_ERROR');
  }
}

describe('rotating JWT_SECRET with JWT_SECONDARY_SECRET', () => {
  it('before: only the current secret', async () => {
    await withServer({ JWT_SECRET: OLD }, (server) => expectSecrets(server, [OLD], [NEW, OTHER]));
  }, 60_000);

  it('1. the new secret standing by (JWT_SECRET=old, JWT_SECONDARY_SECRET=new): both accepted', async () => {
    await withServer({ JWT_SECRET: OLD, JWT_SECONDARY_SECRET: NEW }, (server) => expectSecrets(server, [OLD, NEW], [OTHER]));
  }, 60_000);

  it('2. switched (JWT_SECRET=new, JWT_SECONDARY_SECRET=old): both accepted', async () => {
    await withServer({ JWT_SECRET: NEW, JWT_SECONDARY_SECRET: OLD }, (server) => expectSecrets(server, [NEW, OLD], [OTHER]));
  }, 60_000);

  it('3. done (JWT_SECRET=new alone): the old secret refused', async () => {
    await withServer({ JWT_SECRET: NEW }, (server) => expectSecrets(server, [NEW], [OLD, OTHER]));
  }, 60_000);
});
