// The rate-limit slots' new key (supabase/migrations/*_rate_limit_slots_window_key.sql, carrying
// sql/rpc/endpoint_limits.sql: app.rate_limit_slots keyed (window_key, slot), window_key being
// internal.rate_limit_window_key of user_id, bucket and window_start), on a database made by the
// migrations before it with a user's hits of the current minute taken by the previous
// take_limit_slot, one in flight and one more that comes while the migration waits: the
// migration waits for the hit in flight and keeps the minute's slots (each with its key); the hit
// that waited behind the migration, inside the previous function, gets a slot (its insert names no
// window_key: the trigger rate_limit_slot_key gives it its key and the slot's advisory lock); hits
// of either version skip a slot the other holds in flight instead of waiting for it; and the limit
// holds across the change: both versions' hits count under one bound, up to the limit, then refuse.
// (Seen failing with the previous migration, 12575a8's revert of it: the late hit's insert
// failed, not null; and with the trigger taking no advisory lock: the new code's next hit waited
// for the late hit's slot, lock timeout.)
import { cpSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { pushLikeSupabase } from '../../src/db/push.ts';

const repoRoot = new URL('../..', import.meta.url).pathname;
const migrationsDir = join(repoRoot, 'supabase/migrations');
const KEY_MIGRATION = readdirSync(migrationsDir).find((f) => f.endsWith('_rate_limit_slots_window_key.sql'))!;
const name = `potentia_slots_key_${process.pid}`;
const urlOf = (db: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${db}`; return u.toString(); };
// a wait for another transaction's lock fails the statement instead of hanging the test (no hit
// of take_limit_slot waits for another: the ones below must not)
const connect = () => postgres(urlOf(name), { max: 1, onnotice: () => {}, connection: { lock_timeout: 10_000 } });

describe('upgrade: rate-limit slots keyed by window_key', () => {
  const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  const root = mkdtempSync(join(tmpdir(), 'potentia-slots-key-'));
  afterAll(async () => {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps the open minute\'s slots, and a hit of the previous code waiting behind it counts under the same bound', async () => {
    cpSync(join(repoRoot, 'sql'), join(root, 'sql'), { recursive: true });
    mkdirSync(join(root, 'supabase/migrations'), { recursive: true });
    const files = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).sort();
    for (const f of files.filter((f) => f < KEY_MIGRATION)) cpSync(join(migrationsDir, f), join(root, 'supabase/migrations', f));
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.unsafe(`create database ${name}`);
    const sql = connect();
    const other = connect();
    const late = connect();
    const held = connect();
    try {
      await pushLikeSupabase(sql, root, {});
      expect(await sql`select count(*)::int as n from pg_attribute where attrelid = 'app.rate_limit_slots'::regclass and attname = 'window_key'`)
        .toEqual([{ n: 0 }]);  // the previous key
      // what follows counts in one minute: not in the last seconds of one
      const second = new Date().getUTCSeconds();
      if (second > 45) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1000));
      const [busy, calm] = ['00000000-0000-4000-8000-00000000c001', '00000000-0000-4000-8000-00000000c002'];
      const take = (user: string) => sql`select internal.take_limit_slot(${user}::uuid, 'mutations', 10, 60) as s`.then(([r]) => r!.s as number);
      // busy: 6 hits this minute by the previous code, and a full old minute
      for (let i = 0; i < 6; i++) await take(busy);
      await sql`insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
        select ${busy}::uuid, internal.rate_window_start(60) - interval '1 minute', 'mutations', s from generate_series(1, 10) s`;
      // a hit of the previous code in flight while the migration runs
      const inFlight = await other.reserve();
      await inFlight`begin`;
      expect((await inFlight`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`)[0]!.s).toBe(7);
      const migration = sql.begin((tx) => tx.unsafe(readFileSync(join(migrationsDir, KEY_MIGRATION), 'utf8')));
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
      // take_limit_slot and waits behind the migration at its first insert into the table
      const lateTx = await late.reserve();
      await lateTx`begin`;
      const lateHit = lateTx`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`
        .then(([r]) => r!.s as number, (e: { code?: string; message?: string }) => `${e.code}: ${e.message}`);
      await waitingOnTable(2);
      await inFlight`commit`;
      inFlight.release();
      await migration;
      // the late hit, run by the previous function's text after the change: counted, slot 8 (held:
      // its transaction is open)
      expect(await lateHit).toBe(8);
      expect(await sql`select a.attname from pg_index i, unnest(i.indkey) with ordinality k(attnum, n)
        join pg_attribute a on a.attrelid = 'app.rate_limit_slots'::regclass and a.attnum = k.attnum
        where i.indrelid = 'app.rate_limit_slots'::regclass and i.indisprimary order by k.n`.then((r) => r.map((x) => x.attname)))
        .toEqual(['window_key', 'slot']);
      // the new code's hit skips slot 8, which the late hit holds (the advisory lock the trigger
      // took for it), instead of waiting for it on the key: 9, held in flight
      const heldTx = await held.reserve();
      await heldTx`begin`;
      expect((await heldTx`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`)[0]!.s).toBe(9);
      // and an insert of the previous code (its statement, its advisory key) for slot 9 skips it
      // without waiting: the trigger finds the slot's lock held
      expect(await sql`insert into app.rate_limit_slots (user_id, window_start, bucket, slot)
        select ${busy}::uuid, w, 'mutations', 9 from internal.rate_window_start(60) w
        where pg_try_advisory_xact_lock(hashtextextended(${busy}::text || ' mutations ' || extract(epoch from w)::bigint::text, 0) # 9)
        on conflict do nothing returning slot`).toEqual([]);
      await lateTx`commit`;
      lateTx.release();
      await heldTx`commit`;
      heldTx.release();
      // the minute's slots, of both versions, each with its key
      expect((await sql`select slot from app.rate_limit_slots where user_id = ${busy}::uuid and bucket = 'mutations'
        and window_start = internal.rate_window_start(60) and window_key = internal.rate_limit_window_key(user_id, bucket, window_start)
        order by slot`).map((r) => r.slot)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
      expect(await sql`select count(distinct window_key)::int as n from app.rate_limit_slots where user_id = ${busy}::uuid`)
        .toEqual([{ n: 2 }]);
      // under a limit of 10: one more, then refused; the old minute's full window is another key
      expect(await take(busy)).toBe(10);
      await expect(take(busy)).rejects.toMatchObject({ code: 'PX429' });
      expect(await take(calm)).toBe(1);
    } finally {
      // at once: a reserved connection left in a transaction by a failed expectation is closed
      await Promise.all([other, late, held, sql].map((c) => c.end({ timeout: 0 })));
    }
  }, 90_000);
});
