// postgres.js answer_timeout (patches/postgres+3.4.9.patch, ANSWER_TIMEOUT_SECONDS on the server's
// pools) bounds how long a query waits for the server. It also counted the time the client itself
// took, while the server owed nothing: a cursor whose callback took longer than the bound (the
// server waits for the next Execute), COPY FROM STDIN written over longer than it (the server
// answers only after CopyDone), a COPY TO STDOUT reader slower than the rows (the socket paused).
// Each was destroyed with ANSWER_TIMEOUT, a COPY FROM STDIN with an 'error' event on its stream.
// Now the bound runs only while it is the server's turn. Real Postgres, the patched driver, a
// bound of 1 s and client turns of 1.5 to 2.5 s.
import postgres from 'postgres';
import { afterAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { sleep } from '../helpers/wait.ts';

const pools: postgres.Sql[] = [];
const pool = () => {
  const sql = postgres(testDatabaseUrl(), { max: 1, answer_timeout: 1, onnotice: () => {} });
  pools.push(sql);
  return sql;
};
const table = `answer_turn_${process.pid}`;
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });

afterAll(async () => {
  await admin.unsafe(`drop table if exists ${table}`);
  await Promise.all(pools.map((p) => p.end({ timeout: 5 })));
  await admin.end();
});

describe('answer_timeout counts only the server’s turn', () => {
  it('a cursor whose callback takes longer than the bound runs to its end', { timeout: 30_000 }, async () => {
    const sql = pool();
    const seen: number[] = [];
    await sql`select g from generate_series(1, 6) g`.cursor(2, async (rows) => {
      seen.push(...rows.map((r) => r.g as number));
      await sleep(1500);
    });
    expect(seen).toEqual([1, 2, 3, 4, 5, 6]);
    expect((await sql`select 1 as one`)[0]!.one).toBe(1); // the same connection, still open
  });

  it('COPY FROM STDIN written over longer than the bound is stored whole', { timeout: 30_000 }, async () => {
    await admin.unsafe(`create table ${table} (x int)`);
    const sql = pool();
    const stream = await sql.unsafe(`copy ${table} from stdin`).writable();
    await new Promise<void>((resolve, reject) => {
      stream.on('error', reject);
      stream.on('finish', resolve);
      void (async () => {
        for (let i = 1; i <= 3; i++) {
          stream.write(`${i}\n`);
          await sleep(800);
        }
        stream.end();
      })();
    });
    expect((await admin.unsafe(`select array_agg(x order by x) as xs from ${table}`))[0]!.xs).toEqual([1, 2, 3]);
  });

  it('COPY TO STDOUT read slower than the server sends is read whole', { timeout: 30_000 }, async () => {
    const sql = pool();
    const stream = await sql`copy (select g, repeat('x', 1000) from generate_series(1, 20000) g) to stdout`.readable();
    let bytes = 0;
    let first = true;
    for await (const chunk of stream) {
      bytes += (chunk as Buffer).length;
      if (first) await sleep(2500); // the socket pauses meanwhile: the server is not silent, the reader is slow
      first = false;
    }
    expect(bytes).toBeGreaterThan(20000 * 1000);
  });

  it('a server that owes an answer and sends nothing still ends the wait', { timeout: 30_000 }, async () => {
    const sql = pool();
    await expect(sql`select pg_sleep(3)`).rejects.toMatchObject({ code: 'ANSWER_TIMEOUT' });
  });
});

describe('answer_timeout still bounds a COPY FROM STDIN whose path stops carrying packets', () => {
  it('fails with ANSWER_TIMEOUT once the data written stops leaving', { timeout: 60_000 }, async () => {
    const { startTcpProxy, databaseUrlThrough } = await import('../helpers/tcp-proxy.ts');
    const url = new URL(testDatabaseUrl());
    const proxy = await startTcpProxy(Number(url.port || 5432));
    const sql = postgres(databaseUrlThrough(proxy, url), { max: 1, answer_timeout: 1, onnotice: () => {} });
    try {
      await admin.unsafe(`create table if not exists ${table}_stall (t text)`);
      const stream = await sql.unsafe(`copy ${table}_stall from stdin`).writable();
      const failed = new Promise<{ code?: string }>((resolve) => stream.on('error', resolve));
      stream.write('before the stall\n');
      await sleep(200);
      proxy.cut({ existing: 'stall', incoming: 'refuse' });
      const started = Date.now();
      const row = `${'x'.repeat(64 * 1024)}\n`;
      // more than the sockets' buffers hold: writes stop completing
      void (async () => {
        for (let i = 0; i < 2000 && !stream.destroyed; i++) {
          if (!stream.write(row)) await Promise.race([new Promise((r) => stream.once('drain', r)), sleep(500)]);
        }
      })();
      const err = await Promise.race([failed, sleep(20_000).then(() => ({ code: 'still waiting after 20 s' }))]);
      expect(err.code).toBe('ANSWER_TIMEOUT');
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      proxy.restore();
      await sql.end({ timeout: 1 }).catch(() => {});
      await proxy.close();
      await admin.unsafe(`drop table if exists ${table}_stall`);
    }
  });
});
