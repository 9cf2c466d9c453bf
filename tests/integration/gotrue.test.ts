import { AuthApiError, createClient, FunctionsHttpError, isAuthApiError, type SupabaseClient } from '@supabase/supabase-js';
import { decodeJwt } from 'jose';
import { randomInt, randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { Database } from '../../src/db/index.ts';
import { apiKeys } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { callAs, createUser } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { subscribed } from '../helpers/realtime.ts';
import { awayFromWindowEdge, sleep } from '../helpers/wait.ts';

// The local /auth/v1 (src/http/gotrue.ts, sql/auth/password.sql) driven only by supabase-js, as an
// app would: createClient(server.url, anonKey) with the anon key `npm start` prints. The server
// trusts X-Forwarded-For so that each test signs in from its own client IP (the per-IP limit is
// then the test's own), and its refresh-token reuse interval is 1 s (a reuse test waits it out).

const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
const REUSE_INTERVAL_S = 1;
let server: Server;
let database: Database;
let sql: Sql;
let anonKey: string;
const clients: SupabaseClient[] = [];

beforeAll(async () => {
  server = await startServer({
    ...base, databaseUrl: testDatabaseUrl(), port: 0, trustProxy: true,
    auth: { ...base.auth, refreshReuseInterval: REUSE_INTERVAL_S },
  }); // realtime on: a signed-in client joins a private channel below
  database = testDatabase(3);
  sql = database.sql;
  anonKey = (await apiKeys(server.deps.config)).anon;
}, 90_000);
afterAll(async () => {
  await Promise.all(clients.map((c) => c.removeAllChannels().catch(() => {})));
  await server?.stop();
  await database?.close();
});

const randomIp = () => `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}`;
const newEmail = () => `gotrue-${randomUUID()}@example.com`;
const PASSWORD = 'correct horse battery';

/** A supabase-js client as an app creates it, signing in from its own client IP. */
function supabase(on: { url: string } = server, ip = randomIp()): SupabaseClient {
  const client = createClient(on.url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as never },
    global: { headers: { 'x-forwarded-for': ip } },
  });
  clients.push(client);
  return client;
}

/** A new user signed up (and so signed in) through supabase-js. */
async function signedUp(data: Record<string, unknown> = {}) {
  const client = supabase();
  const email = newEmail();
  const { data: res, error } = await client.auth.signUp({ email, password: PASSWORD, options: { data } });
  expect(error).toBeNull();
  return { client, email, session: res.session!, user: res.user! };
}

/**
 * Sign-in limits count in fixed 5-minute windows: a counting test starts only when it can finish
 * inside one (inOneLimitWindow), and its own timeout covers that wait as well as its work.
 */
const inOneLimitWindow = (needSeconds: number) => awayFromWindowEdge(300, needSeconds * 1000);
const windowTimeout = (needSeconds: number) => 2 * needSeconds * 1000 + 30_000;

function expectAuthApiError(error: unknown, status: number, code: string) {
  expect(isAuthApiError(error), String(error)).toBe(true);
  expect((error as AuthApiError).status).toBe(status);
  expect((error as AuthApiError).code).toBe(code);
}

describe('sign-up', () => {
  it('creates a confirmed user and answers a GoTrue session; the password is stored as a bcrypt hash only', async () => {
    const client = supabase();
    const email = newEmail().replace('gotrue', 'GoTrue');
    const { data, error } = await client.auth.signUp({ email, password: PASSWORD, options: { data: { name: 'Ada' } } });
    expect(error).toBeNull();
    const { session, user } = data;
    expect(user).toMatchObject({
      aud: 'authenticated', role: 'authenticated', email: email.toLowerCase(), phone: '',
      app_metadata: { provider: 'email', providers: ['email'] }, user_metadata: { name: 'Ada' }, is_anonymous: false,
    });
    expect(user!.id).toMatch(/^[0-9a-f-]{36}$/);
    for (const at of [user!.email_confirmed_at, user!.created_at, user!.updated_at, user!.last_sign_in_at]) {
      expect(Date.parse(at!)).toBeGreaterThan(Date.now() - 60_000);
    }
    expect(user!.identities).toHaveLength(1);
    expect(user!.identities![0]).toMatchObject({ provider: 'email', user_id: user!.id, identity_data: { email: email.toLowerCase(), email_verified: true } });

    expect(session).toMatchObject({ token_type: 'bearer', user: { id: user!.id } });
    const ttl = server.deps.config.auth.accessTtl; // ACCESS_TOKEN_TTL_SECONDS, 3600 by default
    expect(session!.expires_in).toBeGreaterThan(ttl - 10);
    expect(session!.expires_in).toBeLessThanOrEqual(ttl);
    expect(session!.expires_at! - Math.floor(Date.now() / 1000)).toBeCloseTo(session!.expires_in, -1);
    expect(session!.refresh_token.length).toBeGreaterThanOrEqual(40);

    // the access token: GoTrue's claims, session_id = the refresh-token family the sign-up started
    const claims = decodeJwt(session!.access_token);
    const [family] = await sql`select family_id from app.refresh_tokens where user_id = ${user!.id}`;
    expect(claims).toMatchObject({
      sub: user!.id, aud: 'authenticated', role: 'authenticated', email: email.toLowerCase(), aal: 'aal1',
      session_id: family!.family_id, user_metadata: { name: 'Ada' }, is_anonymous: false, iss: `${server.url}/auth/v1`,
    });
    expect(claims.exp).toBe(session!.expires_at);

    const [row] = await sql`select encrypted_password, email_confirmed_at from auth.users where id = ${user!.id}`;
    expect(row!.encrypted_password).toMatch(/^\$2[ab]\$10\$.{53}$/);
    expect(row!.email_confirmed_at).not.toBeNull();
    // secrets never travel: neither the hash nor the password is in the answer
    const raw = JSON.stringify(data);
    expect(raw).not.toContain(row!.encrypted_password);
    expect(raw).not.toContain(PASSWORD);
    expect(raw).not.toContain('encrypted_password');
  });

  it('refuses a second sign-up of the same address (any case): 422 user_already_exists', async () => {
    const { email } = await signedUp();
    const { data, error } = await supabase().auth.signUp({ email: email.toUpperCase(), password: 'another password' });
    expectAuthApiError(error, 422, 'user_already_exists');
    expect(error!.message).toBe('User already registered');
    expect(data.session).toBeNull();
  });

  it('refuses a weak password: 422 weak_password with reasons, and an unusable address: 400 validation_failed', async () => {
    const weak = await supabase().auth.signUp({ email: newEmail(), password: '12345' });
    expect(weak.error?.name).toBe('AuthWeakPasswordError');
    expect(weak.error).toMatchObject({ status: 422, code: 'weak_password', reasons: ['length'], message: 'Password should be at least 6 characters.' });

    const tooLong = await supabase().auth.signUp({ email: newEmail(), password: 'x'.repeat(73) });
    expectAuthApiError(tooLong.error, 400, 'validation_failed');

    const badEmail = await supabase().auth.signUp({ email: 'not an address', password: PASSWORD });
    expectAuthApiError(badEmail.error, 400, 'validation_failed');
    expect(badEmail.error!.message).toMatch(/Unable to validate email address/);
    const [n] = await sql`select count(*)::int as n from auth.users where email = 'not an address'`;
    expect(n!.n).toBe(0);
  });
});

