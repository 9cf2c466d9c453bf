import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { awayFromWindowEdge } from '../helpers/wait.ts';

// POTENTIA_PROFILE=development (what `npm start` runs with) relaxes the per-endpoint limits of
// app.endpoint_limits and the sign-in limits of /auth/v1 for that process's requests; standard
// keeps the seed's (A5: one canvas create per 10 s). Refused in production.

const db = testDatabase(2);
let standard: Server;
let development: Server;

beforeAll(async () => {
  standard = await startTestServer();
  development = await startTestServer({ profile: 'development' });
});
afterAll(async () => {
  await standard?.stop();
  await development?.stop();
  await db.close();
});

async function createCanvasOver(server: Server, userId: string, workspaceId: string) {
  const res = await fetch(`${server.url}/api/v1/canvas`, {
    method: 'POST',
    headers: { authorization: `Bearer ${await tokenFor(server, userId)}`, 'content-type': 'application/json' },
    body: JSON.stringify({ workspace_id: workspaceId, title: 'profile' }),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after') };
}

describe('POTENTIA_PROFILE', () => {
  it('standard keeps the seed limit (A5: 1 create per 10 s); development allows a burst', async () => {
    const { workspaceId, users } = await createCanvas(db.sql);
    const owner = users.owner!;
    await awayFromWindowEdge(10); // both tries in one A5 window (10 s)
    const standardTries = [await createCanvasOver(standard, owner, workspaceId), await createCanvasOver(standard, owner, workspaceId)];
    expect(standardTries.map((t) => t.status)).toEqual([201, 429]);
    expect(Number(standardTries[1]!.retryAfter)).toBeGreaterThan(0);
    const devTries = [];
    for (let i = 0; i < 5; i++) devTries.push((await createCanvasOver(development, owner, workspaceId)).status);
    expect(devTries).toEqual([201, 201, 201, 201, 201]);
  });

  it('development relaxes the sign-in limits too, in buckets of its own (every local client is 127.0.0.1)', async () => {
    const email = `profile-${crypto.randomUUID()}@example.com`;
    const { anon } = await apiKeys(development.deps.config);
    const statuses: number[] = [];
    // one more than the standard 10 attempts per address (only the development server is asked:
    // the standard per-IP budget is the whole suite's)
    for (let i = 0; i < 11; i++) {
      const res = await fetch(`${development.url}/auth/v1/token?grant_type=password`, {
        method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' }, body: JSON.stringify({ email, password: 'wrong password' }),
      });
      statuses.push(res.status);
    }
    expect(statuses).toEqual(Array(11).fill(400)); // invalid_credentials every time, never 429
    const buckets = await db.sql<{ bucket: string; hits: number }[]>`
      select bucket, hits from app.rate_limits where user_id = md5('auth-email:' || ${email})::uuid`;
    expect(buckets).toEqual([{ bucket: 'auth-dev:sign_in:email', hits: 11 }]);
  });

  it('is refused in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(40), POTENTIA_PROFILE: 'development' }))
      .toThrow(/POTENTIA_PROFILE: development .* refused with NODE_ENV=production/);
    expect(loadConfig({ POTENTIA_PROFILE: 'development' }).profile).toBe('development');
    expect(loadConfig({}).profile).toBe('standard');
  });
});
