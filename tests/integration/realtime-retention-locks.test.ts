// realtime.messages maintenance (sql/realtime/retention.sql) waits for each lock at most its
// lock_timeout (200 ms) and, not had, leaves the work to the next run (realtime_partitions_deferred).
// Its first step, deleting rows past the retention from the default partition, did not: a lock held
// on realtime.messages_default (another cleanup's attach, run by hand beside the worker's, holds
// ACCESS EXCLUSIVE there to its commit) failed the whole of internal.cleanup with `canceling
// statement due to lock timeout`, and every other retention with it, for as long as it was held.
import { afterAll, describe, expect, it } from 'vitest';
import { backendKillFixture } from '../helpers/db.ts';

describe('realtime.messages maintenance under a lock on the default partition', () => {
  const fx = backendKillFixture('realtime-retention-locks');
  const topic = `potentia-test-retention-locks-${process.pid}`;
  afterAll(async () => {
    await fx.admin`delete from realtime.messages where topic = ${topic}`;
  });

  it('defers its realtime step to the next run instead of failing cleanup, and the next run does it', async () => {
    // a row past any retention in the default partition (no partition is that old)
    await fx.admin`insert into realtime.messages (topic, extension, payload, event, inserted_at)
      values (${topic}, 'broadcast', '{}', 'old', localtimestamp - interval '400 days')`;
    const old = async () => (await fx.admin`select count(*)::int as n from realtime.messages_default where topic = ${topic}`)[0]!.n as number;

    const held = await fx.admin.begin(async (tx) => {
      await tx`lock table realtime.messages_default in share mode`;
      const [row] = await fx.db.sql`select internal.cleanup() as r`;
      return row!.r as Record<string, unknown>;
    });
    expect(held.realtime_messages_maintained).toBe(true);
    expect(held.realtime_partitions_deferred).toBeGreaterThanOrEqual(1);
    expect(held).toHaveProperty('presence_expired'); // the rest of cleanup ran and committed
    expect(await old()).toBe(1);

    const [{ r: next }] = await fx.db.sql`select internal.cleanup() as r` as unknown as [{ r: Record<string, number> }];
    expect(next.realtime_messages_deleted).toBeGreaterThanOrEqual(1);
    expect(await old()).toBe(0);
  });

  it('defers under ACCESS EXCLUSIVE too (what an attach holds), measuring the default partition only with its lock had', async () => {
    // the one-run path reads the default partition's size (pg_relation_size: ACCESS SHARE), which an
    // ACCESS EXCLUSIVE held elsewhere made wait past lock_timeout: cleanup failed as a whole again
    const held = await fx.admin.begin(async (tx) => {
      await tx`lock table realtime.messages_default in access exclusive mode`;
      const [row] = await fx.db.sql`select internal.cleanup() as r`;
      return row!.r as Record<string, unknown>;
    });
    expect(held.realtime_messages_maintained).toBe(true);
    expect(held.realtime_partitions_deferred).toBeGreaterThanOrEqual(1);
    expect(held).toHaveProperty('presence_expired');
  });
});
