import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createUser, mutate } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { tokenFor } from '../helpers/http.ts';
import { realtimeClients } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// The workspace endpoints (functions/workspaces.ts → sql/rpc/workspaces.sql) over HTTP with real
// tokens against one server with its realtime gateway: workspaces, members by email, pending
// invites accepted at sign-up, the rules (owner/admin, last owner), bad input naming the field,
// rate limits, and that removing or demoting a member re-checks their open sockets.

const config = { ...loadConfig(), databaseUrl: testDatabaseUrl(), port: 0, logLevel: 'silent' as const };
const db = testDatabase(5);
const realtime = realtimeClients();
const sockets: WebSocket[] = [];
let server: Server;

beforeAll(async () => {
  server = await startServer(config);
  await server.gateway!.bus.ready();
}, 120_000);
afterAll(async () => {
  await realtime.disconnectAll();
  for (const ws of sockets) ws.terminate();
  await server?.stop();
  await db.close();
});

type Res = { status: number; body: any; headers: Headers };
/** A request as `userId` (a signed access token) with a JSON body. */
async function call(userId: string | null, method: string, path: string, body?: unknown): Promise<Res> {
  const headers: Record<string, string> = {};
  if (userId) headers.authorization = `Bearer ${await tokenFor(server, userId)}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(`${server.url}${path}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers };
}
const ws = (path = '') => `/api/v1/workspaces${path}`;

function expectError(res: Res, status: number, code: string, extra: Record<string, unknown> = {}) {
  expect(res.status, JSON.stringify(res.body)).toBe(status);
  expect(res.body.error).toMatchObject({ code, ...extra });
}

/** A confirmed user with an email we know (createUser adds a random suffix). */
async function userWithEmail(name: string): Promise<{ id: string; email: string }> {
  const email = `${name}-${randomUUID()}@test.local`;
  const [row] = await db.sql`insert into auth.users (email, email_confirmed_at) values (${email}, now()) returning id`;
  return { id: row!.id as string, email };
}

/** A workspace created over HTTP by a new owner, with members added by email over HTTP. */
async function workspaceWith(roles: Array<'owner' | 'admin' | 'editor' | 'viewer'> = []) {
  const owner = await createUser(db.sql, 'ws-owner');
  const created = await call(owner, 'POST', ws(), { name: 'Team' });
  expect(created.status, JSON.stringify(created.body)).toBe(201);
  const workspaceId = created.body.workspace_id as string;
  const users: Record<string, string> = { owner };
  for (const role of roles) {
    const u = await userWithEmail(role);
    const added = await call(owner, 'POST', ws(`/${workspaceId}/members`), { email: u.email, role });
    expect(added.status, JSON.stringify(added.body)).toBe(201);
    users[role] = u.id;
  }
  return { workspaceId, users };
}

