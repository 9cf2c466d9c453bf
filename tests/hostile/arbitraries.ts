import fc from 'fast-check';
import { randomUUID } from 'node:crypto';

/**
 * Hostile HTTP input as fast-check arbitraries, shared by tests/integration/http-fuzz.test.ts and
 * the hostile corpus (tests/hostile/). Ids and tokens are read from `ctx` when a value is
 * generated, so a test fills `ctx` in beforeAll after building the arbitraries. Paths carry the
 * placeholders `$canvas`, `$foreign` and `$block`; `fillPath` puts the ids in.
 */
export type HttpFuzzContext = {
  canvasId: string;
  foreignCanvasId: string;
  blockId: string;
  workspaceId: string;
  /** valid tokens of users who may read the canvas (the rest of the input decides the rest) */
  viewerTokens: string[];
  /** named bad tokens (expired, badSignature, algNone, wrongAudience, stranger, anon, ownerScopedElsewhere) */
  otherTokens: Record<string, string>;
};

export const emptyHttpContext = (): HttpFuzzContext => ({
  canvasId: '', foreignCanvasId: '', blockId: '', workspaceId: '', viewerTokens: [], otherTokens: {},
});

/** Every endpoint, as a path template under /api/v1 or /functions/v1. */
export const ENDPOINTS: [method: string, path: string][] = [
  ['GET', '/canvas'], ['POST', '/canvas'],
  ['GET', '/canvas/{c}'], ['PATCH', '/canvas/{c}'], ['DELETE', '/canvas/{c}'],
  ['POST', '/canvas/{c}/mutate'], ['POST', '/canvas/{c}/presence'], ['GET', '/canvas/{c}/snapshot'], ['POST', '/canvas/{c}/leave'],
  ['GET', '/canvas/{c}/blocks'], ['GET', '/canvas/{c}/blocks/{b}'], ['GET', '/canvas/{c}/permissions'], ['GET', '/canvas/{c}/search'],
  ['POST', '/auth/refresh'], ['GET', '/search/{c}'],
];
export const OPS: [method: string, path: string][] = [
  ['GET', '/health'], ['GET', '/ready'], ['GET', '/metrics'], ['POST', '/debug/echo'], ['GET', '/api/v1/openapi.json'],
];

export const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });
export const latin1 = fc.string({ unit: fc.integer({ min: 0x21, max: 0xff }).filter((c) => c < 0x7f || c > 0x9f).map((c) => String.fromCharCode(c)), maxLength: 30 });

/** Strings a database or a JSON layer may mishandle: NUL, lone surrogates, controls, RTL marks, huge. */
export const hostileString = fc.oneof(
  { weight: 3, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom('\u0000', 'a\u0000b', '\ud800x', '\udfffx', '\ud800', '\udc00\ud800', '\ufeff', '\u202e', '\uffff', '\u0085',
    '%00', "'; drop table app.blocks; --", '$1', '\\', '\\u0000', '${x}', '{{x}}', '<script>', 'null', '') },
  { weight: 1, arbitrary: fc.integer({ min: 129, max: 5000 }).map((n) => 'x'.repeat(n)) },
);

/** JSON numbers outside every column's range, and values of the wrong type. */
export const hostileNumber = fc.oneof(
  fc.constantFrom(99999999999, 2 ** 31, -(2 ** 31) - 1, 2 ** 53, -1, 0, 1.5, 1e308, -0, Number.MAX_SAFE_INTEGER),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
);
export const wrongType = fc.oneof(fc.constant(null), fc.boolean(), hostileString, hostileNumber, fc.constant([]), fc.constant({}), fc.jsonValue({ maxDepth: 2 }));

