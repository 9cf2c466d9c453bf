import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createPotentiaClient, type PotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';

// W1 GET /workspaces, W4 GET /workspaces/{id}/members, W9 GET /workspaces/{id}/invites and A8
// GET /canvas/{id}/permissions were every row in one answer (a workspace of tens of thousands of
// members or invites: one answer and one query without a bound). They are paged as the canvas
// lists are (sql/core/list_keys.sql): at most limit (default 100, at most 500), by when the row
// was made then its id, next_cursor to go on; the client's workspaces.list() and members() follow
// the pages to the end.

const db = testDatabase();
let server: DevServer;
let anonKey: string;
beforeAll(async () => {
  server = await startDevServer();
  anonKey = server.anonKey;
}, 90_000);
afterAll(async () => { await server?.stop(); await db.close(); });

const N = 620; // more than one page of 500

const signedUp = async (): Promise<{ client: PotentiaClient; userId: string; token: string; email: string }> => {
  const client = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  const email = `pages-${randomUUID()}@example.com`;
  const { id: userId } = await client.auth.signUp(email, 'correct horse battery');
  const token = (await client.supabase.auth.getSession()).data.session!.access_token;
  return { client, userId, token, email };
};

const get = async (token: string, path: string) => {
  const res = await fetch(`${server.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.json() as any };
};

/** Every page of a list over HTTP (limit 500): the ids of each page, in order. */
const pages = async (token: string, path: string, key: string, id: string, between?: (page: number) => Promise<void>) => {
  const got: string[][] = [];
  let cursor: string | null = null;
  do {
    const { status, body } = await get(token, `${path}?limit=500${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    expect(status).toBe(200);
    expect(body[key].length).toBeLessThanOrEqual(500);
    got.push(body[key].map((row: any) => row[id]));
    cursor = body.next_cursor;
    if (cursor !== null) await between?.(got.length);
  } while (cursor !== null);
  return got;
};

let owner: Awaited<ReturnType<typeof signedUp>>;
let workspaceId: string;
let canvasId: string;
beforeAll(async () => {
  owner = await signedUp();
  ({ workspace_id: workspaceId } = await owner.client.workspaces.create('Big'));
  ({ canvas_id: canvasId } = await owner.client.canvases.create(workspaceId, 'Shared'));
  const tag = randomUUID();
  // written directly: N users who joined W over the last hour (two at each second: ties go by
  // user_id), N invites of W, N more workspaces of the owner, and 3 members of the canvas alone
  await db.sql`insert into auth.users (email, email_confirmed_at) select 'm' || i || '-' || ${tag} || '@example.com', now()
    from generate_series(1, ${N}) i`;
  await db.sql`insert into app.workspace_members (workspace_id, user_id, role, created_at)
    select ${workspaceId}, u.id, 'viewer', now() - interval '1 hour' + make_interval(secs => (split_part(split_part(u.email, '-', 1), 'm', 2)::int) / 2)
    from auth.users u where u.email like ${`m%-${tag}@example.com`}`;
  await db.sql`insert into app.workspace_invites (workspace_id, email, role, invited_by, created_at)
    select ${workspaceId}, 'invitee' || i || '-' || ${tag} || '@example.com', 'viewer', ${owner.userId}, now() - make_interval(secs => i / 2)
    from generate_series(1, ${N}) i`;
  await db.sql`with w as (insert into app.workspaces (name, created_by) select 'W' || i, ${owner.userId} from generate_series(1, ${N}) i returning workspace_id)
    insert into app.workspace_members (workspace_id, user_id, role, created_at) select workspace_id, ${owner.userId}, 'owner', now() - interval '1 day' from w`;
  await db.sql`insert into auth.users (email, email_confirmed_at) select 'alone' || i || '-' || ${tag} || '@example.com', now() from generate_series(1, 3) i`;
  await db.sql`insert into app.canvas_members (canvas_id, user_id, role, created_at)
    select ${canvasId}, id, 'viewer', now() - interval '2 hours' from auth.users where email like ${`alone%-${tag}@example.com`}`;
}, 120_000);

const ids = async (query: Promise<Array<Record<string, unknown>>>) => (await query).map((r) => r.id as string);
const membersOrder = () => ids(db.sql`select user_id as id from app.workspace_members where workspace_id = ${workspaceId} order by created_at, user_id`);
const invitesOrder = () => ids(db.sql`select invite_id as id from app.workspace_invites where workspace_id = ${workspaceId} order by created_at, invite_id`);
const workspacesOrder = () => ids(db.sql`select workspace_id as id from app.workspace_members where user_id = ${owner.userId} order by created_at, workspace_id`);
const usersOrder = () => ids(db.sql`select user_id as id from (
    select user_id, created_at from app.workspace_members where workspace_id = ${workspaceId}
    union all
    select user_id, created_at from app.canvas_members cm where canvas_id = ${canvasId}
      and not exists (select from app.workspace_members m where m.workspace_id = ${workspaceId} and m.user_id = cm.user_id)) k
  order by created_at, user_id`);

it('W1, W4, W9 and A8 answer pages of at most 500 that hold every row once, in order; the client follows them', async () => {
  const expected = { members: await membersOrder(), invites: await invitesOrder(), workspaces: await workspacesOrder(), users: await usersOrder() };
  expect(expected.members.length).toBe(N + 1);
  expect(expected.users.length).toBe(N + 4);
  for (const [path, key, id, want] of [
    ['/api/v1/workspaces', 'workspaces', 'workspace_id', expected.workspaces],
    [`/api/v1/workspaces/${workspaceId}/members`, 'members', 'user_id', expected.members],
    [`/api/v1/workspaces/${workspaceId}/invites`, 'invites', 'invite_id', expected.invites],
    [`/api/v1/canvas/${canvasId}/permissions`, 'users', 'user_id', expected.users],
  ] as const) {
    const got = await pages(owner.token, path, key, id);
    expect(got.length, path).toBe(2);
    expect(got.flat(), path).toEqual(want);
  }
  // the client's paging helper, with the real server
  expect((await owner.client.workspaces.list()).map((w) => w.workspace_id)).toEqual(expected.workspaces);
  expect((await owner.client.workspaces.members(workspaceId)).map((m) => m.user_id)).toEqual(expected.members);
}, 120_000);

it('a member added and a role changed between pages: every member once, the newcomer last', async () => {
  const before = await membersOrder();
  const newcomer = await signedUp();
  const got = await pages(owner.token, `/api/v1/workspaces/${workspaceId}/members`, 'members', 'user_id', async () => {
    const added = await fetch(`${server.url}/api/v1/workspaces/${workspaceId}/members`, {
      method: 'POST', headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ email: newcomer.email, role: 'editor' }) });
    expect(added.status).toBe(201);
    const changed = await fetch(`${server.url}/api/v1/workspaces/${workspaceId}/members/${before.at(-2)}`, {
      method: 'PATCH', headers: { authorization: `Bearer ${owner.token}`, 'content-type': 'application/json' }, body: JSON.stringify({ role: 'admin' }) });
    expect(changed.status).toBe(200);
  });
  expect(got.flat()).toEqual([...before, newcomer.userId]);
  await db.sql`delete from app.workspace_members where workspace_id = ${workspaceId} and user_id = ${newcomer.userId}`;
}, 60_000);

