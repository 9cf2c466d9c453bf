import { serve, type ServerType } from '@hono/node-server';
import type { AddressInfo } from 'node:net';
import type { Config } from './config.ts';
import { createDatabase, type Database } from './db/index.ts';
import { createApp } from './http/app.ts';

/** The local Potentia process: one database pool and the HTTP server, with an explicit lifecycle. */
export type Server = { url: string; database: Database; stop(): Promise<void> };

export async function startServer(config: Config): Promise<Server> {
  const database = createDatabase(config.databaseUrl, { max: config.dbPoolMax, applicationName: 'potentia-server' });
  const app = createApp({ sql: database.sql });
  const http: ServerType = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.host, port: config.port }, () => resolve(s));
    s.once('error', reject);
  });
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://${config.host}:${port}`,
    database,
    async stop() {
      await new Promise<void>((resolve) => http.close(() => resolve()));
      await database.close();
    },
  };
}
