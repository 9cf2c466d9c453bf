import { createHash } from 'node:crypto';
import type { Sql } from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { issueTokenPair } from '../../functions/auth.ts';
import type { Database } from '../../src/db/index.ts';
import { loadConfig } from '../../src/config.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { startTestServer } from '../helpers/http.ts';
import { apiKey } from '../helpers/tokens.ts';
import { awayFromWindowEdge, sleep, until } from '../helpers/wait.ts';

// H5's refresh-token reuse interval through HTTP (in-process server, real Postgres): a refresh
// token sent twice at once, or again shortly after a response that got lost, leaves the sign-in
// with exactly one live refresh token — the one the first request was given — and revokes
// nothing, however late, while that token is unused (GoTrue's rule for the parent of a session's
// active token); once its successor was used too, it gets another new token of the sign-in within
// REFRESH_TOKEN_REUSE_INTERVAL_SECONDS (GoTrue's swap), and after it, it is reuse and revokes the
// family.

const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
let server: Server; // the default interval, 10 s
let strict: Server; // an interval of 1 s
let issuing: Server; // JWT_ISSUER set: every accepted token must carry it
let database: Database;
let sql: Sql;

beforeAll(async () => {
  server = await startTestServer();
  strict = await startTestServer({ auth: { ...base.auth, refreshReuseInterval: 1 } });
  issuing = await startTestServer({ auth: { ...base.auth, issuer: 'https://project.example/auth/v1' } });
  database = testDatabase(3);
  sql = database.sql;
});
afterAll(async () => {
  await server?.stop();
  await strict?.stop();
  await issuing?.stop();
  await database?.close();
});

type TokenPair = { access_token: string; refresh_token: string; token_type: string; expires_in: number };
const hash = (token: string) => createHash('sha256').update(token).digest('hex');

async function refresh(on: Server, refreshToken: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${on.url}/api/v1/auth/refresh`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }),
  });
  return { status: res.status, body: await res.json() };
}

/** A canvas owner signed in once: their first token pair. */
async function signedIn(on: Server) {
  const { canvasId, users } = await createCanvas(sql);
  const pair = await issueTokenPair(on.deps, { id: users.owner! });
  return { canvasId, userId: users.owner!, pair };
}

/** Every refresh token of the user's sign-in: which are live, used, revoked. */
async function family(userId: string) {
  const rows = await sql`select token_hash, parent_hash, used_at, revoked_at, sealed_token from app.refresh_tokens
                         where user_id = ${userId} order by created_at, parent_hash nulls first`;
  return {
    rows,
    live: rows.filter((r) => r.used_at === null && r.revoked_at === null).map((r) => r.token_hash as string),
    revoked: rows.filter((r) => r.revoked_at !== null).length,
  };
}

/** The access token opens the user's canvas. */
async function canvasStatus(on: Server, accessToken: string, canvasId: string): Promise<number> {
  const res = await fetch(`${on.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: `Bearer ${accessToken}` } });
  await res.arrayBuffer();
  return res.status;
}

/** H5 allows one rotation per 30 s per user: clear this user's window, as if the 30 s had passed. */
const afterRateWindow = (userId: string) => sql`delete from app.rate_limits where user_id = ${userId} and bucket = 'endpoint:H5'`;

/**
 * What a client does with H5's answer (auth-js and @potentia/client wait a 429's Retry-After, then
 * send the same refresh token again): the answers, in order. The wait is simulated: the user's
 * tokens' rotation times move back by Retry-After seconds and H5's window ends, as if that much
 * time had passed.
 */
async function refreshAsClient(on: Server, userId: string, refreshToken: string) {
  const answers: { status: number; body: any; retryAfter: string | null }[] = [];
  for (let attempt = 0; attempt < 3; attempt++) {
    const res = await fetch(`${on.url}/api/v1/auth/refresh`, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }),
    });
    answers.push({ status: res.status, body: await res.json(), retryAfter: res.headers.get('retry-after') });
    if (res.status !== 429) break;
    const seconds = Number(res.headers.get('retry-after'));
    await sql`update app.refresh_tokens set used_at = used_at - make_interval(secs => ${seconds}) where user_id = ${userId} and used_at is not null`;
    await afterRateWindow(userId);
  }
  return answers;
}

