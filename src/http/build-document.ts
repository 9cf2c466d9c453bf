import type { Sql } from 'postgres';
import { CanvasLanes } from '../db/canvas-lanes.ts';
import { pino } from 'pino';
import { createTokenVerifier } from '../auth/jwt.ts';
import { loadConfig } from '../config.ts';
import { createMetrics } from '../metrics.ts';
import { apiDocument, type ApiDocument } from './api-document.ts';
import { createApp } from './app.ts';

/**
 * The OpenAPI document without a server or a database: the app is assembled (routes only; no
 * request is served) with a database handle that refuses any use. For `npm run api:types` and the
 * tests that compare or read the document. Deterministic: the same routes give the same JSON.
 */
export function buildApiDocument(): ApiDocument {
  const config = loadConfig({ NODE_ENV: 'test', LOG_LEVEL: 'silent' });
  const sql = new Proxy(() => {}, { get: refuse, apply: refuse }) as unknown as Sql;
  const app = createApp({ sql, lanes: new CanvasLanes(sql), config, verify: createTokenVerifier(config.auth), metrics: createMetrics(), logger: pino({ level: 'silent' }) });
  return apiDocument(app);
}

function refuse(): never {
  throw new Error('buildApiDocument: the document is built without a database');
}
