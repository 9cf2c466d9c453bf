import { createRoute } from '@hono/zod-openapi';
import type { Deps } from '../src/http/env.ts';
import { requireAuth } from '../src/http/middleware.ts';
import { bearerSecurity, createRouter, responses, z } from '../src/http/openapi.ts';
import { callApi, mutationOutcome } from '../src/http/rpc.ts';
import { INT4_MAX, SEQ_MAX } from '../src/input-policy.ts';

/**
 * Canvas endpoints (seed H2–H4, H6, A1–A8), mounted at /api/v1/canvas locally and deployed as
 * the `canvas` edge function. Each handler validates, then calls exactly one `api` function.
 */
const CanvasParams = z.object({ canvas_id: z.string().uuid() });
const BlockParams = CanvasParams.extend({ block_id: z.string().uuid() });
const Json = z.record(z.string(), z.unknown());

// A text-unicode operation (ShareDB): skip n / insert "str" / delete {d: n}, counted in code points.
const TextOp = z.array(z.union([
  z.number().int().min(1).max(INT4_MAX),
  z.string().min(1),
  z.object({ d: z.union([z.number().int().min(1).max(INT4_MAX), z.string().min(1)]) }).strict(),
])).openapi('TextOp', { description: 'text-unicode operation: n skips n code points, "str" inserts, {d: n} deletes n code points' });

const MutationOp = z.object({
  block_id: z.string().uuid().nullable().optional(),
  action: z.enum(['create', 'update', 'move', 'delete']),
  client_op_id: z.string().min(1).max(128),
  base_version: z.number().int().min(1).max(INT4_MAX).nullable().optional(), // an integer parameter in SQL
  patch: z.object({
    content: Json.optional().openapi({ description: 'JSON Merge Patch (RFC 7396) on the block content: null removes a key' }),
    text: z.record(z.string(), TextOp).optional().openapi({ description: 'text operations by content key (update only), transformed against concurrent ones' }),
    type: z.string().regex(/^[a-z][a-z0-9_]{0,39}$/).optional(),
    parent_id: z.string().uuid().nullable().optional(),
    y_order: z.string().regex(/^[0-9A-Za-z]{0,9}[1-9A-Za-z]$/).optional(),
    after_id: z.string().uuid().nullable().optional(),
  }).strict().default({}),
}).strict().openapi('MutationOp');
const MutateBody = z.union([MutationOp, z.object({ ops: z.array(MutationOp).min(1).max(100) }).strict()]);
const MutationResult = z.object({
  status: z.enum(['success']), server_seq: z.number(),
  // per canvas 1, 2, 3, … without gaps, in commit order (server_seq is global, with gaps per canvas)
  canvas_seq: z.number(), version: z.number(), block: Json.nullable(),
  // the text operations as applied (transformed against those committed since base_version)
  text: z.record(z.string(), TextOp).optional(),
  // true when this client_op_id had been applied before: the original result, nothing applied again
  duplicate: z.boolean().optional(),
}).passthrough().openapi('MutationResult');

const json = <T extends z.ZodTypeAny>(schema: T) => ({ content: { 'application/json': { schema } }, required: true });

