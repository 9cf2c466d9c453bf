import fc from 'fast-check';
import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas, mutate } from '../helpers/fixtures.ts';
import { algNoneToken, rawRequest, startTestServer, tokenFor, type RawResponse } from '../helpers/http.ts';

// Hostile input at every endpoint: random and malicious bodies, paths, methods and headers. Two
// properties hold for every request: the server never answers 5xx (and every error is the one
// JSON shape with a stable code), and it never writes (row counts are unchanged). Half the
// requests carry a valid viewer token, so they get past authentication into the handlers and
// the database; viewers may read but never write.

const ERROR_CODES = new Set(['invalid_input', 'unauthorized', 'forbidden', 'not_found', 'conflict', 'payload_too_large',
  'rate_limited', 'internal', 'unavailable', 'timeout']);

let server: Server;
let database: Database;
let sql: Sql;
let canvasId: string;
let foreignCanvasId: string;
let blockId: string;
let workspaceId: string;
let viewerTokens: string[] = [];
let otherTokens: Record<string, string> = {};

beforeAll(async () => {
  server = await startTestServer();
  database = testDatabase();
  sql = database.sql;
  const c = await createCanvas(sql);
  canvasId = c.canvasId;
  workspaceId = c.workspaceId;
  blockId = (await mutate(sql, c.users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'seed' } } })).block_id!;
  foreignCanvasId = (await createCanvas(sql)).canvasId;
  // several viewers, so the per-user rate limits let more of the hostile requests through to the handlers
  for (let i = 0; i < 8; i++) viewerTokens.push(await tokenFor(server, await addMember(sql, c.users.owner!, workspaceId, 'viewer')));
  otherTokens = {
    expired: await tokenFor(server, c.users.owner!, {}, { expiresInSeconds: -120 }),
    badSignature: await tokenFor(server, c.users.owner!, {}, { secret: 'a-different-secret-of-at-least-32-characters' }),
    algNone: algNoneToken(c.users.owner!),
    wrongAudience: await tokenFor(server, c.users.owner!, {}, { audience: 'elsewhere' }),
    stranger: await tokenFor(server, randomUUID()),
    anon: await tokenFor(server, c.users.owner!, { role: 'anon' }),
    ownerScopedElsewhere: await tokenFor(server, c.users.owner!, { scope: `canvas:${foreignCanvasId}:write` }),
  };
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await database?.close();
});

/** What must not change: the data a 4xx could have written. */
async function counts() {
  const [row] = await sql`select
    (select count(*)::int from app.blocks) as blocks,
    (select count(*)::int from app.canvases) as canvases,
    (select count(*)::int from app.canvases where deleted_at is not null) as deleted_canvases,
    (select count(*)::int from app.workspaces) as workspaces,
    (select count(*)::int from app.workspace_members) as members,
    (select count(*)::int from app.block_operations where status = 'success') as applied_ops,
    (select count(*)::int from app.refresh_tokens) as refresh_tokens,
    (select coalesce(sum(version), 0)::int from app.blocks) as block_versions,
    (select coalesce(sum(version), 0)::int from app.canvases) as canvas_versions`;
  return row!;
}

// ---------------------------------------------------------------- arbitraries

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
const latin1 = fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).filter((c) => c < 0x7f || c > 0x9f).map((c) => String.fromCharCode(c)), maxLength: 30 });

/** A path segment: a real id, someone else's id, a random uuid, or something hostile. */
const segment = fc.oneof(
  { weight: 4, arbitrary: fc.constant('$canvas') },
  { weight: 1, arbitrary: fc.constant('$foreign') },
  { weight: 1, arbitrary: fc.uuid().map(String) },
  { weight: 1, arbitrary: fc.constantFrom('..', '.', '%2e%2e', '%2E%2E%2F', '%2F', '%00', '%ZZ', '%', '%u0000', '__proto__', 'constructor',
    'prototype', '', ';x=1', '~', '*', 'null', 'undefined', '-1', '0', '1e309', '{}', '%7B%7D', "'or'1'='1", '%27%3B%20drop%20table%20app.blocks%3B--') },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }).map(encodeURIComponent) },
  { weight: 1, arbitrary: latin1 },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 9000 }).map((n) => 'a'.repeat(n)) },
  { weight: 1, arbitrary: fc.uuid().map((u) => u.toUpperCase()) },
  { weight: 1, arbitrary: fc.uuid().map((u) => `{${u}}`) },
);

