import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl, type Config } from '../../src/config.ts';
import { startServer, type Server, type ServerOptions } from '../../src/server.ts';

/** A server on the test database, on a free port, silent, HTTP only (no realtime gateway, no worker) unless `opts` say otherwise. */
export async function startTestServer(overrides: Partial<Config> = {}, opts: ServerOptions = { realtime: false }): Promise<Server> {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
  return startServer({ ...config, databaseUrl: testDatabaseUrl(), port: 0, ...overrides }, opts);
}

/** An access token for `userId` signed as the server would, with optional extra claims and options. */
export function tokenFor(server: Server, userId: string,
  claims: { scope?: string | string[]; role?: string; email?: string } = {},
  opts: { expiresInSeconds?: number; audience?: string; secret?: string } = {}): Promise<string> {
  const { auth } = server.deps.config;
  return signAccessToken(opts.secret ?? auth.jwtSecret, { sub: userId, ...claims },
    { expiresInSeconds: opts.expiresInSeconds ?? 600, audience: opts.audience ?? auth.audience });
}

export type RawResponse = { status: number; headers: Record<string, string | string[] | undefined>; text: string };

/**
 * One HTTP request on its own connection (no keep-alive, no URL normalisation): the raw path goes
 * out as given ('..', '%ZZ' and all), any method and headers, and the body as bytes.
 */
export function rawRequest(baseUrl: string, opts: {
  method: string; path: string; headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number;
  /** send the body chunked (no Content-Length) */
  chunked?: boolean;
}): Promise<RawResponse> {
  const url = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({
      host: url.hostname, port: url.port, method: opts.method, path: opts.path, agent: false,
      headers: { ...(opts.body !== undefined && !opts.chunked ? { 'content-length': String(Buffer.byteLength(opts.body)) } : {}), ...opts.headers },
      timeout: opts.timeoutMs ?? 10_000,
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${opts.timeoutMs ?? 10_000} ms: ${opts.method} ${opts.path}`)));
    req.on('error', (err: NodeJS.ErrnoException) => {
      // the server may answer (413) and close before the whole body is sent: keep the answer
      if (err.code === 'EPIPE' || err.code === 'ECONNRESET') return;
      reject(err);
    });
    if (opts.body === undefined) req.end();
    else if (opts.chunked) {
      const body = Buffer.from(opts.body);
      for (let i = 0; i < body.length; i += 16_384) req.write(body.subarray(i, i + 16_384));
      req.end();
    } else req.end(opts.body);
  });
}

/**
 * One request written by hand, bytes as given (a header twice, a malformed line: Node's client
 * and fetch would reframe it), on its own connection, read until the server closes it (send
 * `Connection: close`, or a request it refuses): status, head and body text.
 */
export function exchange(baseUrl: string, request: string): Promise<{ status: number; head: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(Number(new URL(baseUrl).port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', reject);
    socket.on('close', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const at = text.indexOf('\r\n\r\n');
      resolve({ status: Number(text.slice(9, 12)), head: text.slice(0, at), body: text.slice(at + 4) });
    });
    // written, not ended: a half-closed connection may be dropped before it is answered
    socket.write(request);
  });
}

export const base64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An unsigned `alg: none` token with otherwise valid claims: must never be accepted. */
export function algNoneToken(userId: string, audience = 'authenticated'): string {
  const now = Math.floor(Date.now() / 1000);
  return `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url({ sub: userId, role: 'authenticated', aud: audience, iat: now, exp: now + 600 })}.`;
}