/** A path segment: a real id, someone else's id, a random uuid, or something hostile. */
export const segment = fc.oneof(
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

export const query = fc.oneof(
  { weight: 3, arbitrary: fc.constant('') },
  { weight: 2, arbitrary: fc.tuple(fc.constantFrom('since_seq', 'since_canvas_seq', 'limit', 'cursor', 'q', '__proto__', 'constructor[prototype]', 'since_seq[]'),
    fc.oneof(fc.integer().map(String), fc.constantFrom('-1', '1e309', 'NaN', '0x10', '', '9'.repeat(40), 'zz', '%00'),
      fc.string({ maxLength: 50 }).map(encodeURIComponent)))
    .map(([k, v]) => `?${k}=${v}`) },
  { weight: 1, arbitrary: fc.array(fc.tuple(fc.string({ maxLength: 10 }), fc.string({ maxLength: 20 })), { maxLength: 6 })
    .map((pairs) => '?' + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join('&')) },
  { weight: 1, arbitrary: fc.constantFrom('?since_seq=1&since_seq=2', '?limit=500&cursor=zzzzzzzzzz', '?q=' + 'x'.repeat(5000), '?&&&==', '?%ZZ=%ZZ') },
);

/** Path segments and query strings beyond http-fuzz's: percent-encoded invalid UTF-8, numbers out of range. */
export const hostileSegment = fc.oneof(segment, fc.constantFrom('%ED%A0%80', '%FF', '%C0%80', '%E2%82', '%E0%80%AF', '%00%00', '%F0%9F%98'));
export const hostileQuery = fc.oneof(query, fc.tuple(fc.constantFrom('since_seq', 'since_canvas_seq', 'limit', 'cursor', 'q', 'vsn', 'apikey', 'access_token'),
  fc.constantFrom('99999999999', '%ED%A0%80', '%FF', '%C0%80', '-0', '1e3', '00000000000000000001', '%00', '9'.repeat(400)))
  .map(([k, v]) => `?${k}=${v}`));

/** Request targets Node's parser or @hono/node-server refuse (empty 400) before the app sees them. */
export const NOT_HTTP = /[^\x21-\x7e]|\\|^[^/]/;

export const ERROR_CODES = new Set(['invalid_input', 'unauthorized', 'forbidden', 'not_found', 'conflict', 'payload_too_large',
  'unsupported_media_type', 'rate_limited', 'internal', 'unavailable', 'timeout']);

const nested = (depth: number, open: string, leaf: string, close: string) => open.repeat(depth) + leaf + close.repeat(depth);

/** The arbitraries that need ids and tokens (read from `ctx` at generation time). */
export function httpArbitraries(ctx: HttpFuzzContext) {
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

  /** JSON text with keys in it that JavaScript treats specially (JSON.stringify would drop a literal __proto__). */
  const hostileObject = fc.array(fc.tuple(
    fc.constantFrom('__proto__', 'constructor', 'prototype', 'action', 'client_op_id', 'base_version', 'block_id', 'patch', 'ops', 'cursor',
      'typing', 'workspace_id', 'title', 'settings', 'refresh_token', 'content', 'type', 'y_order', 'parent_id', 'after_id', 'role', 'sub'),
    fc.oneof(fc.jsonValue({ maxDepth: 3 }), fc.constant({ polluted: true }), fc.constant({ prototype: { polluted: true } }))),
  { maxLength: 8 }).map((entries) => `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`).join(',')}}`);

  /** A well-formed request body for one endpoint with one field replaced by something of the wrong type. */
  const validBodies = (): Record<string, unknown>[] => [
    { action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: 'x' } } },
    { action: 'update', block_id: ctx.blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: 'y' } } },
    { action: 'delete', block_id: ctx.blockId, client_op_id: randomUUID(), base_version: 1 },
    { ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }] },
    { cursor: { x: 1, y: 2 }, typing: true },
    { workspace_id: ctx.workspaceId, title: 'hostile' },
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

  const deep = fc.tuple(fc.oneof(fc.integer({ min: 20, max: 120 }), fc.integer({ min: 120, max: 40_000 })), fc.constantFrom('array', 'object', 'cursor', 'content', 'settings', 'ops'))
    .map(([d, where]) => {
      const value = where === 'array' ? nested(d, '[', '1', ']') : nested(d, '{"a":', '1', '}');
      switch (where) {
        case 'cursor': return `{"cursor":${value},"typing":true}`;
        case 'content': return `{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":${value}}}`;
        case 'settings': return `{"workspace_id":"${ctx.workspaceId}","settings":${value}}`;
        case 'ops': return `{"ops":${nested(d, '[', '{}', ']')}}`;
        default: return value;
      }
    });

  const huge = fc.tuple(fc.integer({ min: 50_000, max: 400_000 }), fc.constantFrom('string', 'content', 'title', 'refresh', 'keys'))
    .map(([n, where]) => {
      switch (where) {
        case 'content': return JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: 'x'.repeat(n) } } });
        case 'title': return JSON.stringify({ workspace_id: ctx.workspaceId, title: 'x'.repeat(n) });
        case 'refresh': return JSON.stringify({ refresh_token: 'x'.repeat(n) });
        case 'keys': return JSON.stringify(Object.fromEntries(Array.from({ length: Math.floor(n / 20) }, (_, i) => [`k${i}`, i])));
        default: return JSON.stringify('x'.repeat(n));
      }
    });

  /** A JSON body with raw invalid UTF-8 bytes spliced into one string value. */
  const invalidUtf8 = fc.tuple(fc.nat(), fc.constantFrom(...INVALID_UTF8)).map(([i, bytes]) => {
    const body = JSON.stringify(validBodies()[i % validBodies().length]!);
    const at = body.indexOf('":"') + 3; // inside the first string value
    return at < 3 ? Buffer.concat([Buffer.from('{"a":"'), bytes, Buffer.from('"}')])
      : Buffer.concat([Buffer.from(body.slice(0, at)), bytes, Buffer.from(body.slice(at))]);
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

  /** The Authorization header: a valid viewer token most of the time, otherwise anything. */
  const authorization = fc.oneof(
    { weight: 8, arbitrary: fc.nat().map((i) => `Bearer ${ctx.viewerTokens[i % ctx.viewerTokens.length]}`) },
    { weight: 1, arbitrary: fc.constant(undefined) },
    { weight: 3, arbitrary: fc.constantFrom('expired', 'badSignature', 'algNone', 'wrongAudience', 'stranger', 'anon', 'ownerScopedElsewhere')
      .map((k) => `Bearer ${ctx.otherTokens[k]}`) },
    { weight: 2, arbitrary: fc.oneof(printable, printable.map((s) => `Bearer ${s}`), fc.constantFrom('Bearer', 'Bearer ', 'Bearer a.b.c',
      'Bearer ..', 'Basic dXNlcjpwYXNz', 'bearer  x', `Bearer ${'x'.repeat(8000)}`, 'Bearer eyJhbGciOiJIUzI1NiJ9.e30.')) },
    { weight: 1, arbitrary: fc.nat().map((i) => `Bearer ${ctx.viewerTokens[i % ctx.viewerTokens.length]}x`) },
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

  return { path, hostileObject, wrongTyped, deep, huge, invalidUtf8, body, contentType, authorization, extraHeaders, method };
}

/** `$canvas`, `$foreign`, `$block` in a path → the ids in `ctx`. */
export const fillPath = (ctx: HttpFuzzContext, p: string) =>
  p.replaceAll('$canvas', ctx.canvasId).replaceAll('$foreign', ctx.foreignCanvasId).replaceAll('$block', ctx.blockId);

/** The issue's invalid UTF-8: a lone FF, overlong NUL, overlong '/', a UTF-16 surrogate encoded in UTF-8, a truncated sequence. */
export const INVALID_UTF8: Buffer[] = [
  Buffer.from([0xff]), Buffer.from([0xc0, 0x80]), Buffer.from([0xe0, 0x80, 0xaf]), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from([0xe2, 0x82]),
];