/** Every endpoint, as a path template under /api/v1 or /functions/v1. */
const ENDPOINTS: [method: string, path: string][] = [
  ['GET', '/canvas'], ['POST', '/canvas'],
  ['GET', '/canvas/{c}'], ['PATCH', '/canvas/{c}'], ['DELETE', '/canvas/{c}'],
  ['POST', '/canvas/{c}/mutate'], ['POST', '/canvas/{c}/presence'], ['GET', '/canvas/{c}/snapshot'], ['POST', '/canvas/{c}/leave'],
  ['GET', '/canvas/{c}/blocks'], ['GET', '/canvas/{c}/blocks/{b}'], ['GET', '/canvas/{c}/permissions'], ['GET', '/canvas/{c}/search'],
  ['POST', '/auth/refresh'], ['GET', '/search/{c}'],
];
const OPS: [method: string, path: string][] = [
  ['GET', '/health'], ['GET', '/ready'], ['GET', '/metrics'], ['POST', '/debug/echo'], ['GET', '/api/v1/openapi.json'],
];

const query = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('since_seq', 'limit', 'cursor', 'q', '__proto__', 'constructor[prototype]', 'since_seq[]'),
    fc.oneof(fc.integer().map(String), fc.constantFrom('-1', '1e309', 'NaN', '0x10', '', '9'.repeat(40), 'zz', '%00'),
      fc.string({ maxLength: 50 }).map(encodeURIComponent)))
    .map(([k, v]) => `?${k}=${v}`) },
  { weight: 1, arbitrary: fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })), { maxLength: 6 })
    .map((pairs) => '?' + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')) },
  { weight: 1, arbitrary: fc.constantFrom('?since_seq=1&since_seq=2', '?limit=500&cursor=zzzzzzzzzz', '?q=' + 'x'.repeat(5000), '?&&&==', '?%ZZ=%ZZ') },
);

/** A path: an endpoint with hostile segments and query, or random segments altogether. */
const path = fc.oneof(
  { weight: 6, arbitrary: fc.tuple(fc.constantFrom('/api/v1', '/functions/v1'), fc.constantFrom(...ENDPOINTS), segment, segment, query)
    .map(([prefix, [, template], c, b, q]) => prefix + template.replace('{c}', c).replace('{b}', b === '$canvas' ? '$block' : b) + q) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...OPS), query).map(([[, p], q]) => p + q) },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('/api/v1', '/functions/v1', '', '/api', '/functions/v1/canvas', '/api/v1/canvas'),
    fc.array(segment, { minLength: 0, maxLength: 6 }), query).map(([prefix, segs, q]) => `${prefix}/${segs.join('/')}${q}`) },
  { weight: 1, arbitrary: fc.constantFrom('/api/v1/../../etc/passwd', '/api/v1/canvas/..%2f..%2f', '//api//v1//canvas', '/api/v1/canvas/$canvas/../$canvas/mutate',
    '/functions/v1/canvas/$canvas/%2e%2e/permissions', '/API/V1/CANVAS', '/api/v1/canvas/$canvas/blocks/$block/extra', '/' + 'x/'.repeat(3000),
    '/api/v1/canvas?%00', '/api/v1/canvas#frag', '*') },
);

const fill = (p: string) => p.replaceAll('$canvas', canvasId).replaceAll('$foreign', foreignCanvasId).replaceAll('$block', blockId);

