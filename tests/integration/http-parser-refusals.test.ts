// What Node's HTTP server refuses or gives up on before any route runs (src/server.ts,
// answerMalformedRequests), on a real server: a request that does not arrive in time is 408
// `timeout` naming `headers` or `body` (it was 400 "malformed HTTP request", field `request`, which
// a client does not send again), and nothing is written; a Content-Length or a chunk Node's parser
// refuses names `content-length` or `body`; and under /auth/v1 such a refusal comes in GoTrue's
// shape (auth-js takes the code from `code` or `error_code`: from our `{error: {…}}` its
// AuthApiError had no code, and the whole JSON text as its message), under /rest/v1 in PostgREST's,
// as the app's own refusals there do.
// The server's request timeouts are short here (ServerOptions.requestTimeouts) so that a stalled
// request is given up on within the test; nothing is timed.
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { apiKeys } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createUser } from '../helpers/fixtures.ts';
import { exchange, tokenFor } from '../helpers/http.ts';

const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
let server: Server;
let database: Database;
let sql: Sql;
let anonKey: string;
let token: string;
let userId: string;

beforeAll(async () => {
  server = await startServer({ ...base, databaseUrl: testDatabaseUrl(), port: 0 },
    { realtime: false, requestTimeouts: { headersMs: 1000, requestMs: 1500, checkEveryMs: 100 } });
  database = testDatabase(2);
  sql = database.sql;
  anonKey = (await apiKeys(server.deps.config)).anon;
  userId = await createUser(sql, 'slow');
  token = await tokenFor(server, userId);
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await database?.close();
});

const workspacesOf = async (id: string) =>
  (await sql`select count(*)::int as n from app.workspace_members where user_id = ${id}`)[0]!.n as number;

/** The head of a request (request line and headers, without the blank line that ends them). */
const head = (method: string, path: string, headers: Record<string, string>) =>
  `${method} ${path} HTTP/1.1\r\nhost: 127.0.0.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}`;

const json = (body: string) => JSON.parse(body);

describe('a request that does not arrive in time', () => {
  it('headers that never end: 408 timeout naming headers, connection closed', async () => {
    // at once: each waits out the headers timeout
    const [api, auth] = await Promise.all([exchange(server.url, head('GET', '/api/v1/canvas', { authorization: `Bearer ${token}` })),
      exchange(server.url, head('POST', '/auth/v1/token?grant_type=password', { apikey: anonKey }))]);
    expect({ status: api.status, body: json(api.body) }).toEqual({ status: 408,
      body: { error: { code: 'timeout', field: 'headers', message: expect.stringMatching(/^headers: .* within 1 s .*send the request again$/) } } });
    expect(api.head).toMatch(/\r\nConnection: close(\r\n|$)/);
    // Node does not tell which path such a request was for: the API's shape under /auth/v1 too
    expect({ status: auth.status, body: json(auth.body) }).toMatchObject({ status: 408, body: { error: { code: 'timeout', field: 'headers' } } });
  });

  it('a body that stops coming (Content-Length, or chunked and never ended): 408 timeout naming body, nothing written', async () => {
    const before = await workspacesOf(userId);
    const auth = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    // at once: each waits out the request timeout
    const [short, chunked, signIn] = await Promise.all([
      exchange(server.url, `${head('POST', '/api/v1/workspaces', { ...auth, 'content-length': '40' })}\r\n{"name":"sl`),
      exchange(server.url, `${head('POST', '/api/v1/workspaces', { ...auth, 'transfer-encoding': 'chunked' })}\r\n5\r\n{"nam\r\n`),
      exchange(server.url, `${head('POST', '/auth/v1/token?grant_type=password',
        { apikey: anonKey, 'content-type': 'application/json', 'content-length': '60' })}\r\n{"email":"`)]);
    expect({ status: short.status, body: json(short.body) }).toEqual({ status: 408,
      body: { error: { code: 'timeout', field: 'body', message: expect.stringMatching(/^body: .* within 1\.5 s of its start .*send it again$/) } } });
    expect({ status: chunked.status, body: json(chunked.body) }).toMatchObject({ status: 408, body: { error: { code: 'timeout', field: 'body' } } });
    // GoTrue's legacy shape without X-Supabase-Api-Version
    expect({ status: signIn.status, body: json(signIn.body) }).toEqual({ status: 408,
      body: { code: 408, error_code: 'request_timeout', msg: expect.stringMatching(/^body: /) } });
    expect(await workspacesOf(userId)).toBe(before);
    // and the server goes on answering
    const res = await fetch(`${server.url}/api/v1/workspaces`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'after' }) });
    expect(res.status).toBe(201);
    expect(await workspacesOf(userId)).toBe(before + 1);
  });
});

