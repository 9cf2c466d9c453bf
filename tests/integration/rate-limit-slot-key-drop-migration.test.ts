// The drop of the rate-limit slots' compatibility trigger (supabase/migrations/
// *_rate_limit_slots_drop_slot_key_trigger.sql, carrying sql/rpc/endpoint_limits.sql): the key
// migration before it (*_rate_limit_slots_window_key.sql) made a trigger, rate_limit_slot_key,
// that keyed a row inserted without window_key (the take_limit_slot of the release before the
// key's, caught inside its function by that migration). The release after it guarantees what its
// own code and the previous release's need, and no longer that: on a database made by the
// migrations before the drop, with a user's hits of the current minute taken by the previous
// release's take_limit_slot, one in flight and one more that comes while the migration waits, the
// migration waits for the hit in flight; the hit that waited behind it, inside the previous
// function, gets its slot after it (its insert, planned again, names window_key); the new code's
// hit skips a slot that hit holds; the limit holds across the change; and a row inserted without
// window_key now fails (not null), counting nothing, where the trigger keyed it.
// (Until this release the file was rate-limit-slots-key-migration.test.ts, the key migration's
// test with a hit of the release before it; that release's code can no longer run against a
// database of this one. Seen failing on the migrations without the drop: the keyless insert was
// keyed and took its slot.)
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { pushLikeSupabase } from '../../src/db/push.ts';
import { checkoutCopy } from '../helpers/checkout-copy.ts';
import { migrationScratch } from '../helpers/migration-scratch.ts';

const repoRoot = new URL('../..', import.meta.url).pathname;
const migrationsDir = join(repoRoot, 'supabase/migrations');
const DROP_MIGRATION = readdirSync(migrationsDir).find((f) => f.endsWith('_rate_limit_slots_drop_slot_key_trigger.sql'))!;
const scratch = migrationScratch('slot_key_drop');
const { name, urlOf } = scratch;
// a wait for another transaction's lock fails the statement instead of hanging the test (no hit
// of take_limit_slot waits for another: the ones below must not)
const connect = () => postgres(urlOf(name), { max: 1, onnotice: () => {}, connection: { lock_timeout: 10_000 } });

describe('upgrade: the rate-limit slots\' compatibility trigger dropped', () => {
  const { admin } = scratch;
  const root = checkoutCopy('slot-key-drop', { migrationsBefore: DROP_MIGRATION });
  afterAll(async () => {
    await scratch.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('lets the previous release\'s hits in flight and waiting behind it count under the same bound, and refuses a row without its key', async () => {
    expect(DROP_MIGRATION).toBeDefined();
    await scratch.create();
    const sql = connect();
    const other = connect();
    const late = connect();
    const held = connect();
    try {
      await pushLikeSupabase(sql, root, {});
      const trigger = () => sql`select count(*)::int as n from pg_trigger where tgrelid = 'app.rate_limit_slots'::regclass and tgname = 'rate_limit_slot_key'`;
      expect(await trigger()).toEqual([{ n: 1 }]);  // the previous release's schema
      // what follows counts in one minute: not in the last seconds of one
      const second = new Date().getUTCSeconds();
      if (second > 45) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1000));
      const [busy, calm] = ['00000000-0000-4000-8000-00000000c001', '00000000-0000-4000-8000-00000000c002'];
      const take = (user: string) => sql`select internal.take_limit_slot(${user}::uuid, 'mutations', 10, 60) as s`.then(([r]) => r!.s as number);
      // busy: 6 hits this minute by the previous release's code
      for (let i = 0; i < 6; i++) await take(busy);
      // a hit of the previous code in flight while the migration runs
      const inFlight = await other.reserve();
      await inFlight`begin`;
      expect((await inFlight`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`)[0]!.s).toBe(7);
      const migration = sql.begin((tx) => tx.unsafe(readFileSync(join(migrationsDir, DROP_MIGRATION), 'utf8')));
      const [{ oid: table }] = await held`select 'app.rate_limit_slots'::regclass::oid as oid` as unknown as [{ oid: number }];
      // backends of this database waiting for a lock on app.rate_limit_slots
      const waitingOnTable = async (n: number) => {
        for (;;) {
          const [w] = await admin`select count(*)::int as n from pg_locks l join pg_stat_activity a on a.pid = l.pid
            where a.datname = ${name} and l.locktype = 'relation' and l.relation = ${table} and not l.granted`;
          if (w!.n >= n) return;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      };
      // the migration waits for the hit in flight (its lock on app.rate_limit_slots)
      await waitingOnTable(1);
      // a hit of the previous code that comes meanwhile, in a transaction: it enters the previous
      // take_limit_slot and waits behind the migration at its insert into the table
      const lateTx = await late.reserve();
      await lateTx`begin`;
      const lateHit = lateTx`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`
        .then(([r]) => r!.s as number, (e: { code?: string; message?: string }) => `${e.code}: ${e.message}`);
      await waitingOnTable(2);
      await inFlight`commit`;
      inFlight.release();
      await migration;
      // the late hit, its insert planned again after the change: counted, slot 8 (held: its
      // transaction is open)
      expect(await lateHit).toBe(8);
      expect(await trigger()).toEqual([{ n: 0 }]);
      expect(await sql`select to_regprocedure('internal.rate_limit_slot_key()') is null as gone`).toEqual([{ gone: true }]);
      // the new code's hit skips slot 8, which the late hit holds (its advisory lock), instead of
      // waiting for it on the key: 9, held in flight
      const heldTx = await held.reserve();
      await heldTx`begin`;
      expect((await heldTx`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`)[0]!.s).toBe(9);
      // a row without window_key (the code of the release before the key's) fails, counting nothing
      await expect(sql`insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
        select ${busy}::uuid, internal.rate_window_start(60), 'mutations', 10`).rejects.toMatchObject({ code: '23502' });
      await lateTx`commit`;
      lateTx.release();
      await heldTx`commit`;
      heldTx.release();
      expect((await sql`select slot from app.rate_limit_slots where user_id = ${busy}::uuid and bucket = 'mutations'
        and window_start = internal.rate_window_start(60) and window_key = internal.rate_limit_window_key(user_id, bucket, window_start)
        order by slot`).map((r) => r.slot)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
      // under a limit of 10: one more, then refused
      expect(await take(busy)).toBe(10);
      await expect(take(busy)).rejects.toMatchObject({ code: 'PX429' });
      expect(await take(calm)).toBe(1);
    } finally {
      // at once: a reserved connection left in a transaction by a failed expectation is closed
      await Promise.all([other, late, held, sql].map((c) => c.end({ timeout: 0 })));
    }
  }, 90_000);
});
