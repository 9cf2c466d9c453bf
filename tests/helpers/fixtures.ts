import { randomUUID } from 'node:crypto';
import type { Sql } from 'postgres';
import { withRequest, type RequestContext } from '../../src/db/request.ts';

export type Role = 'owner' | 'admin' | 'editor' | 'viewer';

/** A user in auth.users (tests create their own, with unique emails), its address confirmed, as
 *  every user is where confirmation is off (AUTH_EMAIL_CONFIRM unset, Supabase's autoconfirm): an
 *  unconfirmed one is added to a workspace by email only once it confirms (add_workspace_member). */
export async function createUser(sql: Sql, name = 'user'): Promise<string> {
  const [row] = await sql`insert into auth.users (email, email_confirmed_at) values (${`${name}-${randomUUID()}@test.local`}, now()) returning id`;
  return row!.id as string;
}

export const claimsFor = (userId: string, extra: Record<string, unknown> = {}): RequestContext['claims'] => ({
  sub: userId, role: 'authenticated', ...extra,
});

/** Calls one api function as `userId`, PostgREST-style, and returns its jsonb result. */
export async function callAs<T = any>(sql: Sql, userId: string, fn: string, args: unknown[], extraClaims = {}): Promise<T> {
  if (!/^[a-z_]+$/.test(fn)) throw new Error(`bad function name ${fn}`);
  const params = args.map((_, i) => `$${i + 1}`).join(', ');
  return withRequest(sql, { claims: claimsFor(userId, extraClaims) }, async (tx) => {
    const [row] = await tx.unsafe(`select api.${fn}(${params}) as result`, args as any[]);
    return row!.result as T;
  });
}

/** A workspace owned by a new user, with one canvas; extra members by role. */
export async function createCanvas(sql: Sql, members: Role[] = []) {
  const owner = await createUser(sql, 'owner');
  const { workspace_id } = await callAs(sql, owner, 'create_workspace', ['Test workspace']);
  const { canvas_id } = await callAs(sql, owner, 'create_canvas', [workspace_id, 'Test canvas', {}]);
  const users: Record<string, string> = { owner };
  for (const role of members) {
    const id = await createUser(sql, role);
    await callAs(sql, owner, 'set_workspace_member', [workspace_id, id, role]);
    users[role] = id;
  }
  return { workspaceId: workspace_id as string, canvasId: canvas_id as string, users };
}

export type MutationResult = {
  status: 'success' | 'conflict' | 'failed' | 'duplicate';
  server_seq: number | null;
  canvas_seq?: number | null;
  version?: number;
  block_id?: string;
  block?: Record<string, any> | null;
  error?: { code: string; message: string; field?: string };
};

export function mutate(sql: Sql, userId: string, canvasId: string, op: {
  blockId?: string | null; action: 'create' | 'update' | 'move' | 'delete'; clientOpId?: string;
  baseVersion?: number | null; patch?: Record<string, unknown>;
}): Promise<MutationResult> {
  return callAs(sql, userId, 'upsert_block_atomic', [
    canvasId, op.blockId ?? null, op.action, op.clientOpId ?? randomUUID(), op.baseVersion ?? null, op.patch ?? {},
  ]);
}

/** Adds a new user to a workspace with `role` (as the workspace owner); returns the user id. */
export async function addMember(sql: Sql, ownerId: string, workspaceId: string, role: Role, name: string = role): Promise<string> {
  const id = await createUser(sql, name);
  await callAs(sql, ownerId, 'set_workspace_member', [workspaceId, id, role]);
  return id;
}

/** A canvas (createCanvas) with `editors` more members as editors: `users[0]` is the owner, then the editors. */
export async function createCanvasWithEditors(sql: Sql, editors: number) {
  const c = await createCanvas(sql, []);
  const users = [c.users.owner!];
  for (let i = 0; i < editors; i++) users.push(await addMember(sql, c.users.owner!, c.workspaceId, 'editor', `editor${i}`));
  return { ...c, users };
}

/** Another canvas in an existing workspace, created by `userId` (owner/admin/editor). */
export async function addCanvas(sql: Sql, userId: string, workspaceId: string, title = 'Test canvas'): Promise<string> {
  const { canvas_id } = await callAs(sql, userId, 'create_canvas', [workspaceId, title, {}]);
  return canvas_id as string;
}

/**
 * How many more connections this server can give us right now, keeping `margin` free for
 * everyone else (other test files, other engineers' sessions, psql): max_connections minus
 * superuser_reserved_connections minus the backends already connected minus `margin`.
 */
export async function freeConnections(sql: Sql, margin = 10): Promise<number> {
  const [row] = await sql`
    select current_setting('max_connections')::int
         - current_setting('superuser_reserved_connections')::int
         - (select count(*)::int from pg_stat_activity) as free`;
  return Math.max(0, (row!.free as number) - margin);
}

/** A promise gate: `wait()` resolves for everyone once `size` callers are waiting. */
export function barrier(size: number): { wait(): Promise<void> } {
  let arrived = 0;
  let open!: () => void;
  const opened = new Promise<void>((resolve) => { open = resolve; });
  return {
    wait() {
      arrived += 1;
      if (arrived >= size) open();
      return opened;
    },
  };
}