describe('sign-in', () => {
  it('signs in with the right password; a wrong password or an unknown address is 400 invalid_credentials', async () => {
    const { email, user } = await signedUp();
    const client = supabase();
    const ok = await client.auth.signInWithPassword({ email, password: PASSWORD });
    expect(ok.error).toBeNull();
    expect(ok.data.user!.id).toBe(user.id);
    expect(decodeJwt(ok.data.session!.access_token).sub).toBe(user.id);
    // a second sign-in is a second session (family)
    const [families] = await sql`select count(distinct family_id)::int as n from app.refresh_tokens where user_id = ${user.id}`;
    expect(families!.n).toBe(2);

    for (const attempt of [{ email, password: 'wrong password' }, { email: newEmail(), password: PASSWORD }]) {
      const { data, error } = await supabase().auth.signInWithPassword(attempt);
      expectAuthApiError(error, 400, 'invalid_credentials');
      expect(error!.message).toBe('Invalid login credentials');
      expect(data.session).toBeNull();
    }
  });

  it('locks an address out after 10 attempts in 5 minutes: 429 over_request_rate_limit, even with the right password', async () => {
    const { email } = await signedUp();
    await inOneLimitWindow(15);
    for (let i = 0; i < 10; i++) {
      // each attempt from another IP: the per-address limit is what is tested
      const { error } = await supabase().auth.signInWithPassword({ email, password: `wrong ${i}` });
      expectAuthApiError(error, 400, 'invalid_credentials');
    }
    const locked = await supabase().auth.signInWithPassword({ email, password: PASSWORD });
    expectAuthApiError(locked.error, 429, 'over_request_rate_limit');
    expect(locked.error!.message).toMatch(/^Request rate limit reached/);
    expect(locked.data.session).toBeNull();
  }, windowTimeout(15));

  it('limits one client IP to 30 sign-ins and sign-ups per 5 minutes', async () => {
    const ip = randomIp();
    const sameIp = supabase(server, ip);
    await inOneLimitWindow(20);
    for (let i = 0; i < 30; i++) {
      const { error } = await sameIp.auth.signInWithPassword({ email: newEmail(), password: PASSWORD });
      expect(error?.status).toBe(400);
    }
    const { error } = await sameIp.auth.signUp({ email: newEmail(), password: PASSWORD });
    expectAuthApiError(error, 429, 'over_request_rate_limit');
    // other addresses sign in fine from elsewhere
    const { email } = await signedUp();
    expect((await supabase().auth.signInWithPassword({ email, password: PASSWORD })).error).toBeNull();
  }, windowTimeout(20));
});

describe('sign-in limits by client', () => {
  it('an IPv6 client is limited per /64, whichever of its addresses it sends from; an IPv4-mapped one as its IPv4 address', async () => {
    const prefix = `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}`;
    await inOneLimitWindow(40);
    for (let i = 0; i < 30; i++) {
      // each attempt from another address of the /64
      const { error } = await supabase(server, `${prefix}:${randomInt(0x10000).toString(16)}::${(i + 1).toString(16)}`)
        .auth.signInWithPassword({ email: newEmail(), password: PASSWORD });
      expect(error?.status).toBe(400);
    }
    const { error } = await supabase(server, `${prefix}:ffff:ffff:ffff:ffff`).auth.signUp({ email: newEmail(), password: PASSWORD });
    expectAuthApiError(error, 429, 'over_request_rate_limit');
    // the next /64 is another client
    const next = `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}::1`;
    expect((await supabase(server, next).auth.signUp({ email: newEmail(), password: PASSWORD })).error).toBeNull();

    const ip = randomIp();
    for (let i = 0; i < 30; i++) {
      const { error: e } = await supabase(server, i % 2 ? ip : `::ffff:${ip}`).auth.signInWithPassword({ email: newEmail(), password: PASSWORD });
      expect(e?.status).toBe(400);
    }
    expectAuthApiError((await supabase(server, ip).auth.signUp({ email: newEmail(), password: PASSWORD })).error, 429, 'over_request_rate_limit');
  }, windowTimeout(40));
});

