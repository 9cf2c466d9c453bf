import { Writable } from 'node:stream';
import pino from 'pino';
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

  it('answers /ready with 503 when the database does not: a stable code and a safe message, the error itself in the log only', async () => {
    const logged: any[] = [];
    const logger = pino({ level: 'warn' }, new Writable({
      write(chunk, _enc, done) {
        for (const line of String(chunk).split('\n').filter(Boolean)) logged.push(JSON.parse(line));
        done();
      },
    }));
    const down = await startServer({ ...loadConfig(), databaseUrl: 'postgres://postgres@127.0.0.1:1/none', port: 0 }, { logger });
    try {
      const res = await fetch(`${down.url}/ready`);
      expect(res.status).toBe(503);
      // it was {"database": "connect ECONNREFUSED 127.0.0.1:1"}: the database's own text, to anyone
      expect(await res.json()).toEqual({ status: 'unavailable', checks: { database: 'error' },
        message: 'database: the database query failed; the server log has the error' });
      expect(logged.find((l) => l.check === 'database')).toMatchObject({ code: 'error', err: { message: expect.stringMatching(/ECONNREFUSED/) } });
    } finally {
      await down.stop();
    }
  });
});