const routes = {
  mutate: createRoute({ method: 'post', path: '/{canvas_id}/mutate', summary: 'H2: apply a block mutation (idempotent by client_op_id)',
    security: bearerSecurity, request: { params: CanvasParams, body: json(MutateBody) }, responses: responses(200, 'applied', MutationResult) }),
  presence: createRoute({ method: 'post', path: '/{canvas_id}/presence', summary: 'H3: cursor and typing',
    security: bearerSecurity, request: { params: CanvasParams, body: json(z.object({ cursor: Json.nullable().optional(), typing: z.boolean().optional() }).strict()) },
    responses: responses(200, 'broadcast') }),
  snapshot: createRoute({ method: 'get', path: '/{canvas_id}/snapshot', summary: 'H4: full state, plus the operations after since_seq',
    security: bearerSecurity, request: { params: CanvasParams, query: z.object({ since_seq: z.coerce.number().int().min(0).max(SEQ_MAX).optional() }) },
    responses: responses(200, 'canvas, blocks, watermark and changes') }),
  leave: createRoute({ method: 'post', path: '/{canvas_id}/leave', summary: 'H6: leave the canvas',
    security: bearerSecurity, request: { params: CanvasParams }, responses: responses(200, 'left') }),
  get: createRoute({ method: 'get', path: '/{canvas_id}', summary: 'A1: canvas and its blocks',
    security: bearerSecurity, request: { params: CanvasParams }, responses: responses(200, 'canvas, blocks and watermark') }),
  blocks: createRoute({ method: 'get', path: '/{canvas_id}/blocks', summary: 'A2: blocks in rank order, keyset-paginated',
    security: bearerSecurity, request: { params: CanvasParams, query: z.object({
      cursor: z.string().regex(/^[0-9A-Za-z]{1,10}$/).optional(), limit: z.coerce.number().int().min(1).max(500).optional() }) },
    responses: responses(200, '{items, next_cursor}') }),
  block: createRoute({ method: 'get', path: '/{canvas_id}/blocks/{block_id}', summary: 'A3: one block',
    security: bearerSecurity, request: { params: BlockParams }, responses: responses(200, 'the block') }),
  list: createRoute({ method: 'get', path: '/', summary: "A4: the caller's canvases",
    security: bearerSecurity, responses: responses(200, '{canvases}') }),
  create: createRoute({ method: 'post', path: '/', summary: 'A5: create a canvas',
    security: bearerSecurity, request: { body: json(z.object({ workspace_id: z.string().uuid(), title: z.string().min(1).max(500).optional(),
      settings: Json.optional() }).strict()) }, responses: responses(201, '{canvas_id}') }),
  update: createRoute({ method: 'patch', path: '/{canvas_id}', summary: 'A6: title and settings (owner/admin)',
    security: bearerSecurity, request: { params: CanvasParams, body: json(z.object({ title: z.string().min(1).max(500).optional(),
      settings: Json.optional() }).strict()) }, responses: responses(200, 'the updated canvas') }),
  remove: createRoute({ method: 'delete', path: '/{canvas_id}', summary: 'A7: soft delete (owner)',
    security: bearerSecurity, request: { params: CanvasParams }, responses: responses(204, 'deleted') }),
  permissions: createRoute({ method: 'get', path: '/{canvas_id}/permissions', summary: 'A8: {can_write, users[]}',
    security: bearerSecurity, request: { params: CanvasParams }, responses: responses(200, '{can_write, role, users}') }),
};

export function canvasRoutes(deps: Deps) {
  const app = createRouter();
  app.use('*', requireAuth(deps));

  app.openapi(routes.mutate, async (c) => {
    const { canvas_id } = c.req.valid('param');
    const body = c.req.valid('json');
    const result = 'ops' in body
      ? await callApi<any>(deps, c, 'H2', 'upsert_blocks_atomic', [canvas_id, body.ops])
      : await callApi<any>(deps, c, 'H2', 'upsert_block_atomic', [
        canvas_id, body.block_id ?? null, body.action, body.client_op_id, body.base_version ?? null, body.patch]);
    return c.json(mutationOutcome(result), 200);
  });
  app.openapi(routes.presence, async (c) => {
    const { cursor, typing } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'H3', 'update_presence', [c.req.valid('param').canvas_id, cursor ?? null, typing ?? false]), 200);
  });
  app.openapi(routes.snapshot, async (c) => {
    const { canvas_id } = c.req.valid('param');
    const { since_seq } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'H4', 'get_canvas_snapshot', [canvas_id, since_seq ?? null]), 200);
  });
  app.openapi(routes.leave, async (c) => {
    await callApi(deps, c, 'H6', 'leave_canvas', [c.req.valid('param').canvas_id]);
    return c.json({ left: true }, 200);
  });
  app.openapi(routes.get, async (c) =>
    c.json(await callApi<any>(deps, c, 'A1', 'get_canvas_snapshot', [c.req.valid('param').canvas_id, null]), 200));
  app.openapi(routes.blocks, async (c) => {
    const { cursor, limit } = c.req.valid('query');
    return c.json(await callApi<any>(deps, c, 'A2', 'list_blocks', [c.req.valid('param').canvas_id, cursor ?? null, limit ?? 100]), 200);
  });
  app.openapi(routes.block, async (c) => {
    const { canvas_id, block_id } = c.req.valid('param');
    return c.json(await callApi<any>(deps, c, 'A3', 'get_block', [canvas_id, block_id]), 200);
  });
  app.openapi(routes.list, async (c) => c.json({ canvases: await callApi<any>(deps, c, 'A4', 'list_my_canvases', []) }, 200));
  app.openapi(routes.create, async (c) => {
    const { workspace_id, title, settings } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'A5', 'create_canvas', [workspace_id, title ?? 'Untitled', settings ?? {}]), 201);
  });
  app.openapi(routes.update, async (c) => {
    const { title, settings } = c.req.valid('json');
    return c.json(await callApi<any>(deps, c, 'A6', 'update_canvas', [c.req.valid('param').canvas_id, title ?? null, settings ?? null]), 200);
  });
  app.openapi(routes.remove, async (c) => {
    await callApi(deps, c, 'A7', 'delete_canvas', [c.req.valid('param').canvas_id]);
    return c.body(null, 204) as never;
  });
  app.openapi(routes.permissions, async (c) =>
    c.json(await callApi<any>(deps, c, 'A8', 'get_canvas_permissions', [c.req.valid('param').canvas_id]), 200));
  return app;
}