describe('workspaces', () => {
  it('create, list, rename; a canvas is created with the workspace_id and listed under it', async () => {
    const owner = await createUser(db.sql, 'flow');
    const created = await call(owner, 'POST', ws(), { name: '  Design  ' });
    expect(created.status).toBe(201);
    expect(created.body).toEqual({ workspace_id: expect.any(String), name: 'Design', role: 'owner', created_by: owner, created_at: expect.any(String) });
    const id = created.body.workspace_id;

    const listed = await call(owner, 'GET', ws());
    expect(listed.status).toBe(200);
    expect(listed.body).toEqual({ workspaces: [created.body], next_cursor: null });

    const renamed = await call(owner, 'PATCH', ws(`/${id}`), { name: 'Design team' });
    expect(renamed.status).toBe(200);
    expect(renamed.body).toMatchObject({ workspace_id: id, name: 'Design team', role: 'owner' });

    const canvas = await call(owner, 'POST', '/api/v1/canvas', { workspace_id: id, title: 'Board' });
    expect(canvas.status).toBe(201);
    const canvases = await call(owner, 'GET', ws(`/${id}/canvases`));
    expect(canvases.status).toBe(200);
    expect(canvases.body.canvases).toMatchObject([{ canvas_id: canvas.body.canvas_id, workspace_id: id, title: 'Board', role: 'owner' }]);

    // the same routes as the `workspaces` edge function
    const alias = await call(owner, 'GET', `/functions/v1/workspaces/${id}/members`);
    expect(alias.status).toBe(200);
    expect(alias.body.members).toMatchObject([{ user_id: owner, role: 'owner' }]);
  });

  it('members: add by email at once, invite an unknown email, change a role, remove, revoke an invite', async () => {
    const { workspaceId, users } = await workspaceWith(['admin']);
    const bob = await userWithEmail('bob');
    const added = await call(users.admin!, 'POST', ws(`/${workspaceId}/members`), { email: bob.email.toUpperCase(), role: 'editor' });
    expect(added.status).toBe(201);
    expect(added.body).toEqual({ kind: 'member', member: { user_id: bob.id, email: bob.email, role: 'editor', joined_at: expect.any(String) } });

    const unknown = `carol-${randomUUID()}@Example.com`;
    const invited = await call(users.admin!, 'POST', ws(`/${workspaceId}/members`), { email: unknown, role: 'viewer' });
    expect(invited.status).toBe(201);
    expect(invited.body).toEqual({ kind: 'invite', invite: { invite_id: expect.any(String), workspace_id: workspaceId,
      email: unknown.toLowerCase(), role: 'viewer', invited_by: users.admin, created_at: expect.any(String) } });
    expect((await call(users.owner!, 'GET', ws(`/${workspaceId}/invites`))).body.invites).toEqual([invited.body.invite]);

    const members = await call(bob.id, 'GET', ws(`/${workspaceId}/members`));
    expect(members.status).toBe(200);
    expect(members.body.members.map((m: any) => [m.user_id, m.role])).toEqual([[users.owner, 'owner'], [users.admin, 'admin'], [bob.id, 'editor']]);

    const changed = await call(users.admin!, 'PATCH', ws(`/${workspaceId}/members/${bob.id}`), { role: 'viewer' });
    expect(changed.status).toBe(200);
    expect(changed.body).toMatchObject({ user_id: bob.id, role: 'viewer' });

    const removed = await call(users.admin!, 'DELETE', ws(`/${workspaceId}/members/${bob.id}`));
    expect(removed.status).toBe(204);
    expectError(await call(bob.id, 'GET', ws(`/${workspaceId}/members`)), 404, 'not_found', { field: 'workspace_id' });

    expect((await call(users.admin!, 'DELETE', ws(`/${workspaceId}/invites/${invited.body.invite.invite_id}`))).status).toBe(204);
    expect((await call(users.owner!, 'GET', ws(`/${workspaceId}/invites`))).body.invites).toEqual([]);

    // every change audited, by whom
    const audit = await db.sql`select action, user_id from app.system_audit where entity_id = ${workspaceId} order by audit_id`;
    expect(audit.map((a) => `${a.action} ${a.user_id === users.admin ? 'admin' : 'owner'}`)).toEqual([
      'workspace.create owner', 'workspace.member.add owner', 'workspace.member.add admin', 'workspace.member.invite admin',
      'workspace.member.role admin', 'workspace.member.remove admin', 'workspace.invite.revoke admin']);
  });

  it('a pending invite is accepted once its email is confirmed: at a confirmed sign-up, or at the confirmation', async () => {
    const { workspaceId, users } = await workspaceWith();
    const email = `dora-${randomUUID()}@test.local`;
    expect((await call(users.owner!, 'POST', ws(`/${workspaceId}/members`), { email, role: 'editor' })).body.kind).toBe('invite');
    // a sign-up that must confirm its address (whatever inserts the user: Supabase Auth, the local
    // sign-up with AUTH_EMAIL_CONFIRM=true, SQL): not a member yet, the invite still pending
    const [row] = await db.sql`insert into auth.users (email) values (${email}) returning id`;
    const dora = row!.id as string;
    expect((await call(dora, 'GET', ws())).body.workspaces).toEqual([]);
    expect((await call(users.owner!, 'GET', ws(`/${workspaceId}/invites`))).body.invites).toHaveLength(1);
    // the confirmation proves the address
    await db.sql`update auth.users set email_confirmed_at = now() where id = ${dora}`;
    const listed = await call(dora, 'GET', ws());
    expect(listed.body.workspaces).toMatchObject([{ workspace_id: workspaceId, role: 'editor' }]);
    expect((await call(users.owner!, 'GET', ws(`/${workspaceId}/invites`))).body.invites).toEqual([]);
    // and the new member can work right away
    const canvas = await call(dora, 'POST', '/api/v1/canvas', { workspace_id: workspaceId, title: 'Mine' });
    expect(canvas.status).toBe(201);
  });

  it('any address one can sign up with can be added by it: the invite has the sign-up\'s rule, not a stricter one', async () => {
    const { workspaceId, users } = await workspaceWith();
    const { anon } = await apiKeys(config);
    const suffix = randomUUID().slice(0, 8);
    // the local sign-up takes them (as browsers' type=email does); the invite refused each as "Invalid email address"
    for (const email of [`o'brien-${suffix}@test.local`, `a..b-${suffix}@test.local`, `x-${suffix}@localhost`]) {
      const signUp = await fetch(`${server.url}/auth/v1/signup`, { method: 'POST', headers: { apikey: anon, 'content-type': 'application/json' },
        body: JSON.stringify({ email, password: 'correct horse battery' }) });
      expect(signUp.status, await signUp.clone().text()).toBe(200);
      const added = await call(users.owner!, 'POST', ws(`/${workspaceId}/members`), { email, role: 'viewer' });
      expect(added.status, JSON.stringify(added.body)).toBe(201);
      expect(added.body).toMatchObject({ kind: 'member', member: { email, role: 'viewer' } });
    }
  });

  it('the rules: owner/admin change members, only an owner touches owners, strangers learn nothing', async () => {
    const { workspaceId, users } = await workspaceWith(['admin', 'editor', 'viewer']);
    const stranger = await createUser(db.sql, 'stranger');
    const newcomer = await userWithEmail('newcomer');
    const add = (who: string, role: string) => call(who, 'POST', ws(`/${workspaceId}/members`), { email: newcomer.email, role });

    expectError(await add(users.editor!, 'viewer'), 403, 'forbidden');
    expectError(await add(users.viewer!, 'viewer'), 403, 'forbidden');
    expectError(await add(stranger, 'viewer'), 404, 'not_found', { field: 'workspace_id' });
    expectError(await add(users.admin!, 'owner'), 403, 'forbidden', { field: 'role' });
    expectError(await call(users.editor!, 'PATCH', ws(`/${workspaceId}`), { name: 'Mine now' }), 403, 'forbidden');
    expectError(await call(users.admin!, 'PATCH', ws(`/${workspaceId}/members/${users.owner}`), { role: 'viewer' }), 403, 'forbidden');
    expectError(await call(users.admin!, 'DELETE', ws(`/${workspaceId}/members/${users.owner}`)), 403, 'forbidden');
    expectError(await call(users.viewer!, 'DELETE', ws(`/${workspaceId}/members/${users.editor}`)), 403, 'forbidden');
    expectError(await call(stranger, 'GET', ws(`/${workspaceId}/members`)), 404, 'not_found');
    expectError(await call(users.editor!, 'GET', ws(`/${workspaceId}/invites`)), 403, 'forbidden');
    expectError(await call(null, 'GET', ws()), 401, 'unauthorized');
    // nothing of the refused attempts was written
    expect(await db.sql`select 1 from app.workspace_members where user_id = ${newcomer.id}`).toHaveLength(0);
    expect((await db.sql`select name from app.workspaces where workspace_id = ${workspaceId}`)[0]!.name).toBe('Team');

    expect((await add(users.admin!, 'editor')).body.kind).toBe('member');
    expectError(await add(users.admin!, 'viewer'), 409, 'conflict', { field: 'email', reason: 'already_member', user_id: newcomer.id });

    // the last owner stays; anyone else may leave
    expectError(await call(users.owner!, 'PATCH', ws(`/${workspaceId}/members/${users.owner}`), { role: 'admin' }), 400, 'invalid_input',
      { field: 'role', reason: 'last_owner' });
    expectError(await call(users.owner!, 'DELETE', ws(`/${workspaceId}/members/${users.owner}`)), 400, 'invalid_input',
      { field: 'user_id', reason: 'last_owner' });
    expect((await call(users.viewer!, 'DELETE', ws(`/${workspaceId}/members/${users.viewer}`))).status).toBe(204);
    expect((await call(users.owner!, 'PATCH', ws(`/${workspaceId}/members/${users.admin}`), { role: 'owner' })).status).toBe(200);
    expect((await call(users.owner!, 'DELETE', ws(`/${workspaceId}/members/${users.owner}`))).status).toBe(204);
    expect((await call(users.admin!, 'GET', ws(`/${workspaceId}/members`))).body.members.map((m: any) => m.role)).toEqual(['owner', 'editor', 'editor']);
  });

  it('two owners stepping down at the same moment: one succeeds, the workspace keeps the other', async () => {
    for (let round = 0; round < 5; round++) {
      const { workspaceId, users } = await workspaceWith();
      const second = await userWithEmail('second');
      await call(users.owner!, 'POST', ws(`/${workspaceId}/members`), { email: second.email, role: 'owner' });
      const [a, b] = await Promise.all([
        call(users.owner!, 'PATCH', ws(`/${workspaceId}/members/${users.owner}`), { role: 'admin' }),
        call(second.id, 'DELETE', ws(`/${workspaceId}/members/${second.id}`)),
      ]);
      expect([a, b].filter((r) => r.status === 200 || r.status === 204)).toHaveLength(1);
      expect([a, b].filter((r) => r.status === 400).map((r) => r.body.error.reason)).toEqual(['last_owner']);
      const owners = await db.sql`select user_id from app.workspace_members where workspace_id = ${workspaceId} and role = 'owner'`;
      expect(owners).toHaveLength(1);
    }
  });

  it('bad input is answered 400 naming the field', async () => {
    const { workspaceId, users } = await workspaceWith(['editor']);
    const owner = users.owner!;
    const cases: Array<[string, string, unknown, string]> = [
      ['POST', ws(), {}, 'name'],
      ['POST', ws(), { name: '' }, 'name'],
      ['POST', ws(), { name: 'x'.repeat(201) }, 'name'],
      ['POST', ws(), { name: '   ' }, 'name'],
      ['PATCH', ws(`/${workspaceId}`), { name: 42 }, 'name'],
      ['PATCH', ws('/not-a-uuid'), { name: 'ok' }, 'workspace_id'],
      ['POST', ws(`/${workspaceId}/members`), { email: 'nope', role: 'viewer' }, 'email'],
      ['POST', ws(`/${workspaceId}/members`), { email: 'a@b.co', role: 'boss' }, 'role'],
      ['POST', ws(`/${workspaceId}/members`), { role: 'viewer' }, 'email'],
      ['PATCH', ws(`/${workspaceId}/members/${users.editor}`), { role: 'root' }, 'role'],
      ['PATCH', ws(`/${workspaceId}/members/123`), { role: 'viewer' }, 'user_id'],
      ['DELETE', ws(`/${workspaceId}/members/xyz`), undefined, 'user_id'],
      ['DELETE', ws(`/${workspaceId}/invites/xyz`), undefined, 'invite_id'],
      ['GET', ws('/xyz/members'), undefined, 'workspace_id'],
    ];
    for (const [method, path, body, field] of cases) {
      const res = await call(owner, method, path, body);
      expectError(res, 400, 'invalid_input', { field });
    }
    expectError(await call(owner, 'PATCH', ws(`/${workspaceId}/members/${randomUUID()}`), { role: 'viewer' }), 404, 'not_found', { field: 'user_id' });
    expectError(await call(owner, 'DELETE', ws(`/${workspaceId}/invites/${randomUUID()}`)), 404, 'not_found', { field: 'invite_id' });
  });

  it('adding members is rate limited (W5: 20 per minute per user)', async () => {
    const { workspaceId, users } = await workspaceWith();
    // the limit counts in fixed one-minute windows: start well inside one
    const intoMinute = (Date.now() / 1000) % 60;
    if (intoMinute > 50) await new Promise((r) => setTimeout(r, (61 - intoMinute) * 1000));
    const invite = () => call(users.owner!, 'POST', ws(`/${workspaceId}/members`), { email: `rl-${randomUUID()}@test.local`, role: 'viewer' });
    const statuses: number[] = [];
    for (let i = 0; i < 20; i++) statuses.push((await invite()).status);
    expect(statuses).toEqual(Array(20).fill(201));
    const limited = await invite();
    expectError(limited, 429, 'rate_limited');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0);
  }, 30_000);

  it('the OpenAPI document has the workspace routes, their operationIds and schemas', async () => {
    const doc = (await call(null, 'GET', '/api/v1/openapi.json')).body;
    const ids = Object.entries(doc.paths as Record<string, any>).filter(([p]) => p.startsWith('/api/v1/workspaces'))
      .flatMap(([, ops]) => Object.values(ops).map((o: any) => o.operationId)).sort();
    expect(ids).toEqual(['addWorkspaceMember', 'createWorkspace', 'listWorkspaceCanvases', 'listWorkspaceInvites', 'listWorkspaceMembers',
      'listWorkspaces', 'removeWorkspaceMember', 'renameWorkspace', 'revokeWorkspaceInvite', 'updateWorkspaceMember']);
    expect(Object.keys(doc.components.schemas)).toEqual(expect.arrayContaining(['Workspace', 'Member', 'Invite', 'AddMemberResult']));
    expect(Object.keys(doc.components.schemas.Member.properties).sort()).toEqual(['email', 'joined_at', 'role', 'user_id']);
  });
});

