import { RealtimeClient } from '@supabase/realtime-js';
import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas, mutate as mutateAs } from '../helpers/fixtures.ts';
import { rawRequest } from '../helpers/http.ts';
import { subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// The one input policy (src/input-policy.ts) and the one database error mapping on every
// surface: HTTP (raw bytes and JSON escapes), H1 frames and realtime-js broadcast / presence.
// Each refusal has a stable code other than `internal`, names the field, and writes nothing.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub });
let server: Server;

beforeAll(async () => {
  server = await startServer(config);
}, 90_000);
afterAll(async () => {
  for (const c of realtimeClients) await c.disconnect().catch(() => {});
  await server?.stop();
  await db.close();
});

/** Rows a refused request must not have written: the canvas's blocks, its operation log, its presence, the workspace's canvases and titles. */
async function written(canvasId: string, workspaceId: string) {
  const [row] = await db.sql`
    select (select count(*) from app.blocks where canvas_id = ${canvasId})::int as blocks,
           (select count(*) from app.block_operations where canvas_id = ${canvasId})::int as operations,
           (select count(*) from app.presence where canvas_id = ${canvasId})::int as presence,
           (select count(*) from app.canvases where workspace_id = ${workspaceId})::int as canvases,
           (select string_agg(title, ',' order by title) from app.canvases where workspace_id = ${workspaceId}) as titles`;
  return row!;
}

const nest = (depth: number) => '{"a":'.repeat(depth) + '1' + '}'.repeat(depth);
const mutation = (opId: string, content: string) =>
  `{"action":"create","client_op_id":${opId},"patch":{"type":"text","content":${content}}}`;

// ---------------------------------------------------------------- HTTP

describe('HTTP', () => {
  async function send(method: string, path: string, body: string | Buffer | undefined, bearer?: string, extra: Record<string, string> = {}) {
    const headers: Record<string, string> = { 'content-type': 'application/json', ...extra };
    if (bearer) headers.authorization = `Bearer ${bearer}`;
    const res = await rawRequest(server.url, { method, path, headers, body });
    return { status: res.status, body: JSON.parse(res.text) };
  }
  const expectRefused = (res: { status: number; body: any }, field: string) => {
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.body.error).toMatchObject({ code: 'invalid_input', field });
    expect(res.body.error.message).toMatch(new RegExp(`^${field.replace(/\./g, '\\.')}: `));
  };

  const INVALID_UTF8: Record<string, number[]> = {
    'FF': [0xff], 'overlong C0 80': [0xc0, 0x80], 'overlong E0 80 AF': [0xe0, 0x80, 0xaf],
    'surrogate ED A0 80': [0xed, 0xa0, 0x80], 'truncated E2 82': [0xe2, 0x82],
  };
  const bytes = (before: string, bad: number[], after: string) => Buffer.concat([Buffer.from(before), Buffer.from(bad), Buffer.from(after)]);

  it.each(Object.entries(INVALID_UTF8))('raw invalid UTF-8 (%s) in content, client_op_id or a title is a 400 on field body, nothing written', async (_name, bad) => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    const mutate = `/api/v1/canvas/${canvasId}/mutate`;
    expectRefused(await send('POST', mutate, bytes(`{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":{"t":"a`, bad, 'b"}}}'), t), 'body');
    expectRefused(await send('POST', mutate, bytes('{"action":"create","client_op_id":"op-', bad, '","patch":{"type":"text"}}'), t), 'body');
    expectRefused(await send('POST', '/api/v1/canvas', bytes(`{"workspace_id":"${workspaceId}","title":"T`, bad, '"}'), t), 'body');
    expectRefused(await send('PATCH', `/api/v1/canvas/${canvasId}`, bytes('{"title":"T', bad, '"}'), t), 'body');
    expectRefused(await send('POST', `/functions/v1/canvas/${canvasId}/mutate`, bytes(`{"ops":[{"action":"create","client_op_id":"x`, bad, '"}]}'), t), 'body');
    expect(await written(canvasId, workspaceId)).toEqual(before);
  });

  it('a lone surrogate or NUL in any string or key is a 400 naming the field path, nothing written', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    const mutate = `/api/v1/canvas/${canvasId}/mutate`;
    const op = `"${randomUUID()}"`;
    expectRefused(await send('POST', mutate, mutation(op, '{"t":"\\ud800x"}'), t), 'patch.content.t');
    expectRefused(await send('POST', mutate, mutation(op, '{"t":"x\\udfff"}'), t), 'patch.content.t');
    expectRefused(await send('POST', mutate, mutation(op, '{"t":["ok","\\ud83d"]}'), t), 'patch.content.t.1');
    expectRefused(await send('POST', mutate, mutation(op, '{"t":"a\\u0000b"}'), t), 'patch.content.t');
    expectRefused(await send('POST', mutate, mutation(op, '{"k\\u0000":1}'), t), 'patch.content');
    expectRefused(await send('POST', mutate, mutation(op, '{"\\udc00":1}'), t), 'patch.content');
    expectRefused(await send('POST', mutate, mutation('"a\\u0000"', '{}'), t), 'client_op_id');
    expectRefused(await send('POST', mutate, `{"ops":[{"action":"create","client_op_id":"\\ud800","patch":{"type":"text"}}]}`, t), 'ops.0.client_op_id');
    expectRefused(await send('POST', '/api/v1/canvas', `{"workspace_id":"${workspaceId}","title":"T\\ud800"}`, t), 'title');
    expectRefused(await send('PATCH', `/api/v1/canvas/${canvasId}`, '{"title":"T\\u0000"}', t), 'title');
    expectRefused(await send('PATCH', `/api/v1/canvas/${canvasId}`, '{"settings":{"\\u0000":1}}', t), 'settings');
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"x":"\\udbff"}}', t), 'cursor.x');
    // a well-formed pair is a character like any other: accepted and stored as sent
    const ok = await send('POST', mutate, mutation(op, '{"t":"\\ud83d\\ude00\\u00e9"}'), t);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.block.content).toEqual({ t: '\u{1F600}é' });
    const after = await written(canvasId, workspaceId);
    expect({ ...after, blocks: after.blocks - 1, operations: after.operations - 1 }).toEqual(before);
  });

  it('client_op_id "\\ud800x" then "\\udfffx": both refused, never merged into one operation', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    for (const opId of ['"\\ud800x"', '"\\udfffx"']) {
      expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/mutate`, mutation(opId, '{"t":"x"}'), t), 'client_op_id');
    }
    expect(await written(canvasId, workspaceId)).toEqual(before);
    expect((await db.sql`select count(*)::int as n from app.block_operations where client_op_id like '%x' and canvas_id = ${canvasId}`)[0]!.n).toBe(0);
  });

  it('nesting of 5,000 and 20,000 levels is a 400 naming the field, and the server keeps serving', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    for (const depth of [65, 5_000, 20_000]) {
      expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/mutate`, mutation(`"${randomUUID()}"`, nest(depth)), t), 'patch.content');
      expectRefused(await send('PATCH', `/api/v1/canvas/${canvasId}`, `{"settings":${nest(depth)}}`, t), 'settings');
    }
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/mutate`, `{"ops":${'['.repeat(20_000)}${']'.repeat(20_000)}}`, t), 'ops.0.0');
    expect(await written(canvasId, workspaceId)).toEqual(before);
    expect((await send('GET', `/api/v1/canvas/${canvasId}`, undefined, t)).status).toBe(200);
  });

  it('integers are range-checked before SQL: base_version over int4, since_seq over 2^53', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/mutate`,
      `{"action":"update","block_id":"${randomUUID()}","client_op_id":"${randomUUID()}","base_version":99999999999,"patch":{"content":{}}}`, t), 'base_version');
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/mutate`,
      `{"ops":[{"action":"update","block_id":"${randomUUID()}","client_op_id":"${randomUUID()}","base_version":2147483648}]}`, t), 'ops.0.base_version');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}/snapshot?since_seq=1e30`, undefined, t), 'since_seq');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}/blocks?limit=99999999999`, undefined, t), 'limit');
    expect(await written(canvasId, workspaceId)).toEqual(before);
  });

  it('a number a double cannot hold exactly is a 400 naming the field (send it as a string); an update carrying 1e400 changes nothing', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const mutate = `/api/v1/canvas/${canvasId}/mutate`;
    const created = await send('POST', mutate, mutation(`"${randomUUID()}"`, '{"big":"kept","neg":"kept","n":1}'), t);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const blockId: string = created.body.block_id;
    const row = async () => (await db.sql`select content, version from app.blocks where block_id = ${blockId}`)[0];
    const canvasRow = async () => (await db.sql`select title, settings, version from app.canvases where canvas_id = ${canvasId}`)[0];
    const [blockBefore, canvasBefore, before] = [await row(), await canvasRow(), await written(canvasId, workspaceId)];
    const update = (content: string) =>
      `{"action":"update","block_id":"${blockId}","client_op_id":"${randomUUID()}","base_version":1,"patch":{"content":${content}}}`;
    const refusedNumber = (res: { status: number; body: any }, field: string) => {
      expectRefused(res, field);
      expect(res.body.error.message).toMatch(/double.*send it as a string/);
    };
    // JSON.parse reads 1e400 as Infinity, which would reach the merge patch as null and delete the keys
    refusedNumber(await send('POST', mutate, update('{"big":1e400,"neg":-1e400}'), t), 'patch.content.big');
    refusedNumber(await send('POST', mutate, update('{"neg":-1e400}'), t), 'patch.content.neg');
    refusedNumber(await send('POST', mutate, update('{"n":12345678901234567890123}'), t), 'patch.content.n');
    refusedNumber(await send('POST', mutate, update('{"pi":3.141592653589793238462643383279}'), t), 'patch.content.pi');
    refusedNumber(await send('POST', mutate, update('{"tiny":[0,1e-400]}'), t), 'patch.content.tiny.1');
    refusedNumber(await send('POST', mutate, mutation(`"${randomUUID()}"`, '{"big":1e400}'), t), 'patch.content.big');
    refusedNumber(await send('POST', mutate, `{"ops":[${update('{"big":1e400}')}]}`, t), 'ops.0.patch.content.big');
    refusedNumber(await send('POST', `/functions/v1/canvas/${canvasId}/mutate`, update('{"big":-1e400}'), t), 'patch.content.big');
    refusedNumber(await send('PATCH', `/api/v1/canvas/${canvasId}`, '{"settings":{"zoom":1e400}}', t), 'settings.zoom');
    refusedNumber(await send('POST', '/api/v1/canvas', `{"workspace_id":"${workspaceId}","title":"Big","settings":{"zoom":12345678901234567890123}}`, t), 'settings.zoom');
    refusedNumber(await send('POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"x":1e400}}', t), 'cursor.x');
    expect(await row()).toEqual(blockBefore);
    expect(await canvasRow()).toEqual(canvasBefore);
    expect(await written(canvasId, workspaceId)).toEqual(before);
    // numbers a double holds exactly are taken, whatever their spelling
    const ok = await send('POST', mutate, update('{"a":1e5,"b":-2.5E-3,"c":123456789012345,"d":9007199254740991,"e":0.1}'), t);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body.block.content).toEqual({ big: 'kept', neg: 'kept', n: 1, a: 100000, b: -0.0025, c: 123456789012345, d: 9007199254740991, e: 0.1 });
  });

  it('an object key __proto__ is a 400 naming it, never silently dropped', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    const mutate = `/api/v1/canvas/${canvasId}/mutate`;
    expectRefused(await send('POST', mutate, mutation(`"${randomUUID()}"`, '{"__proto__":{"polluted":true},"ok":1}'), t), 'patch.content.__proto__');
    expectRefused(await send('POST', mutate, mutation(`"${randomUUID()}"`, '{"list":[{"__proto__":1}]}'), t), 'patch.content.list.0.__proto__');
    expectRefused(await send('POST', mutate, `{"ops":[${mutation(`"${randomUUID()}"`, '{"__proto__":{}}')}]}`, t), 'ops.0.patch.content.__proto__');
    expectRefused(await send('PATCH', `/api/v1/canvas/${canvasId}`, '{"settings":{"__proto__":{"zoom":2}}}', t), 'settings.__proto__');
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"__proto__":{"x":1}}}', t), 'cursor.__proto__');
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"name":"a\\u2028b"}}', t), 'cursor.name');
    expectRefused(await send('POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"color":"url(https://tracker.example/p.png)"}}', t), 'cursor.color');
    expectRefused(await send('POST', mutate, `{"__proto__":{"action":"create"},${mutation(`"${randomUUID()}"`, '{}').slice(1)}`, t), '__proto__');
    expect(await written(canvasId, workspaceId)).toEqual(before);
  });

  it('a JSON body in a charset other than UTF-8, compressed, or not JSON at all, is a 415 naming the header on every endpoint, nothing written', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const { anon } = await apiKeys(config);
    const before = await written(canvasId, workspaceId);
    const email = `charset-${randomUUID()}@example.com`;
    const mutate = mutation(`"${randomUUID()}"`, '{"t":"é"}');
    const bodies: [string, string, string][] = [
      ['POST', `/api/v1/canvas/${canvasId}/mutate`, mutate],
      ['POST', `/functions/v1/canvas/${canvasId}/mutate`, `{"ops":[${mutate}]}`],
      ['PATCH', `/api/v1/canvas/${canvasId}`, '{"title":"read as UTF-8"}'],
      ['POST', '/api/v1/canvas', `{"workspace_id":"${workspaceId}","title":"read as UTF-8"}`],
      ['POST', `/api/v1/canvas/${canvasId}/presence`, '{"cursor":{"x":1}}'],
      ['POST', '/api/v1/workspaces', '{"name":"read as UTF-8"}'],
    ];
    const refused = (res: { status: number; body: any }, field = 'content-type') => {
      expect(res.status, JSON.stringify(res.body)).toBe(415);
      expect(res.body.error).toMatchObject({ code: 'unsupported_media_type', field });
      expect(res.body.error.message).toMatch(new RegExp(`^${field}: `));
    };
    // (two charsets, one of them not UTF-8, and an unterminated quoted string are refused too)
    for (const contentType of ['application/json; charset=utf-16', 'application/json;charset="ISO-8859-1"', 'application/json; charset=', 'text/plain',
      'application/json; charset=utf-8; charset=utf-16', 'application/json; charset="utf-8']) {
      for (const [method, path, body] of bodies) {
        refused(await send(method, path, body, t, { 'content-type': contentType }));
        // the bytes a UTF-16 client would send, too
        if (contentType.includes('utf-16')) refused(await send(method, path, Buffer.from(`\ufeff${body}`, 'utf16le'), t, { 'content-type': contentType }));
      }
      // /auth/v1 answers in GoTrue's shape, with the same status and code (a media type other
      // than JSON it reads as JSON, as GoTrue does: only the charset is about the bytes)
      if (contentType === 'text/plain') continue;
      const signUp = await rawRequest(server.url, { method: 'POST', path: '/auth/v1/signup', headers: { apikey: anon, 'content-type': contentType },
        body: JSON.stringify({ email, password: 'a long enough password' }) });
      expect(signUp.status, signUp.text).toBe(415);
      expect(JSON.parse(signUp.text)).toMatchObject({ error_code: 'unsupported_media_type' });
    }
    // a content coding: the body is read as sent, so gzip bytes were "not valid UTF-8" and a plain
    // body declared gzip was applied as if the header were not there
    for (const coding of ['gzip', 'br', 'identity, gzip']) {
      for (const [method, path, body] of bodies) {
        refused(await send(method, path, body, t, { 'content-encoding': coding }), 'content-encoding');
        refused(await send(method, path, gzipSync(body), t, { 'content-encoding': coding }), 'content-encoding');
      }
      const signIn = await rawRequest(server.url, { method: 'POST', path: '/auth/v1/token?grant_type=password',
        headers: { apikey: anon, 'content-type': 'application/json', 'content-encoding': coding }, body: gzipSync(JSON.stringify({ email, password: 'x' })) });
      expect(signIn.status, signIn.text).toBe(415);
      expect(signIn.headers['accept-encoding']).toBe('identity');
      expect(JSON.parse(signIn.text)).toMatchObject({ error_code: 'unsupported_media_type' });
    }
    const gzipped = await rawRequest(server.url, { method: 'POST', path: `/api/v1/canvas/${canvasId}/mutate`,
      headers: { authorization: `Bearer ${t}`, 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: gzipSync(mutate) });
    expect(gzipped.headers['accept-encoding']).toBe('identity');
    expect(await written(canvasId, workspaceId)).toEqual(before);
    expect((await db.sql`select count(*)::int as n from auth.users where email = ${email}`)[0]!.n).toBe(0);
    expect((await db.sql`select count(*)::int as n from app.workspaces where created_by = ${users.owner!} and name = 'read as UTF-8'`)[0]!.n).toBe(0);
    // UTF-8 named as such, in any spelling RFC 9110 allows, is read: quoted, with a quoted-pair,
    // by its IANA alias, after a parameter whose quoted value holds a semicolon, with an empty
    // parameter after it or whitespace before the semicolon (all 415: the check split the header
    // at every semicolon and only stripped the quotes; zod-openapi's media type gate refused the
    // last three by a regular expression over the parameters, patched to read the media type)
    for (const contentType of ['application/json; charset=utf-8', 'application/json; charset="UTF-8"', 'application/json;charset=UTF8',
      'application/json; charset="utf\\-8"', 'application/json; Charset=csUTF8', 'application/json; foo="a;charset=latin1"; charset=utf-8',
      'application/json; charset=utf-8;', 'application/json ; charset=utf-8']) {
      expect((await send('POST', `/api/v1/canvas/${canvasId}/mutate`, mutation(`"${randomUUID()}"`, '{"t":"é"}'), t, { "content-type": contentType })).status, contentType).toBe(200);
    }
    expect((await send('POST', `/api/v1/canvas/${canvasId}/mutate`, mutation(`"${randomUUID()}"`, '{"t":"é"}'), t, { 'content-encoding': 'identity' })).status).toBe(200);
  });

  it('a transfer coding other than chunked is 501 not_implemented naming the header on every surface (RFC 9112 §6.1), nothing written', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const { anon } = await apiKeys(config);
    const before = await written(canvasId, workspaceId);
    const email = `transfer-${randomUUID()}@example.com`;
    /** One request, framed by hand (Node's client would reframe it), on its own connection: status, headers, body. */
    const framed = (head: string, body: Buffer) => new Promise<{ status: number; head: string; body: any }>((resolve, reject) => {
      const socket = net.connect(Number(new URL(server.url).port), '127.0.0.1');
      const chunks: Buffer[] = [];
      socket.on('data', (c) => chunks.push(c));
      socket.on('error', reject);
      // the answer closes the connection: nothing of the request is read as a next one
      socket.on('close', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        const at = text.indexOf('\r\n\r\n');
        resolve({ status: Number(text.slice(9, 12)), head: text.slice(0, at), body: JSON.parse(text.slice(at + 4)) });
      });
      socket.write(Buffer.concat([Buffer.from(head), Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]));
    });
    const request = (method: string, path: string, coding: string, body: Buffer, headers: Record<string, string>) =>
      framed(`${method} ${path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: ${coding}\r\n`
        + `${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`, body);
    const mutate = mutation(`"${randomUUID()}"`, '{"t":"é"}');
    const bodies: [string, string, string][] = [
      ['POST', `/api/v1/canvas/${canvasId}/mutate`, mutate],
      ['POST', `/functions/v1/canvas/${canvasId}/mutate`, `{"ops":[${mutate}]}`],
      ['PATCH', `/api/v1/canvas/${canvasId}`, '{"title":"read as chunked"}'],
      ['POST', '/api/v1/workspaces', '{"name":"read as chunked"}'],
    ];
    // `gzip, chunked` with a plain body was applied as if gzip were not there (200), with a gzip
    // body refused as invalid UTF-8 (400): neither says the coding is not understood
    for (const coding of ['gzip, chunked', 'deflate,chunked', 'identity, chunked', 'x-custom, chunked', 'GZIP , Chunked']) {
      for (const [method, path, body] of bodies) {
        for (const bytes of [Buffer.from(body), gzipSync(body)]) {
          const res = await request(method, path, coding, bytes, { authorization: `Bearer ${t}` });
          expect(res.status, `${coding} ${method} ${path}: ${JSON.stringify(res.body)}`).toBe(501);
          expect(res.body.error).toMatchObject({ code: 'not_implemented', field: 'transfer-encoding' });
          expect(res.body.error.message).toMatch(/^transfer-encoding: /);
          expect(res.head).toMatch(/\r\nconnection: close\r\n/i);
        }
      }
      // GoTrue's shape under /auth/v1, PostgREST's under /rest/v1: the same status and code
      const signUp = await request('POST', '/auth/v1/signup', coding, Buffer.from(JSON.stringify({ email, password: 'a long enough password' })), { apikey: anon });
      expect(signUp.status).toBe(501);
      expect(signUp.body).toMatchObject({ error_code: 'not_implemented' });
      const rest = await request('POST', '/rest/v1/rpc/mutate', coding, Buffer.from('{}'), { apikey: anon });
      expect(rest.status).toBe(501);
      expect(rest.body).toMatchObject({ code: 'not_implemented' });
    }
    // a last coding other than chunked, or chunked twice: the length cannot be known (§6.3), 400
    // naming the header (it was "malformed HTTP request", field request)
    for (const coding of ['gzip', 'chunked, gzip', 'chunked, chunked']) {
      const res = await request('PATCH', `/api/v1/canvas/${canvasId}`, coding, Buffer.from('{"title":"read as chunked"}'), { authorization: `Bearer ${t}` });
      expect(res.status, coding).toBe(400);
      expect(res.body.error).toMatchObject({ code: 'invalid_input', field: 'transfer-encoding' });
    }
    expect(await written(canvasId, workspaceId)).toEqual(before);
    expect((await db.sql`select count(*)::int as n from auth.users where email = ${email}`)[0]!.n).toBe(0);
    expect((await db.sql`select count(*)::int as n from app.workspaces where created_by = ${users.owner!} and name = 'read as chunked'`)[0]!.n).toBe(0);
    // chunked alone, in any case, is read
    for (const coding of ['chunked', 'Chunked']) {
      const res = await request('POST', `/api/v1/canvas/${canvasId}/mutate`, coding, Buffer.from(mutation(`"${randomUUID()}"`, '{"t":"é"}')),
        { authorization: `Bearer ${t}`, connection: 'close' });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
    }
  });

  it('a batch over 100 ops, or ops that is not an array, is refused on field ops', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    const before = await written(canvasId, workspaceId);
    const mutate = `/api/v1/canvas/${canvasId}/mutate`;
    const op = () => JSON.parse(mutation(`"${randomUUID()}"`, '{}'));
    expectRefused(await send('POST', mutate, JSON.stringify({ ops: Array.from({ length: 101 }, op) }), t), 'ops');
    expectRefused(await send('POST', mutate, JSON.stringify({ ops: { 0: op() } }), t), 'ops');
    expectRefused(await send('POST', mutate, JSON.stringify({ client_op_id: randomUUID() }), t), 'action');
    expect(await written(canvasId, workspaceId)).toEqual(before);
  });

  it('percent-encoded invalid UTF-8 or NUL in the path or a query parameter is a 400, not a 404', async () => {
    const { canvasId, users } = await createCanvas(db.sql);
    const t = await token(users.owner!);
    expectRefused(await send('GET', '/api/v1/canvas/%FF', undefined, t), 'path');
    expectRefused(await send('GET', '/api/v1/canvas/%FF', undefined), 'path');
    expectRefused(await send('GET', `/functions/v1/canvas/${canvasId}/blocks/%ED%A0%80`, undefined, t), 'path');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}%00`, undefined, t), 'path');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}/search?q=%C0%80`, undefined, t), 'query.q');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}/search?q=a%00b`, undefined, t), 'query.q');
    expectRefused(await send('GET', `/api/v1/canvas/${canvasId}/blocks?cursor=%E2%82`, undefined, t), 'query.cursor');
    // well-formed percent-encoding is decoded as usual
    expect((await send('GET', `/api/v1/canvas/${canvasId}/search?q=caf%C3%A9`, undefined, t)).status).toBe(200);
  });
});

