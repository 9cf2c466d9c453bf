// Writes a planned upgrade into a v2 database. One transaction per canvas, ending with its row in
// app.upgrade_v1_progress: a crash loses at most the canvas in flight, and a re-run skips every
// canvas that has its row. Users and workspaces are inserts by id (ids are kept, or name-based),
// so writing them again changes nothing; a workspace row with the id that the upgrade did not
// write (another created_by) is taken: no members are added to it and no canvas moves into it.
//
// Why direct inserts and not api.upsert_block_atomic per block: the RPC takes a user, a rate
// limit (100 a minute), a canvas lock and a placement per call. Instead this writes what the RPC
// would have left (docs/upgrade-v1.md, "What the upgrade writes"): the block with version 1, one
// `create` operation per block — server_seq from app.seq_block_events, canvas_seq 1..n in an order
// where parents come first, patch {type, content, y_order[, parent_id]}, block and result as
// internal.block_json prints them — and the canvas's last_seq/last_canvas_seq. Deliberate
// differences: the operation's actor is the system (actor_id null, client_op_id
// `system:upgrade_v1:<block_id>`, like the rebalancer's `system:` operations); one audit row per
// canvas (`canvas.upgrade_v1`) instead of one per block; no realtime.send: nobody can be
// subscribed to a canvas that does not exist until this transaction commits.
// Triggers stay on (no session_replication_role, which would also switch off foreign keys):
// queue_embedding_insert queues every inserted block, and the rows of blocks that arrived with
// their v1 vector (embedded_hash = their content hash) are deleted again in the same transaction;
// check_lexorank_length never fires, as keys come from internal.lexorank_spread_with_room, the
// rebalance's spread (3 characters up to about 58,600 blocks a canvas, where the trigger starts
// at 9), which leaves each end of the canvas room for appends and prepends.
import type { Sql, TransactionSql } from 'postgres';
import { monotonicNow } from '../clock.ts';
import { begin } from '../db/transaction.ts';
import { vectorLiteral } from './v1-normalize.ts';
import type { CanvasBlocksPlan, PlannedCanvas, PlannedUser, PlannedWorkspace, WorkspacePer } from './v1-plan.ts';

export const UPGRADE_LOCK_KEY = 'potentia.upgrade_v1';

export class UpgradeLockLostError extends Error {
  constructor(readonly pid: number) {
    super(`this run's advisory lock on the v2 database ended with its session (pid ${pid}, its connection was lost or killed): ` +
      'it stopped before writing another canvas, so that no other run writes the same canvases at once');
  }
}

const chunks = <T>(items: T[], size: number): T[][] => {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
};

/** Emails of planned users that v2 already gives another user: those users arrive without an email. */
export async function emailsTakenInTarget(sql: Sql, users: PlannedUser[]): Promise<Map<string, string>> {
  const taken = new Map<string, string>();
  for (const part of chunks(users.filter((u) => u.email !== null), 5000)) {
    const rows = await sql<{ id: string; email: string }[]>`
      select id::text, lower(email) as email from auth.users where lower(email) = any(${part.map((u) => u.email)}::text[])`;
    const mine = new Map(part.map((u) => [u.email, u.id]));
    for (const r of rows) if (mine.get(r.email) !== r.id) taken.set(r.email, r.id);
  }
  return taken;
}

/** auth.users rows (on conflict of the id: kept as they are). Returns how many were inserted. */
export async function writeUsers(sql: Sql, users: PlannedUser[], batch: number): Promise<number> {
  let inserted = 0;
  for (const part of chunks(users, batch)) {
    const rows = await sql`
      insert into auth.users (id, email, encrypted_password, raw_user_meta_data, raw_app_meta_data, email_confirmed_at,
                              aud, role, created_at, updated_at)
      select r.id, r.email, r.password, case when r.name is null then '{}'::jsonb else jsonb_build_object('name', r.name) end,
             '{"provider": "email", "providers": ["email"]}', case when r.email is not null then coalesce(r.created_at::timestamptz, now()) end,
             'authenticated', 'authenticated', coalesce(r.created_at::timestamptz, now()), coalesce(r.created_at::timestamptz, now())
      from unnest(${part.map((u) => u.id)}::uuid[], ${part.map((u) => u.email)}::text[], ${part.map((u) => u.passwordHash)}::text[],
                  ${part.map((u) => u.name)}::text[], ${part.map((u) => u.createdAt)}::text[]) as r(id, email, password, name, created_at)
      on conflict (id) do nothing
      returning id`;
    inserted += rows.length;
  }
  return inserted;
}

