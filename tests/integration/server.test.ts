import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabaseUrl } from '../../src/config.ts';

describe('local server', () => {
  let server: Server;
  beforeAll(async () => {
    server = await startServer({ ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0 });
  });
  afterAll(async () => server?.stop());

  it('answers /health', async () => {
    const res = await fetch(`${server.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ok' });
  });

  it('answers /ready with 200 when the database answers', async () => {
    const res = await fetch(`${server.url}/ready`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ready', checks: { database: 'ok' } });
  });

  it('answers /ready with 503 when the database does not', async () => {
    const down = await startServer({ ...loadConfig(), databaseUrl: 'postgres://postgres@127.0.0.1:1/none', port: 0 });
    try {
      const res = await fetch(`${down.url}/ready`);
      expect(res.status).toBe(503);
      expect(await res.json()).toMatchObject({ status: 'unavailable' });
    } finally {
      await down.stop();
    }
  });
});
