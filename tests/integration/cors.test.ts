import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { startTestServer } from '../helpers/http.ts';

// A browser app on another origin calls the API as it calls Supabase: the preflight with the
// headers supabase-js sends is answered before auth, and answers are readable cross-origin.

let server: Server;
beforeAll(async () => { server = await startTestServer(); });
afterAll(async () => { await server?.stop(); });

describe('CORS', () => {
  it('answers the preflight of supabase-js headers, before auth', async () => {
    const res = await fetch(`${server.url}/functions/v1/canvas/00000000-0000-4000-8000-000000000001/mutate`, {
      method: 'OPTIONS',
      headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST',
        'access-control-request-headers': 'authorization, apikey, content-type, x-client-info, x-supabase-api-version' },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-allow-headers')).toContain('apikey');
    expect(res.headers.get('access-control-allow-methods')).toContain('POST');
  });

  it('makes answers, errors included, readable from another origin', async () => {
    const res = await fetch(`${server.url}/api/v1/canvas`, { headers: { origin: 'http://localhost:5173' } });
    expect(res.status).toBe(401);
    expect(res.headers.get('access-control-allow-origin')).toBe('*');
    expect(res.headers.get('access-control-expose-headers')).toContain('X-Request-Id');
  });
});
