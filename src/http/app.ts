import { Hono } from 'hono';
import type { Sql } from 'postgres';
import { opsRoutes } from '../../functions/ops.ts';

export type AppDeps = { sql: Sql };

/** The HTTP surface, runtime-neutral: Node serves it locally, Deno entry points on Supabase. */
export function createApp(deps: AppDeps) {
  const app = new Hono();
  app.route('/', opsRoutes(deps));
  return app;
}
