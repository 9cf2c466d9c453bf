import fc from 'fast-check';
import { randomUUID } from 'node:crypto';
import { SignJWT } from 'jose';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashRefreshToken, issueTokenPair } from '../../functions/auth.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas, createUser, mutate } from '../helpers/fixtures.ts';
import { algNoneToken, rawRequest } from '../helpers/http.ts';
import { apiKey, signClaims, unsignedToken, userClaims } from '../helpers/tokens.ts';
import { sleep, until } from '../helpers/wait.ts';
import { emptyHttpContext, fillPath, hostileNumber, hostileQuery, hostileSegment, hostileString, httpArbitraries, INVALID_UTF8, wrongType } from './arbitraries.ts';
import { attempt, http, target, httpOutcome, Inbox, openSocket, rawUpgrade, stats, violations, visibleRows, type Outcome } from './harness.ts';

// The hostile-input corpus (issue 12): named cases plus fast-check-generated input (fixed seeds,
// printed) against one real `npm start` process, through HTTP, the H1 socket and the realtime
// socket. Counted and asserted at the end: no 5xx, no `internal` answer, no row written by a
// refused input (row counts of every app table around each one; harness.ts), no row of tenant A
// readable by tenant B's users through RLS, and the process still serving.

const SEEDS = { http: 120_501, upgrade: 120_502, h1: 120_503, realtime: 120_504, tokens: 120_505 } as const;

const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
const secret = config.auth.jwtSecret;
const db = testDatabase(4);
const sql = db.sql;
let proc: PotentiaProcess;
let base: string;
let ws: string;

// tenant A: a workspace with canvas A (owner, editors, a viewer); tenant B: the outsider's own workspace
const A = { workspaceId: '', canvasId: '', blockId: '', owner: '', viewer: '', editors: [] as string[], removable: '' };
const B = { workspaceId: '', canvasId: '', blockId: '', outsider: '', stranger: '' };
const token = (sub: string, expiresInSeconds = 3600) => signAccessToken(secret, { sub }, { expiresInSeconds, audience: config.auth.audience });
const tokens: Record<string, string> = {};

beforeAll(async () => {
  const start = async () => {
    proc = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', LOG_LEVEL: 'warn' });
    base = target.url = proc.url;
    ws = base.replace(/^http/, 'ws');
  };
  await start();
  target.ensure = async () => {
    if (proc.exited() === null || stats.crashes >= 3) return; // past 3 restarts the rest is booked as no answer (a restart costs seconds)
    // an input ended the process: book it, keep its last words, and go on with a fresh one
    stats.crashes += 1;
    violations.push(`process ended ${JSON.stringify(proc.exited())}: ${proc.output().split('\n').slice(-14).join('\n')}`);
    await start();
  };
  const a = await createCanvas(sql, ['editor', 'viewer']);
  Object.assign(A, { workspaceId: a.workspaceId, canvasId: a.canvasId, owner: a.users.owner!, viewer: a.users.viewer! });
  A.editors.push(a.users.editor!);
  for (let i = 0; i < 5; i++) A.editors.push(await addMember(sql, A.owner, A.workspaceId, 'editor'));
  A.removable = await addMember(sql, A.owner, A.workspaceId, 'editor', 'removable');
  A.blockId = (await mutate(sql, A.owner, A.canvasId, { action: 'create', patch: { type: 'text', content: { text: 'tenant A secret' } } })).block_id!;
  const b = await createCanvas(sql);
  Object.assign(B, { workspaceId: b.workspaceId, canvasId: b.canvasId, outsider: b.users.owner! });
  B.blockId = (await mutate(sql, B.outsider, B.canvasId, { action: 'create', patch: { type: 'text', content: { text: 'tenant B' } } })).block_id!;
  B.stranger = await createUser(sql, 'stranger');
  tokens.outsider = await token(B.outsider);
  tokens.viewer = await token(A.viewer);
  tokens.owner = await token(A.owner);
  for (const [i, e] of A.editors.entries()) tokens[`editor${i}`] = await token(e);
  console.info(`hostile: seeds ${JSON.stringify(SEEDS)} (fast-check; rerun with the same seeds to reproduce)`);
}, 120_000);

afterAll(async () => {
  await proc?.stop();
  await db.close();
});

const JSON_HEADERS = (t: string) => ({ authorization: `Bearer ${t}`, 'content-type': 'application/json' });
const opsOf = async (canvasId: string) => (await sql`select count(*)::int as n from app.block_operations where canvas_id = ${canvasId}`)[0]!.n as number;
const errorCode = (text: string) => { try { return JSON.parse(text)?.error?.code; } catch { return undefined; } };

// ------------------------------------------------------------------ H1 plumbing

type H1 = { inbox: Inbox; ws: WebSocket; lastSend: number };
const h1Pool: H1[] = [];

async function openH1(userToken: string, canvasId = A.canvasId): Promise<H1> {
  await target.ensure();
  const { ws: sock, status, inbox } = await openSocket(`${ws}/ws/canvas/${canvasId}?access_token=${userToken}`);
  if (status !== 101) throw new Error(`H1 upgrade refused: ${status}`);
  await inbox.until(0, (f) => f.type === 'hello');
  return { inbox, ws: sock, lastSend: 0 };
}

const lastCanvasSeq = async () => Number((await sql`select last_canvas_seq from app.canvases where canvas_id = ${A.canvasId}`)[0]!.last_canvas_seq);

/**
 * Sends one frame on an H1 socket, then a `resume` from the canvas's current canvas_seq as a
 * marker: frames are handled in order, so once `resumed` is back the frame was handled. Paced
 * under the socket's 10 messages per second.
 */
