// A user deleted while their mutation runs. The mutation RPC reads the caller's role (and finds
// one: the deletion has not committed), then writes the block, whose created_by / updated_by
// reference auth.users (ON DELETE SET NULL): the foreign key's check waits for the deleting
// transaction and, once it commits, fails (23503). That was answered invalid_input with
// Postgres's constraint message (HTTP 400); a mutation by an already-deleted user is unauthorized
// (internal.require_user_exists). The race is made deterministic without a sleep: the deletion is
// held uncommitted on a connection of its own until the mutation's backend waits for it.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startServer, type Server } from '../../src/server.ts';
import { reservedTransaction, testDatabase, type ReservedTransaction } from '../helpers/db.ts';
import { apiErrorFromDatabase } from '../../src/http/errors.ts';
import { requestStatement } from '../../src/db/request.ts';
import { callAs, claimsFor, createCanvas, createUser, mutate, type MutationResult } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { tokenFor } from '../helpers/http.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(4);
let server: Server;

beforeAll(async () => {
  const config = loadConfig({ ...process.env, LOG_LEVEL: 'silent' });
  server = await startServer({ ...config, databaseUrl: testDatabaseUrl(), port: 0 });
}, 90_000);
afterAll(async () => {
  await server?.stop();
  await db.close();
});

/**
 * Runs `mutation` while `userId`'s deletion is uncommitted on another connection, and commits the
 * deletion once a backend waits for it (the mutation's foreign key check on the user row): the
 * deletion lands between the mutation's role read and its write.
 */
async function deletedWhileWriting<T>(userId: string, mutation: () => Promise<T>): Promise<T> {
  const deleter = await reservedTransaction(db.sql);
  try {
    await deleter.conn`delete from auth.users where id = ${userId}`;
    const running = mutation();
    running.catch(() => {}); // awaited below; a failure must not go unhandled while the wait polls
    await deleter.waitedFor('the mutation waiting for the user row the deletion holds');
    await deleter.end('commit');
    return await running;
  } finally {
    await deleter.release();
  }
}

/** What the attempt left: blocks, operation log rows and system audit rows of its client_op_id. */
async function traces(clientOpId: string, canvasId: string) {
  const [blocks] = await db.sql`select count(*)::int as n from app.blocks where canvas_id = ${canvasId} and content ->> 'tag' = ${clientOpId}`;
  const [log] = await db.sql`select count(*)::int as n from app.block_operations where client_op_id = ${clientOpId}`;
  const audit = await db.sql<{ user_id: string; status: string; details: Record<string, any> }[]>`
    select user_id, status, details from app.system_audit where client_op_id = ${clientOpId}`;
  return { blocks: blocks!.n as number, log: log!.n as number, audit };
}

const gone = { code: 'unauthorized', message: 'the user this token was issued to no longer exists' };
const goneText = `${gone.code}: ${gone.message}`;

/** 'ok', or the API error a call failed with as `code: message`. */
const codeOf = (call: Promise<unknown>) => call.then(() => 'ok', (err: unknown) => {
  const e = apiErrorFromDatabase(err);
  return `${e.code}: ${e.message}`;
});

