// Two reuses of old refresh tokens of one sign-in at the same time (a stolen token and the
// client's own stale one, two tabs replaying old tokens), and reuses racing a refresh or a logout
// of the same user. A reuse revokes the whole family; each presentation locked its own token's row
// first and then revoked the family's rows, so two reuses of two tokens of one family each held
// one row and waited for the other's: a deadlock, which Postgres broke by failing one of them
// (40P01, answered 503). internal.rotate_refresh_token and internal.auth_sign_out now lock the
// user's row first (as GoTrue locks the session's), so they run one after the other.
// Real concurrent connections: a transaction of the test holds the user's row until every call
// waits (pg_blocking_pids), then lets go; they then all start at once, as the attack's did.
import { randomUUID } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { createUser } from '../helpers/fixtures.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(8);
afterAll(async () => {
  await db.close();
});

const waiting = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from pg_stat_activity
  where datname = current_database() and cardinality(pg_blocking_pids(pid)) > 0`)[0]!.n;

/** A sign-in of a new user rotated `rotations` times without a reuse interval: the hashes, oldest first (the last one live). */
async function family(rotations: number) {
  const userId = await createUser(db.sql, 'reuse-deadlock');
  const tag = randomUUID();
  const hashes = Array.from({ length: rotations + 1 }, (_, i) => `${tag}-${i}`);
  await db.sql`select internal.issue_refresh_token(${userId}, ${hashes[0]!}, 3600)`;
  for (let i = 1; i <= rotations; i++) {
    const [row] = await db.sql`select internal.rotate_refresh_token(${hashes[i - 1]!}, ${hashes[i]!}, 'seal', 3600, 0) as r`;
    expect(row!.r).toMatchObject({ user_id: userId });
  }
  return { userId, hashes };
}

/** Runs every call at once, the user's row held until all of them wait; their outcomes (an error's SQLSTATE). */
async function atOnce(userId: string, calls: (() => Promise<unknown>)[]) {
  const holder = await reservedTransaction(db.sql);
  try {
    await holder.conn`select from auth.users where id = ${userId} for update`;
    const running = calls.map((call) => call().then((value) => ({ value }), (err: { code?: string }) => ({ error: err.code ?? String(err) })));
    await until(async () => (await waiting()) >= calls.length, 10_000, 'every call waiting for the user row');
    await holder.end('rollback');
    return await Promise.all(running);
  } finally {
    await holder.release();
  }
}

const rotate = (hash: string) => async () =>
  (await db.sql`select internal.rotate_refresh_token(${hash}, ${randomUUID()}, 'seal', 3600, 0) as r`)[0]!.r as Record<string, unknown>;
const live = async (userId: string) => (await db.sql<{ n: number }[]>`select count(*)::int as n from app.refresh_tokens
  where user_id = ${userId} and revoked_at is null`)[0]!.n;

describe('concurrent reuses of one sign-in\'s old refresh tokens', () => {
  it('two reuses at once: no deadlock; the first revokes the family, the other finds it revoked', async () => {
    for (let round = 0; round < 3; round++) {
      const { userId, hashes } = await family(3);
      // hashes[0] and hashes[1] are used and their children used too: both are reuse
      const outcomes = await atOnce(userId, [rotate(hashes[0]!), rotate(hashes[1]!)]);
      expect(outcomes.filter((o) => 'error' in o), JSON.stringify(outcomes)).toEqual([]);
      expect(outcomes.map((o) => (o as { value: { error?: string } }).value.error).sort()).toEqual(['invalid', 'reused']);
      expect(await live(userId)).toBe(0);
    }
  });

  it('reuses, a refresh of the live token and a logout at once: no deadlock, nothing of the sign-in left live', async () => {
    for (let round = 0; round < 3; round++) {
      const { userId, hashes } = await family(4);
      const outcomes = await atOnce(userId, [rotate(hashes[0]!), rotate(hashes[4]!), rotate(hashes[1]!), rotate(hashes[2]!),
        async () => (await db.sql`select internal.auth_sign_out(${userId}, null, 'global') as n`)[0]!.n]);
      expect(outcomes.filter((o) => 'error' in o), JSON.stringify(outcomes)).toEqual([]);
      expect(await live(userId)).toBe(0);
    }
  });
});
