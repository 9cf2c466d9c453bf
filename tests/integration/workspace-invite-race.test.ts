// An invite by email (POST /api/v1/workspaces/{id}/members for an address with no user yet) racing
// the sign-up of that address. The invite is accepted by a trigger on auth.users that deletes the
// address's invites and makes their memberships; add_workspace_member looked the address up,
// found no user and inserted an invite. When the sign-up committed between the look-up and the
// invite's commit, neither saw the other: the trigger found no invite, the invite was answered 201
// and stayed pending for a user who already existed (the trigger runs only at sign-up), so the new
// user never became a member and the owner saw an invite that nothing would ever accept.
// Deterministic without a sleep: a transaction holds the workspace's row (which the invite locks
// after its look-up) until the sign-up has committed or waits, then rolls back.
import { randomInt, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import { startServer, type Server } from '../../src/server.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createUser } from '../helpers/fixtures.ts';
import { tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(5);
let server: Server;
let anonKey: string;

beforeAll(async () => {
  const base = loadConfig({ ...process.env, LOG_LEVEL: 'silent', POTENTIA_ROLE: 'api' });
  server = await startServer({ ...base, databaseUrl: testDatabaseUrl(), port: 0, trustProxy: true });
  anonKey = (await apiKeys(server.deps.config)).anon;
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

type Res = { status: number; body: any };
async function call(userId: string, method: string, path: string, body?: unknown): Promise<Res> {
  const res = await fetch(`${server.url}/api/v1/workspaces${path}`, {
    method, body: body === undefined ? undefined : JSON.stringify(body),
    headers: { authorization: `Bearer ${await tokenFor(server, userId)}`, 'content-type': 'application/json' },
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}

/** The local sign-up (POST /auth/v1/signup), from an IP of its own. */
async function signUp(email: string): Promise<Res> {
  const res = await fetch(`${server.url}/auth/v1/signup`, {
    method: 'POST', body: JSON.stringify({ email, password: 'correct horse battery' }),
    headers: { apikey: anonKey, 'content-type': 'application/json', 'x-forwarded-for': `10.${randomInt(256)}.${randomInt(256)}.${randomInt(1, 255)}` },
  });
  return { status: res.status, body: await res.json() };
}

const waiting = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
  where datname = current_database() and cardinality(pg_blocking_pids(pid)) > 0`)[0]!.n;

describe('an invite racing the sign-up of its address', () => {
  it('the sign-up between the invite\'s look-up and its commit: the new user is a member, and no invite is left pending', async () => {
    const owner = await createUser(db.sql, 'invite-race-owner');
    const created = await call(owner, 'POST', '', { name: 'Race' });
    expect(created.status).toBe(201);
    const workspaceId = created.body.workspace_id as string;
    const email = `invited-${randomUUID()}@example.com`;

    const holder = await reservedTransaction(db.sql);
    try {
      await holder.conn`select from app.workspaces where workspace_id = ${workspaceId} for no key update`;
      const invited = call(owner, 'POST', `/${workspaceId}/members`, { email, role: 'editor' });
      invited.catch(() => {});
      await holder.waitedFor('the invite waiting for the workspace row');
      let settled = false;
      const signedUp = signUp(email).finally(() => { settled = true; });
      signedUp.catch(() => {});
      // the sign-up commits, or waits for the invite (which waits for the holder)
      await until(async () => settled || (await waiting()) >= 2, 10_000, 'the sign-up committed or waiting');
      await holder.end('rollback');
      const invite = await invited;
      const user = await signedUp;
      expect(user.status, JSON.stringify(user.body)).toBe(200);
      expect(invite.status, JSON.stringify(invite.body)).toBe(201);
      const userId = user.body.user.id as string;

      const members = await call(owner, 'GET', `/${workspaceId}/members`);
      expect(members.body.members).toContainEqual(expect.objectContaining({ user_id: userId, role: 'editor' }));
      expect((await call(owner, 'GET', `/${workspaceId}/invites`)).body.invites).toEqual([]);
      expect((await call(userId, 'GET', '')).body.workspaces).toMatchObject([{ workspace_id: workspaceId, role: 'editor' }]);
    } finally {
      await holder.release();
    }
  });
});
