import { z } from '@hono/zod-openapi';
import { INT4_MAX } from '../input-policy.ts';
import { UUID, UUID_MESSAGE } from '../uuid.ts';

/**
 * The response bodies of the HTTP API, as the `api` SQL functions build them (internal.block_json,
 * internal.canvas_json, internal.change_json, … in sql/rpc/*.sql; the comment on each function
 * gives its shape). Objects are closed (`.strict()`, additionalProperties: false): a field the
 * database starts returning without being documented here fails the response check of the test
 * runs (VALIDATE_RESPONSES, src/http/response-contract.ts), so the document cannot drift.
 * Registered by name: they are `components.schemas` of /api/v1/openapi.json and the types of
 * packages/client/src/api-types.ts.
 */

/**
 * An id: a UUID as Postgres reads it (src/uuid.ts: 8-4-4-4-12 hex digits, either case, any version
 * and variant). Every id of the API's paths, query, bodies and answers; compared in SQL as uuid.
 */
export const Uuid = z.string().regex(UUID, UUID_MESSAGE).openapi({ format: 'uuid' });
/**
 * An id the client chose for the row it creates (`workspace_id` of POST /api/v1/workspaces,
 * `canvas_id` of POST /api/v1/canvas): a random UUID of RFC 9562, version 4 (crypto.randomUUID())
 * or 7, variant 10. The id is the row's for good and the first caller to send it holds it, so ids
 * another caller can compute (the nil and max UUID, which Uuid passes; name-based versions 3 and
 * 5; time-and-node versions 1 and 6) are refused; the database refuses the same ids
 * (internal.check_client_id, sql/rpc/canvas.sql).
 */
// both cases spelled out, no i flag: the OpenAPI document carries the regex's source as its pattern,
// which JSON Schema reads without flags (with /i it came out as "…$/i", which no id matches)
export const ClientId = z.string().regex(/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[47][0-9a-fA-F]{3}-[89abAB][0-9a-fA-F]{3}-[0-9a-fA-F]{12}$/,
  'must be a random UUID (RFC 9562 version 4, as crypto.randomUUID() makes, or version 7), variant 10: an id another caller can compute could be taken before you send it')
  .openapi({ format: 'uuid' });
/** timestamptz as jsonb renders it: ISO 8601 with an offset, microseconds. */
export const Timestamp = z.string().openapi({ format: 'date-time', example: '2026-01-31T12:00:00.123456+00:00' });
/** bigint / integer columns: JSON numbers (server_seq stays far below 2^53). */
export const Int = z.number().int();
export const Role = z.enum(['owner', 'admin', 'editor', 'viewer']).openapi('Role');
export const JsonObject = z.record(z.string(), z.unknown()).openapi({ description: 'any JSON object' });
/** Any JSON value (a conflict's base/theirs/mine; null when the key did not exist). */
export const JsonValue = z.union([z.string(), z.number(), z.boolean(), z.null(), z.record(z.string(), z.unknown()), z.array(z.unknown())])
  .openapi('JsonValue');

// A text-unicode operation (ShareDB): skip n / insert "str" / delete {d: n}, counted in code points
// (requests and answers alike; an int4 in SQL).
export const TextOp = z.array(z.union([
  z.number().int().min(1).max(INT4_MAX),
  z.string().min(1),
  z.object({ d: z.union([z.number().int().min(1).max(INT4_MAX), z.string().min(1)]) }).strict(),
])).openapi('TextOp', { description: 'text-unicode operation: n skips n code points, "str" inserts, {d: n} deletes n code points' });

// (a nullable registered schema is written z.union([X, z.null()]): .nullable() renders as allOf [$ref, {type: [object, null]}], which null fails)
export const Block = z.object({
  block_id: Uuid, canvas_id: Uuid, parent_id: Uuid.nullable(), type: z.string(),
  content: JsonObject, y_order: z.string().openapi({ description: 'LexoRank key: blocks sort by it (byte order)' }),
  version: Int, created_at: Timestamp, created_by: Uuid.nullable(), updated_at: Timestamp, updated_by: Uuid.nullable(),
}).strict().openapi('Block');

