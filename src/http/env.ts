import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
import type { Claims, VerifyToken } from '../auth/jwt.ts';
import type { Config } from '../config.ts';
import type { Metrics } from '../metrics.ts';

/** What every handler gets: its dependencies, passed explicitly (no hidden globals). */
export type Deps = {
  sql: Sql;
  /** Mutations' connections, one per canvas in flight (src/db/canvas-lanes.ts). */
  lanes: CanvasLanes;
  config: Config;
  verify: VerifyToken;
  metrics: Metrics;
  logger: Logger;
  /**
   * /ready's `realtime` check where this process runs a realtime gateway beside the API (role
   * `all`, src/server.ts): 'ok' while it serves, else why not (not started yet, its replication
   * stream down). Absent where the process runs none (role `api`, the edge functions).
   */
  realtimeReadiness?: () => string;
};

export type AppEnv = {
  Variables: {
    requestId: string;
    claims: Claims;
    log: Logger;
    /** The error code answered, when the answer is an error (for the request log line). */
    errorCode: string;
  };
};