describe('refresh limit by client IP (GoTrue\'s RATE_LIMIT_TOKEN_REFRESH)', () => {
  // auth_refreshes_per_ip, 150 per 5 minutes (internal.hit_refresh_limit). A test fills its IP's
  // window in the database up to `used` (as if that many refreshes had been sent) and lets the
  // window pass by deleting it, rather than sending 150 requests or sleeping 5 minutes.
  const LIMIT = 150;
  const fillRefreshWindow = (ip: string, used: number, bucket = 'auth:refresh:ip', windowSeconds = 300) => sql`
    insert into app.rate_limits (user_id, bucket, window_start, hits)
    values (md5('auth-ip:' || internal.client_address_key(${ip}))::uuid, ${bucket}, internal.rate_window_start(${windowSeconds}), ${used})
    on conflict (user_id, bucket, window_start) do update set hits = excluded.hits`;
  const windowPasses = (ip: string, bucket = 'auth:refresh:ip') =>
    sql`delete from app.rate_limits where user_id = md5('auth-ip:' || internal.client_address_key(${ip}))::uuid and bucket = ${bucket}`;
  const tokensOf = async (userId: string) => (await sql`
    select token_hash, used_at, revoked_at from app.refresh_tokens where user_id = ${userId} order by created_at`)
    .map((r) => `${r.token_hash} ${r.used_at === null ? 'unused' : 'used'} ${r.revoked_at === null ? 'live' : 'revoked'}`);

  it('past 150 refreshes from one IP in 5 minutes: 429 over_request_rate_limit in GoTrue\'s shape, nothing rotated; once the window passes the same token refreshes', async () => {
    const ip = randomIp();
    const client = supabase(server, ip);
    const email = newEmail();
    const { data: up, error: upError } = await client.auth.signUp({ email, password: PASSWORD });
    expect(upError).toBeNull();
    await inOneLimitWindow(20);
    await fillRefreshWindow(ip, LIMIT - 2);
    // an unknown token is counted too, as GoTrue's limiter counts every request
    expectAuthApiError((await client.auth.refreshSession({ refresh_token: 'not-a-token' })).error, 400, 'refresh_token_not_found');
    const first = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token }); // the 150th
    expect(first.error).toBeNull();
    const token = first.data.session!.refresh_token;
    const before = await tokensOf(up.user!.id);

    const refused = await client.auth.refreshSession({ refresh_token: token });
    expectAuthApiError(refused.error, 429, 'over_request_rate_limit');
    expect(refused.error!.message).toMatch(/^Request rate limit reached/);
    expect(refused.data.session).toBeNull();
    expect(await tokensOf(up.user!.id)).toEqual(before); // nothing rotated, nothing revoked
    // on the wire: GoTrue's error shapes, Retry-After to the end of the window
    for (const [headers, expected] of [
      [{}, { code: 429, error_code: 'over_request_rate_limit' }],
      [{ 'x-supabase-api-version': '2024-01-01' }, { code: 'over_request_rate_limit' }],
    ] as const) {
      const res = await fetch(`${server.url}/auth/v1/token?grant_type=refresh_token`, {
        method: 'POST', headers: { 'content-type': 'application/json', apikey: anonKey, 'x-forwarded-for': ip, ...headers },
        body: JSON.stringify({ refresh_token: token }),
      });
      expect(res.status).toBe(429);
      expect(res.headers.get('x-sb-error-code')).toBe('over_request_rate_limit');
      expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(Number(res.headers.get('retry-after'))).toBeLessThanOrEqual(300);
      expect(await res.json()).toMatchObject(expected);
    }
    expect(await tokensOf(up.user!.id)).toEqual(before);
    // another client IP is not limited by this one's
    expectAuthApiError((await supabase().auth.refreshSession({ refresh_token: 'not-a-token' })).error, 400, 'refresh_token_not_found');

    await windowPasses(ip);
    // a client of its own: auth-js answers a token that just failed from its cache for a while (its
    // serial failure cooldown), where an app's client tries again on its next tick
    const later = await supabase(server, ip).auth.refreshSession({ refresh_token: token });
    expect(later.error).toBeNull();
    expect(later.data.session!.refresh_token).not.toBe(token);
    expect(decodeJwt(later.data.session!.access_token).session_id).toBe(decodeJwt(up.session!.access_token).session_id);
    expect((await tokensOf(up.user!.id)).filter((t) => t.endsWith('revoked'))).toEqual([]);
  }, windowTimeout(20));

  it('over the limit, a resend answered by GoTrue\'s rule is counted but not refused (a 429 would make its retry reuse), and reuse still revokes', async () => {
    const ip = randomIp();
    const client = supabase(server, ip);
    const { data: up, error: upError } = await client.auth.signUp({ email: newEmail(), password: PASSWORD });
    expect(upError).toBeNull();
    await inOneLimitWindow(20);
    const first = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token });
    expect(first.error).toBeNull();
    await fillRefreshWindow(ip, LIMIT);
    // the parent of the session's active token: that token again (a retry after a lost response), not 429
    const handback = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token });
    expect(handback.error).toBeNull();
    expect(handback.data.session!.refresh_token).toBe(first.data.session!.refresh_token);
    const [counted] = await sql`select hits from app.rate_limits where user_id = md5('auth-ip:' || ${ip})::uuid
                                and bucket = 'auth:refresh:ip' and window_start = internal.rate_window_start(300)`;
    expect(counted!.hits).toBe(LIMIT + 1);
    // a live token is refused, and stays live
    expectAuthApiError((await client.auth.refreshSession({ refresh_token: first.data.session!.refresh_token })).error, 429, 'over_request_rate_limit');
    // reuse (the successor used, the interval over): 400 and the session revoked, never a 429 that would keep it alive
    await windowPasses(ip);
    // a client of its own: auth-js answers a token that just failed from its cache for a while
    const second = await supabase(server, ip).auth.refreshSession({ refresh_token: first.data.session!.refresh_token });
    expect(second.error).toBeNull();
    await sql`update app.refresh_tokens set used_at = used_at - interval '1 hour' where user_id = ${up.user!.id} and used_at is not null`;
    await fillRefreshWindow(ip, LIMIT);
    expectAuthApiError((await client.auth.refreshSession({ refresh_token: up.session!.refresh_token })).error, 400, 'refresh_token_already_used');
    expect((await tokensOf(up.user!.id)).filter((t) => t.endsWith('live'))).toEqual([]);
  }, windowTimeout(20));

  it('over the limit, a swap within the reuse interval (two tabs) is not refused, so the stale tab is not signed out', async () => {
    const tabs = await startTestServer({ trustProxy: true }); // the default reuse interval, 10 s
    try {
      const ip = randomIp();
      const client = supabase(tabs, ip);
      const { data: up, error: upError } = await client.auth.signUp({ email: newEmail(), password: PASSWORD });
      expect(upError).toBeNull();
      await inOneLimitWindow(20);
      const a1 = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token }); // tab A
      expect(a1.error).toBeNull();
      const a2 = await client.auth.refreshSession({ refresh_token: a1.data.session!.refresh_token }); // tab A again
      expect(a2.error).toBeNull();
      await fillRefreshWindow(ip, LIMIT);
      const stale = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token }); // tab B
      expect(stale.error).toBeNull();
      expect([up.session!.refresh_token, a1.data.session!.refresh_token, a2.data.session!.refresh_token])
        .not.toContain(stale.data.session!.refresh_token);
      expect((await tokensOf(up.user!.id)).filter((t) => t.endsWith('revoked'))).toEqual([]);
    } finally {
      await tabs.stop();
    }
  }, windowTimeout(20));

  it('an IPv6 client is limited per /64, whichever of its addresses it sends from', async () => {
    const prefix = `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}`;
    const { data: up, error: upError } = await supabase().auth.signUp({ email: newEmail(), password: PASSWORD });
    expect(upError).toBeNull();
    await inOneLimitWindow(20);
    await fillRefreshWindow(`${prefix}::1`, LIMIT - 1);
    const first = await supabase(server, `${prefix}:1:2:3:4`).auth.refreshSession({ refresh_token: up.session!.refresh_token });
    expect(first.error).toBeNull();
    const token = first.data.session!.refresh_token;
    expectAuthApiError((await supabase(server, `${prefix}:ffff:ffff:ffff:ffff`).auth.refreshSession({ refresh_token: token })).error,
      429, 'over_request_rate_limit');
    // the next /64 is another client
    const next = `2001:db8:${randomInt(0x10000).toString(16)}:${randomInt(0x10000).toString(16)}::1`;
    expect((await supabase(server, next).auth.refreshSession({ refresh_token: token })).error).toBeNull();
  }, windowTimeout(20));

  it('the development profile relaxes it (100x per 60 s) in a bucket of its own', async () => {
    const dev = await startTestServer({ trustProxy: true, profile: 'development' });
    try {
      const ip = randomIp();
      const client = supabase(dev, ip);
      const { data: up, error: upError } = await client.auth.signUp({ email: newEmail(), password: PASSWORD });
      expect(upError).toBeNull();
      await awayFromWindowEdge(300, 20_000);
      await awayFromWindowEdge(60, 10_000);
      await fillRefreshWindow(ip, LIMIT); // the standard budget spent: not the development one
      const first = await client.auth.refreshSession({ refresh_token: up.session!.refresh_token });
      expect(first.error).toBeNull();
      await fillRefreshWindow(ip, 100 * LIMIT, 'auth-dev:refresh:ip', 60);
      expectAuthApiError((await client.auth.refreshSession({ refresh_token: first.data.session!.refresh_token })).error,
        429, 'over_request_rate_limit');
    } finally {
      await dev.stop();
    }
  }, windowTimeout(30));
});