// ---------------------------------------------------------------- H1

type Conn = { ws: WebSocket; inbox: ServerMessage[]; closed: Promise<number>; next(pred: (m: any) => boolean, ms?: number): Promise<any>; sendText(text: string): void };

async function openH1(canvasId: string, userId: string): Promise<Conn> {
  const ws = new WebSocket(`${server.url.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${await token(userId)}`);
  const inbox: ServerMessage[] = [];
  ws.on('message', (d) => inbox.push(JSON.parse(String(d))));
  const closed = new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  let cursor = 0;
  return {
    ws, inbox, closed,
    sendText: (text) => ws.send(text),
    async next(pred, ms = 5000) {
      let found: any;
      await until(() => {
        while (cursor < inbox.length) {
          const m = inbox[cursor++];
          if (pred(m)) { found = m; return true; }
        }
        return false;
      }, ms, `an H1 frame; got ${JSON.stringify(inbox.slice(-3)).slice(0, 500)}`);
      return found;
    },
  };
}

const isError = (m: any) => m.type === 'error';

describe('H1 frames', () => {
  let canvasId: string, workspaceId: string, users: Record<string, string>, c: Conn;
  beforeAll(async () => {
    ({ canvasId, workspaceId, users } = await createCanvas(db.sql, ['editor']));
    c = await openH1(canvasId, users.editor!);
    await c.next((m) => m.type === 'hello');
  });
  afterAll(() => c?.ws.close());

  const op = () => `"${randomUUID()}"`;
  const mutate = (opId: string, content: string, extra = '') =>
    `{"type":"mutate","client_op_id":${opId},"action":"create"${extra},"patch":{"type":"text","content":${content}}}`;
  // one frame per message under the socket's rate limit (10/s): a pause between them
  const frames: [string, string, string, string][] = [
    ['NUL in content', mutate(op(), '{"t":"a\\u0000"}'), 'invalid_input', 'patch.content.t'],
    ['NUL in a key', mutate(op(), '{"a\\u0000b":1}'), 'invalid_input', 'patch.content'],
    ['NUL in client_op_id', mutate('"op\\u0000"', '{}'), 'invalid_input', 'client_op_id'],
    ['a lone surrogate in content', mutate(op(), '{"t":"\\ud800x"}'), 'invalid_input', 'patch.content.t'],
    ['a lone surrogate in a key', mutate(op(), '{"\\udfff":1}'), 'invalid_input', 'patch.content'],
    ['nesting of 5,000 levels', mutate(op(), nest(5_000)), 'invalid_input', 'patch.content'],
    ['nesting of 20,000 levels', mutate(op(), nest(20_000)), 'invalid_input', 'patch.content'],
    ['base_version 99999999999', `{"type":"mutate","client_op_id":${op()},"action":"update","block_id":"${randomUUID()}","base_version":99999999999,"patch":{"content":{}}}`, 'invalid_message', 'base_version'],
    ['since_canvas_seq over 2^53, one more than a double holds', '{"type":"resume","since_canvas_seq":9007199254740993}', 'invalid_input', 'since_canvas_seq'],
    ['a cursor over 1 KB', `{"type":"presence","cursor":{"x":"${'a'.repeat(1100)}"}}`, 'invalid_input', 'cursor'],
    ['1e400 in content', mutate(op(), '{"big":1e400}'), 'invalid_input', 'patch.content.big'],
    ['a 23-digit integer in content', mutate(op(), '{"n":12345678901234567890123}'), 'invalid_input', 'patch.content.n'],
    ['pi to 31 places in content', mutate(op(), '{"pi":3.141592653589793238462643383279}'), 'invalid_input', 'patch.content.pi'],
    ['a __proto__ key in content', mutate(op(), '{"__proto__":{"polluted":true},"ok":1}'), 'invalid_input', 'patch.content.__proto__'],
    ['1e400 in a presence cursor', '{"type":"presence","cursor":{"x":1e400}}', 'invalid_input', 'cursor.x'],
    // the presence state every member's client shows (internal.presence_state_error): free text before
    ['a presence name with a right-to-left override', '{"type":"presence","cursor":{"name":"evil\\u202etxt.exe"}}', 'invalid_input', 'cursor.name'],
    ['a presence name with an escape sequence', '{"type":"presence","cursor":{"name":"\\u001b[2Jx"}}', 'invalid_input', 'cursor.name'],
    ['a presence color that is a second declaration', '{"type":"presence","cursor":{"color":"red;position:fixed"}}', 'invalid_input', 'cursor.color'],
    ['a presence typing that is not a boolean', '{"type":"presence","cursor":{"typing":"yes"}}', 'invalid_input', 'cursor.typing'],
    // a field the protocol does not have is refused by name, not ignored (a misspelt since_canvas_seq
    // meant a resume from 0)
    ['a resume with canvas_seq (for since_canvas_seq)', '{"type":"resume","canvas_seq":5}', 'invalid_message', 'canvas_seq'],
    ['a mutate with a canvas_id of its own', `{"type":"mutate","client_op_id":${op()},"action":"create","canvas_id":"${randomUUID()}","patch":{"type":"text"}}`, 'invalid_message', 'canvas_id'],
    ['a ping with a payload', '{"type":"ping","ref":1}', 'invalid_message', 'ref'],
  ];

  it.each(frames)('%s: an error frame with a stable code naming the field, nothing written', async (_name, text, code, field) => {
    const before = await written(canvasId, workspaceId);
    await new Promise((r) => setTimeout(r, 120));
    c.sendText(text);
    const error = await c.next(isError);
    expect(error).toMatchObject({ code, field });
    expect(error.message).toMatch(new RegExp(`^${field.replace(/\./g, '\\.')}:? `));
    const opId = (JSON.parse(text) as { client_op_id?: string }).client_op_id;
    if (opId !== undefined) expect(error.client_op_id).toBe(opId); // the client can settle that operation
    expect(await written(canvasId, workspaceId)).toEqual(before);
    // the socket is fine: the next message is served
    c.sendText('{"type":"ping"}');
    await c.next((m) => m.type === 'pong');
  });

  it('client_op_id "\\ud800x" then "\\udfffx": both refused, each naming its own operation', async () => {
    const before = await written(canvasId, workspaceId);
    for (const opId of ['\ud800x', '\udfffx']) {
      await new Promise((r) => setTimeout(r, 120));
      c.sendText(mutate(JSON.stringify(opId), '{"t":"x"}'));
      expect(await c.next(isError)).toMatchObject({ code: 'invalid_input', field: 'client_op_id', client_op_id: opId });
    }
    expect(await written(canvasId, workspaceId)).toEqual(before);
    expect(c.inbox.filter((m) => m.type === 'ack')).toEqual([]);
  });

  it('an update carrying 1e400 is refused for its operation and leaves the block as it was', async () => {
    const blockId = (await mutateAs(db.sql, users.editor!, canvasId, { action: 'create', patch: { type: 'text', content: { big: 'kept', neg: 'kept' } } })).block_id!;
    const row = async () => (await db.sql`select content, version from app.blocks where block_id = ${blockId}`)[0];
    const before = await row();
    expect(before).toMatchObject({ content: { big: 'kept', neg: 'kept' }, version: 1 });
    const opId = randomUUID();
    await new Promise((r) => setTimeout(r, 120));
    c.sendText(`{"type":"mutate","client_op_id":"${opId}","action":"update","block_id":"${blockId}","base_version":1,"patch":{"content":{"big":1e400,"neg":-1e400}}}`);
    const error = await c.next(isError);
    expect(error).toMatchObject({ code: 'invalid_input', field: 'patch.content.big', client_op_id: opId });
    expect(error.message).toMatch(/send it as a string/);
    expect(await row()).toEqual(before);
    expect(c.inbox.filter((m: any) => m.type === 'ack' && m.client_op_id === opId)).toEqual([]);
  });

  it.each(['resume', 'presence'])('%s after the member was removed: forbidden and the 4403 close, never internal', async (type) => {
    const room = await createCanvas(db.sql, ['editor']);
    const s = await openH1(room.canvasId, room.users.editor!);
    await s.next((m) => m.type === 'hello');
    await db.sql`delete from app.workspace_members where workspace_id = ${room.workspaceId} and user_id = ${room.users.editor!}`;
    s.sendText(type === 'resume' ? '{"type":"resume","since_canvas_seq":0}' : '{"type":"presence","cursor":{"x":1},"typing":true}');
    // the database refuses the frame (not_found: it does not tell a non-member the canvas exists)
    // or the access re-check got there first (forbidden); either way the 4403 close follows
    expect(['forbidden', 'not_found']).toContain((await s.next(isError)).code);
    expect(await s.closed).toBe(4403);
    expect(s.inbox.filter((m: any) => m.type === 'error').map((m: any) => m.code).every((code) => code === 'forbidden' || code === 'not_found')).toBe(true);
    expect(s.inbox.filter((m: any) => m.type === 'error' && m.code === 'forbidden')).toHaveLength(1);
    expect((await db.sql`select count(*)::int as n from app.presence where canvas_id = ${room.canvasId}`)[0]!.n).toBe(0);
  });
});