describe('H5 refresh reuse interval', () => {
  it('two concurrent refreshes of one token: both 200 with the same new refresh token, nothing revoked, the session lives on', async () => {
    const { canvasId, userId, pair } = await signedIn(server);
    // Hold the presented token's row so that both requests queue on it (SELECT … FOR UPDATE in
    // rotate_refresh_token), then let them go: they are decided one after the other, whatever order.
    const waiting = () => sql`select count(*)::int as n from pg_stat_activity
                              where datname = current_database() and wait_event_type = 'Lock' and query like '%rotate_refresh_token%'`;
    let release!: () => void;
    const held = new Promise<void>((resolve) => { release = resolve; });
    let locked!: () => void;
    const lockTaken = new Promise<void>((resolve) => { locked = resolve; });
    const holder = sql.begin(async (tx) => {
      await tx`select 1 from app.refresh_tokens where token_hash = ${hash(pair.refresh_token)} for update`;
      locked();
      await held;
    });
    await lockTaken;
    const both = Promise.all([refresh(server, pair.refresh_token), refresh(server, pair.refresh_token)]);
    await until(async () => (await waiting())[0]!.n === 2, 10_000, 'both refreshes waiting on the token row');
    release();
    await holder;
    const [a, b] = await both;

    expect(a.status, JSON.stringify(a.body)).toBe(200);
    expect(b.status, JSON.stringify(b.body)).toBe(200);
    expect(a.body.refresh_token).not.toBe(pair.refresh_token);
    expect(b.body.refresh_token).toBe(a.body.refresh_token);
    const after = await family(userId);
    expect(after.rows).toHaveLength(2);
    expect(after.revoked).toBe(0);
    expect(after.live).toEqual([hash(a.body.refresh_token)]);
    // the live token is kept sealed, never in the clear
    const sealed = after.rows.find((r) => r.token_hash === hash(a.body.refresh_token))!.sealed_token as string;
    expect(sealed).toEqual(expect.any(String));
    expect(sealed).not.toContain(a.body.refresh_token);

    // both access tokens work, and the shared refresh token goes on rotating
    expect(await canvasStatus(server, a.body.access_token, canvasId)).toBe(200);
    expect(await canvasStatus(server, b.body.access_token, canvasId)).toBe(200);
    await afterRateWindow(userId);
    const next = await refresh(server, a.body.refresh_token);
    expect(next.status, JSON.stringify(next.body)).toBe(200);
    expect(next.body.refresh_token).not.toBe(a.body.refresh_token);
    const later = await family(userId);
    expect(later.revoked).toBe(0);
    expect(later.live).toEqual([hash(next.body.refresh_token)]);
  });

  it('concurrent refreshes without a held lock end the same way', async () => {
    const { canvasId, userId, pair } = await signedIn(server);
    const results = await Promise.all([1, 2, 3].map(() => refresh(server, pair.refresh_token)));
    for (const r of results) expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(new Set(results.map((r) => r.body.refresh_token)).size).toBe(1);
    const after = await family(userId);
    expect(after.revoked).toBe(0);
    expect(after.live).toEqual([hash(results[0]!.body.refresh_token)]);
    expect(await canvasStatus(server, results[2]!.body.access_token, canvasId)).toBe(200);
  });

  it('a retry 1 s after a successful refresh (its response lost): 200 with the same refresh token, one live session', async () => {
    const { canvasId, userId, pair } = await signedIn(server);
    const first = await refresh(server, pair.refresh_token);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await sleep(1000);
    const retry = await refresh(server, pair.refresh_token);
    expect(retry.status, JSON.stringify(retry.body)).toBe(200);
    expect(retry.body).toMatchObject({ token_type: 'bearer', refresh_token: first.body.refresh_token });
    expect(await canvasStatus(server, retry.body.access_token, canvasId)).toBe(200);
    const after = await family(userId);
    expect(after.rows).toHaveLength(2);
    expect(after.revoked).toBe(0);
    expect(after.live).toEqual([hash(first.body.refresh_token)]);
  });

  it('a late retry (interval 1 s, resent after 2 s) while the token it got is still unused: 200 with that token, nothing revoked', async () => {
    // supabase-js resends a refresh whose answer was lost with backoff for up to ~30 s; GoTrue
    // answers the parent of a session's active token with that token at any age
    // (supabase/auth internal/api/token_refresh.go). Before 2026-12-06 this was reuse: 401 and
    // the sign-in revoked, the user signed out by a lost response
    const { canvasId, userId, pair } = await signedIn(strict);
    const first = await refresh(strict, pair.refresh_token);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await sleep(2000);
    const late = await refresh(strict, pair.refresh_token);
    expect(late.status, JSON.stringify(late.body)).toBe(200);
    expect(late.body.refresh_token).toBe(first.body.refresh_token);
    expect(await canvasStatus(strict, late.body.access_token, canvasId)).toBe(200);
    const after = await family(userId);
    expect(after.rows).toHaveLength(2);
    expect(after.revoked).toBe(0);
    expect(after.live).toEqual([hash(first.body.refresh_token)]);
  });

  it('reuse after the interval (1 s, resent after 2 s) once the token it got was used: 401 and the whole family is revoked', async () => {
    const { userId, pair } = await signedIn(strict);
    const first = await refresh(strict, pair.refresh_token);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await afterRateWindow(userId);
    const second = await refresh(strict, first.body.refresh_token);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    await sleep(2000);
    await afterRateWindow(userId);
    const reuse = await refresh(strict, pair.refresh_token);
    expect(reuse.status).toBe(401);
    expect(reuse.body.error.code).toBe('unauthorized');
    expect(reuse.body.error.message).toMatch(/already used: every session of this sign-in is revoked/);
    const after = await family(userId);
    expect(after.rows).toHaveLength(3);
    expect(after.revoked).toBe(3);
    expect(after.live).toEqual([]);
    // the token the second refresh handed out is revoked with it
    await afterRateWindow(userId);
    const successor = await refresh(strict, second.body.refresh_token);
    expect(successor.status).toBe(401);
    expect(successor.body.error.message).toMatch(/invalid or expired/);
  });

  it('a resend within the interval (10 s) once the token it got was refreshed too (two tabs): 200 with another new token of the sign-in, nothing revoked', async () => {
    // GoTrue swaps a rotated token resent within the reuse interval for a new token of its session
    // (supabase/auth internal/tokens/service.go, RefreshTokenGrant); until 2026-12-06 it was 401 here
    const { canvasId, userId, pair } = await signedIn(server);
    const first = await refresh(server, pair.refresh_token);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await afterRateWindow(userId);
    const second = await refresh(server, first.body.refresh_token);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    // in the same H5 window as the second rotation: the swap is not counted (until 2026-12-07 the
    // window was cleared here, and the swap was refused 429 without it)
    const stale = await refresh(server, pair.refresh_token);
    expect(stale.status, JSON.stringify(stale.body)).toBe(200);
    expect([pair.refresh_token, first.body.refresh_token, second.body.refresh_token]).not.toContain(stale.body.refresh_token);
    expect(await canvasStatus(server, stale.body.access_token, canvasId)).toBe(200);
    const sessionOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).session_id as string;
    expect(sessionOf(stale.body.access_token)).toBe(sessionOf(second.body.access_token));
    const after = await family(userId);
    expect(after.revoked).toBe(0);
    expect(after.live.sort()).toEqual([hash(second.body.refresh_token), hash(stale.body.refresh_token)].sort());
  });

  it('two tabs: the stale tab\'s resend within the interval is not refused by H5, so the user is not signed out by its retry', async () => {
    // Tab A refreshes twice, its second rotation the first of a new 30 s H5 window (a window
    // boundary can fall right after the first); tab B, still holding the sign-in's first token,
    // refreshes within the interval. GoTrue's rule gives it another token of the sign-in (the
    // swap). Until 2026-12-07 H5 counted that swap as a rotation: 429 with Retry-After up to 30 s,
    // longer than the 10 s interval, so the client's resend after it was reuse: 401, the whole
    // sign-in revoked, every tab signed out, by our own rate limit.
    const { canvasId, userId, pair } = await signedIn(server);
    const first = await refresh(server, pair.refresh_token); // tab A
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await afterRateWindow(userId); // H5's window ends
    await awayFromWindowEdge(30, 5_000); // and no real boundary comes before the last check below
    const second = await refresh(server, first.body.refresh_token); // tab A again
    expect(second.status, JSON.stringify(second.body)).toBe(200);

    const answers = await refreshAsClient(server, userId, pair.refresh_token); // tab B
    expect(answers.map((a) => `${a.status} ${a.retryAfter ?? ''} ${a.body.error?.message ?? ''}`.trim())).toEqual(['200']);
    const stale = answers[0]!.body;
    expect([pair.refresh_token, first.body.refresh_token, second.body.refresh_token]).not.toContain(stale.refresh_token);
    expect(await canvasStatus(server, stale.access_token, canvasId)).toBe(200);
    const after = await family(userId);
    expect(after.revoked).toBe(0);
    expect(after.live.sort()).toEqual([hash(second.body.refresh_token), hash(stale.refresh_token)].sort());

    // H5 still stops a refresh loop: rotating a live token again in the same window is refused,
    // and that refusal rolls the rotation back (the token stays live for its retry)
    const loop = await refresh(server, stale.refresh_token);
    expect(loop.status, JSON.stringify(loop.body)).toBe(429);
    expect(loop.body.error.code).toBe('rate_limited');
    expect((await family(userId)).live).toContain(hash(stale.refresh_token));
  });

  it('two stale tokens resent in turn within the interval mint no more tokens: each gets its one swapped token again', async () => {
    // H5 does not count a swap (above). A client holding two rotated tokens of the sign-in (two live
    // rotations can come 0.1 s apart across an H5 window's boundary) sent them in turn: the family's
    // newest token was always the other one's swap, so every request was another swap, a new live
    // refresh token (and row) each, as fast as the client could send, for the whole interval, with
    // no limit. A rotated token that already has a live swapped token now gets that one again.
    const { userId, pair } = await signedIn(server);
    const first = await refresh(server, pair.refresh_token);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    await afterRateWindow(userId); // the next H5 window
    const second = await refresh(server, first.body.refresh_token);
    expect(second.status, JSON.stringify(second.body)).toBe(200);
    const got: Record<string, Set<string>> = { a: new Set(), b: new Set() };
    for (let i = 0; i < 5; i++) {
      for (const [name, stale] of [['a', pair.refresh_token], ['b', first.body.refresh_token]] as const) {
        const answer = await refresh(server, stale);
        expect(answer.status, JSON.stringify(answer.body)).toBe(200);
        got[name]!.add(answer.body.refresh_token);
      }
    }
    expect([got.a!.size, got.b!.size]).toEqual([1, 1]);
    const after = await family(userId);
    expect(after.revoked).toBe(0);
    // at most one live token per rotated token (the second one's may be its own unused successor)
    expect(after.live.sort()).toEqual([...new Set([second.body.refresh_token, ...got.a!, ...got.b!])].map(hash).sort());
    expect(after.live.length).toBeLessThanOrEqual(3);
  });

  it('another sign-in of the same user is untouched by a retry or a revocation', async () => {
    const { userId, pair } = await signedIn(strict);
    const phone = await issueTokenPair(strict.deps, { id: userId });
    const first = await refresh(strict, pair.refresh_token);
    expect(first.status).toBe(200);
    expect((await refresh(strict, pair.refresh_token)).status).toBe(200); // a retry within the interval
    await afterRateWindow(userId);
    expect((await refresh(strict, first.body.refresh_token)).status).toBe(200); // its successor used
    await sleep(2000);
    await afterRateWindow(userId);
    expect((await refresh(strict, pair.refresh_token)).status).toBe(401); // reuse
    const [row] = await sql`select used_at, revoked_at from app.refresh_tokens where token_hash = ${hash(phone.refresh_token)}`;
    expect(row).toMatchObject({ used_at: null, revoked_at: null });
  });
});