/** A planned workspace whose id v2 already uses for a row the upgrade did not write. */
export type TakenWorkspace = {
  id: string; name: string; createdBy: string | null; expectedCreatedBy: string | null;
  /** members the plan does not have (user ids), when that is why it is taken */
  strangers: string[];
};

/**
 * Workspaces and their members. A workspace row that is already there is the upgrade's own (a
 * re-run) only when its created_by is the plan's: any other row with that id was made in v2 by
 * somebody else (workspace ids are name-based in a public namespace, and api.create_workspace
 * takes a client-chosen id), so it is taken: no member is added to it, and its canvases are not
 * moved (upgrade.ts, canvasCollision). See workspacesTaken for the members rule. Returns how
 * many workspaces were inserted, and the taken ones.
 */
export async function writeWorkspaces(sql: Sql, workspaces: PlannedWorkspace[], batch: number):
  Promise<{ inserted: number; taken: TakenWorkspace[] }> {
  if (workspaces.length === 0) return { inserted: 0, taken: [] };
  let inserted = 0;
  for (const part of chunks(workspaces, batch)) {
    const rows = await sql`
      insert into app.workspaces (workspace_id, name, created_by)
      select * from unnest(${part.map((w) => w.id)}::uuid[], ${part.map((w) => w.name)}::text[], ${part.map((w) => w.createdBy)}::uuid[])
      on conflict (workspace_id) do nothing
      returning workspace_id`;
    inserted += rows.length;
  }
  const taken = await workspacesTaken(sql, workspaces);
  const takenIds = new Set(taken.map((t) => t.id));
  const members = workspaces.filter((w) => !takenIds.has(w.id)).flatMap((w) => w.members.map((m) => ({ w: w.id, ...m })));
  for (const part of chunks(members, batch)) {
    await sql`
      insert into app.workspace_members (workspace_id, user_id, role)
      select w, u, r::app.member_role from unnest(${part.map((m) => m.w)}::uuid[], ${part.map((m) => m.userId)}::uuid[],
                                                  ${part.map((m) => m.role)}::text[]) as x(w, u, r)
      on conflict (workspace_id, user_id) do nothing`;
  }
  return { inserted, taken };
}

/**
 * Planned workspaces that v2 holds as rows the upgrade did not write: another created_by than the
 * plan's; or, before any canvas was upgraded into it (no app.upgrade_v1_progress row), a member
 * the plan does not have. The second catches a workspace whose creator was deleted since
 * (created_by is set null, the plan's value for the shared and the unowned workspace) and that
 * kept a member its creator had added. After the first canvas moved, members added in v2 are the
 * workspace's own business (verify still reports them).
 */
export async function workspacesTaken(sql: Sql, workspaces: PlannedWorkspace[]): Promise<TakenWorkspace[]> {
  const taken: TakenWorkspace[] = [];
  for (const part of chunks(workspaces, 5000)) {
    const planned = part.flatMap((w) => w.members.map((m) => ({ w: w.id, u: m.userId })));
    const rows = await sql<{ id: string; created_by: string | null; other_creator: boolean; strangers: string[] | null }[]>`
      with planned as (select * from unnest(${planned.map((m) => m.w)}::uuid[], ${planned.map((m) => m.u)}::uuid[]) as p(w, u))
      select * from (
        select w.workspace_id::text as id, w.created_by::text, w.created_by is distinct from x.created_by as other_creator,
               case when not exists (select from app.upgrade_v1_progress g where g.workspace_id = w.workspace_id) then
                 (select array_agg(m.user_id::text order by m.user_id) from app.workspace_members m
                  where m.workspace_id = w.workspace_id and not exists (select from planned p where p.w = m.workspace_id and p.u = m.user_id))
               end as strangers
        from unnest(${part.map((p) => p.id)}::uuid[], ${part.map((p) => p.createdBy)}::uuid[]) as x(id, created_by)
        join app.workspaces w on w.workspace_id = x.id) t
      where other_creator or strangers is not null`;
    const byId = new Map(part.map((p) => [p.id, p]));
    for (const r of rows) {
      const w = byId.get(r.id)!;
      taken.push({ id: r.id, name: w.name, createdBy: r.created_by, expectedCreatedBy: w.createdBy, strangers: r.strangers ?? [] });
    }
  }
  return taken;
}

