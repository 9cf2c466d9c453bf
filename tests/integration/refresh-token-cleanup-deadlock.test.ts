// The cleanup job (internal.cleanup, every minute) deletes refresh tokens that can never be used
// again (expired, revoked) in the same transaction as the rest of its work, and holds their rows
// until it commits. Every other writer of a user's tokens takes the user's row first
// (internal.rotate_refresh_token, internal.auth_sign_out, a deletion of the user): the cleanup
// did not, so it could hold a user's token row while a deletion of that user, holding the user's
// row and the rows its cascade had already deleted (the user's canvas memberships), waited for
// it; when the cleanup then purged a soft-deleted canvas of that user (its cascade waits for
// those memberships), the two waited for each other: a deadlock, one of them failed 40P01.
// Real connections; a transaction of the test holds the canvas (FOR KEY SHARE, which blocks its
// purge and nothing else) so that the cleanup stops at the purge, the deletion starts, and only
// then does the purge go on.
import { afterAll, describe, expect, it } from 'vitest';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(6);
afterAll(async () => {
  await db.close();
});

/** Runs `query` on a connection of its own: its pid, and its outcome (an error's SQLSTATE). */
async function started(query: (conn: Awaited<ReturnType<typeof db.sql.reserve>>) => Promise<unknown>) {
  const conn = await db.sql.reserve();
  const pid = (await conn<{ pid: number }[]>`select pg_backend_pid() as pid`)[0]!.pid;
  const outcome = query(conn).then((value) => ({ value }), (err: { code?: string; message?: string }) => ({ error: `${err.code} ${err.message}` }))
    .finally(() => conn.release());
  return { pid, outcome };
}

const blockedBy = async (pid: number) => (await db.sql<{ by: number[] }[]>`
  select pg_blocking_pids(pid) as by from pg_stat_activity where pid = ${pid} and datname = current_database()`)[0]?.by ?? [];
// not this query's own backend: a statement that ended released its connection to the pool, which
// may hand that same backend to this check, then seen active running the check itself
const running = async (pid: number) => (await db.sql`
  select from pg_stat_activity where pid = ${pid} and pid <> pg_backend_pid() and datname = current_database() and state = 'active'`).length > 0;

describe('the cleanup job and the refresh tokens of a user being deleted', () => {
  it('a deletion of the user while the cleanup deletes their revoked token and purges their canvas: no deadlock, both done', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const userId = users.editor!;
    await db.sql`select internal.issue_refresh_token(${userId}, ${`cleanup-deadlock-${canvasId}`}, 3600)`;
    await db.sql`update app.refresh_tokens set revoked_at = now() where user_id = ${userId}`;
    // soft-deleted long ago: the cleanup purges it (deleted_canvas_retention_days, 30)
    await db.sql`update app.canvases set deleted_at = now() - interval '400 days' where canvas_id = ${canvasId}`;
    // a member of the canvas itself (a row the deletion's cascade and the purge's both delete)
    await db.sql`insert into app.canvas_members (canvas_id, user_id, role) values (${canvasId}, ${userId}, 'editor')`;

    const holder = await reservedTransaction(db.sql);
    try {
      await holder.conn`select from app.canvases where canvas_id = ${canvasId} for key share`;
      const cleanup = await started((conn) => conn`select internal.cleanup() as r`);
      // the cleanup waits for the canvas (its purge), with whatever it did before held
      await until(async () => (await blockedBy(cleanup.pid)).includes(holder.pid), 4_000, 'the cleanup waiting for the held canvas');
      const deletion = await started((conn) => conn`delete from auth.users where id = ${userId}`);
      // the deletion ends, or waits for the cleanup
      await until(async () => !(await running(deletion.pid)) || (await blockedBy(deletion.pid)).includes(cleanup.pid),
        4_000, 'the deletion done or waiting for the cleanup');
      await holder.end('rollback');
      const outcomes = { cleanup: await cleanup.outcome, deletion: await deletion.outcome };
      expect(outcomes.cleanup, JSON.stringify(outcomes)).not.toHaveProperty('error');
      expect(outcomes.deletion, JSON.stringify(outcomes)).not.toHaveProperty('error');
    } finally {
      await holder.release();
    }
    expect((await db.sql`select from auth.users where id = ${userId}`).length).toBe(0);
    expect((await db.sql`select from app.refresh_tokens where user_id = ${userId}`).length).toBe(0);
    expect((await db.sql`select from app.canvases where canvas_id = ${canvasId}`).length).toBe(0);
  });

  it('a user whose row another transaction holds (a refresh, a sign-out, a deletion in flight): the cleanup does not wait, and leaves their tokens to its next run', async () => {
    const { users } = await createCanvas(db.sql, ['editor']);
    const [busy, idle] = [users.owner!, users.editor!];
    for (const userId of [busy, idle]) {
      await db.sql`select internal.issue_refresh_token(${userId}, ${`cleanup-held-${userId}`}, 3600)`;
      await db.sql`update app.refresh_tokens set revoked_at = now() where user_id = ${userId}`;
    }
    const tokens = async (userId: string) => (await db.sql`select from app.refresh_tokens where user_id = ${userId}`).length;
    const holder = await reservedTransaction(db.sql);
    try {
      // the lock a rotation and a sign-out take first
      await holder.conn`select from auth.users where id = ${busy} for no key update`;
      await db.sql`select internal.cleanup()`;
      expect(await tokens(busy)).toBe(1);
      expect(await tokens(idle)).toBe(0);
    } finally {
      await holder.release();
    }
    await db.sql`select internal.cleanup()`;
    expect(await tokens(busy)).toBe(0);
  });
  it('a held user with a full batch of dead tokens: the other users\' dead tokens are still deleted (one held user does not stop the step)', async () => {
    // The step chose at most p_batch dead tokens first and then skipped the users held: when those
    // tokens were all a held user's, nobody's were deleted, run after run while that user was held
    // (their refreshes, which take the user's row, kept back to back: a used token resent, which no
    // limit counts, is enough). p_batch 3 stands for the default 50000 (the tokens of a long-lived
    // family revoked by a reuse, or minted by the local /auth/v1 refresh grant, which has no limit).
    await db.sql`select internal.cleanup()`; // no other dead tokens: only these two users' below
    const { users } = await createCanvas(db.sql, ['editor']);
    const [busy, idle] = [users.owner!, users.editor!];
    // the held user's dead tokens come first in every order (inserted first, expired long before)
    for (let i = 0; i < 5; i++) await db.sql`select internal.issue_refresh_token(${busy}, ${`cleanup-batch-${busy}-${i}`}, 3600)`;
    await db.sql`update app.refresh_tokens set expires_at = now() - interval '1 day' where user_id = ${busy}`;
    await db.sql`select internal.issue_refresh_token(${idle}, ${`cleanup-batch-${idle}`}, 3600)`;
    await db.sql`update app.refresh_tokens set expires_at = now() - interval '1 second' where user_id = ${idle}`;
    const tokens = async (userId: string) => (await db.sql`select from app.refresh_tokens where user_id = ${userId}`).length;
    const holder = await reservedTransaction(db.sql);
    try {
      await holder.conn`select from auth.users where id = ${busy} for no key update`;
      await db.sql`select internal.cleanup(3)`;
      expect(await tokens(idle)).toBe(0);
      expect(await tokens(busy)).toBe(5);
    } finally {
      await holder.release();
    }
    await db.sql`select internal.cleanup(3)`;
    await db.sql`select internal.cleanup(3)`;
    expect(await tokens(busy)).toBe(0);
  });
});