describe('a user deleted between the mutation\'s role read and its write', () => {
  it('the RPC answers unauthorized (not invalid_input with the foreign key\'s message), writes nothing, audits the attempt', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const ghost = users.editor!;
    const opId = `gone-create-${randomUUID()}`;
    const result = await deletedWhileWriting(ghost, () =>
      mutate(db.sql, ghost, canvasId, { action: 'create', clientOpId: opId, patch: { type: 'text', content: { tag: opId } } }));
    expect(result).toMatchObject({ status: 'failed', server_seq: null, error: gone });
    const t = await traces(opId, canvasId);
    expect({ blocks: t.blocks, log: t.log }).toEqual({ blocks: 0, log: 0 });
    // recorded where an attempt without a role on the canvas is (the memberships went with the user)
    expect(t.audit).toEqual([{ user_id: ghost, status: 'failed',
      details: { canvas_id: canvasId, caller_role: 'none', error: gone } }]);
  });

  it('so does an update of a block (updated_by) and a batch', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'admin']);
    const made = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { n: 0 } } });
    // the editor edits it first: the deletion's SET NULL then holds the block row too
    const editorEdit = await mutate(db.sql, users.editor!, canvasId, { action: 'update', blockId: made.block_id!, baseVersion: 1, patch: { content: { n: 1 } } });
    expect(editorEdit.status).toBe('success');
    const editId = `gone-update-${randomUUID()}`;
    const update = await deletedWhileWriting(users.editor!, () =>
      mutate(db.sql, users.editor!, canvasId, { action: 'update', blockId: made.block_id!, baseVersion: 2, clientOpId: editId, patch: { content: { n: 2 } } }));
    expect(update).toMatchObject({ status: 'failed', error: gone });
    const batchId = `gone-batch-${randomUUID()}`;
    const batch = await deletedWhileWriting(users.admin!, () => callAs<MutationResult & { failed_index: number }>(db.sql, users.admin!,
      'upsert_blocks_atomic', [canvasId, [{ action: 'update', block_id: made.block_id, base_version: 2, client_op_id: `${batchId}-1`, patch: { content: { n: 3 } } },
        { action: 'create', client_op_id: batchId, patch: { type: 'text', content: { tag: batchId } } }]]));
    expect(batch).toMatchObject({ status: 'failed', failed_index: 0, error: gone });
    const [block] = await db.sql`select version, content, updated_by from app.blocks where block_id = ${made.block_id!}`;
    expect(block).toEqual({ version: 2, content: { n: 1 }, updated_by: null });
    expect((await traces(editId, canvasId)).log).toBe(0);
    expect(await traces(batchId, canvasId)).toMatchObject({ blocks: 0, log: 0 });
  });

  it('HTTP answers 401 unauthorized; H1 rejects the op with unauthorized', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'admin']);
    const post = async (userId: string, body: unknown) => {
      const res = await fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${await tokenFor(server, userId)}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() as { error?: unknown }, challenge: res.headers.get('www-authenticate') };
    };
    const httpId = `gone-http-${randomUUID()}`;
    const http = await deletedWhileWriting(users.editor!, () =>
      post(users.editor!, { action: 'create', client_op_id: httpId, patch: { type: 'text', content: { tag: httpId } } }));
    expect(http).toMatchObject({ status: 401, body: { error: gone }, challenge: expect.stringMatching(/^Bearer/) });

    const h1 = await openH1(server.url, canvasId, await tokenFor(server, users.admin!));
    try {
      await h1.next((m) => m.type === 'hello');
      const h1Id = `gone-h1-${randomUUID()}`;
      const answer = await deletedWhileWriting(users.admin!, async () => {
        h1.send({ type: 'mutate', action: 'create', client_op_id: h1Id, patch: { type: 'text', content: { tag: h1Id } } });
        return h1.next((m) => 'client_op_id' in m && m.client_op_id === h1Id);
      });
      expect(answer).toMatchObject({ type: 'rejected', client_op_id: h1Id, error: gone });
      expect(await traces(h1Id, canvasId)).toMatchObject({ blocks: 0, log: 0 });
    } finally {
      h1.ws.close();
    }
    expect(await traces(httpId, canvasId)).toMatchObject({ blocks: 0, log: 0 });
  });
});