// ---------------------------------------------------------------- realtime-js

const realtimeClients: RealtimeClient[] = [];

/**
 * A JSON number no JavaScript value holds (1e400 would be stringified as null): realtime-js sends
 * it as this string, which the recording transport writes on the wire as the bare number, as a
 * client in another language would send it.
 */
const rawNumber = (text: string) => `~raw:${text}~`;
const RAW_NUMBER = /"~raw:([-+.0-9eE]+)~"/g;

/** A real realtime-js client whose transport also records the server's text frames (to read phx_reply reasons). */
function recordingClient(apikey: string, vsn: string) {
  const frames: { ref: string | null; topic: string; event: string; payload: any }[] = [];
  class RecordingSocket extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols);
      this.on('message', (data, isBinary) => {
        if (isBinary) return;
        const f = JSON.parse(String(data));
        frames.push(Array.isArray(f) ? { ref: f[1], topic: f[2], event: f[3], payload: f[4] } : f);
      });
    }
    override send(data: any, ...rest: any[]): void {
      // text frames, and the JSON payload at the end of a binary broadcast (vsn 2.0.0 kind 3: no length field)
      const wire = typeof data === 'string' ? data.replace(RAW_NUMBER, '$1')
        : Buffer.from(Buffer.from(data).toString('latin1').replace(RAW_NUMBER, '$1'), 'latin1');
      (super.send as (...args: any[]) => void)(wire, ...rest);
    }
  }
  const client = new RealtimeClient(`${server.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey }, transport: RecordingSocket as any, vsn, heartbeatIntervalMs: 5000, timeout: 5000,
  });
  realtimeClients.push(client);
  const reasons = () => frames.filter((f) => f.event === 'phx_reply' && f.payload?.status === 'error').map((f) => String(f.payload.response?.reason));
  const systemErrors = () => frames.filter((f) => f.event === 'system' && f.payload?.status === 'error').map((f) => String(f.payload.message));
  return { client, reasons, systemErrors, frames };
}

describe.each(['1.0.0', '2.0.0'])('realtime-js vsn %s', (vsn) => {
  it('a broadcast payload with NUL, a lone surrogate or deep nesting is refused naming the field, and never relayed', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql, ['editor']);
    const sender = recordingClient(await token(users.editor!), vsn);
    const channel = sender.client.channel(`canvas:${canvasId}`, { config: { private: true, broadcast: { ack: true } } });
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
    const receiver = recordingClient(await token(users.owner!), vsn);
    const got: any[] = [];
    const listening = receiver.client.channel(`canvas:${canvasId}`, { config: { private: true } }).on('broadcast', { event: 'note' }, (m) => got.push(m.payload));
    expect((await subscribed(listening)).status).toBe('SUBSCRIBED');
    const before = await written(canvasId, workspaceId);

    const deep = JSON.parse('['.repeat(100) + ']'.repeat(100));
    const cases: [unknown, string][] = [
      [{ t: 'a\u0000b' }, 'payload.payload.t'],
      [{ t: '\ud800x' }, 'payload.payload.t'],
      [{ ['\udfff']: 1 }, 'payload.payload'],
      [{ d: deep }, 'payload.payload.d'],
    ];
    for (const [payload, field] of cases) {
      expect(await channel.send({ type: 'broadcast', event: 'note', payload })).toBe('error');
      await until(() => sender.reasons().some((r) => r.startsWith(`invalid_input: ${field}: `)), 5000, `the refusal naming ${field}`);
    }
    expect(await channel.send({ type: 'broadcast', event: 'note', payload: { t: 'fine' } })).toBe('ok');
    await until(() => got.length > 0, 5000, 'the valid broadcast');
    expect(got).toEqual([{ t: 'fine' }]);
    expect(sender.reasons().filter((r) => /internal/.test(r))).toEqual([]);

    // numbers a double cannot hold exactly, and a __proto__ key (JSON.stringify writes an own one)
    const exact: [unknown, string][] = [
      [{ big: rawNumber('1e400') }, 'payload.payload.big'],
      [{ n: rawNumber('12345678901234567890123') }, 'payload.payload.n'],
      [{ pi: [rawNumber('3.141592653589793238462643383279')] }, 'payload.payload.pi.0'],
      [JSON.parse('{"__proto__":{"polluted":true},"ok":1}'), 'payload.payload.__proto__'],
    ];
    for (const [payload, field] of exact) {
      expect(await channel.send({ type: 'broadcast', event: 'note', payload })).toBe('error');
      await until(() => sender.reasons().some((r) => r.startsWith(`invalid_input: ${field}: `)), 5000, `the refusal naming ${field}`);
    }
    expect(sender.reasons().find((r) => r.startsWith('invalid_input: payload.payload.big: '))).toMatch(/send it as a string/);
    expect(await channel.send({ type: 'broadcast', event: 'note', payload: { t: 'after' } })).toBe('ok');
    await until(() => got.length > 1, 5000, 'the next valid broadcast');
    expect(got).toEqual([{ t: 'fine' }, { t: 'after' }]);

    // without ack nothing waits for a reply: the refusal comes as a system message on the channel
    const noAck = recordingClient(await token(users.editor!), vsn);
    const plain = noAck.client.channel(`canvas:${canvasId}`, { config: { private: true } });
    expect((await subscribed(plain)).status).toBe('SUBSCRIBED');
    await plain.send({ type: 'broadcast', event: 'note', payload: { t: 'x\u0000' } });
    await until(() => noAck.systemErrors().some((m) => m.startsWith('invalid_input: payload.payload.t: ')), 5000, 'the system message');
    expect(await written(canvasId, workspaceId)).toEqual(before);
  });

  it('a presence meta with NUL or a cursor over 1 KB is refused naming the field, not tracked, nothing written', async () => {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql, ['editor']);
    const tracker = recordingClient(await token(users.editor!), vsn);
    const channel = tracker.client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'me' } } });
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
    const watcher = recordingClient(await token(users.owner!), vsn).client.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: 'watcher' } } });
    const joins: any[] = [];
    watcher.on('presence', { event: 'join' }, ({ key, newPresences }) => joins.push({ key, metas: newPresences }));
    expect((await subscribed(watcher)).status).toBe('SUBSCRIBED');
    const before = await written(canvasId, workspaceId);

    expect(await channel.track({ cursor: { x: 'a\u0000' } })).toBe('error');
    await until(() => tracker.reasons().some((r) => r.startsWith('invalid_input: payload.payload.cursor.x: ')), 5000, 'the NUL refusal');
    expect(await channel.track({ name: '\udbff' })).toBe('error');
    await until(() => tracker.reasons().some((r) => r.startsWith('invalid_input: payload.payload.name: ')), 5000, 'the surrogate refusal');
    expect(await channel.track({ cursor: { x: rawNumber('1e400') } })).toBe('error');
    await until(() => tracker.reasons().some((r) => r.startsWith('invalid_input: payload.payload.cursor.x: ')), 5000, 'the 1e400 refusal');
    expect(await channel.track({ cursor: { x: rawNumber('-12345678901234567890123') } })).toBe('error');
    await until(() => tracker.reasons().filter((r) => r.startsWith('invalid_input: payload.payload.cursor.x: ')).length === 3, 5000, 'the 23-digit refusal');
    expect(await channel.track(JSON.parse('{"__proto__":{"cursor":{"x":1}}}'))).toBe('error');
    await until(() => tracker.reasons().some((r) => r.startsWith('invalid_input: payload.payload.__proto__: ')), 5000, 'the __proto__ refusal');
    expect(await channel.track({ cursor: { x: 'a'.repeat(1100) } })).toBe('error');
    await until(() => tracker.reasons().some((r) => r.startsWith('invalid_input: cursor: ')), 5000, 'the database refusal of the cursor');
    expect(await written(canvasId, workspaceId)).toEqual(before);

    expect(await channel.track({ cursor: { x: 1 } })).toBe('ok');
    await until(() => joins.some((j) => j.key === 'me'), 5000, 'the valid track');
    expect(joins.filter((j) => j.key === 'me').flatMap((j) => j.metas.map((m: any) => m.cursor))).toEqual([{ x: 1 }]);
    expect(tracker.reasons().filter((r) => /internal/.test(r))).toEqual([]);
  });

  it('a presence name or color another member would show wrongly (controls, bidi overrides, CSS beyond a color), or a state that is not an object, is refused naming the field, never relayed', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const tracker = recordingClient(await token(users.editor!), vsn);
    // public and private rooms alike: the public one never reaches api.update_presence
    for (const priv of [true, false]) {
      const topic = `canvas:${canvasId}:${priv ? 'private' : 'public'}`;
      const channel = tracker.client.channel(priv ? `canvas:${canvasId}` : topic, { config: { private: priv, presence: { key: `me-${priv}` } } });
      expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
      const watcher = recordingClient(await token(users.owner!), vsn).client
        .channel(priv ? `canvas:${canvasId}` : topic, { config: { private: priv, presence: { key: `watcher-${priv}` } } });
      const joins: any[] = [];
      watcher.on('presence', { event: 'join' }, ({ key, newPresences }) => joins.push({ key, metas: newPresences }));
      expect((await subscribed(watcher)).status).toBe('SUBSCRIBED');
      const cases: [unknown, string][] = [
        [{ name: 'evil\u202etxt.exe' }, 'payload.payload.name'],
        [{ name: '\u001b]0;owned\u0007' }, 'payload.payload.name'],
        [{ name: '\u200b' }, 'payload.payload.name'],
        [{ name: 'n'.repeat(101) }, 'payload.payload.name'],
        [{ name: 7 }, 'payload.payload.name'],
        [{ color: 'red;position:fixed;inset:0' }, 'payload.payload.color'],
        [{ color: 'url(https://tracker.example/pixel.png)' }, 'payload.payload.color'],
        [{ color: 'var(--x, url(a))' }, 'payload.payload.color'],
        [{ typing: 'yes' }, 'payload.payload.typing'],
        [{ cursor: 'here' }, 'payload.payload.cursor'],
        [{ phx_ref: 'F-forged' }, 'payload.payload.phx_ref'],
        [['an', 'array'], 'payload.payload'],
        ['a string', 'payload.payload'],
      ];
      for (const [state, field] of cases) {
        const before = tracker.reasons().length;
        expect(await channel.track(state as any), JSON.stringify(state)).toBe('error');
        await until(() => tracker.reasons().length > before, 5000, `the refusal of ${JSON.stringify(state)}`);
        expect(tracker.reasons().at(-1)).toMatch(new RegExp(`^invalid_input: ${field.replace(/\./g, '\\.')}: `));
        await new Promise((r) => setTimeout(r, 110)); // under the socket's 10 messages per second
      }
      expect(await channel.track({ name: 'Ann Lee', color: 'hsl(210 70% 45%)', typing: false, cursor: { x: 1, y: 2 } })).toBe('ok');
      await until(() => joins.some((j) => j.key === `me-${priv}`), 5000, 'the valid track');
      // only the valid state was ever tracked: the refused ones never reached the watcher
      expect(joins.filter((j) => j.key === `me-${priv}`).flatMap((j) => j.metas.map((m: any) => m.name))).toEqual(['Ann Lee']);
    }
    expect(tracker.reasons().filter((r) => /internal/.test(r))).toEqual([]);
  });
});