/** JSON text with keys in it that JavaScript treats specially (JSON.stringify would drop a literal __proto__). */
const hostileObject = fc.array(fc.tuple(
  fc.constantFrom('__proto__', 'constructor', 'prototype', 'action', 'client_op_id', 'base_version', 'block_id', 'patch', 'ops', 'cursor',
    'typing', 'workspace_id', 'title', 'settings', 'refresh_token', 'content', 'type', 'y_order', 'parent_id', 'after_id', 'role', 'sub'),
  fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant({ polluted: true }), fc.constant({ prototype: { polluted: true } }))),
{ maxLength: 8 }).map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);

/** A well-formed request body for one endpoint with one field replaced by something of the wrong type. */
const validBodies = (): Record<string, unknown>[] => [
  { action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: 'x' } } },
  { action: 'update', block_id: blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: 'y' } } },
  { action: 'delete', block_id: blockId, client_op_id: randomUUID(), base_version: 1 },
  { ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }] },
  { cursor: { x: 1, y: 2 }, typing: true },
  { workspace_id: workspaceId, title: 'hostile' },
  { title: 'renamed', settings: { a: 1 } },
  { refresh_token: 'r'.repeat(43) },
];
const wrongTyped = fc.tuple(fc.nat(), fc.nat(), fc.jsonValue({ maxDepth: 2 })).map(([i, j, value]) => {
  const body = validBodies()[i % validBodies().length]!;
  const keys = Object.keys(body);
  const key = keys[j % keys.length]!;
  if (key === 'patch' && typeof body.patch === 'object') (body.patch as Record<string, unknown>)[['type', 'content', 'y_order', 'parent_id'][j % 4]!] = value;
  else body[key] = value;
  return JSON.stringify(body);
});

const nested = (depth: number, open: string, leaf: string, close: string) => open.repeat(depth) + leaf + close.repeat(depth);
const deep = fc.tuple(fc.oneof(fc.integer({ min: 20, max: 120 }), fc.integer({ min: 120, max: 40_000 })), fc.constantFrom('array', 'object', 'cursor', 'content', 'settings', 'ops'))
  .map(([d, where]) => {
    const value = where === 'array' ? nested(d, '[', '1', ']') : nested(d, '{"a":', '1', '}');
    switch (where) {
      case 'cursor': return `{"cursor":${value},"typing":true}`;
      case 'content': return `{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":${value}}}`;
      case 'settings': return `{"workspace_id":"${workspaceId}","settings":${value}}`;
      case 'ops': return `{"ops":${nested(d, '[', '{}', ']')}}`;
      default: return value;
    }
  });

const huge = fc.tuple(fc.integer({ min: 50_000, max: 400_000 }), fc.constantFrom('string', 'content', 'title', 'refresh', 'keys'))
  .map(([n, where]) => {
    switch (where) {
      case 'content': return JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: 'x'.repeat(n) } } });
      case 'title': return JSON.stringify({ workspace_id: workspaceId, title: 'x'.repeat(n) });
      case 'refresh': return JSON.stringify({ refresh_token: 'x'.repeat(n) });
      case 'keys': return JSON.stringify(Object.fromEntries(Array.from({ length: Math.floor(n / 20) }, (_, i) => [`k${i}`, i])));
      default: return JSON.stringify('x'.repeat(n));
    }
  });

const body: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.json({ maxDepth: 4 }) },
  { weight: 3, arbitrary: hostileObject },
  { weight: 4, arbitrary: wrongTyped },
  { weight: 1, arbitrary: deep },
  { weight: 1, arbitrary: huge },
  { weight: 2, arbitrary: fc.string({ maxLength: 200 }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map((a) => Buffer.from(a)) },
  { weight: 1, arbitrary: fc.constantFrom('', 'null', 'true', '1e999', '-0', '"\\ud800"', '{"a":"\\u0000"}', '{"a":1,"a":2}', '[]', '{}',
    '{"action":"create","client_op_id":"\\u0000","patch":{"type":"text"}}', '{"cursor":{"x":"\\u0000"}}', '\ufeff{}', '{"title":"\\ud83d"}') },
);

