import { Hono } from 'hono';
import type { Sql } from 'postgres';

const READY_TIMEOUT_MS = 2000;

/** M1 /health (liveness: the process answers) and M2 /ready (the database answers a query). */
export function opsRoutes(deps: { sql: Sql }) {
  const app = new Hono();
  app.get('/health', (c) => c.json({ status: 'ok' }));
  app.get('/ready', async (c) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      });
      await Promise.race([deps.sql`select 1`, timeout]);
      return c.json({ status: 'ready', checks: { database: 'ok' } });
    } catch (err) {
      return c.json({ status: 'unavailable', checks: { database: (err as Error).message } }, 503);
    } finally {
      clearTimeout(timer);
    }
  });
  return app;
}