describe('open sockets of a member whose access changes', () => {
  const is = (type: ServerMessage['type'], extra: (m: any) => boolean = () => true) => (m: ServerMessage) => m.type === type && extra(m);
  const h1 = async (canvasId: string, userId: string): Promise<H1Conn> => {
    const conn = await openH1(server.url, canvasId, await tokenFor(server, userId), '&since_seq=0');
    sockets.push(conn.ws);
    await conn.next((m) => m.type === 'resumed');
    return conn;
  };
  const subscribe = (channel: RealtimeChannel) => new Promise<{ status: string; closedAt: () => number | null }>((resolve) => {
    let closedAt: number | null = null;
    channel.subscribe((status) => {
      if (status === 'CLOSED') closedAt ??= performance.now();
      else resolve({ status, closedAt: () => closedAt });
    });
  });

  it('DELETE of a member closes their H1 socket (4403) and realtime-js channel; nothing after reaches them', async () => {
    const { workspaceId, users } = await workspaceWith(['editor']);
    const canvasId = (await call(users.owner!, 'POST', '/api/v1/canvas', { workspace_id: workspaceId, title: 'Live' })).body.canvas_id as string;
    const editorH1 = await h1(canvasId, users.editor!);
    const ownerH1 = await h1(canvasId, users.owner!);
    const system: any[] = [];
    const channel = realtime.connect(server.url, await tokenFor(server, users.editor!), '2.0.0')
      .channel(`canvas:${canvasId}`, { config: { private: true } }).on('system', {}, (p) => system.push(p));
    const sub = await subscribe(channel);
    expect(sub.status).toBe('SUBSCRIBED');
    const before = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'before' } } });
    await editorH1.next(is('delta', (m) => m.server_seq === before.server_seq));

    expect((await call(users.owner!, 'DELETE', ws(`/${workspaceId}/members/${users.editor}`))).status).toBe(204);
    const after = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'after' } } });

    const { code } = await Promise.race([editorH1.closed,
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`H1 not closed: ${JSON.stringify(editorH1.inbox.slice(-3))}`)), 10_000))]);
    expect(code).toBe(4403);
    expect(editorH1.inbox.at(-1)).toMatchObject({ type: 'error', code: 'forbidden' });
    expect(editorH1.inbox.filter((m) => m.type === 'delta').map((m: any) => m.server_seq)).toEqual([before.server_seq]);
    await until(() => sub.closedAt() !== null, 5000, 'the realtime-js channel to close');
    expect(system).toMatchObject([{ status: 'error', message: expect.stringMatching(/^Unauthorized/) }]);
    // the owner's socket stays and gets what the removed member did not
    await ownerH1.next(is('delta', (m) => m.server_seq === after.server_seq));
    expect(ownerH1.ws.readyState).toBe(WebSocket.OPEN);
    ownerH1.ws.close();
  });

  it('PATCH to viewer makes their H1 socket read-only, and back to editor writable', async () => {
    const { workspaceId, users } = await workspaceWith(['editor']);
    const canvasId = (await call(users.owner!, 'POST', '/api/v1/canvas', { workspace_id: workspaceId, title: 'Live' })).body.canvas_id as string;
    const conn = await h1(canvasId, users.editor!);
    expect((await call(users.owner!, 'PATCH', ws(`/${workspaceId}/members/${users.editor}`), { role: 'viewer' })).status).toBe(200);
    expect(await conn.next(is('access'), 3000)).toMatchObject({ type: 'access', can_write: false, role: 'viewer' });
    expect((await call(users.owner!, 'PATCH', ws(`/${workspaceId}/members/${users.editor}`), { role: 'editor' })).status).toBe(200);
    expect(await conn.next(is('access'), 3000)).toMatchObject({ type: 'access', can_write: true, role: 'editor' });
    expect(conn.ws.readyState).toBe(WebSocket.OPEN);
    conn.ws.close();
  });
});
