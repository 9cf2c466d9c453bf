import { propagation, trace, type Context, type TextMapPropagator, type Tracer } from '@opentelemetry/api';
import { Writable } from 'node:stream';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { randomUUID } from 'node:crypto';
import { startTestServer, tokenFor } from '../helpers/http.ts';

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

  it('answers /ready with 200 when the database answers (and its realtime gateway streams)', async () => {
    await server.gateway!.bus.ready();
    const res = await fetch(`${server.url}/ready`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: 'ready', checks: { database: 'ok' } });
  });

  it('writes one request log line per request: method, path, status, ms, and the user, canvas and error code when there is one', async () => {
    const logged: any[] = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => { logged.push(JSON.parse(line)); } });
    const logging = await startTestServer({}, { realtime: false, logger });
    try {
      const userId = randomUUID();
      const canvasId = randomUUID();
      const res = await fetch(`${logging.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', body: '{"action":"nothing"}',
        headers: { Authorization: `Bearer ${await tokenFor(logging, userId)}`, 'Content-Type': 'application/json', 'X-Request-Id': 'log-line-1' },
      });
      expect(res.status).toBe(400);
      await fetch(`${logging.url}/health`, { headers: { 'X-Request-Id': 'log-line-2' } });
      const lines = logged.filter((l) => l.msg === 'request');
      expect(lines).toHaveLength(2);
      expect(lines[0]).toEqual({ level: 30, time: expect.any(Number), pid: process.pid, hostname: expect.any(String), request_id: 'log-line-1',
        method: 'POST', path: `/api/v1/canvas/${canvasId}/mutate`, status: 400, ms: expect.any(Number), user_id: userId, canvas_id: canvasId,
        error_code: 'invalid_input', msg: 'request' });
      expect(lines[1]).toEqual({ level: 30, time: expect.any(Number), pid: process.pid, hostname: expect.any(String), request_id: 'log-line-2',
        method: 'GET', path: '/health', status: 200, ms: expect.any(Number), msg: 'request' });
    } finally {
      await logging.stop();
    }
  });

  it('with an OpenTelemetry tracer provider registered, each request is one span named by its method and path, a child of its traceparent', async () => {
    // what an SDK registers (trace.setGlobalTracerProvider, propagation.setGlobalPropagator), as small as the API lets it be
    const spans: { name: string; parent?: string; ended: boolean }[] = [];
    const tracer = {
      startSpan(name: string, _options?: unknown, parent?: Context) {
        const record = { name, parent: parent && trace.getSpanContext(parent)?.spanId, ended: false };
        spans.push(record);
        const span = trace.wrapSpanContext({ traceId: '4bf92f3577b34da6a3ce929d0e0e4736', spanId: '00f067aa0ba902b7', traceFlags: 1 });
        return Object.assign(span, { end: () => { record.ended = true; } });
      },
    } as unknown as Tracer;
    const propagator: TextMapPropagator = {
      inject: () => {},
      fields: () => ['traceparent'],
      extract: (ctx, carrier, getter) => {
        const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(String(getter.get(carrier, 'traceparent')));
        return m ? trace.setSpanContext(ctx, { traceId: m[1]!, spanId: m[2]!, traceFlags: 1, isRemote: true }) : ctx;
      },
    };
    const untraced = await fetch(`${server.url}/health`, { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01' } });
    expect(untraced.status).toBe(200);
    expect(trace.setGlobalTracerProvider({ getTracer: () => tracer })).toBe(true);
    expect(propagation.setGlobalPropagator(propagator)).toBe(true);
    try {
      const res = await fetch(`${server.url}/health`, { headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01' } });
      expect(res.status).toBe(200);
      const missing = await fetch(`${server.url}/api/v1/canvas/${randomUUID()}/mutate`, { method: 'POST', body: '{}', headers: { 'Content-Type': 'application/json' } });
      expect(missing.status).toBe(401);
      expect(spans).toEqual([
        { name: 'GET /health', parent: 'b7ad6b7169203331', ended: true },
        { name: expect.stringMatching(/^POST \/api\/v1\/canvas\/[0-9a-f-]{36}\/mutate$/), parent: undefined, ended: true },
      ]);
    } finally {
      trace.disable();
      propagation.disable();
    }
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
      // (its realtime gateway could not start either: tried again in the background)
      expect(await res.json()).toEqual({ status: 'unavailable',
        checks: { database: 'error', realtime: expect.stringMatching(/^not started \(1 attempt failed, the server log has the error; retrying\)$/) },
        message: expect.stringMatching(/^database: the database query failed; the server log has the error; realtime: not started \(/) });
      expect(logged.find((l) => l.check === 'database')).toMatchObject({ code: 'error', err: { message: expect.stringMatching(/ECONNREFUSED/) } });
    } finally {
      await down.stop();
    }
  });
});