const canvasShape = {
  canvas_id: Uuid, workspace_id: Uuid, title: z.string(), settings: JsonObject, version: Int,
  created_by: Uuid.nullable(), created_at: Timestamp, updated_at: Timestamp,
};
export const Canvas = z.object(canvasShape).strict().openapi('Canvas');
export const CanvasWithRole = z.object({ ...canvasShape, role: Role })
  .strict().openapi('CanvasWithRole', { description: "a canvas with the caller's role on it" });
/** next_cursor of a page of a paged list (A2, A4, W8, W1, W4, W9, A8). */
const NextCursor = z.string().nullable().openapi({ description: 'pass as cursor for the next page; null at the end' });
export const CanvasList = z.object({
  canvases: z.array(CanvasWithRole).openapi({ description: 'a page: at most limit (default 100, at most 500) and about 4 MB, newest change first' }),
  next_cursor: NextCursor,
}).strict().openapi('CanvasList');
export const CanvasCreated = z.object({ canvas_id: Uuid }).strict().openapi('CanvasCreated');

/** One applied operation as replay returns it (internal.change_json). */
export const Change = z.object({
  server_seq: Int, canvas_seq: Int, action: z.enum(['create', 'update', 'move', 'delete']), block_id: Uuid,
  version: Int, block: z.union([Block, z.null()]), // the block after the operation; null after a delete
  client_op_id: z.string(), actor_id: Uuid.nullable(),
  patch: JsonObject.openapi({ description: 'the patch as applied: text operations transformed, the y_order given' }),
  deleted_ids: z.array(Uuid).nullable(), created_at: Timestamp,
}).strict().openapi('Change');
export const Changes = z.object({
  changes: z.array(Change), has_more: z.boolean(),
  watermark: Int.openapi({ description: 'server_seq up to which everything was returned' }),
  canvas_watermark: Int.openapi({ description: 'canvas_seq up to which everything was returned' }),
}).strict().openapi('Changes');
export const ChangesSince = Changes.extend({
  snapshot_required: z.boolean().openapi({ description: 'the log cannot continue from since_canvas_seq (it is ahead of the canvas, or retention '
    + 'removed the operations after it): changes is empty; load GET /canvas/{id}/snapshot instead' }),
}).strict().openapi('ChangesSince', { description: 'api.get_canvas_changes_since: the operations after since_canvas_seq, in canvas_seq order' });
export const Snapshot = z.object({
  canvas: CanvasWithRole, blocks: z.array(Block).openapi({ description: 'this page of the blocks, in rank order (at most 1000 and about 4 MB of content)' }),
  watermark: Int.openapi({ description: "the first page's: the blocks are consistent with the log up to this server_seq" }),
  canvas_watermark: Int.openapi({ description: "the first page's: a single page is the result of the canvas's operations 1 .. canvas_watermark; "
    + 'with more pages, the blocks of all pages plus the changes after it (GET /canvas/{id}/changes, read after the last page) are the canvas' }),
  flags: z.record(z.string(), z.boolean()).openapi({ description: "the canvas's feature flags, {<flag name>: on} (api.get_canvas_flags)" }),
  has_more: z.boolean().openapi({ description: 'more blocks follow: ask again with cursor = next_cursor' }),
  next_cursor: z.string().nullable().openapi({ description: 'pass as cursor for the next page (it carries the watermarks); null at the end' }),
  since: Changes.optional(),
}).strict().openapi('Snapshot', { description: 'since: H4 with since_seq only (first page), the operations after it (at most 1000)' });
export const BlockPage = z.object({
  items: z.array(Block), next_cursor: NextCursor,
}).strict().openapi('BlockPage');
export const Permissions = z.object({
  can_write: z.boolean(), role: Role,
  users: z.array(z.object({ user_id: Uuid, email: z.string().nullable(), role: Role }).strict().openapi('CanvasUser')).openapi({
    description: 'a page: at most limit (default 100, at most 500; fewer, even none, while next_cursor is not null, when the page read canvas '
      + 'rows of workspace members), by when each joined the workspace (a member of the canvas alone: the canvas)' }),
  next_cursor: NextCursor,
}).strict().openapi('Permissions', { description: 'role and can_write: the caller\'s, on every page' });
export const PresenceResult = z.object({
  broadcast: z.literal(true), last_active_at: Timestamp,
  last_active_at_updated: z.boolean().openapi({ description: 'false when the durable row was refreshed less than presence_write_interval_seconds ago' }),
}).strict().openapi('PresenceResult');
export const LeaveResult = z.object({ left: z.literal(true) }).strict().openapi('LeaveResult');