async function h1Send(conn: H1, frame: string | Buffer, opts: { binary?: boolean } = {}): Promise<Outcome> {
  const wait = conn.lastSend + 260 - Date.now();
  if (wait > 0) await sleep(wait);
  conn.lastSend = Date.now();
  const from = conn.inbox.frames.length;
  conn.ws.send(frame, { binary: opts.binary ?? false });
  if (conn.ws.readyState === conn.ws.OPEN) conn.ws.send(JSON.stringify({ type: 'resume', since_canvas_seq: await lastCanvasSeq() }));
  const { found, frames } = await conn.inbox.until(from, (f) => f.type === 'resumed');
  const answers = frames.filter((f) => f.type !== 'delta' && f.type !== 'resumed' && f.type !== 'snapshot' && f.type !== 'presence' && f.type !== 'presence_leave');
  const refused = answers.some((f) => f.type === 'error' || f.type === 'rejected' || f.type === 'conflict') || (!found && conn.inbox.closed !== null);
  const internal = answers.some((f) => (f.type === 'error' && f.code === 'internal') || (f.type === 'rejected' && f.error?.code === 'internal'))
    || conn.inbox.closed?.code === 1011;
  return { rejected: refused, fiveXX: false, internal, detail: `${JSON.stringify(answers).slice(0, 300)}${conn.inbox.closed ? ` closed ${JSON.stringify(conn.inbox.closed)}` : ''}` };
}

/** A pooled H1 socket of an editor of canvas A, reopened when the last input closed it. */
async function pooled(i: number): Promise<H1> {
  const k = i % 6;
  if (!h1Pool[k] || h1Pool[k]!.inbox.closed || h1Pool[k]!.ws.readyState !== WebSocket.OPEN) {
    h1Pool[k]?.ws.terminate();
    h1Pool[k] = await openH1(tokens[`editor${k}`]!);
  }
  return h1Pool[k]!;
}

/** encodeURIComponent, except that a lone surrogate (which it refuses) goes out as the bytes ED A0 80. */
const encode = (s: string) => { try { return encodeURIComponent(s); } catch { return `%ED%A0%80${encodeURIComponent((s as unknown as { toWellFormed(): string }).toWellFormed())}`; } };

const nest = (depth: number, leaf = '1') => '{"a":'.repeat(depth) + leaf + '}'.repeat(depth);

// ------------------------------------------------------------------ realtime plumbing

type Rt = { inbox: Inbox; ws: WebSocket; vsn: '1.0.0' | '2.0.0'; joinRef: string; n: number };
const encodeRt = (vsn: string, f: { join_ref: string | null; ref: string | null; topic: string; event: string; payload: unknown }) =>
  vsn === '2.0.0' ? JSON.stringify([f.join_ref, f.ref, f.topic, f.event, f.payload]) : JSON.stringify(f);
const decodeRt = (vsn: string) => (d: Buffer, isBinary: boolean) => {
  if (isBinary) return { binary: true, topic: null, event: 'broadcast' };
  const v = JSON.parse(String(d));
  return vsn === '2.0.0' && Array.isArray(v) ? { join_ref: v[0], ref: v[1], topic: v[2], event: v[3], payload: v[4] } : v;
};

async function openRt(vsn: '1.0.0' | '2.0.0', userToken: string): Promise<Rt> {
  await target.ensure();
  const { ws: sock, status, inbox } = await openSocket(`${ws}/realtime/v1/websocket?apikey=${userToken}&vsn=${vsn}`, decodeRt(vsn));
  if (status !== 101) throw new Error(`realtime upgrade refused: ${status}`);
  const rt: Rt = { inbox, ws: sock, vsn, joinRef: '1', n: 0 };
  sock.send(encodeRt(vsn, { join_ref: '1', ref: '1', topic: `realtime:canvas:${A.canvasId}`, event: 'phx_join',
    payload: { config: { broadcast: { self: false, ack: true }, presence: { key: 'hostile', enabled: true }, postgres_changes: [], private: true } } }));
  const { found } = await rt.inbox.until(0, (f) => f.event === 'phx_reply' && f.ref === '1');
  if (found?.payload?.status !== 'ok') throw new Error(`join refused: ${JSON.stringify(found)}`);
  return rt;
}

/** Sends one frame, then a heartbeat: frames are handled in order, so its reply means the frame was handled. */
async function rtSend(rt: Rt, frame: string | Buffer, binary = false): Promise<Outcome> {
  const from = rt.inbox.frames.length;
  rt.ws.send(frame, { binary });
  const ref = `hb-${++rt.n}`;
  if (rt.ws.readyState === rt.ws.OPEN) rt.ws.send(encodeRt(rt.vsn, { join_ref: null, ref, topic: 'phoenix', event: 'heartbeat', payload: {} }));
  const { frames } = await rt.inbox.until(from, (f) => f.topic === 'phoenix' && f.ref === ref);
  const replies = frames.filter((f) => f.event === 'phx_reply' && f.ref !== ref);
  const ok = replies.some((f) => f.payload?.status === 'ok');
  const internal = frames.some((f) => f.event === 'phx_error'
    || (f.event === 'phx_reply' && /^internal/i.test(String(f.payload?.response?.reason ?? '')))
    || (f.event === 'system' && /^internal/i.test(String(f.payload?.message ?? '')))) || rt.inbox.closed?.code === 1011;
  return { rejected: !ok, fiveXX: false, internal, detail: JSON.stringify(frames.filter((f) => !f.binary)).slice(0, 300) };
}

// ================================================================== named cases