// The other calls that write a row naming the caller (or, adding or setting a member, the member)
// lock that user's row first (internal.lock_user): the deletion waits for them, or they for it,
// and then answer unauthorized (or, for the member, as for an unknown user or address) instead of
// 23503.
describe('a user deleted while another call writes a row naming them', () => {
  it('create_workspace, create_canvas and create_file answer unauthorized and write nothing', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'admin']);
    const workspaceId = (await db.sql<{ workspace_id: string }[]>`select workspace_id from app.canvases where canvas_id = ${canvasId}`)[0]!.workspace_id;
    const maker = await createUser(db.sql, 'maker');
    expect(await deletedWhileWriting(maker, () => codeOf(callAs(db.sql, maker, 'create_workspace', ['ghost workspace'])))).toBe(goneText);
    expect((await db.sql`select from app.workspaces where name = 'ghost workspace'`).length).toBe(0);
    const title = `ghost canvas ${randomUUID()}`;
    expect(await deletedWhileWriting(users.admin!, () => codeOf(callAs(db.sql, users.admin!, 'create_canvas', [workspaceId, title, {}])))).toBe(goneText);
    expect((await db.sql`select from app.canvases where title = ${title}`).length).toBe(0);
    expect(await deletedWhileWriting(users.editor!, () =>
      codeOf(callAs(db.sql, users.editor!, 'create_file', [canvasId, 'ghost.png', 'image/png', 10])))).toBe(goneText);
    expect((await db.sql`select from app.files where canvas_id = ${canvasId}`).length).toBe(0);
  });

  it('adding a member who is being deleted invites the address instead (the user is gone); a manager being deleted is unauthorized', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['admin']);
    const workspaceId = (await db.sql<{ workspace_id: string }[]>`select workspace_id from app.canvases where canvas_id = ${canvasId}`)[0]!.workspace_id;
    const target = await createUser(db.sql, 'target');
    const email = (await db.sql<{ email: string }[]>`select email from auth.users where id = ${target}`)[0]!.email;
    const added = await deletedWhileWriting(target, () => callAs(db.sql, users.owner!, 'add_workspace_member', [workspaceId, email, 'editor']));
    expect(added).toMatchObject({ kind: 'invite', invite: { email } });
    expect((await db.sql`select from app.workspace_members where user_id = ${target}`).length).toBe(0);
    expect(await deletedWhileWriting(users.admin!, () =>
      codeOf(callAs(db.sql, users.admin!, 'add_workspace_member', [workspaceId, `new-${randomUUID()}@test.local`, 'viewer'])))).toBe(goneText);
    expect((await db.sql`select from app.workspace_invites where workspace_id = ${workspaceId}`).length).toBe(1);
  });

  it('set_workspace_member for a user being deleted answers invalid_input for user_id, as for an unknown user (not the foreign key\'s message)', async () => {
    const { workspaceId, users } = await createCanvas(db.sql, []);
    const target = await createUser(db.sql, 'target');
    expect(await deletedWhileWriting(target, () => codeOf(callAs(db.sql, users.owner!, 'set_workspace_member', [workspaceId, target, 'editor']))))
      .toBe('invalid_input: user_id must be an existing user and role one of owner, admin, editor, viewer');
    expect((await db.sql`select from app.workspace_members where user_id = ${target}`).length).toBe(0);
  });
});

// update_presence writes app.presence (user_id references auth.users) after require_canvas_reader
// read the caller's role, without a lock (it runs at every cursor move): the insert's foreign key
// fails once the deletion commits, and that failure is answered as for a user already gone.
// leave_canvas only deletes the caller's row (the deletion's cascade holds it: the call waits for
// it), which names nobody new: it succeeds, as a mutation's delete does.
describe('a user deleted during a presence call', () => {
  it('update_presence answers unauthorized (not invalid_input with the foreign key\'s message) and writes no presence', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const ghost = users.editor!;
    expect(await deletedWhileWriting(ghost, () => codeOf(callAs(db.sql, ghost, 'update_presence', [canvasId, { x: 1, y: 2 }, true]))))
      .toBe(goneText);
    expect((await db.sql`select from app.presence where canvas_id = ${canvasId}`).length).toBe(0);
  });

  it('leave_canvas succeeds: its delete names nobody', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['viewer']);
    const ghost = users.viewer!;
    await callAs(db.sql, ghost, 'update_presence', [canvasId, null, false]);
    expect(await deletedWhileWriting(ghost, () => codeOf(callAs(db.sql, ghost, 'leave_canvas', [canvasId])))).toBe('ok');
    expect((await db.sql`select from app.presence where canvas_id = ${canvasId}`).length).toBe(0);
  });
});