describe('the signed-in user', () => {
  it('getUser and updateUser({data}) read and merge user_metadata (null removes a key)', async () => {
    const { client, user } = await signedUp({ name: 'Ada', plan: 'free' });
    const got = await client.auth.getUser();
    expect(got.error).toBeNull();
    expect(got.data.user).toMatchObject({ id: user.id, user_metadata: { name: 'Ada', plan: 'free' } });

    const updated = await client.auth.updateUser({ data: { theme: 'dark', plan: null } });
    expect(updated.error).toBeNull();
    expect(updated.data.user!.user_metadata).toEqual({ name: 'Ada', theme: 'dark' });
    expect((await client.auth.getUser()).data.user!.user_metadata).toEqual({ name: 'Ada', theme: 'dark' });
    const [row] = await sql`select raw_user_meta_data from auth.users where id = ${user.id}`;
    expect(row!.raw_user_meta_data).toEqual({ name: 'Ada', theme: 'dark' });
  });

  it('caps user_metadata at 4096 bytes of JSON (it travels in every access token): sign-up and growth refused, shrinking allowed', async () => {
    const email = newEmail();
    const big = await supabase().auth.signUp({ email, password: PASSWORD, options: { data: { note: 'x'.repeat(5000) } } });
    expectAuthApiError(big.error, 400, 'validation_failed');
    expect(big.error!.message).toMatch(/user_metadata is too large: at most 4096 bytes/);
    expect(await sql`select 1 from auth.users where email = ${email}`).toHaveLength(0);

    const { client, user } = await signedUp({ note: 'x'.repeat(3000) });
    const grown = await client.auth.updateUser({ data: { more: 'y'.repeat(2000) } });
    expectAuthApiError(grown.error, 400, 'validation_failed');
    const [row] = await sql`select raw_user_meta_data from auth.users where id = ${user.id}`;
    expect(Object.keys(row!.raw_user_meta_data)).toEqual(['note']);
    // metadata stored over the cap before it existed can still be made smaller
    await sql`update auth.users set raw_user_meta_data = ${sql.json({ note: 'x'.repeat(6000), keep: 1 })} where id = ${user.id}`;
    const shrunk = await client.auth.updateUser({ data: { note: null, extra: 'z'.repeat(100) } });
    expect(shrunk.error).toBeNull();
    expect(shrunk.data.user!.user_metadata).toEqual({ keep: 1, extra: 'z'.repeat(100) });
  });

  it('signInAnonymously: 422 anonymous_provider_disabled, as GoTrue answers with anonymous sign-ins off (/settings says so)', async () => {
    const { error } = await supabase().auth.signInAnonymously();
    expectAuthApiError(error, 422, 'anonymous_provider_disabled');
    expect(error!.message).toBe('Anonymous sign-ins are disabled');
  });

  it('updateUser({password}) changes the password and ends the other sessions, not this one', async () => {
    const { client, email } = await signedUp();
    const other = supabase();
    await other.auth.signInWithPassword({ email, password: PASSWORD });

    const same = await client.auth.updateUser({ password: PASSWORD });
    expectAuthApiError(same.error, 422, 'same_password');
    expect((await client.auth.updateUser({ password: 'new secret password' })).error).toBeNull();

    expectAuthApiError((await supabase().auth.signInWithPassword({ email, password: PASSWORD })).error, 400, 'invalid_credentials');
    expect((await supabase().auth.signInWithPassword({ email, password: 'new secret password' })).error).toBeNull();
    expect((await client.auth.refreshSession()).error).toBeNull();
    expectAuthApiError((await other.auth.refreshSession()).error, 400, 'refresh_token_not_found');
  });

  it("the session's access token opens the HTTP API; the anon key alone is 401 with a clear message", async () => {
    const { client, user } = await signedUp();
    const { workspace_id } = await callAs(sql, user.id, 'create_workspace', ['GoTrue workspace']);
    const { canvas_id } = await callAs(sql, user.id, 'create_canvas', [workspace_id, 'GoTrue canvas', {}]);

    const listed = await client.functions.invoke('canvas', { method: 'GET' });
    expect(listed.error).toBeNull();
    expect(listed.data.canvases.map((c: { canvas_id: string }) => c.canvas_id)).toContain(canvas_id);

    const anonymous = await supabase().functions.invoke('canvas', { method: 'GET' });
    expect(anonymous.error).toBeInstanceOf(FunctionsHttpError);
    const res = anonymous.error.context as Response;
    expect(res.status).toBe(401);
    const body = await res.json();
    expect(body.error.code).toBe('unauthorized');
    expect(body.error.message).toMatch(/signed-in user's token is required.*Sign in first/);
  });

  it('a signed-in client joins its private canvas channel over realtime (apikey = anon key, join with the access token)', async () => {
    const { client, user } = await signedUp();
    const { workspace_id } = await callAs(sql, user.id, 'create_workspace', ['Realtime workspace']);
    const { canvas_id } = await callAs(sql, user.id, 'create_canvas', [workspace_id, 'Realtime canvas', {}]);
    const joined = await subscribed(client.channel(`canvas:${canvas_id}`, { config: { private: true } }));
    expect(joined.status).toBe('SUBSCRIBED');
    // and a client that has not signed in (anon key only) is refused the same channel
    const refused = await subscribed(supabase().channel(`canvas:${canvas_id}`, { config: { private: true } }));
    expect(refused.status).toBe('CHANNEL_ERROR');
    // a token from elsewhere, handed to realtime before subscribe() (docs/realtime.md)
    const other = supabase();
    await other.realtime.setAuth((await client.auth.getSession()).data.session!.access_token);
    expect((await subscribed(other.channel(`canvas:${canvas_id}`, { config: { private: true } }))).status).toBe('SUBSCRIBED');
  });
});

describe('refresh and sign-out', () => {
  it('refreshSession rotates the refresh token within the same session; the old refresh token, resent after the reuse interval, revokes the session', async () => {
    const { client, session: first, user } = await signedUp();
    const refreshed = await client.auth.refreshSession();
    expect(refreshed.error).toBeNull();
    const second = refreshed.data.session!;
    expect(second.refresh_token).not.toBe(first.refresh_token);
    // a new access token (identical to the old one when minted within the same second, as GoTrue's would be)
    expect(decodeJwt(second.access_token).exp).toBeGreaterThanOrEqual(decodeJwt(first.access_token).exp!);
    expect(second.user.id).toBe(user.id);
    expect(decodeJwt(second.access_token).session_id).toBe(decodeJwt(first.access_token).session_id);

    // within the interval a resend of the old token is a retry: the same new refresh token
    const retry = await supabase().auth.refreshSession({ refresh_token: first.refresh_token });
    expect(retry.error).toBeNull();
    expect(retry.data.session!.refresh_token).toBe(second.refresh_token);

    // later, while the token it got is unused, still a retry (GoTrue: the parent of the session's
    // active token gets that token back at any age)
    await sleep(REUSE_INTERVAL_S * 1000 + 200);
    const late = await supabase().auth.refreshSession({ refresh_token: first.refresh_token });
    expect(late.error).toBeNull();
    expect(late.data.session!.refresh_token).toBe(second.refresh_token);

    // once that token was used too, the old one is reuse
    const third = await client.auth.refreshSession({ refresh_token: second.refresh_token });
    expect(third.error).toBeNull();
    await sleep(REUSE_INTERVAL_S * 1000 + 200);
    const reuse = await supabase().auth.refreshSession({ refresh_token: first.refresh_token });
    expectAuthApiError(reuse.error, 400, 'refresh_token_already_used');
    // the whole session is revoked: its newest refresh token, and its access token at GoTrue's session check
    expectAuthApiError((await client.auth.refreshSession()).error, 400, 'refresh_token_not_found');
    const res = await fetch(`${server.url}/auth/v1/user`, { headers: { apikey: anonKey, authorization: `Bearer ${second.access_token}` } });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ code: 403, error_code: 'session_not_found' });
  });

  it('signOut revokes the session: refresh then fails, getUser reports the session missing', async () => {
    const { client, session } = await signedUp();
    const other = supabase();
    const signedInAgain = await other.auth.signInWithPassword({ email: session.user.email!, password: PASSWORD });
    expect(signedInAgain.error).toBeNull();

    expect((await client.auth.signOut({ scope: 'local' })).error).toBeNull();
    expect((await client.auth.getSession()).data.session).toBeNull();
    const again = await supabase().auth.refreshSession({ refresh_token: session.refresh_token });
    expectAuthApiError(again.error, 400, 'refresh_token_not_found');
    const stale = await supabase().auth.getUser(session.access_token);
    expect(stale.error?.name).toBe('AuthSessionMissingError');
    // scope local left the other session alive; the default (global) ends it too
    expect((await other.auth.refreshSession()).error).toBeNull();
    expect((await other.auth.signOut()).error).toBeNull();
    const [live] = await sql`select count(*)::int as n from app.refresh_tokens where user_id = ${session.user.id} and revoked_at is null`;
    expect(live!.n).toBe(0);
  });

  it("signOut({scope: 'others'}) keeps this session and ends the others", async () => {
    const { client, email } = await signedUp();
    const other = supabase();
    await other.auth.signInWithPassword({ email, password: PASSWORD });
    expect((await client.auth.signOut({ scope: 'others' })).error).toBeNull();
    expect((await client.auth.refreshSession()).error).toBeNull();
    expectAuthApiError((await other.auth.refreshSession()).error, 400, 'refresh_token_not_found');
  });
});