export const MutationResult = z.object({
  status: z.literal('success'),
  server_seq: Int.openapi({ description: 'orders operations across all canvases (with gaps per canvas)' }),
  canvas_seq: Int.openapi({ description: "this canvas's applied operations 1, 2, 3, … without gaps, in commit order" }),
  client_op_id: z.string(), block_id: Uuid, version: Int,
  block: z.union([Block, z.null()]), // null after a delete
  deleted_ids: z.array(Uuid).optional().openapi({ description: 'delete: the block and its whole subtree' }),
  text: z.record(z.string(), TextOp).optional().openapi({ description: 'the text operations as applied (transformed against those committed since base_version)' }),
  duplicate: z.literal(true).optional().openapi({ description: 'this client_op_id had been applied before: the original result, nothing applied again' }),
}).strict().openapi('MutationResult');
/** {ops: […]}: every op applied (or had been, by client_op_id), in order. */
export const BatchResult = z.object({
  status: z.literal('success'),
  results: z.array(MutationResult).openapi({ description: 'one per op, in order' }),
  server_seq: Int.openapi({ description: 'the highest of the results' }),
  canvas_seq: Int.openapi({ description: 'the highest of the results: the ops this batch applied took consecutive canvas_seqs' }),
}).strict().openapi('BatchResult');

export const SearchResult = z.object({
  items: z.array(Block.extend({ distance: z.number().openapi({ description: 'cosine distance to the query (0 = same direction)' }) })
    .strict().openapi('SearchHit')),
  model: z.string().openapi({ description: 'the embedding model that embedded the query: only blocks it embedded are compared' }),
  other_model_blocks: Int.openapi({ description: 'the canvas\'s embedded blocks left out because another model embedded them (vectors of two models '
    + 'are not comparable). items [] with other_model_blocks > 0: every embedded block has another model than the query\'s, so the server '
    + 'embeds queries with another provider or model than the worker (or the worker is re-embedding after a change of model)' }),
  other_models: z.array(z.string()).openapi({ description: 'the models that embedded those blocks, by name ([] when none was left out)' }),
}).strict().openapi('SearchResult');

export const TokenPair = z.object({
  access_token: z.string(), refresh_token: z.string(), token_type: z.literal('bearer'), expires_in: Int.openapi({ description: 'seconds' }),
}).strict().openapi('TokenPair');

export const Health = z.object({ status: z.literal('ok') }).strict().openapi('Health');
export const Ready = z.object({
  status: z.literal('ready'),
  checks: z.object({ database: z.literal('ok'), worker: z.literal('ok').optional(), realtime: z.literal('ok').optional() }).strict(),
}).strict().openapi('Ready');
export const NotReady = z.object({
  status: z.literal('unavailable'),
  checks: z.object({
    database: z.enum(['ok', 'timeout', 'api_roles', 'error']).openapi({
      description: "'ok', or a stable code: timeout (no answer within 2 s), api_roles (the connecting role cannot act as anon, "
        + 'authenticated and service_role), error (any other failure). The error itself is in the server log only' }),
    worker: z.string().optional().openapi({ description: 'when a worker is expected: why no fresh heartbeat' }),
    realtime: z.string().optional().openapi({ description: "where the process runs a realtime gateway (role all): 'ok', or why it does not "
      + 'serve: not started (its start failed and is tried again), or its replication stream down' }),
  }).strict(),
  message: z.string().openapi({ description: 'a sentence per failed check (no database error text)' }),
}).strict().openapi('NotReady');

