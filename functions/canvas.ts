import { createRoute } from '@hono/zod-openapi';
import type { Deps } from '../src/http/env.ts';
import { requireAuth } from '../src/http/middleware.ts';
import { bearerSecurity, ListQuery, createRouter, queryInteger, responses, z } from '../src/http/openapi.ts';
import { callApi, callMutation, mutationOutcome } from '../src/http/rpc.ts';
import { BatchResult, Block, BlockPage, Canvas, CanvasCreated, CanvasList, ChangesSince, ClientId, LeaveResult, MutationConflict, MutationResult, Permissions,
  PresenceResult, Snapshot, TextOp, Uuid } from '../src/http/schemas.ts';
import { INT4_MAX, SEQ_MAX } from '../src/input-policy.ts';

/**
 * Canvas endpoints (seed H2–H4, H6, A1–A8), mounted at /api/v1/canvas locally and deployed as
 * the `canvas` edge function. Each handler validates, then calls exactly one `api` function.
 */
const CanvasParams = z.object({ canvas_id: Uuid });
const BlockParams = CanvasParams.extend({ block_id: Uuid });
const Json = z.record(z.string(), z.unknown());
// opaque to clients: the first page's canvas_watermark and watermark, and the last y_order sent
const SnapshotCursor = z.string().regex(/^[0-9]{1,18}\.[0-9]{1,18}\.[0-9A-Za-z]{1,10}$/, 'a next_cursor this endpoint returned')
  .openapi({ description: 'next_cursor of the previous page' });

// The operation, one schema per action, with what the database requires of each
// (api.upsert_block_atomic; docs/mutations.md "An operation").
const clientOpId = z.string().min(1).max(128).openapi({ description: 'idempotency key: resending it never applies the operation twice' });
const blockId = Uuid;
const baseVersion = z.number().int().min(1).max(INT4_MAX).openapi({ description: 'the block version this edit was made on' }); // int4 in SQL
const content = Json.openapi({ description: 'JSON Merge Patch (RFC 7396) on the block content: null removes a key' });
const type = z.string().regex(/^[a-z][a-z0-9_]{0,39}$/);
const placement = {
  parent_id: Uuid.nullable().optional().openapi({ description: 'a block of the same canvas, or null (top level)' }),
  y_order: z.string().regex(/^[0-9A-Za-z]{0,9}[1-9A-Za-z]$/).optional().openapi({ description: 'the LexoRank key itself' }),
  after_id: Uuid.nullable().optional().openapi({ description: 'right after this block (null: first); with neither, appended' }),
};
const CreateOp = z.object({
  action: z.literal('create'),
  block_id: blockId.optional().openapi({ description: 'generated when absent' }),
  client_op_id: clientOpId,
  patch: z.object({ type, content: content.optional().openapi({ description: 'the initial content (applied to {})' }), ...placement }).strict(),
}).strict().openapi('CreateOp');
const UpdateOp = z.object({
  action: z.literal('update'), block_id: blockId, client_op_id: clientOpId, base_version: baseVersion,
  patch: z.object({
    content: content.optional(),
    text: z.record(z.string(), TextOp).optional().openapi({ description: 'text operations by content key, transformed against concurrent ones' }),
    type: type.optional(),
    ...placement,
  }).strict().openapi({ description: 'must change something; one key is either set (content) or edited (text)' }),
}).strict().openapi('UpdateOp');
const MoveOp = z.object({
  action: z.literal('move'), block_id: blockId, client_op_id: clientOpId, base_version: baseVersion,
  patch: z.object(placement).strict().openapi({ description: 'a move changes only parent_id, y_order or after_id' }),
}).strict().openapi('MoveOp');
const DeleteOp = z.object({
  action: z.literal('delete'), block_id: blockId, client_op_id: clientOpId, base_version: baseVersion,
  patch: z.object({}).strict().optional(),
}).strict().openapi('DeleteOp', { description: 'removes the block and its whole subtree' });
const MutationOp = z.discriminatedUnion('action', [CreateOp, UpdateOp, MoveOp, DeleteOp]).openapi('MutationOp');
const MutationBatch = z.object({ ops: z.array(MutationOp).min(1).max(100) }).strict()
  .openapi('MutationBatch', { description: 'all or nothing, in order; later ops see earlier ones' });