describe('GoTrue wire details', () => {
  const post = (path: string, body: unknown, headers: Record<string, string> = { apikey: anonKey }) =>
    fetch(`${server.url}/auth/v1${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

  it('needs an API key, as Supabase does: none or a user token is 401 with the gateway message', async () => {
    const none = await post('/token?grant_type=password', { email: newEmail(), password: PASSWORD }, {});
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ message: 'No API key found in request' });
    const { session } = await signedUp();
    const userToken = await post('/token?grant_type=password', { email: newEmail(), password: PASSWORD }, { apikey: session.access_token });
    expect(userToken.status).toBe(401);
    expect(await userToken.json()).toMatchObject({ message: 'Invalid API key' });
  });

  it('errors: {code, message} with X-Supabase-Api-Version 2024-01-01, GoTrue\'s legacy {code, error_code, msg} without', async () => {
    const body = { email: newEmail(), password: PASSWORD };
    const headers = { apikey: anonKey, 'x-forwarded-for': randomIp() };
    const legacy = await post('/token?grant_type=password', body, headers);
    expect(legacy.status).toBe(400);
    expect(await legacy.json()).toEqual({ code: 400, error_code: 'invalid_credentials', msg: 'Invalid login credentials' });
    const dated = await post('/token?grant_type=password', body, { ...headers, 'x-supabase-api-version': '2024-01-01' });
    expect(dated.headers.get('x-supabase-api-version')).toBe('2024-01-01');
    expect(await dated.json()).toEqual({ code: 'invalid_credentials', message: 'Invalid login credentials' });

    const grant = await post('/token?grant_type=magic', body, headers);
    expect(grant.status).toBe(400);
    expect((await grant.json()).msg).toMatch(/unsupported_grant_type/);
    const otp = await post('/otp', { email: newEmail() }, headers);
    expect(otp.status).toBe(404);
    expect((await otp.json()).msg).toMatch(/not served by the local auth server/);
    // supabase.auth.admin: the refusal says how users are made locally
    const admin = await post('/admin/users', { email: newEmail(), password: PASSWORD }, headers);
    expect(admin.status).toBe(404);
    expect((await admin.json()).msg).toMatch(/not served by the local auth server.*POST \/auth\/v1\/signup.*scripts\/token\.ts --email E --password P/);
  });

  it("what the server refuses before any route (a body too large, an undecodable URL) is answered in GoTrue's shape too", async () => {
    const maxBytes = server.deps.config.maxBodyBytes;
    const big = { email: newEmail(), password: PASSWORD, data: { note: 'x'.repeat(maxBytes) } };
    const headers = { apikey: anonKey, 'x-forwarded-for': randomIp() };
    const tooLarge = await post('/signup', big, headers);
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.headers.get('x-sb-error-code')).toBe('request_too_large');
    expect(await tooLarge.json()).toEqual({ code: 413, error_code: 'request_too_large', msg: `request body is larger than ${maxBytes} bytes` });
    // supabase-js reads it as GoTrue's error: a code, not the raw body as its message
    const { error } = await supabase().auth.signUp({ email: big.email, password: PASSWORD, options: { data: big.data } });
    expect(isAuthApiError(error)).toBe(true);
    expect(error).toMatchObject({ status: 413, code: 'request_too_large', message: `request body is larger than ${maxBytes} bytes` });
    // nothing was written
    expect(await sql`select 1 from auth.users where email = ${big.email}`).toHaveLength(0);

    const undecodable = await fetch(`${server.url}/auth/v1/settings?x=%FF`, { headers });
    expect(undecodable.status).toBe(400);
    expect(await undecodable.json()).toMatchObject({ code: 400, error_code: 'validation_failed' });
    // the API's own paths keep the API's shape
    const api = await fetch(`${server.url}/api/v1/canvas?x=%FF`, { headers });
    expect(api.status).toBe(400);
    expect((await api.json()).error).toMatchObject({ code: 'invalid_input', field: 'query.x' });
  });

  it('GET /settings says what this server supports', async () => {
    const res = await fetch(`${server.url}/auth/v1/settings`, { headers: { apikey: anonKey } });
    expect(await res.json()).toMatchObject({ external: { email: true, phone: false }, disable_signup: false, mailer_autoconfirm: true });
  });

  it('logout: an unknown scope is 400 validation_failed; no bearer is 401 no_authorization', async () => {
    const { session } = await signedUp();
    const bad = await post('/logout?scope=everywhere', {}, { apikey: anonKey, authorization: `Bearer ${session.access_token}` });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error_code: 'validation_failed', msg: 'Unsupported logout scope "everywhere"' });
    const none = await post('/logout', {});
    expect(none.status).toBe(401);
    expect(await none.json()).toMatchObject({ error_code: 'no_authorization' });
  });

  it('a query parameter sent twice (scope, grant_type, apikey) is 400 validation_failed naming it, and nothing is done', async () => {
    // the first value was taken: ?scope=others&scope=global signed the other sessions out, while
    // a proxy or log reading the last saw a global sign-out
    const { client, session, email } = await signedUp();
    const other = supabase();
    expect((await other.auth.signInWithPassword({ email, password: PASSWORD })).error).toBeNull();
    const headers = { apikey: anonKey, authorization: `Bearer ${session.access_token}` };
    const twice = await post('/logout?scope=others&scope=global', {}, headers);
    expect(twice.status).toBe(400);
    expect(await twice.json()).toMatchObject({ error_code: 'validation_failed', msg: 'scope: sent 2 times: send it once' });
    expect((await other.auth.refreshSession()).error).toBeNull(); // still signed in
    expect((await client.auth.refreshSession()).error).toBeNull();

    const grant = await post('/token?grant_type=password&grant_type=refresh_token', { email, password: PASSWORD }, { apikey: anonKey, 'x-forwarded-for': randomIp() });
    expect(grant.status).toBe(400);
    expect(await grant.json()).toMatchObject({ error_code: 'validation_failed', msg: 'grant_type: sent 2 times: send it once' });
    const keys = await fetch(`${server.url}/auth/v1/settings?apikey=${anonKey}&apikey=${anonKey}`);
    expect(keys.status).toBe(400);
    expect(await keys.json()).toMatchObject({ error_code: 'validation_failed', msg: 'apikey: sent 2 times: send it once' });
    // beside the header too: the repeat is refused, not ignored because the header is read first
    const beside = await fetch(`${server.url}/auth/v1/settings?apikey=${anonKey}&apikey=other`, { headers: { apikey: anonKey } });
    expect(beside.status).toBe(400);
    expect(await beside.json()).toMatchObject({ error_code: 'validation_failed', msg: 'apikey: sent 2 times: send it once' });
    expect((await fetch(`${server.url}/auth/v1/settings?apikey=${anonKey}`)).status).toBe(200);
  });

  it('a bearer that names no user (the anon key) is refused by /user: 403 bad_jwt', async () => {
    const res = await fetch(`${server.url}/auth/v1/user`, { headers: { apikey: anonKey, authorization: `Bearer ${anonKey}` } });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ error_code: 'bad_jwt', msg: expect.stringMatching(/missing sub claim/) });
  });
});

describe('AUTH_EMAIL_CONFIRM=true', () => {
  let confirming: Server;
  beforeAll(async () => {
    process.env.AUTH_EMAIL_CONFIRM = 'true'; // read when the routes are built
    try {
      confirming = await startTestServer({ trustProxy: true });
    } finally {
      delete process.env.AUTH_EMAIL_CONFIRM;
    }
  });
  afterAll(async () => {
    await confirming?.stop();
  });

  it('sign-up answers the unconfirmed user without a session; sign-in is email_not_confirmed until the address is confirmed', async () => {
    const client = supabase(confirming);
    const email = newEmail();
    const { data, error } = await client.auth.signUp({ email, password: PASSWORD });
    expect(error).toBeNull();
    expect(data.session).toBeNull();
    expect(data.user).toMatchObject({ email, aud: 'authenticated' });
    expect(data.user!.email_confirmed_at).toBeUndefined();

    expectAuthApiError((await client.auth.signInWithPassword({ email, password: PASSWORD })).error, 400, 'email_not_confirmed');
    expectAuthApiError((await client.auth.signInWithPassword({ email, password: 'wrong password' })).error, 400, 'invalid_credentials');
    await sql`update auth.users set email_confirmed_at = now() where email = ${email}`;
    expect((await client.auth.signInWithPassword({ email, password: PASSWORD })).error).toBeNull();
  });

  it('a sign-up of an invited address joins the workspace once the address is confirmed, not at the sign-up', async () => {
    // whoever knows an invited address could sign up with it: until it is confirmed (the
    // confirmation goes to the address), it is not proven theirs, and the invite waits
    const owner = await createUser(sql, 'inviter');
    const { workspace_id } = await callAs(sql, owner, 'create_workspace', ['Invites wait for the confirmation']);
    const email = newEmail();
    expect(await callAs(sql, owner, 'add_workspace_member', [workspace_id, email, 'editor'])).toMatchObject({ kind: 'invite' });
    const { data, error } = await supabase(confirming).auth.signUp({ email, password: PASSWORD });
    expect(error).toBeNull();
    const userId = data.user!.id;
    const roles = async () => (await sql`select role from app.workspace_members where workspace_id = ${workspace_id} and user_id = ${userId}`)
      .map((r) => r.role as string);
    const invites = async () => (await sql`select from app.workspace_invites where workspace_id = ${workspace_id}`).length;
    expect(await roles()).toEqual([]);
    expect(await invites()).toBe(1);
    await sql`update auth.users set email_confirmed_at = now() where id = ${userId}`;
    expect(await roles()).toEqual(['editor']);
    expect(await invites()).toBe(0);
  });

  it('adding the address of an account that was signed up but never confirmed invites it, answered as for an unknown address; it joins once confirmed', async () => {
    // whoever signs up first with someone else's address (never confirming it) and waits for that
    // address to be added to a workspace must not get in: until the address is confirmed, the
    // account is no account (GoTrue proves an address only at its confirmation)
    const owner = await createUser(sql, 'adder');
    const token = await tokenFor(confirming, owner);
    const api = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${confirming.url}/api/v1/workspaces${path}`, {
        method, body: body === undefined ? undefined : JSON.stringify(body),
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      });
      return { status: res.status, body: await res.json() as any };
    };
    const workspaceId = (await api('POST', '', { name: 'Adds by email' })).body.workspace_id as string;
    const email = newEmail();
    const { data, error } = await supabase(confirming).auth.signUp({ email, password: PASSWORD });
    expect(error).toBeNull();
    expect(data.session).toBeNull();
    const squatter = data.user!.id;

    const added = await api('POST', `/${workspaceId}/members`, { email, role: 'editor' });
    const unknown = await api('POST', `/${workspaceId}/members`, { email: newEmail(), role: 'editor' });
    expect(added.status, JSON.stringify(added.body)).toBe(201);
    expect(added.body).toEqual({ kind: 'invite', invite: { invite_id: expect.any(String), workspace_id: workspaceId, email,
      role: 'editor', invited_by: owner, created_at: expect.any(String) } });
    // the answer for an address nobody signed up with, but for the address, id and time: the
    // caller learns nothing of the unconfirmed account
    const blank = (b: any) => ({ ...b, invite: { ...b.invite, invite_id: null, email: null, created_at: null } });
    expect([unknown.status, blank(unknown.body)]).toEqual([201, blank(added.body)]);
    const memberIds = async () => (await api('GET', `/${workspaceId}/members`)).body.members.map((m: any) => m.user_id);
    expect(await memberIds()).toEqual([owner]);
    expect((await api('GET', `/${workspaceId}/invites`)).body.invites.map((i: any) => i.email)).toContain(email);

    // the confirmation (it goes to the address) proves it: the invite is taken, with its role
    await sql`update auth.users set email_confirmed_at = now() where id = ${squatter}`;
    expect((await api('GET', `/${workspaceId}/members`)).body.members.map((m: any) => [m.user_id, m.role]))
      .toEqual(expect.arrayContaining([[squatter, 'editor']]));
    expect((await api('GET', `/${workspaceId}/invites`)).body.invites.map((i: any) => i.email)).not.toContain(email);
    // an account whose address is confirmed is added at once
    const confirmed = newEmail();
    expect((await supabase(confirming).auth.signUp({ email: confirmed, password: PASSWORD })).error).toBeNull();
    await sql`update auth.users set email_confirmed_at = now() where email = ${confirmed}`;
    const again = await api('POST', `/${workspaceId}/members`, { email: confirmed, role: 'viewer' });
    expect(again.body).toMatchObject({ kind: 'member', member: { email: confirmed, role: 'viewer' } });
  });
});

