import type { Logger } from 'pino';
import type { Sql } from 'postgres';
import type { CanvasLanes } from '../db/canvas-lanes.ts';
import type { Claims, VerifyToken } from '../auth/jwt.ts';
import type { Config } from '../config.ts';
import type { Metrics } from '../metrics.ts';
import type { RealtimeRest } from '../realtime/rest-broadcast.ts';

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
   * This process's realtime gateway's REST broadcast (src/http/realtime-rest.ts), set once the
   * gateway has started: absent until then (or when it could not start), those requests 503; null
   * in a process that runs no gateway (`--role api`), those requests 501 (served by the gateways).
   */
  realtime?: RealtimeRest | null;
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
