import { createRoute } from '@hono/zod-openapi';
import type { Deps } from '../src/http/env.ts';
import { requireAuth } from '../src/http/middleware.ts';
import { bearerSecurity, ListQuery, createRouter, responses, z } from '../src/http/openapi.ts';
import { callApi } from '../src/http/rpc.ts';
import { AddMemberResult, ClientId, CanvasList, InviteList, Member, MemberList, Role, Workspace, WorkspaceList, Uuid } from '../src/http/schemas.ts';

/**
 * Workspace endpoints (W1–W10), mounted at /api/v1/workspaces locally and deployed as the
 * `workspaces` edge function. Each handler validates, then calls exactly one `api` function of
 * sql/rpc/workspaces.sql, which holds the rules (who may do what, the last owner, invites, audit)
 * and documents them. W-numbers are the keys of app.endpoint_limits.
 */
const WorkspaceParams = z.object({ workspace_id: Uuid });
const MemberParams = WorkspaceParams.extend({ user_id: Uuid });
const InviteParams = WorkspaceParams.extend({ invite_id: Uuid });
const Name = z.string().min(1).max(200).openapi({ description: '1 to 200 characters, trimmed' });

const json = <T extends z.ZodTypeAny>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });
const route = <T extends Parameters<typeof createRoute>[0]>(r: T) => createRoute({ security: bearerSecurity, tags: ['workspaces'], ...r });

const routes = {
  list: route({ method: 'get', path: '/', operationId: 'listWorkspaces', summary: "W1: the caller's workspaces, with their role, a page at a time",
    description: 'By when the caller joined each (oldest first), at most limit (default 100, at most 500) a page; while next_cursor is not '
      + 'null, ask again with cursor = next_cursor. A workspace joined while you page comes on the last page.',
    request: { query: ListQuery }, responses: responses(200, '{workspaces, next_cursor}', WorkspaceList) }),
  create: route({ method: 'post', path: '/', operationId: 'createWorkspace', summary: 'W2: create a workspace (the caller becomes its owner)',
    description: 'Send a `workspace_id` you chose (a random UUID) to make the request safe to resend: an answer lost with its connection '
      + '(a 503, a timeout, a dropped network) leaves you not knowing whether the workspace was created, and resending the same body then '
      + 'answers the workspace it created (201, the same Workspace) instead of creating a second one.',
    request: { body: json(z.object({ name: Name, workspace_id: ClientId.optional().openapi({
      description: 'the id to create the workspace with (chosen by the client, a random UUID): a resend with it answers the same workspace; '
        + 'when absent the server chooses one' }) }).strict()) },
    responses: responses(201, 'the workspace (also when resent with its workspace_id)', Workspace, { conflict: {
      description: 'conflict: workspace_id is another workspace (field workspace_id: another user\'s, or one you left), or you created it '
        + 'with another name (field name); nothing was written' } }) }),
  rename: route({ method: 'patch', path: '/{workspace_id}', operationId: 'renameWorkspace', summary: 'W3: rename (owner/admin)',
    request: { params: WorkspaceParams, body: json(z.object({ name: Name }).strict()) }, responses: responses(200, 'the workspace', Workspace) }),
  members: route({ method: 'get', path: '/{workspace_id}/members', operationId: 'listWorkspaceMembers',
    summary: 'W4: the members, a page at a time (any member)',
    description: 'By when each joined (oldest first), at most limit (default 100, at most 500) a page; while next_cursor is not null, ask '
      + 'again with cursor = next_cursor. A member who joins while you page comes on the last page; a role changed meanwhile is as of its page.',
    request: { params: WorkspaceParams, query: ListQuery }, responses: responses(200, '{members, next_cursor}', MemberList) }),
  addMember: route({ method: 'post', path: '/{workspace_id}/members', operationId: 'addWorkspaceMember',
    summary: 'W5: add a confirmed user by email, or invite an email without one (owner/admin; only an owner adds an owner)',
    // the address rule is the database's (internal.normalize_email), no stricter than sign-up's:
    // zod's email() refused addresses users sign up with (o'brien@…, a..b@…, x@localhost)
    request: { params: WorkspaceParams, body: json(z.object({ email: z.string().max(320).openapi({
      description: 'an email address (one @, no spaces or invisible characters; matched lower-cased)', example: 'dora@example.com' }), role: Role }).strict()) },
    responses: responses(201, 'a member added, or an invite', AddMemberResult,
      { conflict: { description: 'conflict: already a member (field email, reason already_member, user_id)' } }) }),
  updateMember: route({ method: 'patch', path: '/{workspace_id}/members/{user_id}', operationId: 'updateWorkspaceMember',
    summary: "W6: change a member's role (owner/admin; only an owner makes or unmakes an owner; the last owner stays)",
    request: { params: MemberParams, body: json(z.object({ role: Role }).strict()) },
    responses: responses(200, 'the member; 400 invalid_input with reason last_owner for the last owner', Member) }),
  removeMember: route({ method: 'delete', path: '/{workspace_id}/members/{user_id}', operationId: 'removeWorkspaceMember',
    summary: "W7: remove a member (owner/admin; only an owner removes an owner), or leave (one's own user_id); the last owner stays",
    request: { params: MemberParams }, responses: responses(204, 'removed; their open sockets on its canvases are closed', null) }),
  canvases: route({ method: 'get', path: '/{workspace_id}/canvases', operationId: 'listWorkspaceCanvases',
    summary: "W8: the workspace's canvases, with the caller's role on each (any member)",
    description: 'Paged as GET /canvas (A4): at most limit (default 100, at most 500) and about 4 MB; while next_cursor is not null, ask '
      + 'again with cursor = next_cursor.',
    request: { params: WorkspaceParams, query: ListQuery }, responses: responses(200, '{canvases, next_cursor}', CanvasList) }),
  invites: route({ method: 'get', path: '/{workspace_id}/invites', operationId: 'listWorkspaceInvites',
    summary: 'W9: pending invites, a page at a time (owner/admin)',
    description: 'Oldest first, at most limit (default 100, at most 500) a page; while next_cursor is not null, ask again with cursor = '
      + 'next_cursor. An invite made while you page comes on the last page.',
    request: { params: WorkspaceParams, query: ListQuery }, responses: responses(200, '{invites, next_cursor}', InviteList) }),
  revokeInvite: route({ method: 'delete', path: '/{workspace_id}/invites/{invite_id}', operationId: 'revokeWorkspaceInvite',
    summary: "W10: revoke a pending invite (owner/admin; only an owner revokes an owner's invite)",
    request: { params: InviteParams }, responses: responses(204, 'revoked', null) }),
};