// A deletion locks the user's row, then (workspaces.created_by, ON DELETE SET NULL) the rows of the
// workspaces they created. add_workspace_member and set_workspace_member lock the workspace's row
// (internal.lock_workspace) and the member's user row: locked in that order, the deletion of a
// member who created the workspace deadlocked with the call (the call held the workspace and
// waited for the user; the deletion held the user and waited for the workspace), and Postgres
// failed one of them (40P01). The member's row is now locked first. Made deterministic: the creator
// made two workspaces; the first in the deletion's scan (ctid order, by the table or by
// workspaces_created_by_idx, which orders one creator's rows by ctid) is held by another
// transaction, so the deletion waits there holding the user row while the call locks the second.
describe('a member deleted while being added to a workspace they created', () => {
  it.each([
    ['add_workspace_member', (ws: string, user: string, email: string) => [ws, email, 'editor'], { kind: 'invite' }],
    ['set_workspace_member', (ws: string, user: string) => [ws, user, 'editor'],
      'invalid_input: user_id must be an existing user and role one of owner, admin, editor, viewer'],
  ] as const)('%s: the deletion and the call both finish (no deadlock); the call answers as for a user already gone', async (fn, args, expected) => {
    const creator = await createUser(db.sql, 'creator');
    const manager = await createUser(db.sql, 'manager');
    const email = (await db.sql<{ email: string }[]>`select email from auth.users where id = ${creator}`)[0]!.email;
    for (const name of ['first', 'second']) await callAs(db.sql, creator, 'create_workspace', [name]);
    // the creator hands the one the call acts on to the manager and leaves it
    const [held, target] = (await db.sql<{ workspace_id: string }[]>`
      select workspace_id from app.workspaces where created_by = ${creator} order by ctid`).map((r) => r.workspace_id);
    await callAs(db.sql, creator, 'set_workspace_member', [target, manager, 'owner']);
    await callAs(db.sql, creator, 'remove_workspace_member', [target, creator]);
    expect((await db.sql`select workspace_id from app.workspaces where created_by = ${creator} order by ctid`).map((r) => r.workspace_id))
      .toEqual([held, target]); // the setup moved no row

    const holder = await reservedTransaction(db.sql);
    const deleter = await db.sql.reserve();
    try {
      await holder.conn`select from app.workspaces where workspace_id = ${held!} for no key update`;
      const deleterPid = (await deleter<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
      const deletion = deleter`delete from auth.users where id = ${creator}`.then(() => 'deleted', (err: { code?: string }) => `failed ${err.code}`);
      await holder.waitedFor('the deletion waiting for the held workspace, holding the user row');
      const call = callAs(db.sql, manager, fn, args(target!, creator, email)).then((r) => r, (err: unknown) => codeOf(Promise.reject(err)));
      await until(async () => (await db.sql`select from pg_stat_activity where ${deleterPid}::int = any(pg_blocking_pids(pid))`).length > 0,
        10_000, 'the call waiting for the user row the deletion holds');
      await holder.end('rollback');
      expect(await deletion).toBe('deleted');
      const answer = await call;
      if (typeof expected === 'string') expect(answer).toBe(expected);
      else expect(answer).toMatchObject(expected);
      expect((await db.sql`select created_by from app.workspaces where workspace_id = ${target!}`)[0]).toEqual({ created_by: null });
      expect((await db.sql`select from app.workspace_members where user_id = ${creator}`).length).toBe(0);
    } finally {
      await holder.release();
      deleter.release();
    }
  });
});

// One statement deleting both the caller and the member (`delete from auth.users where id in
// (caller, member)`) locks the two user rows in its scan's order, and runs the ON DELETE actions
// only once it holds both. add_workspace_member and set_workspace_member locked the caller's row
// (internal.lock_user) and then the member's: where the deletion met the member first, each held
// the row the other waited for (40P01, failing the deletion or the call). No order of the call's
// can match every deletion's (ctid order in a sequential scan, id order in an index scan), so the
// calls now never hold two users' rows: the member's is locked, and the caller's only when no
// member was found (the invite names the caller). Made deterministic: a KEY SHARE lock held on the
// caller's row stops the deletion there, after it locked the member (a sequential scan, the
// member's row first in it); the call's KEY SHARE on the caller is granted beside the held one.
describe('the caller and the member deleted by one statement while the caller adds or sets the member', () => {
  it.each([
    ['add_workspace_member', (ws: string, email: string) => [ws, email, 'editor']],
    ['set_workspace_member', (ws: string, _email: string, member: string) => [ws, member, 'editor']],
  ] as const)('%s: the deletion and the call both finish (no deadlock); the call answers unauthorized', async (fn, args) => {
    const first = await createUser(db.sql, 'deleted-together');
    const second = await createUser(db.sql, 'deleted-together');
    // the member is the one the deletion's scan meets first
    const [member, caller] = (await db.sql<{ id: string }[]>`
      select id from auth.users where id in (${first}, ${second}) order by ctid`).map((r) => r.id);
    const email = (await db.sql<{ email: string }[]>`select email from auth.users where id = ${member!}`)[0]!.email;
    const { workspace_id: workspaceId } = await callAs(db.sql, caller!, 'create_workspace', ['deleted together']);

    const holder = await reservedTransaction(db.sql);
    let deleter: ReservedTransaction | undefined;
    try {
      await holder.conn`select from auth.users where id = ${caller!} for key share`;
      deleter = await reservedTransaction(db.sql);
      // a sequential scan, whatever the table's size: the rows are met in ctid order
      await deleter.conn`set local enable_indexscan = off`;
      await deleter.conn`set local enable_bitmapscan = off`;
      const deletion = deleter.conn`delete from auth.users where id in (${caller!}, ${member!})`
        .then(() => 'deleted', (err: { code?: string }) => `failed ${err.code}`);
      await holder.waitedFor('the deletion waiting for the caller\'s row, holding the member\'s');
      const call = codeOf(callAs(db.sql, caller!, fn, args(workspaceId, email, member!)));
      await deleter.waitedFor('the call waiting for the member\'s row the deletion holds');
      await holder.end('rollback');
      expect(await deletion).toBe('deleted');
      await deleter.end('commit');
      expect(await call).toBe(goneText);
      expect((await db.sql`select from auth.users where id in (${caller!}, ${member!})`).length).toBe(0);
      expect((await db.sql`select from app.workspace_members where workspace_id = ${workspaceId}`).length).toBe(0);
      expect((await db.sql`select from app.workspace_invites where workspace_id = ${workspaceId}`).length).toBe(0);
    } finally {
      await holder.release();
      await deleter?.release();
    }
  });
});

// Deleting several users in one statement holds every one of their rows before it runs their ON
// DELETE actions. A mutation by one of them of a block another of them last edited held the block
// (its update) and then took the caller's row (the foreign key of updated_by), while the deletion
// held the caller's row and needed the block (updated_by SET NULL for the other): a deadlock. Each
// mutation now locks its caller's row first (internal.apply_block_op, the block below this one),
// so it waits for the deletion before holding anything the deletion needs: no deadlock, and once
// the deletion commits the mutation answers unauthorized; with one user per transaction (as
// docs/self-hosting.md, Deleting a user, advises for the lanes' sake) the same.
describe('a mutation by one of several users being deleted, on a block another of them last edited', () => {
  /** A canvas (its owner deleted by nobody), an editor who is the caller and another who last edited a block. */
  async function setUp() {
    const { canvasId, workspaceId, users } = await createCanvas(db.sql, []);
    const first = await createUser(db.sql, 'deleted-editor');
    const second = await createUser(db.sql, 'deleted-editor');
    // the caller is the one a sequential scan of the deletion meets first
    const [caller, other] = (await db.sql<{ id: string }[]>`
      select id from auth.users where id in (${first}, ${second}) order by ctid`).map((r) => r.id);
    for (const id of [caller!, other!]) await callAs(db.sql, users.owner!, 'set_workspace_member', [workspaceId, id, 'editor']);
    const made = await mutate(db.sql, users.owner!, canvasId, { action: 'create', patch: { type: 'text', content: { n: 0 } } });
    expect(await mutate(db.sql, other!, canvasId, { action: 'update', blockId: made.block_id!, baseVersion: 1, patch: { content: { n: 1 } } }))
      .toMatchObject({ status: 'success' });
    return { canvasId, blockId: made.block_id!, caller: caller!, other: other! };
  }

  const outcome = (p: Promise<unknown>) => p.then(() => 'ok', (err: { code?: string }) => `failed ${err.code}`);

  it('one statement deleting both: no deadlock, the deletion finishes, and the mutation then answers unauthorized', async () => {
    const { canvasId, blockId, caller, other } = await setUp();
    const holder = await reservedTransaction(db.sql);
    const deleter = await reservedTransaction(db.sql);
    try {
      // the deletion locks the caller's row, then waits for the other's, which is held
      await holder.conn`select from auth.users where id = ${other} for key share`;
      await deleter.conn`set local enable_indexscan = off`;
      await deleter.conn`set local enable_bitmapscan = off`;
      const deletion = outcome(deleter.conn`delete from auth.users where id in (${caller}, ${other})`);
      await holder.waitedFor('the deletion waiting for the other user\'s row, holding the caller\'s');
      const mutation = mutate(db.sql, caller, canvasId, { action: 'update', blockId, baseVersion: 2, patch: { content: { n: 2 } } });
      // before: the mutation held the block and then waited here, and the deletion needed the block (40P01)
      await deleter.waitedFor('the mutation waiting for the caller\'s row, holding nothing the deletion needs');
      await holder.end('rollback');
      expect(await deletion).toBe('ok');
      await deleter.end('commit');
      expect(await mutation).toMatchObject({ status: 'failed', error: gone });
      expect((await db.sql`select updated_by, version from app.blocks where block_id = ${blockId}`)[0]).toEqual({ updated_by: null, version: 2 });
    } finally {
      await holder.release();
      await deleter.release();
    }
  });

  it('one user per transaction: both deletions and the mutation finish, the mutation answers unauthorized', async () => {
    const { canvasId, blockId, caller, other } = await setUp();
    const callerDeletion = await reservedTransaction(db.sql);
    const otherDeletion = await reservedTransaction(db.sql);
    try {
      await callerDeletion.conn`delete from auth.users where id = ${caller}`;
      const mutation = mutate(db.sql, caller, canvasId, { action: 'update', blockId, baseVersion: 2, patch: { content: { n: 2 } } });
      await callerDeletion.waitedFor('the mutation waiting for the caller\'s row');
      // the other user's deletion needs the block (updated_by SET NULL), which the waiting mutation does not hold
      expect(await outcome(otherDeletion.conn`delete from auth.users where id = ${other}`)).toBe('ok');
      await otherDeletion.end('commit');
      await callerDeletion.end('commit');
      expect(await mutation).toMatchObject({ status: 'failed', error: gone });
      expect((await db.sql`select from auth.users where id in (${caller}, ${other})`).length).toBe(0);
      expect((await db.sql`select updated_by, version from app.blocks where block_id = ${blockId}`)[0]).toEqual({ updated_by: null, version: 2 });
    } finally {
      await callerDeletion.release();
      await otherDeletion.release();
    }
  });
});

// A deletion locks the user's row, then the rows its ON DELETE actions change: the canvases the
// user created (canvases.created_by, SET NULL), the blocks they created or last edited. A mutation
// locks the canvas row, then writes the block, whose foreign key (created_by, updated_by) locks
// the caller's row: a mutation by the canvas's creator that held the canvas when the deletion
// came waited for the deletion, which waited for the canvas, and Postgres broke the deadlock by
// failing the deletion (it waited first): a user deleting their account while a tab of theirs
// still sent edits. The mutation RPCs now lock the caller's row before the canvas row, and a lane
// transaction carrying several callers locks all of theirs first. Made deterministic: the
// mutation waits (holding the canvas) for a block row the test holds, until the deletion waits.
describe('a user deleted while their mutation holds the canvas they created', () => {
  /** Holds `blockId`'s row locked (FOR UPDATE) in a transaction of its own until release(). */
  async function holdBlock(blockId: string): Promise<ReservedTransaction> {
    const held = await reservedTransaction(db.sql);
    await held.conn`select from app.blocks where block_id = ${blockId} for update`.catch(async (err) => {
      await held.release();
      throw err;
    });
    return held;
  }

  /** Deletes `userId` on a connection of its own, once it has to wait: its outcome, 'deleted' or 'failed <sqlstate>'. */
  async function startDeletion(userId: string) {
    const deleter = await db.sql.reserve();
    const pid = (await deleter<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
    const outcome = deleter`delete from auth.users where id = ${userId}`
      .then(() => 'deleted', (err: { code?: string }) => `failed ${err.code}`)
      .finally(() => deleter.release());
    await until(async () => (await db.sql`select from pg_stat_activity where pid = ${pid}::int and cardinality(pg_blocking_pids(pid)) > 0`).length > 0,
      10_000, 'the deletion waiting for the mutation');
    return { outcome }; // not the promise itself: an async function's answer would wait for it
  }

  /** `api.upsert_block_atomic(args)` as `userId`, sent down the server's lane of `canvasId` (as H1 sends it): its result. */
  function laneMutation(canvasId: string, userId: string, args: unknown[]): Promise<MutationResult> {
    return requestStatement<{ r: MutationResult }>(server.deps.lanes, canvasId, { claims: claimsFor(userId), path: `/ws/canvas/${canvasId}` },
      'select api.upsert_block_atomic($1::uuid, $2::uuid, $3, $4, $5::int, $6::jsonb) as r', args).then((rows) => rows[0]!.r);
  }

  /** The RPC's arguments moving `blockId` (at version 1) to `rank`. */
  const moveArgs = (canvasId: string, blockId: string, rank: string) => [canvasId, blockId, 'move', randomUUID(), 1, { y_order: rank }];

  it.each([
    ['a move of another user\'s block', (x: string) => ({ action: 'move', block_id: x, base_version: 1, client_op_id: randomUUID(), patch: { y_order: 'zx' } })],
    ['a batch whose first op is a delete', (x: string) => ({ ops: [
      { action: 'delete', block_id: x, base_version: 1, client_op_id: randomUUID() },
      { action: 'create', client_op_id: randomUUID(), patch: { type: 'text', content: { n: 1 } } }] })],
  ] as const)('%s over HTTP: the mutation applies, then the deletion does (no deadlock)', async (_, body) => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const creator = users.owner!;
    const x = (await mutate(db.sql, users.editor!, canvasId, { action: 'create', patch: { type: 'text', content: { n: 0 } } })).block_id!;
    const block = await holdBlock(x);
    try {
      const res = fetch(`${server.url}/api/v1/canvas/${canvasId}/mutate`, {
        method: 'POST', headers: { authorization: `Bearer ${await tokenFor(server, creator)}`, 'content-type': 'application/json' },
        body: JSON.stringify(body(x)),
      }).then(async (r) => ({ status: r.status, body: await r.json() as { status?: string } }));
      await block.waitedFor('a mutation waiting for the held block');
      const deletion = await startDeletion(creator);
      await block.release();
      expect(await deletion.outcome).toBe('deleted');
      expect(await res).toMatchObject({ status: 200, body: { status: 'success' } });
      expect((await db.sql`select created_by from app.canvases where canvas_id = ${canvasId}`)[0]).toEqual({ created_by: null });
    } finally {
      await block.release();
    }
  });

  it('in a lane transaction behind another caller\'s mutation holding the canvas: all apply, then the deletion does', async () => {
    // the lane sends a transaction's requests in callers' order: the deleted user's goes second
    const [other, creator] = [await createUser(db.sql, 'a'), await createUser(db.sql, 'b')].sort();
    const { workspace_id: workspaceId } = await callAs(db.sql, creator!, 'create_workspace', ['Lanes']);
    const { canvas_id: canvasId } = await callAs(db.sql, creator!, 'create_canvas', [workspaceId, 'Lanes', {}]);
    await callAs(db.sql, creator!, 'set_workspace_member', [workspaceId, other, 'editor']);
    const made = async () => (await mutate(db.sql, other!, canvasId, { action: 'create', patch: { type: 'text', content: {} } })).block_id!;
    const [x, y] = [await made(), await made()];
    const op = (userId: string, args: unknown[]) => laneMutation(canvasId, userId, args);
    const move = (blockId: string, rank: string) => moveArgs(canvasId, blockId, rank);
    const first = await holdBlock(x);
    const second = await holdBlock(y);
    try {
      // on the wire alone, holding the canvas; the next two queue behind it and go as one transaction
      const alone = op(other!, move(x, 'zx'));
      await first.waitedFor('a mutation waiting for the held block');
      const group = [op(other!, move(y, 'zy')), op(creator!, [canvasId, null, 'create', randomUUID(), null, { type: 'text', content: {} }])];
      await first.release();
      expect(await alone).toMatchObject({ status: 'success' });
      await second.waitedFor('a mutation waiting for the held block'); // the group's first request holds the canvas
      const deletion = await startDeletion(creator!);
      await second.release();
      expect(await deletion.outcome).toBe('deleted');
      expect(await Promise.all(group)).toMatchObject([{ status: 'success' }, { status: 'success' }]);
    } finally {
      await first.release();
      await second.release();
    }
  });

  // A canvas row this transaction already changed has its foreign keys checked again at its next
  // change (Postgres checks a row its own transaction wrote whatever the columns): in a lane's
  // group, the second mutation's canvas UPDATE locks the canvas creator's row (canvases.created_by)
  // FOR KEY SHARE, after the group holds the canvas. A deletion of the creator, holding their row
  // and waiting for the canvas, deadlocked with it, whoever the group's callers were.
  it.each([
    ['two other callers', 2],
    ['one other caller twice', 1],
  ] as const)('the canvas\'s creator deleted while a lane group of %s holds the canvas: all apply, then the deletion does (no deadlock)', async (_, callers) => {
    const [a, b, creator] = [await createUser(db.sql, 'a'), await createUser(db.sql, 'b'), await createUser(db.sql, 'creator')];
    const [first, second] = [a!, b!].sort() as [string, string];
    const { workspace_id: workspaceId } = await callAs(db.sql, creator!, 'create_workspace', ['Lanes']);
    const { canvas_id: canvasId } = await callAs(db.sql, creator!, 'create_canvas', [workspaceId, 'Lanes', {}]);
    for (const id of [first, second]) await callAs(db.sql, creator!, 'set_workspace_member', [workspaceId, id, 'editor']);
    const made = async () => (await mutate(db.sql, first, canvasId, { action: 'create', patch: { type: 'text', content: {} } })).block_id!;
    const [x, y] = [await made(), await made()];
    const op = (userId: string, args: unknown[]) => laneMutation(canvasId, userId, args);
    const move = (blockId: string, rank: string) => moveArgs(canvasId, blockId, rank);
    const heldX = await holdBlock(x);
    const heldY = await holdBlock(y);
    try {
      // on the wire alone; the next two queue behind it and go as one transaction, the move first
      const alone = op(first, move(x, 'zx'));
      await heldX.waitedFor('a mutation waiting for the held block');
      const group = [op(first, move(y, 'zy')),
        op(callers === 2 ? second : first, [canvasId, null, 'create', randomUUID(), null, { type: 'text', content: {} }])];
      await heldX.release();
      expect(await alone).toMatchObject({ status: 'success' });
      await heldY.waitedFor('a mutation waiting for the held block'); // the group's first request holds the canvas
      const deletion = await startDeletion(creator!);
      await heldY.release();
      expect(await Promise.all(group)).toMatchObject([{ status: 'success' }, { status: 'success' }]);
      expect(await deletion.outcome).toBe('deleted');
      expect((await db.sql`select created_by from app.canvases where canvas_id = ${canvasId}`)[0]).toEqual({ created_by: null });
    } finally {
      await heldX.release();
      await heldY.release();
    }
  });
});