describe("what Node's parser refuses names the field, in each surface's shape", () => {
  const signIn = (headers: Record<string, string>, rest: string) =>
    exchange(server.url, `${head('POST', '/auth/v1/token?grant_type=password', { apikey: anonKey, 'content-type': 'application/json', ...headers })}${rest}`);

  it('a Content-Length that is not one decimal length: 400 invalid_input naming content-length', async () => {
    for (const lengths of [['-1'], ['1e3'], ['99999999999999999999999'], ['2', '3']]) {
      const lines = lengths.map((l) => `content-length: ${l}\r\n`).join('');
      const res = await exchange(server.url, `${head('POST', '/api/v1/workspaces', { authorization: `Bearer ${token}` })}${lines}\r\n`);
      expect({ lengths, status: res.status, body: json(res.body) }).toMatchObject({ lengths, status: 400,
        body: { error: { code: 'invalid_input', field: 'content-length' } } });
    }
    const auth = await signIn({ 'content-length': '-1', 'x-supabase-api-version': '2024-01-01' }, '\r\n');
    expect({ status: auth.status, body: json(auth.body) }).toEqual({ status: 400,
      body: { code: 'validation_failed', message: expect.stringMatching(/^content-length: /) } });
  });

  it('a chunk that is not a chunk, or whose extensions are too large: 400 / 413 naming body', async () => {
    const chunked = { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' };
    const bad = await exchange(server.url, `${head('POST', '/api/v1/workspaces', chunked)}\r\nzz\r\n{}\r\n0\r\n\r\n`);
    expect({ status: bad.status, body: json(bad.body) }).toMatchObject({ status: 400, body: { error: { code: 'invalid_input', field: 'body' } } });
    const extensions = await exchange(server.url, `${head('POST', '/api/v1/workspaces', chunked)}\r\n2;${'x'.repeat(20_000)}\r\n{}\r\n0\r\n\r\n`);
    expect({ status: extensions.status, body: json(extensions.body) }).toMatchObject({ status: 413,
      body: { error: { code: 'payload_too_large', field: 'body' } } });
    // handed to the app already: named by its own path (PostgREST's shape under /rest/v1)
    const rest = await exchange(server.url, `${head('POST', '/rest/v1/rpc/x', { 'transfer-encoding': 'chunked' })}\r\nzz\r\n`);
    expect({ status: rest.status, body: json(rest.body) }).toMatchObject({ status: 400, body: { code: 'invalid_input', details: null } });
    const auth = await signIn({ 'transfer-encoding': 'chunked' }, '\r\nzz\r\n');
    expect({ status: auth.status, body: json(auth.body) }).toEqual({ status: 400,
      body: { code: 400, error_code: 'validation_failed', msg: expect.stringMatching(/^body: /) } });
  });

  it('under /auth/v1: a transfer coding Node cannot frame, headers too large, an Expect header: GoTrue\'s shape', async () => {
    const twice = await signIn({ 'transfer-encoding': 'chunked, chunked', 'x-supabase-api-version': '2024-01-01' }, '\r\n');
    expect({ status: twice.status, body: json(twice.body) }).toEqual({ status: 400,
      body: { code: 'validation_failed', message: expect.stringMatching(/^transfer-encoding: /) } });
    expect(twice.head).toMatch(/\r\nX-Supabase-Api-Version: 2024-01-01\r\n/i);
    const large = await signIn({ 'x-supabase-api-version': '2024-01-01', 'x-big': 'a'.repeat(20_000) }, '\r\n');
    expect({ status: large.status, body: json(large.body) }).toEqual({ status: 431,
      body: { code: 'request_too_large', message: 'request headers are too large' } });
    const expectation = await signIn({ expect: 'x-evil', 'content-length': '2', connection: 'close' }, '\r\n{}');
    expect({ status: expectation.status, body: json(expectation.body) }).toEqual({ status: 417,
      body: { code: 417, error_code: 'validation_failed', msg: expect.stringContaining('Expect') } });
    // elsewhere the API's own shape, as before
    const api = await exchange(server.url, `${head('POST', '/api/v1/canvas', { 'transfer-encoding': 'chunked, chunked' })}\r\n`);
    expect(json(api.body)).toMatchObject({ error: { code: 'invalid_input', field: 'transfer-encoding' } });
  });
});