/** What the operator reads about a taken workspace: which id, why, and what to do next. */
export function takenWorkspaceLine(t: TakenWorkspace, canvases: number): string {
  const why = t.createdBy !== t.expectedCreatedBy
    ? `created_by ${t.createdBy ?? 'null'}, the upgrade's would be ${t.expectedCreatedBy ?? 'null'}`
    : `member${t.strangers.length === 1 ? '' : 's'} the upgrade would not add: ${t.strangers.slice(0, 5).join(', ')}` +
      (t.strangers.length > 5 ? ` and ${t.strangers.length - 5} more` : '');
  return `workspace ${t.id} ("${t.name}") already exists in v2 and was not written by this upgrade (${why}): ` +
    `its v1 members were not added and its ${canvases} v1 canvas${canvases === 1 ? '' : 'es'} not moved. ` +
    `Find out who created it, move what they need out of it, delete it (delete from app.workspaces where workspace_id = '${t.id}'), ` +
    'then run the same command again: it writes the workspace and moves the rest';
}

export type CanvasWriteResult =
  | { status: 'written'; blocks: number; embedded: number; queued: number; firstSeq: string | null; lastSeq: string | null }
  | { status: 'already_upgraded' }
  | { status: 'canvas_id_taken' }
  | { status: 'workspace_id_taken' }
  | { status: 'block_ids_taken'; ids: number };

/**
 * Why a canvas cannot be written, found before writing (the dry run asks the same). `workspaceCreatedBy`
 * is the plan's created_by of the canvas's workspace: a workspace with its id but another creator
 * was not written by the upgrade (writeWorkspaces), and the canvas does not move into it.
 */
export async function canvasCollision(sql: Sql | TransactionSql, canvas: PlannedCanvas, plan: CanvasBlocksPlan,
  workspaceCreatedBy: string | null): Promise<CanvasWriteResult | null> {
  const [row] = await sql<{ done: boolean; taken: boolean; workspace_taken: boolean; blocks: number }[]>`
    select exists (select from app.upgrade_v1_progress where v1_canvas_id = ${canvas.v1Id}) as done,
           exists (select from app.canvases where canvas_id = ${canvas.id}) as taken,
           exists (select from app.workspaces where workspace_id = ${canvas.workspaceId}
                   and created_by is distinct from ${workspaceCreatedBy}::uuid) as workspace_taken,
           (select count(*)::int from unnest(${plan.blocks.map((b) => b.id)}::uuid[]) u(id) join app.blocks b on b.block_id = u.id) as blocks`;
  if (row!.done) return { status: 'already_upgraded' };
  if (row!.taken) return { status: 'canvas_id_taken' };
  if (row!.workspace_taken) return { status: 'workspace_id_taken' };
  if (row!.blocks > 0) return { status: 'block_ids_taken', ids: row!.blocks };
  return null;
}

