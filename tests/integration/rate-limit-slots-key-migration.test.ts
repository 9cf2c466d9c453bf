// The rate-limit slots' new key (supabase/migrations/*_rate_limit_slots_window_key.sql, carrying
// sql/rpc/endpoint_limits.sql: app.rate_limit_slots keyed (window_key, slot), window_key being
// internal.rate_limit_window_key of user_id, bucket and window_start), on a database made by the
// migrations before it with a user's hits of the current minute taken by the previous
// take_limit_slot and one more in flight: the migration waits for the hit in flight, keeps the
// minute's slots (each with its key), and the limit holds across it: the new code's hits continue
// above them, up to the limit, then refuse. A hit of the previous code that waited behind the
// migration fails (not null) and counts nothing.
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

describe('upgrade: rate-limit slots keyed by window_key', () => {
  const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
  const root = mkdtempSync(join(tmpdir(), 'potentia-slots-key-'));
  afterAll(async () => {
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.end();
    rmSync(root, { recursive: true, force: true });
  });

  it('keeps the open minute\'s slots, waits for the hit in flight, and the limit holds across the change', async () => {
    cpSync(join(repoRoot, 'sql'), join(root, 'sql'), { recursive: true });
    mkdirSync(join(root, 'supabase/migrations'), { recursive: true });
    const files = readdirSync(migrationsDir).filter((f) => f.endsWith('.sql')).sort();
    for (const f of files.filter((f) => f < KEY_MIGRATION)) cpSync(join(migrationsDir, f), join(root, 'supabase/migrations', f));
    await admin.unsafe(`drop database if exists ${name} with (force)`);
    await admin.unsafe(`create database ${name}`);
    const sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
    const other = postgres(urlOf(name), { max: 1, onnotice: () => {} });
    try {
      await pushLikeSupabase(sql, root, {});
      expect(await sql`select count(*)::int as n from pg_attribute where attrelid = 'app.rate_limit_slots'::regclass and attname = 'window_key'`)
        .toEqual([{ n: 0 }]);  // the previous key
      // what follows counts in one minute: not in the last seconds of one
      const second = new Date().getUTCSeconds();
      if (second > 50) await new Promise((resolve) => setTimeout(resolve, (61 - second) * 1000));
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
      const waiting = async (n: number) => {
        for (;;) {
          const [w] = await admin`select count(*)::int as n from pg_stat_activity
            where datname = ${name} and wait_event_type = 'Lock'`;
          if (w!.n >= n) return;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      };
      // the migration waits for the hit in flight (its lock on app.rate_limit_slots)
      await waiting(1);
      // a hit of the previous code that comes meanwhile waits behind the migration, inside the
      // previous function: then its insert names no window_key, and it fails, counting nothing
      const late = postgres(urlOf(name), { max: 1, onnotice: () => {} });
      const lateHit = late`select internal.take_limit_slot(${busy}::uuid, 'mutations', 10, 60) as s`.then(() => 'counted', (e: { code?: string }) => e.code);
      await waiting(2);
      await inFlight`commit`;
      inFlight.release();
      await migration;
      expect(await lateHit).toBe('23502');
      await late.end();
      expect(await sql`select a.attname from pg_index i, unnest(i.indkey) with ordinality k(attnum, n)
        join pg_attribute a on a.attrelid = 'app.rate_limit_slots'::regclass and a.attnum = k.attnum
        where i.indrelid = 'app.rate_limit_slots'::regclass and i.indisprimary order by k.n`.then((r) => r.map((x) => x.attname)))
        .toEqual(['window_key', 'slot']);
      // the minute's slots, the one in flight included, each with its key
      expect((await sql`select slot from app.rate_limit_slots where user_id = ${busy}::uuid and bucket = 'mutations'
        and window_start = internal.rate_window_start(60) order by slot`).map((r) => r.slot)).toEqual([1, 2, 3, 4, 5, 6, 7]);
      expect(await sql`select count(distinct window_key)::int as n from app.rate_limit_slots where user_id = ${busy}::uuid`)
        .toEqual([{ n: 2 }]);
      // under a limit of 10: three more, then refused; the old minute's full window is another key
      expect([await take(busy), await take(busy), await take(busy)]).toEqual([8, 9, 10]);
      await expect(take(busy)).rejects.toMatchObject({ code: 'PX429' });
      expect(await take(calm)).toBe(1);
    } finally {
      await other.end();
      await sql.end();
    }
  }, 60_000);
});