const contentType = fc.oneof(
  { weight: 5, arbitrary: fc.constant('application/json') },
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=zz',
    'multipart/form-data', 'application/json; charset=utf-16', 'application/vnd.api+json', 'APPLICATION/JSON', 'application/json;;;',
    'application/xml', '*/*', 'application/json, text/plain') },
  { weight: 1, arbitrary: printable },
);

/** The Authorization header: a valid viewer token half the time, otherwise anything. */
const authorization = fc.oneof(
  { weight: 8, arbitrary: fc.nat().map((i) => `Bearer ${viewerTokens[i % viewerTokens.length]}`) },
  { weight: 1, arbitrary: fc.constant(undefined) },
  { weight: 3, arbitrary: fc.constantFrom('expired', 'badSignature', 'algNone', 'wrongAudience', 'stranger', 'anon', 'ownerScopedElsewhere')
    .map((k) => `Bearer ${otherTokens[k]}`) },
  { weight: 2, arbitrary: fc.oneof(printable, printable.map((s) => `Bearer ${s}`), fc.constantFrom('Bearer', 'Bearer ', 'Bearer a.b.c',
    'Bearer ..', 'Basic dXNlcjpwYXNz', 'bearer  x', `Bearer ${'x'.repeat(8000)}`, 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.')) },
  { weight: 1, arbitrary: fc.nat().map((i) => `Bearer ${viewerTokens[i % viewerTokens.length]}x`) },
);

const extraHeaders = fc.record({
  'x-request-id': fc.oneof(printable, fc.constant('../../etc'), fc.constant('x'.repeat(500))),
  traceparent: fc.oneof(printable, fc.constant('00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01'), fc.constant('ff-zz-zz-zz')),
  'x-forwarded-for': fc.oneof(printable, fc.constant('127.0.0.1, ::1, 999.1.1.1'), fc.constant('not-an-ip')),
  'user-agent': fc.oneof(printable, fc.constant('x'.repeat(4000))),
  'x-session-id': printable,
  'accept-encoding': fc.constantFrom('gzip', 'br', 'identity', '*', 'zz'),
  accept: fc.constantFrom('application/json', 'text/html', '*/*', ''),
}, { requiredKeys: [] });

const method = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'PATCH', 'DELETE') },
  { weight: 1, arbitrary: fc.constantFrom('PUT', 'OPTIONS', 'HEAD', 'TRACE', 'PROPFIND', 'MKCOL', 'PURGE') },
);

// ---------------------------------------------------------------- the properties

type Req = { method: string; path: string; headers: Record<string, string>; body?: string | Buffer };

function buildHeaders(auth: string | undefined, ct: string | undefined, extra: Record<string, string>): Record<string, string> {
  const headers: Record<string, string> = { ...extra };
  if (auth !== undefined) headers.authorization = auth;
  if (ct !== undefined) headers['content-type'] = ct;
  return headers;
}

const describeReq = (r: Req) => `${r.method} ${r.path.slice(0, 300)} headers=${JSON.stringify(r.headers).slice(0, 400)} body=${
  r.body === undefined ? '(none)' : Buffer.isBuffer(r.body) ? `<${r.body.length} bytes>` : `${JSON.stringify(r.body.slice(0, 300))} (${r.body.length} chars)`}`;

// request-targets Node's parser or @hono/node-server refuse (empty 400) before the app sees them:
// raw bytes outside visible ASCII, a backslash, or not origin-form ('*')
const NOT_HTTP = /[^\x21-\x7e]|\\|^[^/]/;
let sent = 0;
const statuses = new Map<number, number>();