it('access is checked on every page: a member removed after the first is refused the next', async () => {
  const member = await signedUp();
  await db.sql`insert into app.workspace_members (workspace_id, user_id, role) values (${workspaceId}, ${member.userId}, 'viewer')`;
  const first = await get(member.token, `/api/v1/workspaces/${workspaceId}/members?limit=500`);
  expect(first.status).toBe(200);
  const permissions = await get(member.token, `/api/v1/canvas/${canvasId}/permissions?limit=500`);
  expect(permissions.status).toBe(200);
  const removed = await fetch(`${server.url}/api/v1/workspaces/${workspaceId}/members/${member.userId}`, {
    method: 'DELETE', headers: { authorization: `Bearer ${owner.token}` } });
  expect(removed.status).toBe(204);
  expect(await get(member.token, `/api/v1/workspaces/${workspaceId}/members?limit=500&cursor=${encodeURIComponent(first.body.next_cursor)}`))
    .toMatchObject({ status: 404, body: { error: { code: 'not_found', field: 'workspace_id' } } });
  expect(await get(member.token, `/api/v1/canvas/${canvasId}/permissions?limit=500&cursor=${encodeURIComponent(permissions.body.next_cursor)}`))
    .toMatchObject({ status: 404, body: { error: { code: 'not_found' } } });
}, 60_000);

it('a cursor the list did not return is a 400 naming cursor, on each of the four', async () => {
  for (const path of ['/api/v1/workspaces', `/api/v1/workspaces/${workspaceId}/members`, `/api/v1/workspaces/${workspaceId}/invites`,
    `/api/v1/canvas/${canvasId}/permissions`]) {
    for (const cursor of ['x', '1234567890123456789.00000000-0000-0000-0000-000000000000']) {
      expect(await get(owner.token, `${path}?cursor=${encodeURIComponent(cursor)}`), `${path} ${cursor}`)
        .toMatchObject({ status: 400, body: { error: { code: 'invalid_input', field: 'cursor' } } });
    }
  }
});