describe('production with AUTH_EMAIL_CONFIRM unset', () => {
  // The local /auth/v1 sends no email, so with confirmation off (AUTH_EMAIL_CONFIRM's default) a
  // sign-up's address counts as confirmed at once: anyone holding the anon key (it is public: apps
  // ship it) could sign up with an address a workspace invited and become a member in its role, or
  // sign up with a colleague's address first and be added when that address is. Production keeps
  // sign-ups closed until the operator chooses (true: confirm each address; false: accept that).
  const PRODUCTION_SECRET = 'a-production-secret-of-at-least-32-characters';
  let production: Server;
  let productionAnonKey: string;
  beforeAll(async () => {
    production = await startTestServer({ env: 'production', trustProxy: true, auth: { ...base.auth, jwtSecret: PRODUCTION_SECRET } });
    // the keys scripts/api-keys.ts signs with this secret (apiKeys itself mints none in production)
    productionAnonKey = (await apiKeys({ ...production.deps.config, env: 'development' })).anon;
  });
  afterAll(async () => {
    await production?.stop();
  });

  it('refuses sign-ups (422 signup_disabled, naming AUTH_EMAIL_CONFIRM): an invited address is not taken, nothing is written', async () => {
    const owner = await createUser(sql, 'inviter');
    const { workspace_id } = await callAs(sql, owner, 'create_workspace', ['Invites in production']);
    const email = newEmail();
    expect(await callAs(sql, owner, 'add_workspace_member', [workspace_id, email, 'admin'])).toMatchObject({ kind: 'invite' });

    const res = await fetch(`${production.url}/auth/v1/signup`, {
      method: 'POST', headers: { apikey: productionAnonKey, 'content-type': 'application/json', 'x-forwarded-for': randomIp() },
      body: JSON.stringify({ email, password: PASSWORD }),
    });
    expect(res.status).toBe(422);
    expect(await res.json()).toMatchObject({ error_code: 'signup_disabled', msg: expect.stringMatching(/AUTH_EMAIL_CONFIRM/) });
    expect(await sql`select from auth.users where email = ${email}`).toHaveLength(0);
    expect(await sql`select from app.workspace_invites where workspace_id = ${workspace_id} and email = ${email}`).toHaveLength(1);
    expect(await sql`select from app.workspace_members where workspace_id = ${workspace_id}`).toHaveLength(1);

    const settings = await fetch(`${production.url}/auth/v1/settings`, { headers: { apikey: productionAnonKey } });
    expect(await settings.json()).toMatchObject({ disable_signup: true });
  });

  it('takes them once the operator chooses: AUTH_EMAIL_CONFIRM=false signs up at once, =true after the confirmation', async () => {
    for (const choice of ['false', 'true']) {
      process.env.AUTH_EMAIL_CONFIRM = choice; // read when the routes are built
      let chosen: Server | undefined;
      try {
        chosen = await startTestServer({ env: 'production', trustProxy: true, auth: { ...base.auth, jwtSecret: PRODUCTION_SECRET } });
      } finally {
        delete process.env.AUTH_EMAIL_CONFIRM;
      }
      try {
        const email = newEmail();
        const res = await fetch(`${chosen.url}/auth/v1/signup`, {
          method: 'POST', headers: { apikey: productionAnonKey, 'content-type': 'application/json', 'x-forwarded-for': randomIp() },
          body: JSON.stringify({ email, password: PASSWORD }),
        });
        expect(res.status, choice).toBe(200);
        const body = await res.json() as { access_token?: string };
        expect(typeof body.access_token, choice).toBe(choice === 'false' ? 'string' : 'undefined');
        expect(await sql`select from auth.users where email = ${email}`).toHaveLength(1);
      } finally {
        await chosen.stop();
      }
    }
  });
});