describe('named hostile cases', () => {
  it('an outsider mutating another tenant\'s canvas with a 200 KB patch: 404, nothing in that canvas\'s block_operations', async () => {
    const big = 'x'.repeat(200 * 1024);
    const bodies = [
      JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: big } } }),
      JSON.stringify({ action: 'update', block_id: A.blockId, client_op_id: randomUUID(), base_version: 1, patch: { content: { text: big } } }),
      JSON.stringify({ ops: [{ action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { text: big } } }] }),
    ];
    for (const [i, body] of bodies.entries()) {
      const before = await opsOf(A.canvasId);
      const { res } = await http(sql, base, `outsider 200 KB mutate #${i}`, { method: 'POST', path: `/api/v1/canvas/${A.canvasId}/mutate`, headers: JSON_HEADERS(tokens.outsider!), body });
      expect(res.status, res.text.slice(0, 300)).toBe(404);
      expect(errorCode(res.text)).toBe('not_found');
      expect(await opsOf(A.canvasId), 'rows in canvas A\'s block_operations').toBe(before);
    }
    // and no H1 socket for the outsider on canvas A
    const up = await attempt(sql, 'outsider H1 upgrade', async () => httpOutcome(await rawUpgrade(target.url, `/ws/canvas/${A.canvasId}?access_token=${tokens.outsider}`)));
    expect(up.detail.startsWith('404'), up.detail).toBe(true);
  });

  const utf8Cases: [string, (bytes: Buffer) => { method: string; path: () => string; body: Buffer }][] = [
    ['content', (x) => ({ method: 'POST', path: () => `/api/v1/canvas/${A.canvasId}/mutate`,
      body: Buffer.concat([Buffer.from(`{"action":"create","client_op_id":"${randomUUID()}","patch":{"type":"text","content":{"text":"a`), x, Buffer.from('b"}}}')]) })],
    ['client_op_id', (x) => ({ method: 'POST', path: () => `/api/v1/canvas/${A.canvasId}/mutate`,
      body: Buffer.concat([Buffer.from('{"action":"create","client_op_id":"op'), x, Buffer.from('","patch":{"type":"text"}}')]) })],
    ['title (create)', (x) => ({ method: 'POST', path: () => '/api/v1/canvas',
      body: Buffer.concat([Buffer.from(`{"workspace_id":"${A.workspaceId}","title":"t`), x, Buffer.from('"}')]) })],
    ['title (rename)', (x) => ({ method: 'PATCH', path: () => `/api/v1/canvas/${A.canvasId}`,
      body: Buffer.concat([Buffer.from('{"title":"t'), x, Buffer.from('"}')]) })],
  ];
  const invalid: [string, Buffer][] = [...INVALID_UTF8.map((b): [string, Buffer] => [b.toString('hex').replace(/(..)(?!$)/g, '$1 ').toUpperCase(), b]),
    ['"\\ud800x" (JSON escape)', Buffer.from('\\ud800x')], ['"\\udfff" (JSON escape)', Buffer.from('\\udfff')]];

  it.each(utf8Cases.map(([field, make]) => [field, make] as const))('invalid UTF-8 and lone surrogates in %s: 400 invalid_input, nothing stored', async (field, make) => {
    const failures: string[] = [];
    for (const [name, bytes] of invalid) {
      const req = make(bytes);
      // the owner may do all of these when the text is valid: only the encoding is wrong
      const { res } = await http(sql, base, `${name} in ${field}`, { method: req.method, path: req.path(), headers: JSON_HEADERS(tokens.owner!), body: req.body }, { strict: true });
      if (res.status !== 400 || errorCode(res.text) !== 'invalid_input') failures.push(`${name}: ${res.status} ${res.text.slice(0, 160)}`);
    }
    expect(failures).toEqual([]);
  });

  it('client_op_id "\\ud800x" then "\\udfffx": both refused, not merged into one operation', async () => {
    const results: string[] = [];
    for (const id of ['\\ud800x', '\\udfffx']) {
      const body = `{"action":"create","client_op_id":"${id}","patch":{"type":"text","content":{"text":"surrogate"}}}`;
      const { res } = await http(sql, base, `client_op_id ${id}`, { method: 'POST', path: `/api/v1/canvas/${A.canvasId}/mutate`, headers: JSON_HEADERS(tokens.editor0!), body }, { strict: true });
      results.push(`${res.status} ${errorCode(res.text)}`);
    }
    expect(results).toEqual(['400 invalid_input', '400 invalid_input']);
  });

  it('H1 frames: NUL, lone surrogates, deep nesting, base_version out of range, cursor over 1 KB are refused with a stable code', async () => {
    const conn = await openH1(tokens.editor1!);
    const op = () => randomUUID();
    const frames: [string, string][] = [
      ['NUL in content', JSON.stringify({ type: 'mutate', client_op_id: op(), action: 'create', patch: { type: 'text', content: { text: 'a\u0000b' } } })],
      ['NUL in a key', JSON.stringify({ type: 'mutate', client_op_id: op(), action: 'create', patch: { type: 'text', content: { 'k\u0000': 1 } } })],
      ['NUL in client_op_id', JSON.stringify({ type: 'mutate', client_op_id: 'op\u0000x', action: 'create', patch: { type: 'text' } })],
      ['lone surrogate in content', `{"type":"mutate","client_op_id":"${op()}","action":"create","patch":{"type":"text","content":{"text":"\\ud800x"}}}`],
      ['lone surrogate in client_op_id', '{"type":"mutate","client_op_id":"\\udfffx","action":"create","patch":{"type":"text"}}'],
      ['nesting 5,000 in content', `{"type":"mutate","client_op_id":"${op()}","action":"create","patch":{"type":"text","content":${nest(5000)}}}`],
      ['nesting 20,000 in content', `{"type":"mutate","client_op_id":"${op()}","action":"create","patch":{"type":"text","content":${nest(20_000)}}}`],
      ['nesting 5,000 in cursor', `{"type":"presence","cursor":${nest(5000)}}`],
      ['nesting 20,000 in cursor', `{"type":"presence","cursor":${nest(20_000)}}`],
      ['base_version 99999999999', JSON.stringify({ type: 'mutate', client_op_id: op(), action: 'update', block_id: A.blockId, base_version: 99999999999, patch: { content: { text: 'v' } } })],
      ['presence cursor > 1 KB', JSON.stringify({ type: 'presence', cursor: { x: 1, y: 2, label: 'c'.repeat(1500) }, typing: true })],
    ];
    const failures: string[] = [];
    for (const [name, frame] of frames) {
      let c = conn;
      if (conn.inbox.closed) c = await openH1(tokens.editor1!);
      const from = c.inbox.frames.length;
      const outcome = await attempt(sql, `H1 ${name}`, () => h1Send(c, frame));
      const answer = c.inbox.frames.slice(from).find((f) => f.type === 'error' || f.type === 'rejected' || f.type === 'ack' || f.type === 'conflict');
      const code = answer?.type === 'error' ? answer.code : answer?.error?.code;
      const refused = (answer?.type === 'error' && ['invalid_message', 'invalid_input', 'payload_too_large'].includes(code))
        || (answer?.type === 'rejected' && ['invalid_input', 'payload_too_large'].includes(code));
      if (!refused || !outcome.rejected) failures.push(`${name}: ${outcome.detail}`);
    }
    conn.ws.close();
    expect(failures).toEqual([]);
  });

  it('H1 resume and presence after the member was removed: forbidden and closed, nothing written', async () => {
    const conn = await openH1(await token(A.removable));
    await sql`delete from app.workspace_members where workspace_id = ${A.workspaceId} and user_id = ${A.removable}`;
    const presenceBefore = (await sql`select count(*)::int as n from app.presence where user_id = ${A.removable}`)[0]!.n;
    const sends = [JSON.stringify({ type: 'resume', since_canvas_seq: 0 }), JSON.stringify({ type: 'presence', cursor: { x: 1 }, typing: true }),
      JSON.stringify({ type: 'mutate', client_op_id: randomUUID(), action: 'create', patch: { type: 'text' } })];
    for (const [i, frame] of sends.entries()) {
      await attempt(sql, `H1 after removal #${i}`, async () => {
        const from = conn.inbox.frames.length;
        if (conn.ws.readyState === WebSocket.OPEN) conn.ws.send(frame);
        await until(() => conn.inbox.closed !== null || conn.inbox.frames.slice(from).some((f) => f.type === 'error' || f.type === 'resumed' || f.type === 'ack'), 5000, 'an answer or the close');
        const got = conn.inbox.frames.slice(from);
        return { rejected: !got.some((f) => f.type === 'ack' || f.type === 'resumed'), fiveXX: false,
          internal: got.some((f) => f.type === 'error' && f.code === 'internal'), detail: JSON.stringify(got).slice(0, 300) };
      });
    }
    await until(() => conn.inbox.closed !== null, 5000, 'the close after removal');
    expect(conn.inbox.closed!.code).toBe(4403);
    expect(conn.inbox.frames.filter((f) => f.type === 'ack' || f.type === 'resumed' || (f.type === 'delta' && f.replaying))).toEqual([]);
    expect((await sql`select count(*)::int as n from app.presence where user_id = ${A.removable}`)[0]!.n).toBe(presenceBefore);
    // and the realtime socket after removal: a private join is refused
    const rtToken = await token(A.removable);
    const { ws: sock, status, inbox } = await openSocket(`${ws}/realtime/v1/websocket?apikey=${rtToken}&vsn=1.0.0`, decodeRt('1.0.0'));
    expect(status).toBe(101);
    const rt: Rt = { inbox, ws: sock, vsn: '1.0.0', joinRef: '9', n: 0 };
    const out = await attempt(sql, 'realtime join after removal', () => rtSend(rt, encodeRt('1.0.0', { join_ref: '9', ref: '9', topic: `realtime:canvas:${A.canvasId}`, event: 'phx_join',
      payload: { config: { private: true, presence: { key: 'gone', enabled: true } } } })));
    expect(out.rejected, out.detail).toBe(true);
    sock.close();
  });

  it('tokens: no exp, alg none, wrong signature, expired, non-UUID sub, service_role: refused on HTTP, H1 and realtime', async () => {
    const iat = Math.floor(Date.now() / 1000);
    const { exp: _exp, ...noExp } = userClaims(A.owner);
    const bad: Record<string, string> = {
      'no exp': await signClaims(secret, noExp),
      'alg none': algNoneToken(A.owner),
      'alg none (no exp)': unsignedToken(noExp),
      'wrong signature': await signClaims('another-secret-of-at-least-32-characters!!', userClaims(A.owner)),
      expired: await signClaims(secret, { ...userClaims(A.owner), iat: iat - 7200, exp: iat - 3600 }),
      'non-UUID sub': await signClaims(secret, { ...userClaims(A.owner), sub: 'admin' }),
      'non-UUID sub (number)': await signClaims(secret, { ...userClaims(A.owner), sub: 12345 }),
      'service_role key': await apiKey(secret, 'service_role'),
      'service_role with a sub': await signClaims(secret, { ...userClaims(B.outsider), role: 'service_role' }),
    };
    const failures: string[] = [];
    for (const [name, t] of Object.entries(bad)) {
      for (const path of [`/api/v1/canvas/${A.canvasId}`, '/api/v1/canvas']) {
        const { res } = await http(sql, base, `token ${name} GET ${path}`, { method: 'GET', path, headers: { authorization: `Bearer ${t}` } });
        // a service_role token with a sub is a server's key, not a user's session; every other one is no valid token
        if (name !== 'service_role with a sub' && res.status !== 401) failures.push(`HTTP ${path} ${name}: ${res.status}`);
        if (name === 'service_role with a sub' && res.status === 200 && path !== '/api/v1/canvas') failures.push(`HTTP ${name} read tenant A: ${res.status}`);
      }
      const { res } = await http(sql, base, `token ${name} mutate`, { method: 'POST', path: `/api/v1/canvas/${A.canvasId}/mutate`, headers: JSON_HEADERS(t),
        body: JSON.stringify({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }) });
      if (res.status < 400) failures.push(`HTTP mutate ${name}: ${res.status}`);
      const up = await attempt(sql, `token ${name} H1`, async () => httpOutcome(await rawUpgrade(target.url, `/ws/canvas/${A.canvasId}?access_token=${t}`)));
      if (!up.detail.startsWith('401')) failures.push(`H1 ${name}: ${up.detail.slice(0, 80)}`);
      if (!name.startsWith('service_role')) {
        const rt = await attempt(sql, `token ${name} realtime`, async () => httpOutcome(await rawUpgrade(target.url, `/realtime/v1/websocket?apikey=${t}&vsn=1.0.0`)));
        if (!rt.detail.startsWith('401')) failures.push(`realtime ${name}: ${rt.detail.slice(0, 80)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  it('refresh: the same refresh token submitted twice at once — both succeed, one live session', async () => {
    const user = await createUser(sql, 'refresh');
    const pair = await issueTokenPair({ sql, config } as never, { id: user });
    const family = (await sql`select family_id from app.refresh_tokens where token_hash = ${hashRefreshToken(pair.refresh_token)}`)[0]!.family_id;
    const body = JSON.stringify({ refresh_token: pair.refresh_token });
    const results = await Promise.all([0, 1].map((i) => attempt(sql, `refresh double submit #${i}`, async () =>
      httpOutcome(await rawRequest(base, { method: 'POST', path: '/api/v1/auth/refresh', headers: { 'content-type': 'application/json' }, body })))));
    expect(results.map((r) => r.detail.slice(0, 3)), results.map((r) => r.detail).join(' | ')).toEqual(['200', '200']);
    const live = await sql`select count(*)::int as n from app.refresh_tokens
      where family_id = ${family} and used_at is null and revoked_at is null and expires_at > now()`;
    expect(live[0]!.n, 'live refresh tokens of the sign-in').toBe(1);
  });
});

