// A revocation of refresh tokens (POST /auth/v1/logout, a new password ending the other sessions,
// a reused refresh token revoking its family) racing a refresh of a token it revokes. The
// revocation was one UPDATE whose snapshot was taken before the refresh committed: it waited for
// the refresh's lock on the presented token, revoked that token, and never saw the successor the
// refresh had just inserted. The logout answered 204, the refreshing tab got a new refresh token
// that kept the session alive for good (and its access token passed GoTrue's session check).
// Each race is made deterministic without a sleep: a transaction holds the presented token's row
// until both the refresh and the revocation wait for it (pg_blocking_pids), then rolls back; the
// refresh, first in the lock's queue, rotates and commits before the revocation goes on.
import { randomInt, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashRefreshToken } from '../../functions/auth.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(5);
let server: Server;
let anonKey: string;

beforeAll(async () => {
  // the HTTP API alone; each request from an IP of its own (the per-IP sign-in limit is the test's own).
  // No reuse interval: any second presentation of a rotated token is reuse, at once
  const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent', POTENTIA_ROLE: 'api' });
  server = await startServer({ ...base, databaseUrl: testDatabaseUrl(), port: 0, trustProxy: true,
    auth: { ...base.auth, refreshReuseInterval: 0 } });
  anonKey = (await apiKeys(server.deps.config)).anon;
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

const PASSWORD = 'correct horse battery';
type Answer = { status: number; body: Record<string, any> | null };

/** /auth/v1/<path> with fetch (supabase-js would retry or hide some answers), GoTrue's newer error shape. */
async function auth(method: string, path: string, body?: unknown, accessToken?: string): Promise<Answer> {
  const headers: Record<string, string> = {
    apikey: anonKey, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01',
    'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`,
  };
  if (accessToken) headers.authorization = `Bearer ${accessToken}`;
  const res = await fetch(`${server.url}/auth/v1/${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: res.status === 204 ? null : await res.json() as Record<string, any> };
}

const refresh = (refreshToken: string) => auth('POST', 'token?grant_type=refresh_token', { refresh_token: refreshToken });

async function signedUp() {
  const email = `revoke-${randomUUID()}@example.com`;
  const res = await auth('POST', 'signup', { email, password: PASSWORD });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { email, userId: res.body!.user.id as string, accessToken: res.body!.access_token as string, refreshToken: res.body!.refresh_token as string };
}

/** Backends of this database waiting for a lock: the refresh and the revocation, once both are queued. */
const waiting = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
  where datname = current_database() and cardinality(pg_blocking_pids(pid)) > 0`)[0]!.n;

/**
 * Runs `refresh(refreshToken)`, then `revocation`, each waiting on the presented token's row held by
 * a transaction of the test; once both wait, the row is let go: the refresh rotates and commits
 * first, then the revocation runs. Both answers.
 */
async function refreshThenRevocation(refreshToken: string, revocation: () => Promise<Answer>) {
  const holder = await reservedTransaction(db.sql);
  try {
    await holder.conn`select from app.refresh_tokens where token_hash = ${hashRefreshToken(refreshToken)} for update`;
    const refreshed = refresh(refreshToken);
    refreshed.catch(() => {});
    await holder.waitedFor('the refresh waiting for its token');
    const revoked = revocation();
    revoked.catch(() => {});
    await until(async () => (await waiting()) >= 2, 10_000, 'the revocation waiting for the same token');
    await holder.end('rollback');
    return { refreshed: await refreshed, revoked: await revoked };
  } finally {
    await holder.release();
  }
}

const liveTokens = async (userId: string) => (await db.sql<{ n: number }[]>`select count(*)::int as n from app.refresh_tokens
  where user_id = ${userId} and revoked_at is null and expires_at > now()`)[0]!.n;

const notFound = { status: 400, body: { code: 'refresh_token_not_found', message: 'Invalid Refresh Token: Refresh Token Not Found' } };
const sessionGone = { status: 403, body: { code: 'session_not_found', message: 'Session from session_id claim in JWT does not exist' } };

describe('a revocation racing a refresh of a token it revokes', () => {
  it('logout (global) while the session refreshes: 204, and the refresh\'s new token and session are revoked too', async () => {
    const { userId, accessToken, refreshToken } = await signedUp();
    const { refreshed, revoked } = await refreshThenRevocation(refreshToken, () => auth('POST', 'logout?scope=global', undefined, accessToken));
    expect(revoked).toEqual({ status: 204, body: null });
    // the refresh came first: it rotated, and its answer is a session the logout then ended
    expect(refreshed.status, JSON.stringify(refreshed.body)).toBe(200);
    expect(await liveTokens(userId)).toBe(0);
    expect(await refresh(refreshed.body!.refresh_token)).toEqual(notFound);
    expect(await auth('GET', 'user', undefined, refreshed.body!.access_token)).toEqual(sessionGone);
  });

  it('logout (local) while the same session refreshes: the session ends', async () => {
    const { userId, accessToken, refreshToken } = await signedUp();
    const { refreshed, revoked } = await refreshThenRevocation(refreshToken, () => auth('POST', 'logout?scope=local', undefined, accessToken));
    expect(revoked).toEqual({ status: 204, body: null });
    expect(refreshed.status).toBe(200);
    expect(await liveTokens(userId)).toBe(0);
    expect(await refresh(refreshed.body!.refresh_token)).toEqual(notFound);
  });

  it('a new password (PUT /user) while another session refreshes: that session ends, this one lives on', async () => {
    const { email, userId, accessToken } = await signedUp();
    const other = await auth('POST', 'token?grant_type=password', { email, password: PASSWORD });
    expect(other.status).toBe(200);
    const { refreshed, revoked } = await refreshThenRevocation(other.body!.refresh_token,
      () => auth('PUT', 'user', { password: 'a brand new password' }, accessToken));
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    expect(refreshed.status).toBe(200);
    expect(await refresh(refreshed.body!.refresh_token)).toEqual(notFound);
    expect(await auth('GET', 'user', undefined, refreshed.body!.access_token)).toEqual(sessionGone);
    // only this session's token is left
    expect(await liveTokens(userId)).toBe(1);
    expect((await auth('GET', 'user', undefined, accessToken)).status).toBe(200);
  });

  it('a reused refresh token while its family\'s live token refreshes: the whole family is revoked, the new token too', async () => {
    const { userId, refreshToken: first } = await signedUp();
    const second = await refresh(first);
    expect(second.status).toBe(200);
    // the live token (second) is refreshed while the used one (first) is presented again: reuse
    const { refreshed, revoked } = await refreshThenRevocation(second.body!.refresh_token, () => refresh(first));
    expect(revoked).toEqual({ status: 400, body: { code: 'refresh_token_already_used', message: 'Invalid Refresh Token: Already Used' } });
    expect(refreshed.status).toBe(200);
    expect(await liveTokens(userId)).toBe(0);
    expect(await refresh(refreshed.body!.refresh_token)).toEqual(notFound);
  });
});
