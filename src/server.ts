import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import { pino, type Logger } from 'pino';
import { createVerifier } from './auth/jwt.ts';
import type { Config } from './config.ts';
import { createDatabase, type Database } from './db/index.ts';
import { createApp } from './http/app.ts';
import type { Deps } from './http/env.ts';
import { createMetrics } from './metrics.ts';

/** The local Potentia process: database pool, metrics and the HTTP server, with an explicit lifecycle. */
export type Server = { url: string; deps: Deps; database: Database; stop(): Promise<void> };

export async function startServer(config: Config, opts: { logger?: Logger } = {}): Promise<Server> {
  const database = createDatabase(config.databaseUrl, { max: config.dbPoolMax, applicationName: 'potentia-server' });
  const metrics = createMetrics();
  metrics.poolMax.set(config.dbPoolMax);
  const deps: Deps = {
    sql: database.sql,
    config,
    verify: createVerifier(config.auth),
    metrics,
    logger: opts.logger ?? pino({ level: config.logLevel }),
  };
  const app = createApp(deps);
  const http: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () => resolve(s));
    s.once('error', reject);
  });
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://${config.host}:${port}`,
    deps,
    database,
    async stop() {
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await database.close();
    },
  };
}