const MutateBody = z.union([MutationOp, MutationBatch]);

const json = <T extends z.ZodTypeAny>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });
const route = <T extends Parameters<typeof createRoute>[0]>(r: T) => createRoute({ security: bearerSecurity, tags: ['canvas'], ...r });

const routes = {
  mutate: route({ method: 'post', path: '/{canvas_id}/mutate', operationId: 'mutateBlocks',
    summary: 'H2: apply a block mutation, or a batch of them (idempotent by client_op_id)',
    request: { params: CanvasParams, body: json(MutateBody) },
    responses: responses(200, 'applied: a MutationResult for one op, a BatchResult for {ops}', z.union([MutationResult, BatchResult]), {
      conflict: { description: 'conflict (changed, fields.<field>.{base, theirs, mine}) or rebase_required, with the current block', schema: MutationConflict },
    }) }),
  presence: route({ method: 'post', path: '/{canvas_id}/presence', operationId: 'updatePresence', summary: 'H3: cursor and typing',
    request: { params: CanvasParams, body: json(z.object({ cursor: Json.nullable().optional(), typing: z.boolean().optional() }).strict()) },
    responses: responses(200, 'broadcast', PresenceResult) }),
  snapshot: route({ method: 'get', path: '/{canvas_id}/snapshot', operationId: 'getCanvasSnapshot',
    summary: 'H4: full state, a page at a time, plus the operations after since_seq',
    description: 'A page holds at most 1000 blocks and about 4 MB of their content; while has_more, ask again with cursor = next_cursor. '
      + "Every page answers the first page's watermarks and leaves out the blocks changed after its canvas_watermark: join the pages, then "
      + 'apply the changes after canvas_watermark (GET /canvas/{id}/changes, read after the last page) to get the whole canvas, consistent at '
      + "their canvas_watermark (docs/realtime.md, \"Paged snapshots\"). A page with a cursor counts against H7 (10 a second), the first against H4. "
      + 'A cursor whose changes retention removed is a 400 (field cursor): start again.',
    request: { params: CanvasParams, query: z.object({ since_seq: queryInteger(0, SEQ_MAX).optional(), cursor: SnapshotCursor.optional() }) },
    responses: responses(200, 'canvas, blocks and watermarks; `since` with since_seq', Snapshot) }),
  changes: route({ method: 'get', path: '/{canvas_id}/changes', operationId: 'getCanvasChangesSince',
    summary: 'H7: the operations after since_canvas_seq (api.get_canvas_changes_since)',
    description: 'A canvas_seq gap between two block_op broadcasts (or a reconnect) is filled from here: the applied operations with '
      + 'canvas_seq > since_canvas_seq, in order and without gaps, at most limit (default 500, at most 1000) and about 4 MB of them; while has_more, ask again '
      + 'from canvas_watermark. snapshot_required: the log cannot continue from there, load the snapshot. Counts against the '
      + "user's H7 limit (10 a second).",
    request: { params: CanvasParams, query: z.object({ since_canvas_seq: queryInteger(0, SEQ_MAX), limit: queryInteger(1, 1000).optional() }) },
    responses: responses(200, '{changes, has_more, watermark, canvas_watermark, snapshot_required}', ChangesSince) }),
  leave: route({ method: 'post', path: '/{canvas_id}/leave', operationId: 'leaveCanvas', summary: 'H6: leave the canvas',
    description: 'An explicit leave (api.leave_canvas without a session): your presence row on the canvas goes with every realtime '
      + 'session that held it (your tabs and H1 sockets, on any gateway) and presence_leave is broadcast. A socket or channel closing '
      + 'leaves only its own session: you leave the canvas when it was your last (docs/realtime.md, presence_leave).',
    request: { params: CanvasParams }, responses: responses(200, 'left', LeaveResult) }),
  get: route({ method: 'get', path: '/{canvas_id}', operationId: 'getCanvas', summary: 'A1: canvas and its blocks, a page at a time',
    description: 'As GET /canvas/{id}/snapshot without since_seq: while has_more, ask again with cursor = next_cursor.',
    request: { params: CanvasParams, query: z.object({ cursor: SnapshotCursor.optional() }) },
    responses: responses(200, 'canvas, a page of blocks and watermarks (no `since`)', Snapshot) }),
  blocks: route({ method: 'get', path: '/{canvas_id}/blocks', operationId: 'listBlocks', summary: 'A2: blocks in rank order, keyset-paginated',
    description: 'A page holds at most limit (default 100, at most 500) blocks and about 4 MB of their content (the first always on it); '
      + 'while next_cursor is not null, ask again with cursor = next_cursor.',
    request: { params: CanvasParams, query: z.object({
      cursor: z.string().regex(/^[0-9A-Za-z]{1,10}$/).optional(), limit: queryInteger(1, 500).optional() }) },
    responses: responses(200, '{items, next_cursor}', BlockPage) }),
  block: route({ method: 'get', path: '/{canvas_id}/blocks/{block_id}', operationId: 'getBlock', summary: 'A3: one block',
    request: { params: BlockParams }, responses: responses(200, 'the block', Block) }),
  list: route({ method: 'get', path: '/', operationId: 'listCanvases', summary: "A4: the caller's canvases, a page at a time",
    description: 'Newest change first, at most limit (default 100, at most 500) and about 4 MB a page; while next_cursor is not null, '
      + 'ask again with cursor = next_cursor. A canvas changed while you page moves to the front: a list is not a snapshot.',
    request: { query: ListQuery }, responses: responses(200, '{canvases, next_cursor}, newest change first', CanvasList) }),
  create: route({ method: 'post', path: '/', operationId: 'createCanvas', summary: 'A5: create a canvas',
    description: 'Send a `canvas_id` you chose (a random UUID) to make the request safe to resend: an answer lost with its connection '
      + '(a 503, a timeout, a dropped network) leaves you not knowing whether the canvas was created, and resending the same body then '
      + 'answers the canvas it created (201, the same {canvas_id}) instead of creating a second one.',
    request: { body: json(z.object({ workspace_id: Uuid, title: z.string().min(1).max(500).optional(),
      settings: Json.optional(), canvas_id: ClientId.optional().openapi({
        description: 'the id to create the canvas with (chosen by the client, a random UUID): a resend with it answers the same canvas; '
          + 'when absent the server chooses one' }) }).strict()) },
    responses: responses(201, '{canvas_id} (also when resent with its canvas_id)', CanvasCreated, { conflict: {
      description: 'conflict: canvas_id is another canvas (field canvas_id: another user\'s, or one you deleted since), or you created it '
        + 'with another workspace_id, title or settings (the field that differs); nothing was written' } }) }),
  update: route({ method: 'patch', path: '/{canvas_id}', operationId: 'updateCanvas', summary: 'A6: title and settings (owner/admin)',
    request: { params: CanvasParams, body: json(z.object({ title: z.string().min(1).max(500).optional(),
      settings: Json.optional() }).strict()) }, responses: responses(200, 'the updated canvas', Canvas) }),
  remove: route({ method: 'delete', path: '/{canvas_id}', operationId: 'deleteCanvas', summary: 'A7: soft delete (owner)',
    request: { params: CanvasParams }, responses: responses(204, 'deleted', null) }),
  permissions: route({ method: 'get', path: '/{canvas_id}/permissions', operationId: 'getCanvasPermissions',
    summary: 'A8: who has access, with which role, a page at a time; whether the caller may write',
    description: 'users by when each joined the workspace (a member of the canvas alone: when added to it), at most limit (default 100, '
      + 'at most 500) a page, fewer (even none) when the 2 × limit + 1 membership rows a page reads include canvas rows of workspace '
      + 'members (listed at their workspace membership); while next_cursor is not null, ask again with cursor = next_cursor. can_write '
      + 'and role are the caller\'s, '
      + 'on every page, and access is checked on every page.',
    request: { params: CanvasParams, query: ListQuery }, responses: responses(200, '{can_write, role, users, next_cursor}', Permissions) }),
};