// Workspaces (sql/rpc/workspaces.sql: internal.workspace_json, member_json, invite_json)
export const Workspace = z.object({
  workspace_id: Uuid, name: z.string(), role: Role, created_by: Uuid.nullable(), created_at: Timestamp,
}).strict().openapi('Workspace', { description: "role: the caller's role in the workspace" });
export const Member = z.object({ user_id: Uuid, email: z.string().nullable(), role: Role, joined_at: Timestamp }).strict().openapi('Member');
export const Invite = z.object({
  invite_id: Uuid, workspace_id: Uuid,
  email: z.string().openapi({ description: 'lower-cased; becomes a member with this role when the email signs up' }),
  role: Role, invited_by: Uuid.nullable(), created_at: Timestamp,
}).strict().openapi('Invite');
export const AddMemberResult = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('member'), member: Member }).strict(),
  z.object({ kind: z.literal('invite'), invite: Invite }).strict(),
]).openapi('AddMemberResult', { description: 'member: the email was a confirmed user, now a member; invite: a pending invite (no user had the email, or only an unconfirmed one: answered alike)' });
export const WorkspaceList = z.object({
  workspaces: z.array(Workspace).openapi({ description: 'a page: at most limit (default 100, at most 500), by when the caller joined each' }),
  next_cursor: NextCursor,
}).strict().openapi('WorkspaceList');
export const MemberList = z.object({
  members: z.array(Member).openapi({ description: 'a page: at most limit (default 100, at most 500), by when each joined' }),
  next_cursor: NextCursor,
}).strict().openapi('MemberList');
export const InviteList = z.object({
  invites: z.array(Invite).openapi({ description: 'a page: at most limit (default 100, at most 500), oldest first' }),
  next_cursor: NextCursor,
}).strict().openapi('InviteList');

// Errors (src/http/errors.ts: the one error shape)
export const ERROR_CODES = ['invalid_input', 'unauthorized', 'forbidden', 'not_found', 'conflict', 'rebase_required', 'payload_too_large',
  'unsupported_media_type', 'rate_limited', 'internal', 'not_implemented', 'unavailable', 'storage_not_configured', 'timeout'] as const;
export const ConflictField = z.object({
  base: JsonValue, theirs: JsonValue, mine: JsonValue,
}).strict().openapi('ConflictField', { description: 'base: the value at base_version (from the log; null when the key did not exist); theirs: ' +
  "the current value; mine: the operation's (the patch value, {text: op} for a text operation, {y_order?, after_id?} for position)" });
const conflictDetails = {
  block: Block, // conflict, rebase_required: the current block
  version: Int.openapi({ description: 'conflict, rebase_required: its current version (resend with base_version = version)' }),
  changed: z.array(z.string()).openapi({ description: 'conflict: every field changed since base_version (content.<key>, type, parent, position)' }),
  fields: z.record(z.string(), ConflictField).openapi({ description: 'conflict: per clashing field, base/theirs/mine' }),
};
export const ErrorSchema = z.object({
  error: z.object({
    code: z.enum(ERROR_CODES),
    message: z.string(),
    field: z.string().optional().openapi({ description: 'the input at fault: a body path (patch.text.body, ops.0.base_version), a path or query parameter' }),
    reason: z.enum(['last_owner', 'already_member']).optional().openapi({ description: 'workspaces: why a member change was refused' }),
    user_id: Uuid.optional().openapi({ description: 'conflict already_member: the member' }),
    retry_after: Int.optional().openapi({ description: 'rate_limited, unavailable: seconds (also the Retry-After header)' }),
    limit: Int.optional().openapi({ description: 'rate_limited: the limit of the window' }),
    failed_index: Int.optional().openapi({ description: 'a batch (ops[]) refused for one op: its index, whichever check refused it (the '
      + 'body shape and input policy: field ops.N.…; the database: field within the op); nothing of the batch was applied' }),
    ...Object.fromEntries(Object.entries(conflictDetails).map(([k, v]) => [k, v.optional()])) as {
      [K in keyof typeof conflictDetails]: z.ZodOptional<(typeof conflictDetails)[K]> },
  }).strict(),
}).strict().openapi('Error');

/** The 409 of a mutation: a clash (conflict) or an operation older than the log (rebase_required). */
export const MutationConflict = z.object({
  error: z.discriminatedUnion('code', [
    z.object({ code: z.literal('conflict'), message: z.string(), ...conflictDetails, failed_index: Int.optional() }).strict().openapi('Conflict'),
    z.object({ code: z.literal('rebase_required'), message: z.string(), block: conflictDetails.block, version: conflictDetails.version,
      failed_index: Int.optional() }).strict().openapi('RebaseRequired'),
  ]),
}).strict().openapi('MutationConflict');