// ================================================================== generated input

describe('generated hostile input (fast-check, fixed seeds)', () => {
  const ctx = emptyHttpContext();
  const arb = httpArbitraries(ctx);

  beforeAll(async () => {
    Object.assign(ctx, { canvasId: A.canvasId, foreignCanvasId: B.canvasId, blockId: A.blockId, workspaceId: A.workspaceId });
    // viewers and editors of A, so the per-user endpoint limits let most requests reach the handlers
    for (let i = 0; i < 6; i++) ctx.viewerTokens.push(await token(await addMember(sql, A.owner, A.workspaceId, 'viewer')));
    ctx.viewerTokens.push(...A.editors.map((_, i) => tokens[`editor${i}`]!), tokens.outsider!);
    ctx.otherTokens = {
      expired: await token(A.owner, -120), badSignature: await signClaims('a-different-secret-of-at-least-32-characters', userClaims(A.owner)),
      algNone: algNoneToken(A.owner), wrongAudience: await signClaims(secret, userClaims(A.owner, { audience: 'elsewhere' })),
      stranger: await token(B.stranger), anon: await apiKey(secret, 'anon'), ownerScopedElsewhere: await signAccessToken(secret, { sub: A.owner, scope: `canvas:${B.canvasId}:write` }),
    };
  });

  it(`HTTP bodies, paths, queries and headers (seed ${SEEDS.http})`, async () => {
    const body = fc.oneof({ weight: 6, arbitrary: arb.body }, { weight: 1, arbitrary: arb.invalidUtf8 });
    const endpointPath = fc.tuple(fc.constantFrom('/api/v1', '/functions/v1'), fc.constantFrom(
      '/canvas', '/canvas/{c}', '/canvas/{c}/mutate', '/canvas/{c}/presence', '/canvas/{c}/snapshot', '/canvas/{c}/blocks', '/canvas/{c}/blocks/{b}',
      '/canvas/{c}/permissions', '/auth/refresh'), hostileSegment, hostileQuery)
      .map(([p, t, seg, q]) => p + t.replace('{c}', seg).replace('{b}', '$block') + q);
    await fc.assert(fc.asyncProperty(arb.method, fc.oneof(arb.path, endpointPath), body, arb.contentType, arb.authorization, arb.extraHeaders,
      async (method, path, b, ct, auth, extra) => {
        const headers: Record<string, string> = { ...extra };
        if (auth !== undefined) headers.authorization = auth;
        if (ct !== undefined) headers['content-type'] = ct;
        await http(sql, base, `HTTP ${method} ${path.slice(0, 120)}`, { method, path: fillPath(ctx, path), headers,
          body: method === 'GET' || method === 'HEAD' ? undefined : b });
      }), { seed: SEEDS.http, numRuns: 420 });
  }, 90_000);

  it(`H1 frames (seed ${SEEDS.h1})`, async () => {
    const patch = fc.oneof(
      fc.record({ type: fc.oneof(fc.constant('text'), hostileString), content: fc.oneof(fc.record({ text: hostileString }), fc.dictionary(hostileString, wrongType, { maxKeys: 4 }), wrongType) }, { requiredKeys: [] }),
      fc.record({ y_order: fc.oneof(hostileString, wrongType), parent_id: fc.oneof(fc.constant(B.blockId), fc.uuid(), hostileString, wrongType), after_id: fc.oneof(fc.constant(A.blockId), hostileString) }, { requiredKeys: [] }),
      fc.dictionary(hostileString, wrongType, { maxKeys: 4 }),
      wrongType,
    );
    const mutateFrame = fc.record({
      type: fc.constant('mutate'), client_op_id: fc.oneof(fc.uuid(), hostileString, wrongType),
      action: fc.oneof(fc.constantFrom('create', 'update', 'move', 'delete'), hostileString), block_id: fc.oneof(fc.constant(A.blockId), fc.constant(B.blockId), fc.constant(null), fc.uuid(), hostileString),
      base_version: fc.oneof(fc.constant(null), fc.constant(1), hostileNumber, wrongType), patch,
    }, { requiredKeys: ['type'] }).map((f) => JSON.stringify(f));
    const presenceFrame = fc.record({
      type: fc.constant('presence'),
      cursor: fc.oneof(fc.constant(null), fc.record({ x: hostileNumber, y: hostileNumber }), fc.dictionary(hostileString, wrongType, { maxKeys: 5 }),
        fc.integer({ min: 900, max: 40_000 }).map((n) => ({ big: 'c'.repeat(n) })), wrongType),
      typing: fc.oneof(fc.boolean(), wrongType),
    }, { requiredKeys: ['type'] }).map((f) => JSON.stringify(f));
    const resumeFrame = fc.record({ type: fc.constant('resume'), since_seq: fc.oneof(hostileNumber, wrongType), since_canvas_seq: fc.oneof(hostileNumber, wrongType), snapshot: fc.oneof(fc.boolean(), wrongType) },
      { requiredKeys: ['type'] }).map((f) => JSON.stringify(f));
    const deepFrame = fc.tuple(fc.integer({ min: 60, max: 25_000 }), fc.constantFrom('content', 'cursor', 'patch', 'top'))
      .map(([d, where]) => where === 'content' ? `{"type":"mutate","client_op_id":"${randomUUID()}","action":"create","patch":{"type":"text","content":${nest(d)}}}`
        : where === 'cursor' ? `{"type":"presence","cursor":${nest(d)}}`
          : where === 'patch' ? `{"type":"mutate","client_op_id":"${randomUUID()}","action":"create","patch":${nest(d)}}` : nest(d));
    const rawFrame = fc.oneof(fc.string({ maxLength: 100 }), fc.json({ maxDepth: 3 }), fc.constantFrom('', 'null', '[]', '{}', '{"type":"ping"}', '{"type":"__proto__"}',
      '{"type":"mutate","__proto__":{"client_op_id":"x"}}', '{"type":"hello"}', '{"type":"delta"}', '\ufeff{"type":"ping"}'));
    const frame: fc.Arbitrary<{ data: string | Buffer; binary: boolean }> = fc.oneof(
      { weight: 6, arbitrary: mutateFrame.map((data) => ({ data, binary: false })) },
      { weight: 3, arbitrary: presenceFrame.map((data) => ({ data, binary: false })) },
      { weight: 2, arbitrary: resumeFrame.map((data) => ({ data, binary: false })) },
      { weight: 1, arbitrary: deepFrame.map((data) => ({ data, binary: false })) },
      { weight: 2, arbitrary: rawFrame.map((data) => ({ data, binary: false })) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((a) => ({ data: Buffer.from(a), binary: true })) },
      // invalid UTF-8 in a text frame: a WebSocket protocol error (close 1007), never a crash
      { weight: 1, arbitrary: fc.constantFrom(...INVALID_UTF8).map((x) => ({ data: Buffer.concat([Buffer.from('{"type":"mutate","client_op_id":"'), x, Buffer.from('"}')]), binary: false })) },
    );
    let i = 0;
    await fc.assert(fc.asyncProperty(frame, async ({ data, binary }) => {
      const conn = await pooled(i++);
      await attempt(sql, `H1 frame ${(Buffer.isBuffer(data) ? `<${data.length} bytes>` : data).slice(0, 160)}`, () => h1Send(conn, data, { binary }));
    }), { seed: SEEDS.h1, numRuns: 300 });
    for (const c of h1Pool) c.ws.close();
  }, 120_000);

  it(`realtime (Phoenix) frames (seed ${SEEDS.realtime})`, async () => {
    const topic = fc.oneof(fc.constant(`realtime:canvas:${A.canvasId}`), fc.constant(`realtime:canvas:${B.canvasId}`), fc.constant('phoenix'),
      hostileString, hostileString.map((s) => `realtime:${s}`), fc.constant(`realtime:canvas:${A.canvasId.toUpperCase()}`));
    const event = fc.oneof({ weight: 4, arbitrary: fc.constantFrom('phx_join', 'phx_leave', 'broadcast', 'presence', 'access_token', 'heartbeat') }, { weight: 1, arbitrary: hostileString });
    const payload = fc.oneof(
      fc.record({ config: fc.record({ private: fc.oneof(fc.boolean(), wrongType), broadcast: fc.record({ self: wrongType, ack: wrongType, replay: fc.record({ since: hostileNumber, limit: hostileNumber }, { requiredKeys: [] }) }, { requiredKeys: [] }),
        presence: fc.record({ key: hostileString, enabled: wrongType }, { requiredKeys: [] }), postgres_changes: fc.oneof(fc.constant([]), wrongType) }, { requiredKeys: [] }),
      access_token: fc.oneof(hostileString, fc.constant(tokens.outsider!), fc.constant(tokens.viewer!)) }, { requiredKeys: [] }),
      fc.record({ type: fc.constant('broadcast'), event: hostileString, payload: fc.oneof(fc.jsonValue({ maxDepth: 4 }), fc.integer({ min: 1, max: 40_000 }).map((n) => ({ big: 'b'.repeat(n) }))) }),
      fc.record({ type: fc.constant('presence'), event: fc.constantFrom('track', 'untrack', 'bogus'), payload: fc.oneof(fc.jsonValue({ maxDepth: 3 }), wrongType) }),
      fc.record({ access_token: fc.oneof(hostileString, fc.constant(tokens.outsider!), fc.constant(algNoneToken(A.owner))) }),
      wrongType,
    );
    const frame = fc.oneof(
      { weight: 8, arbitrary: fc.tuple(topic, event, payload, fc.oneof(fc.constant('1'), fc.constant(null), hostileString), fc.oneof(fc.nat().map(String), wrongType))
        .map(([t, e, p, jr, ref]) => ({ kind: 'frame' as const, t, e, p, jr, ref })) },
      { weight: 1, arbitrary: fc.oneof(fc.string({ maxLength: 80 }), fc.json({ maxDepth: 3 })).map((s) => ({ kind: 'text' as const, s })) },
      { weight: 1, arbitrary: fc.tuple(fc.uint8Array({ minLength: 7, maxLength: 7 }), fc.uint8Array({ maxLength: 120 }), fc.boolean())
        .map(([head, rest, kind3]) => ({ kind: 'binary' as const, b: Buffer.concat([Buffer.from(kind3 ? [3] : []), Buffer.from(head), Buffer.from(rest)]) })) },
    );
    const sockets: Rt[] = [];
    let i = 0;
    await fc.assert(fc.asyncProperty(frame, fc.boolean(), async (f, v2) => {
      const vsn = v2 ? '2.0.0' : '1.0.0';
      const k = (v2 ? 1 : 0) + 2 * (i % 3);
      i += 1;
      let rt = sockets[k];
      if (!rt || rt.inbox.closed || rt.n >= 30) { rt?.ws.close(); rt = sockets[k] = await openRt(vsn, tokens[`editor${k % 6}`]!); }
      const data = f.kind === 'frame' ? encodeRt(vsn, { join_ref: f.jr as never, ref: f.ref as never, topic: f.t, event: f.e, payload: f.p })
        : f.kind === 'text' ? f.s : f.b;
      await attempt(sql, `realtime ${vsn} ${(Buffer.isBuffer(data) ? `<${data.length} bytes>` : data).slice(0, 160)}`, () => rtSend(rt!, data, f.kind === 'binary'));
    }), { seed: SEEDS.realtime, numRuns: 200 });
    for (const s of sockets) s?.ws.close();
  }, 90_000);

  it(`tokens (seed ${SEEDS.tokens})`, async () => {
    const now = Math.floor(Date.now() / 1000);
    const claim = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
    const claims = fc.record({
      sub: claim(fc.oneof(fc.constant(A.owner), fc.constant(B.outsider), fc.constant(B.stranger), fc.uuid(), hostileString, hostileNumber, fc.constant(null))),
      role: claim(fc.oneof(fc.constantFrom('authenticated', 'anon', 'service_role', 'postgres', 'supabase_admin', 'authenticator', 'AUTHENTICATED'), hostileString)),
      aud: claim(fc.oneof(fc.constant('authenticated'), fc.constant(['x', 'authenticated']), hostileString, wrongType)),
      exp: claim(fc.oneof(fc.constant(now + 600), fc.constant(now - 600), fc.constant(1e20), fc.constant('9999999999'), hostileNumber)),
      nbf: claim(fc.oneof(fc.constant(now + 600), hostileNumber)),
      iss: claim(hostileString),
      scope: claim(fc.oneof(fc.constant(`canvas:${A.canvasId}:write`), fc.constant('canvas:*:write'), hostileString, wrongType)),
    });
    const header = fc.oneof({ weight: 5, arbitrary: fc.constant({ alg: 'HS256', typ: 'JWT' }) },
      { weight: 1, arbitrary: fc.constantFrom({ alg: 'HS512' }, { alg: 'HS256', kid: '../../etc/passwd' }, { alg: 'HS256', crit: ['x'] }, { alg: 'HS256', typ: 'at+jwt' }, { alg: 'HS256', jku: 'http://127.0.0.1:1/' }) });
    const tokenArb = fc.oneof(
      { weight: 6, arbitrary: fc.tuple(claims, header, fc.boolean()).map(([c, h, rightSecret]) => ({ c, h, rightSecret, raw: null as string | null })) },
      { weight: 1, arbitrary: claims.map((c) => ({ c, h: { alg: 'none' }, rightSecret: false, raw: unsignedToken(Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined))) })) },
      { weight: 1, arbitrary: fc.oneof(hostileString, fc.constantFrom('a.b.c', '..', 'e30.e30.', 'eyJhbGciOiJIUzI1NiJ9.e30.x', 'x'.repeat(9000))).map((raw) => ({ c: {}, h: {}, rightSecret: false, raw })) },
    );
    const surface = fc.constantFrom('http', 'h1', 'realtime');
    const members = new Set((await sql`select user_id::text from app.workspace_members where workspace_id = ${A.workspaceId}`).map((r) => r.user_id as string));
    await fc.assert(fc.asyncProperty(tokenArb, surface, async (t, where) => {
      let jwt = t.raw;
      if (jwt === null) {
        const body = Object.fromEntries(Object.entries(t.c).filter(([, v]) => v !== undefined));
        try {
          jwt = await new SignJWT(body as never).setProtectedHeader(t.h as never)
            .sign(new TextEncoder().encode(t.rightSecret ? secret : 'wrong-secret-of-at-least-32-characters-long'));
        } catch { jwt = unsignedToken(body); } // jose refuses some headers: send them unsigned
      }
      const label = `token ${where} ${JSON.stringify(t.c).slice(0, 140)} ${JSON.stringify(t.h)}`;
      if (where === 'http') {
        const { res } = await http(sql, base, label, { method: 'GET', path: `/api/v1/canvas/${A.canvasId}`, headers: { authorization: `Bearer ${jwt}` } });
        const sub = (t.c as { sub?: unknown }).sub;
        if (res.status === 200 && (typeof sub !== 'string' || !members.has(sub)) && (t.c as { role?: unknown }).role !== 'service_role') {
          stats.leaks += 1;
          violations.push(`${label}: a non-member's token read tenant A's canvas (${res.status})`);
        }
      } else {
        const path = where === 'h1' ? `/ws/canvas/${A.canvasId}?access_token=${encodeURIComponent(jwt)}` : `/realtime/v1/websocket?vsn=1.0.0&apikey=${encodeURIComponent(jwt)}`;
        await attempt(sql, label, async () => { const res = await rawUpgrade(target.url, path); return { ...httpOutcome(res), rejected: res.status !== 101 }; });
      }
    }), { seed: SEEDS.tokens, numRuns: 150 });
  }, 60_000);
  // last of the generated inputs: a path that ends the process (a restart costs seconds) hurts nothing after it
  it(`WebSocket upgrades: paths, queries and tokens (seed ${SEEDS.upgrade})`, async () => {
    const upgradePath = fc.oneof(
      fc.tuple(hostileSegment, hostileQuery, fc.constantFrom('access_token', 'since_seq', 'since_canvas_seq'), fc.oneof(hostileString, fc.constant('$token')))
        .map(([seg, q, k, v]) => `/ws/canvas/${seg}${q}${q ? '&' : '?'}${k}=${encode(v)}&access_token=$token`),
      fc.tuple(fc.constantFrom('1.0.0', '2.0.0', '3.0.0', '', '1.0.0%00', '%FF', '2.0.0&vsn=1.0.0'), fc.oneof(fc.constant('$token'), hostileString.map(encode)), hostileQuery)
        .map(([vsn, key, q]) => `/realtime/v1/websocket?vsn=${vsn}&apikey=${key}${q.replace('?', '&')}`),
      fc.constantFrom('/ws/canvas/%ZZ', '/ws/canvas/%', '/ws/canvas/%ED%A0%80', '/ws/canvas/', '/ws/canvas', '/ws/', '/realtime/v1/websocket/..', '/ws/canvas/$canvas/x',
        '/ws/canvas/$canvas?since_canvas_seq=99999999999999999999&access_token=$token', '/ws/canvas/$canvas?since_seq=-1&access_token=$token', '/realtime/v1/websocket?apikey=%ZZ&vsn=1.0.0'),
    );
    await fc.assert(fc.asyncProperty(upgradePath, fc.nat(), async (p, i) => {
      const path = fillPath(ctx, p).replaceAll('$token', ctx.viewerTokens[i % ctx.viewerTokens.length]!);
      await attempt(sql, `upgrade ${path.slice(0, 160)}`, async () => {
        const res = await rawUpgrade(target.url, path);
        return { ...httpOutcome(res), rejected: res.status !== 101 };
      });
    }), { seed: SEEDS.upgrade, numRuns: 120 });
  }, 60_000);

});

