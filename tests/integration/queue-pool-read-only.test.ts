// Graphile Worker's pool (src/worker/queue-pool.ts, node-postgres) after a read-only spell: a
// session opened while the database was read-only (a failover's demoted primary, a standby,
// default_transaction_read_only on the database) keeps that setting for its life, and pg's pool
// keeps a client as long as it is used (Graphile polls every 2 s): every job fetch and completion
// on it was refused 25006 long after the database was writable again. Made here per session
// (`set default_transaction_read_only`, what such a session holds), on a pool of one, so the client
// taken again is the same one unless it was replaced.
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { connectionUrls } from '../../src/db/pooling.ts';
import { QueuePool } from '../../src/worker/queue-pool.ts';

const pool = new QueuePool(connectionUrls({ databaseUrl: testDatabaseUrl() }), { max: 1, applicationName: 'potentia-queue-read-only-test' });
afterAll(() => pool.end());

describe("Graphile Worker's pool after a read-only spell", () => {
  it('replaces a client that answered 25006: the next one it hands out writes', async () => {
    const first = await pool.connect();
    const pid = (await first.query('select pg_backend_pid() as p')).rows[0].p;
    await first.query('set default_transaction_read_only = on');
    await expect(first.query('create temp table queue_pool_read_only (x int)')).rejects.toMatchObject({ code: '25006' });
    first.release();

    const next = await pool.connect();
    try {
      expect((await next.query('select pg_backend_pid() as p')).rows[0].p).not.toBe(pid);
      await next.query('create temp table queue_pool_read_only (x int)');
    } finally {
      next.release();
    }
  });

  it('keeps a client whose writes succeed (one that failed otherwise is not replaced for it)', async () => {
    const first = await pool.connect();
    const pid = (await first.query('select pg_backend_pid() as p')).rows[0].p;
    await expect(first.query('select * from no_such_table')).rejects.toMatchObject({ code: '42P01' });
    first.release();
    const next = await pool.connect();
    expect((await next.query('select pg_backend_pid() as p')).rows[0].p).toBe(pid);
    next.release();
  });
});