export function canvasRoutes(deps: Deps) {
  const app = createRouter();
  app.use('*', requireAuth(deps));

  app.openapi(routes.mutate, async (c) => {
    const { canvas_id } = c.req.valid('param');
    const body = c.req.valid('json');
    const result = 'ops' in body
      ? await callMutation(deps, c, 'H2', 'upsert_blocks_atomic', [canvas_id, body.ops])
      : await callMutation(deps, c, 'H2', 'upsert_block_atomic', [
        canvas_id, body.block_id ?? null, body.action, body.client_op_id, 'base_version' in body ? body.base_version : null, body.patch ?? {}]);
    // a success is answered with the function's JSON text as is; anything else is read (and thrown)
    if (result.status === 'success') return c.body(result.json, 200, { 'Content-Type': 'application/json' }) as never;
    return c.json(mutationOutcome(JSON.parse(result.json)), 200);
  });
  app.openapi(routes.presence, async (c) => {
    const { cursor, typing } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'H3', 'update_presence', [c.req.valid('param').canvas_id, cursor ?? null, typing ?? false]), 200);
  });
  app.openapi(routes.snapshot, async (c) => {
    const { canvas_id } = c.req.valid('param');
    const { since_seq, cursor } = c.req.valid('query');
    // a page after the first is a bounded read as a page of the log is: H7's limit, not the snapshot's
    return c.json(await callApi<any>(deps, c, cursor ? 'H7' : 'H4', 'get_canvas_snapshot', [canvas_id, since_seq ?? null, cursor ?? null]), 200);
  });
  app.openapi(routes.changes, async (c) => {
    const { canvas_id } = c.req.valid('param');
    const { since_canvas_seq, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'H7', 'get_canvas_changes_since', [canvas_id, since_canvas_seq, limit ?? 500]), 200);
  });
  app.openapi(routes.leave, async (c) => {
    await callApi(deps, c, 'H6', 'leave_canvas', [c.req.valid('param').canvas_id]);
    return c.json({ left: true }, 200);
  });
  app.openapi(routes.get, async (c) =>
    c.json(await callApi<any>(deps, c, 'A1', 'get_canvas_snapshot', [c.req.valid('param').canvas_id, null, c.req.valid('query').cursor ?? null]), 200));
  app.openapi(routes.blocks, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'A2', 'list_blocks', [c.req.valid('param').canvas_id, cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.block, async (c) => {
    const { canvas_id, block_id } = c.req.valid('param');
    return c.json(await callApi<any>(deps, c, 'A3', 'get_block', [canvas_id, block_id]), 200);
  });
  app.openapi(routes.list, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'A4', 'list_my_canvases', [cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.create, async (c) => {
    const { workspace_id, title, settings, canvas_id } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'A5', 'create_canvas', [workspace_id, title ?? 'Untitled', settings ?? {}, canvas_id ?? null]), 201);
  });
  app.openapi(routes.update, async (c) => {
    const { title, settings } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'A6', 'update_canvas', [c.req.valid('param').canvas_id, title ?? null, settings ?? null]), 200);
  });
  app.openapi(routes.remove, async (c) => {
    await callApi(deps, c, 'A7', 'delete_canvas', [c.req.valid('param').canvas_id]);
    return c.body(null, 204) as never;
  });
  app.openapi(routes.permissions, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'A8', 'get_canvas_permissions', [c.req.valid('param').canvas_id, cursor ?? null, limit ?? 100]), 200);
  });
  return app;
}
