// The upgrade of a database whose app.settings already holds what its readers cannot use, written
// before the trigger of sql/core/settings_rules.sql was there (a retention of '"7 days"' or 3000000
// days, a limit of null, a key deleted): the migration that checks what is held
// (*_settings_held_checked.sql) is refused, naming each key, what it takes, what it holds and the
// statement that fixes it, and keeps what was applied before it; once those statements are run the
// same migrations pass, and internal.cleanup runs. Before, every migration passed and cleanup
// failed every minute afterwards ('"7 days"': invalid input syntax for type integer).
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
// the first migration with the trigger: the database below was made by the ones before it
const TRIGGER = files.find((f) => f.endsWith('_settings_values_checked.sql'))!;
const CHECKED = files.find((f) => f.endsWith('_settings_held_checked.sql'))!;
const scratch = migrationScratch('settings_held');
const { name, urlOf } = scratch;

describe('upgrade: app.settings values held before the rules', () => {
  const root = checkoutCopy('settings-held', { migrationsBefore: TRIGGER });
  afterAll(async () => {
    await scratch.close();
    rmSync(root, { recursive: true, force: true });
  });

  it('refuses the migration naming each bad key and its fix; the fixes let it pass and cleanup run', async () => {
    await scratch.create();
    const sql = postgres(urlOf(name), { max: 1, onnotice: () => {} });
    try {
      await pushLikeSupabase(sql, root, {});
      // what the old schema let an operator write
      await sql`update app.settings set value = '"7 days"' where key = 'realtime_messages_retention_days'`;
      await sql`update app.settings set value = '3000000' where key = 'oplog_retention_days'`;
      await sql`update app.settings set value = 'null' where key = 'max_batch_ops'`;
      await sql`delete from app.settings where key = 'audit_retention_days'`;

      const apply = (f: string) => sql.begin((tx) => tx.unsafe(readFileSync(join(migrationsDir, f), 'utf8')));
      const rest = files.filter((f) => f >= TRIGGER);
      let refused: (Error & { code?: string }) | undefined;
      let at = 0;
      for (; at < rest.length; at++) {
        try {
          await apply(rest[at]!);
        } catch (err) {
          refused = err as Error & { code?: string };
          break;
        }
      }
      expect(rest[at], refused?.message).toBe(CHECKED);
      expect(refused!.code).toBe('23514');
      const fixes = [
        "insert into app.settings (key, value, description) values ('audit_retention_days', '365', 'a whole number of days from 1 to 36500');",
        "update app.settings set value = '100' where key = 'max_batch_ops';",
        "update app.settings set value = '36500' where key = 'oplog_retention_days';",
        "update app.settings set value = '3' where key = 'realtime_messages_retention_days';",
      ];
      expect(refused!.message).toBe('app.settings holds 4 value(s) the SQL cannot use (internal.cleanup fails every run, or a limit reads null):\n' +
        `  audit_retention_days: takes a whole number of days from 1 to 36500; holds nothing (no row); fix: ${fixes[0]}\n` +
        `  max_batch_ops: takes a whole number from 0 to 2147483647; holds null; fix: ${fixes[1]}\n` +
        `  oplog_retention_days: takes a whole number of days from 1 to 36500; holds 3000000; fix: ${fixes[2]}\n` +
        `  realtime_messages_retention_days: takes a whole number of days from 1 to 36500; holds "7 days"; fix: ${fixes[3]}\n` +
        'run the statement(s) above (or set another value in the range), then migrate again');
      // the refused step left nothing, the ones before it are kept: cleanup still fails (the 3000000 days' cutoff)
      await expect(sql`select internal.cleanup()`).rejects.toThrow(/timestamp out of range|invalid input syntax for type integer/);

      // the operator runs what it said, and migrates again
      for (const fix of fixes) await sql.unsafe(fix);
      for (; at < rest.length; at++) await apply(rest[at]!);
      expect(Object.fromEntries((await sql`select key, value from app.settings where key = any(${
        ['audit_retention_days', 'max_batch_ops', 'oplog_retention_days', 'realtime_messages_retention_days']})`).map((r) => [r.key, r.value])))
        .toEqual({ audit_retention_days: 365, max_batch_ops: 100, oplog_retention_days: 36500, realtime_messages_retention_days: 3 });
      const [cleaned] = await sql`select internal.cleanup() as result`;
      expect(cleaned!.result).toHaveProperty('realtime_messages_deleted');
    } finally {
      await sql.end();
    }
  }, 60_000);
});