/** One canvas, its blocks, their create operations, its audit and progress rows: all or nothing. */
export async function writeCanvas(sql: Sql, canvas: PlannedCanvas, plan: CanvasBlocksPlan, opts: {
  batch: number; workspacePer: WorkspacePer;
  /** the plan's created_by of the canvas's workspace (canvasCollision) */
  workspaceCreatedBy: string | null;
  /** the backend holding the run's advisory lock (upgrade.ts) */
  lockPid?: number;
}): Promise<CanvasWriteResult> {
  const started = monotonicNow();
  return await begin(sql, async (tx): Promise<CanvasWriteResult> => {
    // two runs at once would both pass the checks: the run holds an advisory lock (upgrade.ts),
    // and the progress row's primary key refuses a second writer of the same canvas anyway. A lock
    // whose session ended (its connection killed) lets another run start: this one stops
    if (opts.lockPid !== undefined) {
      const [lock] = await tx<{ held: boolean }[]>`select exists (select from pg_stat_activity where pid = ${opts.lockPid}) as held`;
      if (!lock!.held) throw new UpgradeLockLostError(opts.lockPid);
    }
    const collision = await canvasCollision(tx, canvas, plan, opts.workspaceCreatedBy);
    if (collision) return collision;
    const n = plan.blocks.length;
    const keys = n === 0 ? [] : ((await tx`select internal.lexorank_spread_with_room(${n}::int) as keys`)[0]!.keys as string[]);
    const seqs = n === 0 ? [] : (await tx<{ s: string }[]>`select nextval('app.seq_block_events')::text as s from generate_series(1, ${n}::int)`)
      .map((r) => BigInt(r.s)).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)).map(String);
    const lastSeq = seqs.at(-1) ?? null;
    await tx`
      insert into app.canvases (canvas_id, workspace_id, title, settings, version, last_seq, last_canvas_seq, created_by, created_at, updated_at)
      values (${canvas.id}, ${canvas.workspaceId}, ${canvas.title}, '{}', 1, ${lastSeq ?? '0'}::bigint, ${n}, ${canvas.ownerId}::uuid,
              coalesce(${canvas.createdAt}::timestamptz, now()), coalesce(${canvas.updatedAt}::timestamptz, ${canvas.createdAt}::timestamptz, now()))`;
    // parents before children (operation order), so every statement's foreign keys hold
    for (const part of chunks(plan.operations, opts.batch)) {
      await tx`
        insert into app.blocks (block_id, canvas_id, parent_id, type, content, y_order, version, created_at, created_by, updated_at,
                                updated_by, vector, embedding_model, embedded_hash, embedded_at)
        select r.id, ${canvas.id}::uuid, r.parent, r.type, r.content::jsonb, r.key, 1, coalesce(r.created_at::timestamptz, now()), r.created_by,
               coalesce(r.updated_at::timestamptz, r.created_at::timestamptz, now()), r.updated_by,
               r.vec::extensions.vector, r.model, case when r.vec is not null then md5(r.content::jsonb::text) end,
               case when r.vec is not null then coalesce(r.embedded_at::timestamptz, now()) end
        from unnest(${part.map((b) => b.id)}::uuid[], ${part.map((b) => b.parentId)}::uuid[], ${part.map((b) => b.type)}::text[],
                    ${part.map((b) => b.content)}::text[], ${part.map((b) => keys[b.rank]!)}::text[],
                    ${part.map((b) => b.createdAt)}::text[], ${part.map((b) => b.createdBy)}::uuid[],
                    ${part.map((b) => b.updatedAt)}::text[], ${part.map((b) => b.updatedBy)}::uuid[],
                    ${part.map((b) => (b.vector ? vectorLiteral(b.vector) : null))}::text[], ${part.map((b) => b.embeddingModel)}::text[],
                    ${part.map((b) => b.embeddedAt)}::text[])
          as r(id, parent, type, content, key, created_at, created_by, updated_at, updated_by, vec, model, embedded_at)`;
    }
    for (const part of chunks(plan.operations, opts.batch)) {
      await tx`
        insert into app.block_operations (server_seq, canvas_seq, client_op_id, actor_id, canvas_id, block_id, action, status,
                                          base_version, new_version, patch, block, result, started_at)
        select o.server_seq, o.canvas_seq, 'system:upgrade_v1:' || b.block_id, null, b.canvas_id, b.block_id, 'create', 'success', null, 1,
               jsonb_build_object('type', b.type, 'content', b.content, 'y_order', b.y_order)
                 || case when b.parent_id is null then '{}'::jsonb else jsonb_build_object('parent_id', b.parent_id) end,
               j.block,
               jsonb_build_object('status', 'success', 'server_seq', o.server_seq, 'canvas_seq', o.canvas_seq,
                                  'client_op_id', 'system:upgrade_v1:' || b.block_id, 'block_id', b.block_id, 'version', 1, 'block', j.block),
               now()
        from unnest(${part.map((b) => b.id)}::uuid[], ${part.map((b) => b.seq)}::bigint[], ${part.map((b) => seqs[b.seq - 1]!)}::bigint[])
          as o(block_id, canvas_seq, server_seq)
        join app.blocks b on b.block_id = o.block_id
        cross join lateral (select internal.block_json(b) as block) j
        order by o.canvas_seq`;
    }
    const embedded = plan.blocks.filter((b) => b.vector !== null).map((b) => b.id);
    if (embedded.length > 0) await tx`delete from app.embedding_outbox where block_id = any(${embedded}::uuid[])`;
    const details = {
      v1_canvas_id: canvas.v1Id, workspace_id: canvas.workspaceId, blocks: n, embedded: embedded.length,
      queued: n - embedded.length, first_server_seq: seqs[0] ?? null, last_server_seq: lastSeq,
    };
    await tx`select internal.write_audit(${tx.json({ role: 'system', user_agent: 'npm run upgrade:v1' })}::jsonb, 'canvas.upgrade_v1', 'success',
                                         'canvas', ${canvas.id}, ${tx.json(details)}::jsonb, null, ${lastSeq}::bigint, null, ${n})`;
    await tx`
      insert into app.upgrade_v1_progress (v1_canvas_id, canvas_id, workspace_id, workspace_per, blocks, embedded, queued,
                                           first_server_seq, last_server_seq, checksum, duration_ms)
      values (${canvas.v1Id}, ${canvas.id}, ${canvas.workspaceId}, ${opts.workspacePer}, ${n}, ${embedded.length}, ${n - embedded.length},
              ${seqs[0] ?? null}::bigint, ${lastSeq}::bigint, ${plan.checksum}, ${monotonicNow() - started})`;
    return { status: 'written', blocks: n, embedded: embedded.length, queued: n - embedded.length, firstSeq: seqs[0] ?? null, lastSeq };
  }) as CanvasWriteResult;
}