/** Sends one request and checks both properties around it. */
async function check(req: Req) {
  const before = await counts();
  let res: RawResponse;
  try {
    res = await rawRequest(server.url, { ...req, path: fill(req.path), timeoutMs: 15_000 });
  } catch (err) {
    throw new Error(`no answer (${(err as Error).message}) for ${describeReq(req)}`);
  }
  sent += 1;
  statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
  const where = `${res.status} ${res.text.slice(0, 300)} for ${describeReq(req)}`;
  expect(res.status, where).toBeGreaterThanOrEqual(200);
  expect(res.status, where).toBeLessThan(500);
  if (NOT_HTTP.test(req.path) && res.text === '') {
    // not a valid request-target that @hono/node-server answers itself: 400, empty body
    expect(res.status, where).toBe(400);
  } else if (res.status >= 400 && req.method !== 'HEAD') {
    // everything else, including what Node's parser refuses (431 for headers over its limit),
    // has the one error shape
    let parsed: any;
    try { parsed = JSON.parse(res.text); } catch { throw new Error(`error body is not JSON: ${where}`); }
    expect(Object.keys(parsed), where).toEqual(['error']);
    expect(ERROR_CODES.has(parsed.error.code), where).toBe(true);
    expect(typeof parsed.error.message, where).toBe('string');
    if (res.status === 429) expect(Number(res.headers['retry-after']), where).toBeGreaterThanOrEqual(1);
  }
  expect(await counts(), `a write happened: ${where}`).toEqual(before);
}

describe('hostile HTTP input', () => {
  it('bodies: never a 5xx, never a write', async () => {
    await fc.assert(fc.asyncProperty(fc.constantFrom(...ENDPOINTS), fc.constantFrom('/api/v1', '/functions/v1'), body, contentType, authorization,
      async ([m, template], prefix, b, ct, auth) => {
        await check({ method: m, path: prefix + template.replace('{c}', '$canvas').replace('{b}', '$block'), headers: buildHeaders(auth, ct, {}), body: b });
      }), { numRuns: 170 });
  }, 60_000);

  it('paths: never a 5xx, never a write', async () => {
    await fc.assert(fc.asyncProperty(method, path, fc.option(fc.oneof(fc.json({ maxDepth: 2 }), wrongTyped), { nil: undefined }), authorization,
      async (m, p, b, auth) => {
        await check({ method: m, path: p, headers: buildHeaders(auth, b === undefined ? undefined : 'application/json', {}), body: m === 'GET' || m === 'HEAD' ? undefined : b });
      }), {
      numRuns: 80,
      // found by this property once: Node's parser refuses the NBSP, and a HEAD answer must carry no body
      examples: [['HEAD', '/api/v1/canvas/\u00a0/blocks/00000000-0000-1000-8000-000000000000', undefined, undefined]],
    });
  }, 60_000);

  it('methods and headers: never a 5xx, never a write', async () => {
    await fc.assert(fc.asyncProperty(method, fc.constantFrom(...ENDPOINTS, ...OPS.map(([m, p]): [string, string] => [m, p])),
      fc.option(fc.oneof(fc.json({ maxDepth: 2 }), wrongTyped), { nil: undefined }), contentType, authorization, extraHeaders,
      async (m, [, template], b, ct, auth, extra) => {
        const p = template.startsWith('/canvas') || template.startsWith('/auth') || template.startsWith('/search') ? `/api/v1${template}` : template;
        await check({ method: m, path: p.replace('{c}', '$canvas').replace('{b}', '$block'), headers: buildHeaders(auth, ct, extra),
          body: m === 'GET' || m === 'HEAD' ? undefined : b });
      }), { numRuns: 60 });
  }, 60_000);

  it('reached the handlers, not only the gatekeepers', () => {
    // the properties above mean little if every request bounced off auth or a rate limit
    console.info(`http-fuzz: ${sent} requests, statuses ${JSON.stringify(Object.fromEntries([...statuses].sort((a, b) => a[0] - b[0])))}`);
    expect(sent).toBeGreaterThanOrEqual(300);
    const reached = [...statuses].filter(([s]) => s !== 401 && s !== 429).reduce((n, [, k]) => n + k, 0);
    expect(reached, JSON.stringify(Object.fromEntries(statuses))).toBeGreaterThan(sent / 3);
    expect(statuses.get(200) ?? 0, JSON.stringify(Object.fromEntries(statuses))).toBeGreaterThan(10);
  });
});