describe('the refreshed access token', () => {
  it('is the session\'s token as /auth/v1 mints it: same session, GoTrue\'s claims, JWT_ISSUER, accepted by the same server', async () => {
    const { canvasId, userId, pair } = await signedIn(issuing);
    const claimsOf = (token: string) => JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString());
    const first = claimsOf(pair.access_token);
    expect(first).toMatchObject({ sub: userId, iss: 'https://project.example/auth/v1', role: 'authenticated', aal: 'aal1', is_anonymous: false });
    const refreshed = await refresh(issuing, pair.refresh_token);
    expect(refreshed.status).toBe(200);
    const next = claimsOf(refreshed.body.access_token);
    // until 2026-12-04 H5 minted {sub, email} alone: no iss, which a server with JWT_ISSUER then refused (401)
    expect(next).toMatchObject({ sub: userId, iss: first.iss, session_id: first.session_id, aal: 'aal1', amr: first.amr, aud: first.aud });
    const res = await fetch(`${issuing.url}/api/v1/canvas/${canvasId}`, { headers: { authorization: `Bearer ${refreshed.body.access_token}` } });
    expect(res.status).toBe(200);
    // and GoTrue's own session check (GET /auth/v1/user) knows its session
    const user = await fetch(`${issuing.url}/auth/v1/user`, { headers: { apikey: await apiKey(base.auth.jwtSecret, 'anon'), authorization: `Bearer ${refreshed.body.access_token}` } });
    expect(user.status).toBe(200);
  });
});

describe('without a secret to sign with (SUPABASE_JWKS_URL only, as production may run)', () => {
  it('H5 is refused 404 naming JWT_SECRET, and the refresh token is left as it was (not rotated)', async () => {
    const jwksOnly = await startTestServer({ auth: { ...base.auth, jwtSecret: '', jwksUrl: 'http://127.0.0.1:9/jwks.json' } });
    try {
      const { userId, pair } = await signedIn(server);
      const before = await family(userId);
      const answer = await refresh(jwksOnly, pair.refresh_token);
      expect(answer.status).toBe(404);
      expect(answer.body.error).toMatchObject({ code: 'not_found', message: expect.stringMatching(/no JWT_SECRET is configured.*set JWT_SECRET/) });
      expect(await family(userId)).toEqual(before);
      // and the token still refreshes where a secret signs
      expect((await refresh(server, pair.refresh_token)).status).toBe(200);
    } finally {
      await jwksOnly.stop();
    }
  });
});
