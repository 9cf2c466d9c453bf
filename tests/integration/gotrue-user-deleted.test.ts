// A user deleted (delete from auth.users, committed) while one of their /auth/v1 calls runs. The
// call should answer what GoTrue answers for a user that no longer exists, as supabase-js sees it:
// a password sign-in 400 invalid_credentials, a refresh 400 refresh_token_not_found, an update of
// the user 403 user_not_found; never Postgres's foreign key message (23503), a 5xx, a success
// without a user, or a failed deletion. Each race is made
// deterministic without a sleep: a transaction is held open until the other side's backend waits
// for it (pg_blocking_pids), then ended.
import { createClient, isAuthApiError, type AuthApiError, type SupabaseClient } from '@supabase/supabase-js';
import { randomInt, randomUUID } from 'node:crypto';
import type { ReservedSql } from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashRefreshToken } from '../../functions/auth.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(5);
let server: Server;
let anonKey: string;

beforeAll(async () => {
  // the HTTP API alone; each client signs in from an IP of its own (the per-IP limit is then the test's own)
  const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent', POTENTIA_ROLE: 'api' });
  server = await startServer({ ...base, databaseUrl: testDatabaseUrl(), port: 0, trustProxy: true });
  anonKey = (await apiKeys(server.deps.config)).anon;
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

const PASSWORD = 'correct horse battery';

function supabase(): SupabaseClient {
  return createClient(server.url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as never }, // Node 20 has none (supabase-js builds its realtime client in any case)
    global: { headers: { 'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}` } },
  });
}

async function signedUp() {
  const email = `deleted-${randomUUID()}@example.com`;
  const client = supabase();
  const { data, error } = await client.auth.signUp({ email, password: PASSWORD });
  expect(error).toBeNull();
  return { email, client, userId: data.user!.id, refreshToken: data.session!.refresh_token, accessToken: data.session!.access_token };
}

/** A connection in a transaction of its own that never outlives a failed wait (an open xid blocks logical slot creation server-wide). */
async function openTransaction(): Promise<{ conn: ReservedSql; pid: number; end: (how: 'commit' | 'rollback') => Promise<void> }> {
  const conn = await db.sql.reserve();
  await conn`begin`;
  await conn`set local idle_in_transaction_session_timeout = '30s'`;
  const pid = (await conn<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
  let ended = false;
  return {
    conn, pid,
    end: async (how) => {
      if (ended) return;
      ended = true;
      try {
        await (how === 'commit' ? conn`commit` : conn`rollback`);
      } finally {
        conn.release();
      }
    },
  };
}

const someoneWaitsFor = (pid: number, what: string) =>
  until(async () => (await db.sql`select from pg_stat_activity where ${pid}::int = any(pg_blocking_pids(pid))`).length > 0, 10_000, what);

/** Runs `call` while the deletion of `userId` is uncommitted, and commits it once a backend waits for it. */
async function deletedDuring<T>(userId: string, call: () => Promise<T>): Promise<T> {
  const deleter = await openTransaction();
  try {
    await deleter.conn`delete from auth.users where id = ${userId}`;
    const running = call();
    running.catch(() => {}); // awaited below
    await someoneWaitsFor(deleter.pid, 'the call waiting for the user row the deletion holds');
    await deleter.end('commit');
    return await running;
  } finally {
    await deleter.end('rollback');
  }
}

function expectAuthApiError(error: unknown, status: number, code: string) {
  expect(isAuthApiError(error), String(error)).toBe(true);
  expect({ status: (error as AuthApiError).status, code: (error as AuthApiError).code }).toEqual({ status, code });
}

const tokensOf = async (userId: string) => (await db.sql`select from app.refresh_tokens where user_id = ${userId}`).length;

/** POST /auth/v1/token?grant_type=refresh_token with fetch (supabase-js would retry a 503 for up to 30 s and hide it). */
async function refreshOverHttp(refreshToken: string) {
  const res = await fetch(`${server.url}/auth/v1/token?grant_type=refresh_token`, {
    method: 'POST',
    headers: { apikey: anonKey, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01' },
    body: JSON.stringify({ refresh_token: refreshToken }),
  });
  return { status: res.status, body: await res.json() as Record<string, unknown> };
}

describe('a user deleted during a password sign-in', () => {
  it('answers 400 invalid_credentials, as for an unknown address (not the foreign key\'s validation_failed), and leaves no session', async () => {
    const { email, userId } = await signedUp();
    const { data, error } = await deletedDuring(userId, () => supabase().auth.signInWithPassword({ email, password: PASSWORD }));
    expectAuthApiError(error, 400, 'invalid_credentials');
    expect(error!.message).toBe('Invalid login credentials');
    expect(data.session).toBeNull();
    expect(await tokensOf(userId)).toBe(0);
  });
});

describe('a user deleted during a refresh', () => {
  it('the deletion first (it holds the user and their tokens): 400 refresh_token_not_found', async () => {
    const { userId, refreshToken } = await signedUp();
    const { data, error } = await deletedDuring(userId, () => supabase().auth.refreshSession({ refresh_token: refreshToken }));
    expectAuthApiError(error, 400, 'refresh_token_not_found');
    expect(data.session).toBeNull();
    expect(await tokensOf(userId)).toBe(0);
  });

  // The rotation locked the presented token, then inserted its successor, whose foreign key check
  // locks the user row. A deletion arriving in between held the user row and waited for the token
  // (its cascade), while the rotation waited for the user row: a deadlock, and Postgres failed one
  // side (40P01): the deletion, or the refresh (503, which supabase-js retries). The rotation now
  // locks the user row first (internal.rotate_refresh_token). It is held after that by a
  // transaction holding the presented token's row; the deletion then waits for the rotation.
  it('the rotation first: the deletion waits for it, both succeed (no deadlock), and the new token is gone with the user', async () => {
    const { userId, refreshToken } = await signedUp();
    const holder = await openTransaction();
    const deleter = await db.sql.reserve();
    try {
      await holder.conn`select from app.refresh_tokens where token_hash = ${hashRefreshToken(refreshToken)} for update`;
      const refresh = refreshOverHttp(refreshToken);
      refresh.catch(() => {});
      await someoneWaitsFor(holder.pid, 'the rotation, holding the user row, waiting for its token');
      const deleterPid = (await deleter<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
      const deletion = deleter`delete from auth.users where id = ${userId}`.then(() => 'deleted', (err: { code?: string }) => `failed ${err.code}`);
      await until(async () => (await db.sql`select from pg_stat_activity where pid = ${deleterPid} and cardinality(pg_blocking_pids(pid)) > 0`).length > 0,
        10_000, 'the deletion waiting for the rotation');
      await holder.end('rollback');
      const answer = await refresh;
      expect(await deletion).toBe('deleted');
      expect(answer).toMatchObject({ status: 200, body: { user: { id: userId } } });
      expect(await tokensOf(userId)).toBe(0);
      const again = await refreshOverHttp(answer.body.refresh_token as string);
      expect(again).toEqual({ status: 400, body: { code: 'refresh_token_not_found', message: 'Invalid Refresh Token: Refresh Token Not Found' } });
    } finally {
      await holder.end('rollback');
      deleter.release();
    }
  });
});

/** /auth/v1/<path> with fetch and the signed-in user's access token (GoTrue's newer error shape). */
async function asUser(accessToken: string, method: string, path: string, body?: unknown) {
  const res = await fetch(`${server.url}/auth/v1/${path}`, {
    method,
    headers: { apikey: anonKey, authorization: `Bearer ${accessToken}`, 'content-type': 'application/json', 'x-supabase-api-version': '2024-01-01' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json() as Record<string, unknown> };
}

const userNotFound = { status: 403, body: { code: 'user_not_found', message: 'User from sub claim in JWT does not exist' } };

// PUT /user locked the user row (select … for update) only after checking that the user exists:
// a deletion in between made the lock wait, then find no row, update nothing and answer 200 with
// a null user (supabase-js: no error, data.user null).
describe('a user deleted during updateUser', () => {
  it('with data: 403 user_not_found, as GoTrue answers a token whose user is gone', async () => {
    const { client, userId } = await signedUp();
    const { data, error } = await deletedDuring(userId, () => client.auth.updateUser({ data: { theme: 'dark' } }));
    expectAuthApiError(error, 403, 'user_not_found');
    expect(error!.message).toBe('User from sub claim in JWT does not exist');
    expect(data.user).toBeNull();
  });

  it('with a password: 403 user_not_found', async () => {
    const { client, userId } = await signedUp();
    const { error } = await deletedDuring(userId, () => client.auth.updateUser({ password: 'another secret password' }));
    expectAuthApiError(error, 403, 'user_not_found');
  });
});

// The other endpoints that act on the token's user: a deletion committed before the call (the access
// token still valid) is GoTrue's 403 user_not_found; during it, GET /user reads one snapshot (the
// user as it was, or gone) and /logout has nothing left to revoke (the tokens went with the user).
describe('a user deleted before a call with their still-valid access token', () => {
  it('GET /user, PUT /user and POST /logout answer 403 user_not_found', async () => {
    const { userId, accessToken } = await signedUp();
    await db.sql`delete from auth.users where id = ${userId}`;
    expect(await asUser(accessToken, 'GET', 'user')).toEqual(userNotFound);
    expect(await asUser(accessToken, 'PUT', 'user', { data: { theme: 'dark' } })).toEqual(userNotFound);
    expect(await asUser(accessToken, 'PUT', 'user', { password: 'another secret password' })).toEqual(userNotFound);
    expect(await asUser(accessToken, 'POST', 'logout?scope=local')).toEqual(userNotFound);
  });
});

describe('a user deleted during a logout', () => {
  it('answers 204 (the session is gone with the user), no 5xx, and the deletion succeeds', async () => {
    const { client, userId, accessToken } = await signedUp();
    const answer = await deletedDuring(userId, () => asUser(accessToken, 'POST', 'logout?scope=global'));
    expect(answer).toEqual({ status: 204, body: null });
    expect(await tokensOf(userId)).toBe(0);
    expect((await client.auth.getUser()).error?.status).toBe(403);
  });
});
