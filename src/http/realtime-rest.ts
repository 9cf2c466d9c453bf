import { Hono, type Context } from 'hono';
import { REALTIME_POLICY, TokenError } from '../auth/jwt.ts';
import { clientAddressKey } from '../client-address.ts';
import type { SocketClaims } from '../realtime/authorize.ts';
import type { ClusterPayload } from '../realtime/cluster.ts';
import { parseBatch, singleMessage, type RealtimeRest } from '../realtime/rest-broadcast.ts';
import { asApiError } from './common.ts';
import type { AppEnv, Deps } from './env.ts';
import { ApiError } from './errors.ts';
import { realtimeRestResponse } from './not-found.ts';
import { clientAddress, requestAuthorization, type ErrorAnswer } from './middleware.ts';

/** Where Supabase Realtime serves its REST API, and realtime-js posts its broadcasts (realtimeRestRoutes). */
export const REALTIME_REST_PREFIX = '/realtime/v1/api';

/**
 * Deps of a Node process that may run a gateway (server.ts, roles.ts): Deps (env.ts) stays free of
 * the realtime modules, which the edge functions' type check cannot resolve (ws, pg-logical-replication).
 */
export type RealtimeRestDeps = Deps & {
  /**
   * This process's realtime gateway's REST broadcast, set once the gateway has started: absent
   * until then (or when it could not start), those requests 503; null in a process that runs no
   * gateway (`--role api`), those requests 501 (served by the gateways).
   */
  realtime?: RealtimeRest | null;
};

/** The error surface of REALTIME_REST_PREFIX (common.ts withCommonMiddleware): errors in Supabase Realtime's shape. */
export const realtimeRestSurface: Record<string, ErrorAnswer> = {
  [REALTIME_REST_PREFIX]: (err, c) => realtimeRestResponse(c, asApiError(err, c)),
};

/**
 * Supabase Realtime's REST broadcast under /realtime/v1/api (src/realtime/rest-broadcast.ts),
 * answered as Supabase Realtime answers it: 202 with no body, errors in its shape `{code, message,
 * field?}` (not-found.ts realtimeRestResponse: realtime-js's httpSend() rejects with the message).
 *
 * The caller: the token in Authorization: Bearer (realtime-js sends the user's access token
 * there once signed in), else the apikey header (the anon key), checked as a realtime-js socket's
 * (REALTIME_POLICY: a user's token or one of the project's API keys).
 */
export function realtimeRestRoutes(deps: RealtimeRestDeps) {
  const app = new Hono<AppEnv>();

  app.post('/broadcast', async (c) => {
    const rest = gateway(deps);
    const claims = await caller(c, deps);
    const messages = parseBatch(await c.req.json(), rest.limits);
    await rest.broadcast(claims, clientAddressKey(clientAddress(c, deps) ?? 'unknown'), messages);
    return c.body(null, 202);
  });

  app.post('/broadcast/:topic/events/:event', async (c) => {
    const rest = gateway(deps);
    const claims = await caller(c, deps);
    const flag = c.req.query('private');
    if (flag !== undefined && flag !== 'true' && flag !== 'false') {
      throw new ApiError('invalid_input', 'query.private: true or false', { field: 'query.private' });
    }
    const type = (c.req.header('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    let payload: ClusterPayload;
    if (type === 'application/octet-stream') payload = { binary: Buffer.from(await c.req.arrayBuffer()) };
    else if (type === '' || type === 'application/json') payload = { json: JSON.stringify(await c.req.json()) };
    else {
      throw new ApiError('unsupported_media_type', 'content-type: send the payload as application/json or application/octet-stream', { field: 'content-type' });
    }
    const message = singleMessage(c.req.param('topic'), c.req.param('event'), flag === 'true', payload, rest.limits);
    await rest.broadcast(claims, clientAddressKey(clientAddress(c, deps) ?? 'unknown'), [message]);
    return c.body(null, 202);
  });

  return app;
}

function gateway(deps: RealtimeRestDeps): RealtimeRest {
  if (deps.realtime === null) {
    // not 404, which realtime-js replaces with "requires Realtime server v2.97.0 or newer"
    throw new ApiError('not_implemented', 'this process runs no realtime gateway (--role api): realtime-js\'s REST broadcast is '
      + 'served by the gateways (--role gateway or all) with their sockets: route /realtime/v1/ to them (deploy/nginx/potentia.conf)');
  }
  if (!deps.realtime) throw new ApiError('unavailable', 'the realtime gateway of this process is not running: retry shortly', { retry_after: 1 });
  return deps.realtime;
}

async function caller(c: Context<AppEnv>, deps: Deps): Promise<SocketClaims> {
  const bearer = /^Bearer\s+(\S+)$/i.exec(requestAuthorization(c) ?? '')?.[1];
  const token = bearer ?? c.req.header('apikey');
  if (!token) throw new ApiError('unauthorized', 'apikey is required: send the apikey header, or Authorization: Bearer <access token>');
  try {
    const claims = await deps.verify(token, REALTIME_POLICY);
    c.set('claims', claims as never); // the request log's user_id
    return claims;
  } catch (err) {
    if (err instanceof TokenError) {
      if (err.code === 'keys_unavailable') throw new ApiError('unavailable', err.message, { retry_after: 1 });
      throw new ApiError('unauthorized', err.message);
    }
    throw err;
  }
}

/** Whom a per-address limit counts (admission.ts addressOf, for a request). */
