// The upgrade from the shard rows of the per-user mutation limit to its slots
// (supabase/migrations/*_rate_limit_slots.sql, then the generated *_rate_limit_slot_functions.sql
// carrying sql/rpc/endpoint_limits.sql and sql/rpc/mutate.sql, then *_rate_limit_shard_holder_retired.sql),
// on a database made by the migrations before them with a user's hits of the current minute in
// shard rows and one more in flight: the migration that switches the mutations to slots waits for
// the hit in flight, and carries the minute's committed count over as that many slots in the same
// transaction, so the minute the upgrade falls in still allows the limit in all; what only the
// shards used is gone.
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { pushLikeSupabase } from '../../src/db/push.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

const repoRoot = new URL('../..', import.meta.url).pathname;
const migrationsDir = join(repoRoot, 'supabase/migrations');
const files = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).sort();
const FIRST_OF_SLOTS = readdirSync(migrationsDir).find((f) => f.endsWith('_rate_limit_slots.sql'))!;
const scratch = migrationScratch('slots_upgrade');
const { name, urlOf } = scratch;

describe('upgrade: shard rows to slots', () => {
  const root = checkoutCopy('slots', { migrationsBefore: FIRST_OF_SLOTS });
  afterAll(async () => {
    await scratch.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('carries the open minute\'s hits over as the lowest slots, drops the shard functions and rows, and the limit holds across the upgrade', async () => {
    // the migrations before the slots, alone
    await scratch.create();
    const sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
    try {
      await pushLikeSupabase(sql, root, {});
      // The minute the upgrade falls in, pinned: whatever the clock reads when the migrations end
      // (a run past the minute's end read the next minute's slots, none), the counts are read in
      // that minute, and the limit is taken in it by a transaction begun in it (now(), which
      // rate_window_start reads, is its start; read committed, each statement sees the upgrade).
      // The hit in flight is one begun in the same minute too: two transactions begun again until
      // their start falls in one minute.
      const [busy, calm] = ['00000000-0000-4000-8000-00000000b001', '00000000-0000-4000-8000-00000000b002'];
      const other = postgres(urlOf(name), { max: 2, onnotice: () => {} });
      const [inFlight, pinned] = [await other.reserve(), await other.reserve()];
      let minute: Date;
      for (;;) {
        await inFlight`begin`;
        await pinned`begin`;
        const [[a], [b]] = [await inFlight`select internal.rate_window_start(60) as w`, await pinned`select internal.rate_window_start(60) as w`];
        if ((a!.w as Date).getTime() === (b!.w as Date).getTime()) { minute = a!.w as Date; break; }
        await inFlight`rollback`;
        await pinned`rollback`;
      }
      // busy: 7 hits in that minute over three shards, 40 in an old minute; calm: none
      await sql`insert into app.rate_limits (user_id, bucket, window_start, hits) values
        (${busy}, 'mutations', ${minute}, 4), (${busy}, 'mutations#1', ${minute}, 2),
        (${busy}, 'mutations+', ${minute}, 1), (${busy}, 'mutations#2', ${minute}, 0),
        (${busy}, 'mutations', ${minute}::timestamptz - interval '1 hour', 40),
        (${busy}, 'endpoint:H2', ${minute}, 3)`;
      const switchedBeforeCarry: string[] = [];
      // a hit of the shards' code in flight while the upgrade runs
      await inFlight`select internal.hit_sharded_limit(${busy}::uuid, 'mutations', 100, 60)`;
      const upgrade = (async () => {
        for (const f of files.filter((f) => f >= FIRST_OF_SLOTS)) {
          await sql.begin((tx) => tx.unsafe(readFileSync(join(migrationsDir, f), 'utf8')));
          // never a committed state where mutations count in slots and the shards' count is not
          // carried over yet (hits between the two would go beyond the limit)
          const [row] = await sql`select to_regprocedure('internal.take_limit_slot(uuid,text,integer,integer)') is not null
            and exists (select from app.rate_limits where bucket ~ '^mutations(#[0-9]+|[+])?$') as gap`;
          if (row?.gap) switchedBeforeCarry.push(f);
        }
      })();
      const state = await Promise.race([upgrade.then(() => 'done'), new Promise((r) => setTimeout(() => r('waiting'), 500))]);
      expect(state).toBe('waiting');  // for the hit in flight (SHARE ROW EXCLUSIVE on app.rate_limits)
      await inFlight`commit`;
      inFlight.release();
      await upgrade;
      expect(switchedBeforeCarry).toEqual([]);
      expect((await sql`select slot from app.rate_limit_slots where user_id = ${busy}::uuid and bucket = 'mutations'
        and window_start = ${minute} order by slot`).map((r) => r.slot)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
      expect(await sql`select count(*)::int as n from app.rate_limit_slots where window_start <> ${minute}`).toEqual([{ n: 0 }]);
      expect(await sql`select bucket, hits from app.rate_limits where user_id = ${busy}::uuid`).toEqual([{ bucket: 'endpoint:H2', hits: 3 }]);
      expect(await sql`select count(*)::int as n from pg_proc where proname in ('hit_sharded_limit', 'check_sharded_limit',
        'expect_several_hits', 'window_limit_hits', 'window_limit_shards', 'xmax_unseen_update')`).toEqual([{ n: 0 }]);
      expect(await sql`select count(*)::int as n from pg_attribute where attrelid = 'app.rate_limits'::regclass and attname = 'holder'`)
        .toEqual([{ n: 0 }]);
      // under a limit of 10, in the minute of the upgrade: two more, then refused (the refusal last: it ends the transaction)
      const take = (user: string) => pinned`select internal.take_limit_slot(${user}::uuid, 'mutations', 10, 60) as s`.then(([r]) => r!.s as number);
      expect([await take(busy), await take(busy)]).toEqual([9, 10]);
      expect(await take(calm)).toBe(1);
      await expect(take(busy)).rejects.toMatchObject({ code: 'PX429' });
      await pinned`rollback`;
      pinned.release();
      await other.end();
    } finally {
      await sql.end();
    }
  }, 60_000);
});