// ================================================================== the totals

describe('after the corpus', () => {
  it('no row of tenant A is readable by tenant B\'s users through RLS (and the other way round)', async () => {
    await sleep(300); // presence leaves of closed sockets settle
    const idsOf = async (workspaceId: string) => {
      const canvases = (await sql`select canvas_id::text from app.canvases where workspace_id = ${workspaceId}`).map((r) => r.canvas_id as string);
      const blocks = (await sql`select block_id::text from app.blocks where canvas_id = any(${canvases}::uuid[])`).map((r) => r.block_id as string);
      const users = (await sql`select user_id::text from app.workspace_members where workspace_id = ${workspaceId}`).map((r) => r.user_id as string);
      return { workspaces: [workspaceId], canvases, blocks, users };
    };
    const aIds = await idsOf(A.workspaceId);
    const bIds = await idsOf(B.workspaceId);
    // users of both workspaces are none: a leak check over user columns must not count a user's own rows
    const aOnly = { ...aIds, users: aIds.users.filter((u) => !bIds.users.includes(u)) };
    const bOnly = { ...bIds, users: bIds.users.filter((u) => !aIds.users.includes(u)) };
    const seen: Record<string, Record<string, number>> = {
      'outsider sees A': await visibleRows(sql, B.outsider, aOnly),
      'stranger sees A': await visibleRows(sql, B.stranger, aOnly),
      'removed editor sees A': await visibleRows(sql, A.removable, { ...aOnly, users: aOnly.users.filter((u) => u !== A.removable) }),
      'A viewer sees B': await visibleRows(sql, A.viewer, bOnly),
    };
    for (const [who, tables] of Object.entries(seen)) {
      for (const [table, n] of Object.entries(tables)) {
        if (n > 0) { stats.leaks += n; violations.push(`${who}: ${n} row(s) of app.${table}`); }
      }
    }
    expect(Object.values(seen).every((t) => Object.keys(t).length >= 5)).toBe(true);
  });

  it('the process still serves, and the totals are zero', async () => {
    const health = await rawRequest(base, { method: 'GET', path: '/health' }).catch((err: Error) => ({ status: 0, text: err.message }));
    const alive = stats.crashes === 0 && proc.exited() === null && health.status === 200;
    const bugs = proc.output().split('\n').filter((l) => l.includes('BUG:'));
    console.info(`hostile: tried ${stats.tried}, 5xx ${stats.fiveXX}, internal ${stats.internal}, writes ${stats.writes}, leaks ${stats.leaks}`
      + (stats.crashes ? ` (process ended ${stats.crashes} time(s))` : ''));
    const report = violations.slice(0, 40).join('\n');
    if (violations.length > 0) console.info(`hostile: ${violations.length} violation(s), first ones:\n${violations.filter((v) => !v.startsWith('process ended') && !v.includes('no answer')).slice(0, 30).join('\n')}`);
    expect(alive, `crashes ${stats.crashes}, exited ${JSON.stringify(proc.exited())}, health ${health.status}:\n${violations.filter((v) => v.startsWith('process ended')).join('\n')}`).toBe(true);
    expect(bugs, 'unhandled rejections logged by the process').toEqual([]);
    expect(stats.tried).toBeGreaterThanOrEqual(1000);
    expect({ fiveXX: stats.fiveXX, internal: stats.internal, writes: stats.writes, leaks: stats.leaks }, report).toEqual({ fiveXX: 0, internal: 0, writes: 0, leaks: 0 });
  });
});