export function workspaceRoutes(deps: Deps) {
  const app = createRouter();
  app.use('*', requireAuth(deps));

  app.openapi(routes.list, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'W1', 'list_my_workspaces', [cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.create, async (c) => {
    const { name, workspace_id } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'W2', 'create_workspace', [name, workspace_id ?? null]), 201);
  });
  app.openapi(routes.rename, async (c) =>
    c.json(await callApi<any>(deps, c, 'W3', 'rename_workspace', [c.req.valid('param').workspace_id, c.req.valid('json').name]), 200));
  app.openapi(routes.members, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'W4', 'list_workspace_members', [c.req.valid('param').workspace_id, cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.addMember, async (c) => {
    const { email, role } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'W5', 'add_workspace_member', [c.req.valid('param').workspace_id, email, role]), 201);
  });
  app.openapi(routes.updateMember, async (c) => {
    const { workspace_id, user_id } = c.req.valid('param');
    return c.json(await callApi<any>(deps, c, 'W6', 'update_workspace_member', [workspace_id, user_id, c.req.valid('json').role]), 200);
  });
  app.openapi(routes.removeMember, async (c) => {
    const { workspace_id, user_id } = c.req.valid('param');
    await callApi(deps, c, 'W7', 'remove_workspace_member', [workspace_id, user_id]);
    return c.body(null, 204) as never;
  });
  app.openapi(routes.canvases, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'W8', 'list_workspace_canvases', [c.req.valid('param').workspace_id, cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.invites, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'W9', 'list_workspace_invites', [c.req.valid('param').workspace_id, cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.revokeInvite, async (c) => {
    const { workspace_id, invite_id } = c.req.valid('param');
    await callApi(deps, c, 'W10', 'revoke_workspace_invite', [workspace_id, invite_id]);
    return c.body(null, 204) as never;
  });
  return app;
}
