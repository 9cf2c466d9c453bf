// Attacks on the per-hit rate-limit shards (internal.hit_sharded_limit, sql/rpc/endpoint_limits.sql)
// and on canvas lanes that carry several mutations of one user per transaction
// (src/db/canvas-lanes.ts), against real Postgres, the real RPC, several processes' lanes and
// killed backends. What must hold (docs/limits.md): each uncommitted hit holds a shard of its own,
// taken in increasing order, so transactions that announced their hits never deadlock; a hit
// counts the others in flight as if they had committed, so at most the limit of a user's
// mutations apply per minute, exactly; every applied op counts one hit, once.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { ReservedSql, Sql } from 'postgres';
import { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement } from '../../src/db/request.ts';
import { sendMutation } from '../../src/http/rpc.ts';
import { backendKillFixture } from '../helpers/db.ts';
import { addCanvas, addMember, claimsFor, createCanvas } from '../helpers/fixtures.ts';
import { prng } from '../../src/prng.ts';

type Answer = { status: string; canvas_seq: number | null; error?: { code: string; message: string } };

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const create = (text: string) => ({ type: 'text', content: { text } });
const opsOf = (n: number, tag: string) => Array.from({ length: n }, (_, i) =>
  ({ action: 'create', client_op_id: `${tag}-${i}-${randomUUID()}`, patch: create(`${tag}${i}`) }));
/** One mutation as H1 sends it (no endpoint limit: a caller's several share a lane's transaction). */
const MUTATE = `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, $3::jsonb) as r`;

/** 'done', 'failed' or 'waiting' (not settled after `ms`). */
const within = (p: Promise<unknown>, ms: number) =>
  Promise.race([p.then(() => 'done', () => 'failed'), sleep(ms).then(() => 'waiting')]);

// The hits counted by hand (internal.hit_sharded_limit) use a window of an hour, so that one test
// never straddles two windows.
const HOUR = 3600;
/** A bucket's shard rows (internal.window_limit_shards). */
const SHARDS = 16;
const positions = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('rate-limit shards under attack', () => {
  const fx = backendKillFixture('rl-shards');

  /** A transaction on a connection of its own. */
  const open = async (sql: Sql): Promise<ReservedSql> => {
    const c = await sql.reserve();
    await c`begin`;
    return c;
  };
  const announce = (c: ReservedSql, user: string, more: number) => c`select internal.expect_several_hits(${user}::uuid, ${more})`;
  const hit = (c: ReservedSql, user: string, limit = 100_000, window = HOUR) =>
    c`select internal.hit_sharded_limit(${user}::uuid, 'mutations', ${limit}, ${window})`;
  /** The positions (1-16) of the shards the transaction holds. */
  const held = async (c: ReservedSql, user: string, window = HOUR) => (await c`
    select coalesce(array_agg(array_position(internal.window_limit_shards('mutations'), bucket) order by array_position(internal.window_limit_shards('mutations'), bucket)), '{}') as p
    from app.rate_limits where user_id = ${user}::uuid and window_start = internal.rate_window_start(${window})
      and holder = pg_current_xact_id()`)[0]!.p as number[];
  /** The user's committed hits in the window: in all, and shard by shard (position → hits; the overflow row `mutations+` is in the total only). */
  const committed = async (user: string, window = HOUR) => (await fx.admin`
    select coalesce(sum(hits), 0)::int as total,
           coalesce(array_agg(hits order by array_position(internal.window_limit_shards('mutations'), bucket))
                      filter (where bucket <> 'mutations+'), '{}') as shards
    from app.rate_limits where user_id = ${user}::uuid and bucket like 'mutations%' and window_start = internal.rate_window_start(${window})`)[0] as
    { total: number; shards: number[] };
  /** The user's 16 shard rows of the window, committed with no hits (as the window's first hit makes them). */
  const shardRows = (user: string, window = HOUR) => fx.admin`insert into app.rate_limits (user_id, bucket, window_start, hits)
    select ${user}::uuid, b, internal.rate_window_start(${window}), 0 from unnest(internal.window_limit_shards('mutations')) b`;
  /** Holds the shards at `positions` (1-16) as uncommitted hits of another transaction would. */
  const holdShards = async (sql: Sql, user: string, positions: number[], window = HOUR) => {
    const c = await open(sql);
    await c`update app.rate_limits set hits = hits + 1, holder = pg_current_xact_id()
      where user_id = ${user}::uuid and window_start = internal.rate_window_start(${window})
        and array_position(internal.window_limit_shards('mutations'), bucket) = any(${positions}::int[])`;
    return c;
  };
  const end = async (c: ReservedSql, how: 'commit' | 'rollback' = 'commit') => {
    await (how === 'commit' ? c`commit` : c`rollback`);
    c.release();
  };

  const withLimit = async <T>(limit: number, run: () => Promise<T>): Promise<T> => {
    const [{ saved }] = await fx.admin`select value as saved from app.settings where key = 'mutations_per_minute'` as unknown as [{ saved: string }];
    await fx.admin`update app.settings set value = ${String(limit)} where key = 'mutations_per_minute'`;
    try {
      return await run();
    } finally {
      await fx.admin`update app.settings set value = ${saved} where key = 'mutations_per_minute'`;
    }
  };

  const appliedOps = async (user: string) => (await fx.admin`select client_op_id from app.block_operations
    where actor_id = ${user}::uuid and status = 'success'`).map((r) => r.client_op_id as string);

  it('two transactions announcing 20 hits each, hit by hit in turn: the first takes shards 1-16 in order and counts on, the second waits for it; no deadlock', async () => {
    const user = randomUUID();
    await shardRows(user);
    const p = fx.pool(2);
    // (with 8 shards, a transaction announcing more than 8 hits once took its first shard anywhere and the rest
    // upward from there: a took 1, 3, 5, 7, b 2, 4, 6, 8; then a waited for 8 and b for 1, 40P01)
    const [a, b] = [await open(p.sql), await open(p.sql)];
    await announce(a, user, 19);
    await announce(b, user, 19);
    // each one's hits in order; the two in turn, as far as neither waits
    let ca: Promise<unknown> = Promise.resolve();
    let cb: Promise<unknown> = Promise.resolve();
    const aHeld: number[][] = [];
    for (let i = 0; i < 20; i++) {
      ca = ca.then(() => hit(a, user)).then(async () => { if (i < SHARDS) aHeld.push(await held(a, user)); });
      await within(ca, 30);
      cb = cb.then(() => hit(b, user));
      expect(await within(cb, 30)).toBe('waiting'); // b's first hit waits for shard 1, a's
    }
    const outcomes = await Promise.allSettled([ca.then(() => end(a)), cb.then(async () => {
      const mine = await held(b, user);
      await end(b);
      return mine;
    })]);
    expect(outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { code?: string }).code : 'ok'))).toEqual(['ok', 'ok']);
    // a took its shards from the lowest up, one a hit, then counted its last 4 in the overflow row
    expect(aHeld).toEqual(positions(1, SHARDS).map((n) => positions(1, n)));
    expect((outcomes[1] as PromiseFulfilledResult<number[]>).value).toEqual(positions(1, SHARDS));
    expect(await committed(user)).toEqual({ total: 40, shards: positions(1, SHARDS).map(() => 2) });
    const [{ overflow }] = await fx.admin`select hits as overflow from app.rate_limits
      where user_id = ${user}::uuid and bucket = 'mutations+' and window_start = internal.rate_window_start(${HOUR})` as unknown as [{ overflow: number }];
    expect(overflow).toBe(4 + 4);
  });

  it('random transactions announcing 1 to 12 hits, 6 at a time, pausing between hits: none deadlocks, and the count is exact', async () => {
    const user = randomUUID();
    await shardRows(user);
    const p = fx.pool(6);
    const random = prng(20261201);
    const sizes = Array.from({ length: 30 }, () => 1 + Math.floor(random() * 12));
    const pauses = sizes.map((n) => Array.from({ length: n }, () => Math.floor(random() * 3)));
    const failures: string[] = [];
    let next = 0;
    const worker = async () => {
      while (next < sizes.length) {
        const k = next++;
        const c = await open(p.sql);
        try {
          if (sizes[k]! > 1) await announce(c, user, sizes[k]! - 1);
          for (const pause of pauses[k]!) {
            await hit(c, user);
            await sleep(pause);
          }
          await end(c);
        } catch (err) {
          failures.push(`${sizes[k]} hits: ${(err as { code?: string }).code}`);
          await end(c, 'rollback');
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    expect(failures).toEqual([]);
    expect((await committed(user)).total).toBe(sizes.reduce((a, b) => a + b, 0));
  });

  it('under a limit of 40, transactions of 1 to 12 hits, 8 at a time, each committing only when all its hits pass: exactly 40 hits commit', async () => {
    const user = randomUUID();
    await shardRows(user);
    const limit = 40;
    const p = fx.pool(9);
    const random = prng(42);
    const sizes = Array.from({ length: 40 }, () => [1, 1, 1, 2, 3, 5, 8, 12][Math.floor(random() * 8)]!);
    const odd: unknown[] = [];
    let next = 0;
    const worker = async () => {
      while (next < sizes.length) {
        const n = sizes[next++]!;
        const c = await open(p.sql);
        try {
          if (n > 1) await announce(c, user, n - 1);
          for (let i = 0; i < n; i++) {
            await hit(c, user, limit);
            await sleep(1);
          }
          await end(c);
        } catch (err) {
          if ((err as { code?: string }).code !== 'PX429') odd.push(err);
          await end(c, 'rollback');
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    // then single hits one at a time until one is refused: the window is full by then
    const c = await open(p.sql);
    for (let i = 0; i < 50; i++) {
      const refused = await c`savepoint one`.then(() => hit(c, user, limit)).then(() => false, (err) => (err as { code?: string }).code === 'PX429');
      if (refused) break;
      await c`release savepoint one`;
      await c`commit`;
      await c`begin`;
    }
    await end(c, 'rollback');
    expect(odd).toEqual([]);
    // never more than the limit, and the single hits at the end fill what the refusals of hits in
    // flight (counted as committed, then rolled back) left
    expect((await committed(user)).total).toBe(limit);
  });

  it('a hit in flight counts as committed: under a limit of 3, one hit committed and one in flight, the next is refused; when the one in flight rolls back, it passes', async () => {
    const user = randomUUID();
    const p = fx.pool(3);
    const first = await open(p.sql);
    await hit(first, user, 3);
    await end(first);
    const inFlight = await open(p.sql);
    await hit(inFlight, user, 3);
    const t = await open(p.sql);
    await t`savepoint s`;
    await hit(t, user, 3);  // 1 committed + 1 in flight + its own = 3: within the limit
    await t`release savepoint s`;
    const u = await open(p.sql);
    // 1 committed + 2 in flight + its own = 4: refused, though only one hit has committed
    await expect(hit(u, user, 3)).rejects.toMatchObject({ code: 'PX429' });
    await end(u, 'rollback');
    await end(inFlight, 'rollback');
    const again = await open(p.sql);
    await hit(again, user, 3);  // 1 committed + t's in flight + its own = 3
    await end(again);
    await end(t);
    expect((await committed(user)).total).toBe(3);
  });

  it('hits past the 16th from other savepoints than the first (a single, then a batch of 16, in one lane transaction): once committed, the total others read is the committed count', async () => {
    const user = randomUUID();
    const p = fx.pool(2);
    const t = await open(p.sql);
    await t`savepoint a`;
    await hit(t, user);
    await t`release savepoint a`;
    await t`savepoint b`;
    for (let i = 0; i < 16; i++) await hit(t, user);
    await t`release savepoint b`;
    await end(t);
    // a shard row updated again from savepoint b would keep savepoint a's lock as its xmax, read
    // as another transaction's hit: the 17th went to the overflow row instead
    const [{ total }] = await fx.admin`select internal.window_limit_hits(${user}::uuid, 'mutations', ${HOUR})::int as total` as unknown as [{ total: number }];
    expect(total).toBe(17);
    expect((await committed(user)).total).toBe(17);
    // and under a limit of 18 exactly one more passes
    const u = await open(p.sql);
    await hit(u, user, 18);
    await end(u);
    const v = await open(p.sql);
    await expect(hit(v, user, 18)).rejects.toMatchObject({ code: 'PX429' });
    await end(v, 'rollback');
  });

  it('read outside any transaction with an xid, the total still counts every hit in flight (shard rows no hit has held yet included)', async () => {
    const user = randomUUID();
    await shardRows(user);
    const p = fx.pool(1);
    // three hits in flight on rows whose committed versions have no holder
    const others = await holdShards(p.sql, user, [1, 2, 3]);
    // fx.admin reads in autocommit: no xid of its own, so no row is its own either
    const [{ total }] = await fx.admin`select internal.window_limit_hits(${user}::uuid, 'mutations', ${HOUR})::int as total` as unknown as [{ total: number }];
    expect(total).toBe(3);
    await end(others, 'rollback');
  });

  it('a first hit that lands high: the transaction\'s later hits go up (14, 15, 16), waiting for the shard above rather than taking one below', async () => {
    const user = randomUUID();
    await shardRows(user);
    const p = fx.pool(3);
    // shards 1-13 held by others, and 15
    const others = await holdShards(p.sql, user, [...positions(1, 13), 15]);
    const t = await open(p.sql);
    await announce(t, user, 2);
    await hit(t, user);
    expect(await held(t, user)).toEqual([14]);
    // its second hit may only take 15 (16 is room for its third): it waits for 15, though 16 and none below is free
    const second = hit(t, user);
    expect(await within(second, 150)).toBe('waiting');
    await end(others, 'rollback');
    await second;
    await hit(t, user);
    expect(await held(t, user)).toEqual([14, 15, 16]);
    await end(t);
    expect(await committed(user)).toEqual({ total: 3, shards: [...positions(1, 13).map(() => 0), 1, 1, 1] });
  });

  it('a savepoint rolled back gives its shards back: another transaction takes the freed shard 2 at once, and the next hit goes to 3', async () => {
    const user = randomUUID();
    await shardRows(user);
    const p = fx.pool(2);
    const t = await open(p.sql);
    await announce(t, user, 3);
    await hit(t, user);
    await t`savepoint s`;
    await hit(t, user);
    await hit(t, user);
    expect(await held(t, user)).toEqual([1, 2, 3]);
    await t`rollback to savepoint s`;
    expect(await held(t, user)).toEqual([1]);
    const u = await open(p.sql);
    const other = hit(u, user);
    expect(await within(other, 300)).toBe('done');
    expect(await held(u, user)).toEqual([2]);
    await hit(t, user);
    expect(await held(t, user)).toEqual([1, 3]);
    await end(u);
    await end(t);
    expect(await committed(user)).toEqual({ total: 3, shards: [1, 1, 1, ...positions(4, SHARDS).map(() => 0)] });
  });

  it('potentia.several_hits: a user\'s entries are summed, another user\'s ignored (2 + 3 more: the first hit must stay within shards 1-11)', async () => {
    const [user, other] = [randomUUID(), randomUUID()];
    await shardRows(user);
    const p = fx.pool(3);
    const others = await holdShards(p.sql, user, positions(1, 11));
    const [t, u] = [await open(p.sql), await open(p.sql)];
    await t`select set_config('potentia.several_hits', ${`${user}:2 ${other}:5`}, true)`;
    await announce(t, user, 3);
    await u`select set_config('potentia.several_hits', ${`${user}:2 ${other}:5`}, true)`;
    // t announced 5 more: it needs 6 shards, so its first may be no higher than 11 (all held: it waits)
    const first = hit(t, user);
    expect(await within(first, 150)).toBe('waiting');
    // u announced 2 more: its first may go up to 14, and takes 12
    await hit(u, user);
    expect(await held(u, user)).toEqual([12]);
    await end(u);
    await end(others, 'rollback');
    await first;
    expect((await held(t, user))[0]).toBeLessThanOrEqual(11);
    await end(t);
  });

  it('a transaction begun in one window keeps counting there after the window changes; the next window\'s hits do not wait for it', async () => {
    const user = randomUUID();
    const p = fx.pool(2);
    // windows of one second here; start early in one
    while (Date.now() % 1000 > 300) await sleep(20);
    const a = await open(p.sql);
    const [{ w }] = await a`select internal.rate_window_start(1) as w` as unknown as [{ w: Date }];
    await announce(a, user, 8);
    for (let i = 0; i < 8; i++) await hit(a, user, 1000, 1);
    expect(await held(a, user, 1)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await sleep(1000 - (Date.now() % 1000) + 50);
    const b = await open(p.sql);
    expect(await within(hit(b, user, 1000, 1), 300)).toBe('done');
    expect(await held(b, user, 1)).toEqual([1]);
    await hit(a, user, 1000, 1);  // a's 9th: its own window still, exactly counted
    await end(b);
    await end(a);
    const windows = await fx.admin`select window_start, sum(hits)::int as hits from app.rate_limits where user_id = ${user}::uuid
      group by 1 order by 1` as unknown as { window_start: Date; hits: number }[];
    expect(windows.map((r) => r.hits)).toEqual([9, 1]);
    expect(windows[0]!.window_start.getTime()).toBe(w.getTime());
  });

  // ---- the source applied again, as every later migration carrying it does ----

  const SOURCE = readFileSync(new URL('../../sql/rpc/endpoint_limits.sql', import.meta.url), 'utf8');
  /** Applies sql/rpc/endpoint_limits.sql in transaction `c` (as a migration does), after `before` in it. */
  const applySource = (c: ReservedSql, before = 'select 1') =>
    c.unsafe(`set local check_function_bodies = off; ${before}; ${SOURCE}`);
  /** The 8-shard list of an earlier version, installed in transaction `c` only. */
  const EIGHT_SHARDS = `create or replace function internal.window_limit_shards(p_bucket text) returns text[]
    language sql immutable as $$ select array[p_bucket, p_bucket || '#1', p_bucket || '#2', p_bucket || '#3',
                                             p_bucket || '#4', p_bucket || '#5', p_bucket || '#6', p_bucket || '#7'] $$`;

  it('applied again with the same shard list, the source holds no hit back: it completes while a hit is in flight', async () => {
    const user = randomUUID();
    const p = fx.pool(2);
    const inFlight = await open(p.sql);
    await hit(inFlight, user);
    const m = await open(p.sql);
    await m`set local lock_timeout = '5s'`;
    // with the table lock it waited here for the hit in flight (and new hits behind it) until commit
    expect(await within(applySource(m), 3000)).toBe('done');
    await end(m, 'rollback');
    await end(inFlight, 'rollback');
  });

  it('applied over another shard list, the source waits for the hits in flight and gives every open window all 16 rows', async () => {
    const [user, busy] = [randomUUID(), randomUUID()];
    const p = fx.pool(2);
    const inFlight = await open(p.sql);
    await hit(inFlight, busy);
    const m = await open(p.sql);
    await m`set local lock_timeout = '300ms'`;
    await expect(applySource(m, EIGHT_SHARDS)).rejects.toMatchObject({ code: '55P03' });  // lock_timeout: it waited
    await end(m, 'rollback');
    await end(inFlight, 'rollback');
    // an open window made by the 8-shard version: its 8 rows only
    const n = await open(p.sql);
    await n`insert into app.rate_limits (user_id, bucket, window_start, hits)
      select ${user}::uuid, b, internal.rate_window_start(60), 0
      from unnest(array['mutations', 'mutations#1', 'mutations#2', 'mutations#3', 'mutations#4', 'mutations#5', 'mutations#6', 'mutations#7']) b`;
    await applySource(n, EIGHT_SHARDS);
    const [{ rows }] = await n`select count(*)::int as rows from app.rate_limits
      where user_id = ${user}::uuid and window_start = internal.rate_window_start(60)` as unknown as [{ rows: number }];
    expect(rows).toBe(SHARDS);
    await end(n, 'rollback');
  });

  // ---- through canvas lanes, the RPC, several processes ----

  /** Not in the last seconds of a minute: what follows counts in one window. */
  const earlyInMinute = async (seconds: number) => {
    const second = new Date().getUTCSeconds();
    if (second > 60 - seconds) await sleep((61 - second) * 1000);
  };
  /** A single mutation as H1 sends it, on `lanes`. */
  const single = (lanes: CanvasLanes, user: string, canvasId: string, op: string, patch: unknown = create(op)) =>
    requestStatement<{ r: Answer }>(lanes, canvasId, { claims: claimsFor(user) }, MUTATE, [canvasId, op, patch]).then(([row]) => row!.r);
  /** A batch as HTTP sends it (its H2 endpoint hit first, development profile so that H2's own limit stays out of the way). */
  const batch = (lanes: CanvasLanes, user: string, canvasId: string, ops: unknown[]) =>
    sendMutation(lanes, { claims: claimsFor(user) }, 'upsert_blocks_atomic', [canvasId, ops], { endpoint: 'H2', relaxed: true })
      .then((row) => JSON.parse(row!.result as string) as Answer & { results?: Answer[] });
  /** Per minute: the user's committed mutation hits, and its applied ops (the log's success rows, by their transaction's start). */
  const minutes = async (user: string) => fx.admin`
    with h as (select window_start, sum(hits)::int as hits from app.rate_limits where user_id = ${user}::uuid and bucket like 'mutations%' group by 1),
         o as (select to_timestamp(floor(extract(epoch from created_at) / 60) * 60) as window_start, count(*)::int as ops
               from app.block_operations where actor_id = ${user}::uuid and status = 'success' group by 1)
    select window_start, coalesce(h.hits, 0) as hits, coalesce(o.ops, 0) as ops from h full join o using (window_start)
    order by window_start` as unknown as Promise<{ window_start: Date; hits: number; ops: number }[]>;

  it('one user\'s batches of 12 on two canvases through two processes\' lanes, with its singles grouped on a third: all apply, hits = ops', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const user = c.users.owner!;
    const canvases = [c.canvasId, await addCanvas(fx.db.sql, user, c.workspaceId), await addCanvas(fx.db.sql, user, c.workspaceId)];
    const [one, two] = [fx.pool(3), fx.pool(3)];
    const [l1, l2] = [new CanvasLanes(one.sql), new CanvasLanes(two.sql)];
    // (the two batches of 12 used to deadlock on the user's shards: one answered failed, 'deadlock detected')
    await withLimit(100_000, async () => {
      for (let round = 0; round < 3; round++) {
        const answers = await Promise.all([
          batch(l1, user, canvases[0]!, opsOf(12, `b1-${round}`)),
          batch(l2, user, canvases[1]!, opsOf(12, `b2-${round}`)),
          batch(l1, user, canvases[1]!, opsOf(3, `b3-${round}`)),
          ...Array.from({ length: 6 }, (_, i) => single(i % 2 ? l1 : l2, user, canvases[2]!, `s-${round}-${i}-${randomUUID()}`)),
        ]);
        expect(answers.map((a) => a.error?.message ?? a.status)).toEqual(answers.map(() => 'success'));
      }
    });
    const total = (await minutes(user)).reduce((a, m) => ({ hits: a.hits + m.hits, ops: a.ops + m.ops }), { hits: 0, ops: 0 });
    expect(total).toEqual({ hits: 3 * (12 + 12 + 3 + 6), ops: 3 * (12 + 12 + 3 + 6) });
  });

  it('one user on 6 canvases through 3 processes\' lanes, singles several to a transaction, batches of 3 and 12, under a limit of 30: per minute at most 30 applied, every refusal rate_limited', async () => {
    const limit = 30;
    const c = await createCanvas(fx.db.sql, []);
    const user = c.users.owner!;
    const canvases = [c.canvasId];
    for (let i = 0; i < 5; i++) canvases.push(await addCanvas(fx.db.sql, user, c.workspaceId));
    const processes = [fx.pool(3), fx.pool(3), fx.pool(3)].map((p) => new CanvasLanes(p.sql));
    await earlyInMinute(8);
    await withLimit(limit, async () => {
      const sent: Promise<Answer & { results?: Answer[] }>[] = [];
      processes.forEach((lanes, pi) => canvases.forEach((canvasId, ci) => {
        for (let i = 0; i < 6; i++) sent.push(single(lanes, user, canvasId, `bound-${pi}-${ci}-${i}-${randomUUID()}`));
        if (pi === ci % 3) sent.push(batch(lanes, user, canvasId, opsOf(ci < 2 ? 12 : 3, `bound-b-${ci}`)));
      }));
      const answers = await Promise.all(sent);
      const refusals = answers.filter((a) => a.status !== 'success').map((a) => a.error?.code);
      expect(refusals).toEqual(refusals.map(() => 'rate_limited'));
      // then one at a time until refused: the window is full
      let last: Answer | undefined;
      for (let i = 0; i < limit + 8 && last?.status !== 'failed'; i++) last = await single(processes[0]!, user, canvases[0]!, `tail-${i}-${randomUUID()}`);
      expect(last?.error?.code).toBe('rate_limited');
      const perMinute = await minutes(user);
      for (const m of perMinute) {
        expect(m.hits).toBe(m.ops);  // every applied op counted once, nothing else (only rate_limited refusals)
        expect(m.ops).toBeLessThanOrEqual(limit);
      }
      expect(perMinute.at(-1)!.ops).toBeGreaterThanOrEqual(limit);
    });
    for (const lanes of processes) expect(lanes.size).toBe(0);
  });

  it('rejected attempts inside one group count exactly: under a limit of 3, ok, invalid, ok, invalid, ok → success, invalid_input, success, invalid_input, rate_limited; 3 hits on 3 shards', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const owner = c.users.owner!;
    const user = await addMember(fx.db.sql, owner, c.workspaceId, 'editor', 'rej');
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    await earlyInMinute(4);
    const answers = await withLimit(3, async () => {
      // the owner's slow request holds the lane; the user's five queue behind it, one group
      const hold = requestStatement(lanes, c.canvasId, { claims: claimsFor(owner) }, 'select pg_sleep(0.2)', []);
      await fx.running(p.app, 'pg_sleep(0.2)');
      const five = [create('a'), 'not an object', create('b'), 'nor this', create('c')]
        .map((patch, i) => single(lanes, user, c.canvasId, `rej-${i}-${randomUUID()}`, patch));
      await hold;
      return Promise.all(five);
    });
    expect(answers.map((a) => a.error?.code ?? a.status)).toEqual(['success', 'invalid_input', 'success', 'invalid_input', 'rate_limited']);
    expect(lanes.sent).toEqual({ transactions: 2, requests: 6, pipelined: 0 });
    expect(await committed(user, 60)).toEqual({ total: 3, shards: [1, 1, 1, ...positions(4, SHARDS).map(() => 0)] });
  });

  it('a rejected attempt counts under its canvas\'s lock: a transaction with it and then another mutation of the canvas does not deadlock with one holding the canvas and waiting for the first shard', async () => {
    // the scenario of two processes' lanes on one canvas: T3 = [U's attempt, rejected; V's mutation],
    // T1 = [W's mutation (the canvas lock); U's mutations, announced 8: waits for U's first shard]
    const c = await createCanvas(fx.db.sql, []);
    const [owner, u, v] = [c.users.owner!, await addMember(fx.db.sql, c.users.owner!, c.workspaceId, 'editor', 'rj-u'),
      await addMember(fx.db.sql, c.users.owner!, c.workspaceId, 'editor', 'rj-v')];
    const p = fx.pool(2);
    const asCaller = (t: ReservedSql, user: string) => t`select set_config('role', 'authenticated', true),
      set_config('request.jwt.claims', ${JSON.stringify(claimsFor(user))}, true)`;
    const mutate = async (t: ReservedSql, user: string, patch: unknown) => {
      await asCaller(t, user);
      const [row] = await t`select api.upsert_block_atomic(${c.canvasId}::uuid, null, 'create', ${`rj-${randomUUID()}`}, null, ${patch as never}::jsonb) as r`;
      await t`reset role`;
      return (row!.r as Answer).status;
    };
    const t1 = await open(p.sql);
    expect(await mutate(t1, owner, create('w'))).toBe('success'); // T1 holds the canvas row
    const t3 = await open(p.sql);
    // U's attempt is rejected (no such type): its hit waits for the canvas, before taking a shard
    const rejected = mutate(t3, u, { type: 'Not A Type' }).then(async (status) => [status, await mutate(t3, v, create('v'))]);
    expect(await within(rejected, 300)).toBe('waiting');
    await t1`select set_config('potentia.several_hits', ${`${u}:7`}, true)`;
    expect(await mutate(t1, u, create('u'))).toBe('success'); // takes U's first shard, free
    await end(t1);
    expect(await rejected).toEqual(['failed', 'success']);
    await end(t3);
  });

  it('a lane group of 3 mutations of one user whose first hit lands high (shards 1-13 and 15 held): it takes 14, waits for 15, then 16', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const owner = c.users.owner!;
    const user = await addMember(fx.db.sql, owner, c.workspaceId, 'editor', 'high');
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    await earlyInMinute(4);
    await shardRows(user, 60);
    const others = await holdShards(fx.db.sql, user, [...positions(1, 13), 15], 60);
    const hold = requestStatement(lanes, c.canvasId, { claims: claimsFor(owner) }, 'select pg_sleep(0.2)', []);
    await fx.running(p.app, 'pg_sleep(0.2)');
    const three = [0, 1, 2].map((i) => single(lanes, user, c.canvasId, `high-${i}-${randomUUID()}`));
    await hold;
    // the group announced 2 more hits: its first stays within 1-14, its second within 15 (16 is the third's)
    expect(await within(Promise.all(three), 300)).toBe('waiting');
    await end(others, 'rollback');
    expect((await Promise.all(three)).map((a) => a.status)).toEqual(['success', 'success', 'success']);
    expect(lanes.sent).toEqual({ transactions: 2, requests: 4, pipelined: 0 });
    expect(await committed(user, 60)).toEqual({ total: 3, shards: [...positions(1, 13).map(() => 0), 1, 1, 1] });
  });

  it('a request failing mid-group (after its RPC counted): the group\'s hits roll back with it; each user\'s hits = its applied ops', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const owner = c.users.owner!;
    const [u, v] = [await addMember(fx.db.sql, owner, c.workspaceId, 'editor', 'mu'), await addMember(fx.db.sql, owner, c.workspaceId, 'editor', 'mv')];
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    const hold = requestStatement(lanes, c.canvasId, { claims: claimsFor(owner) }, 'select pg_sleep(0.2)', []);
    await fx.running(p.app, 'pg_sleep(0.2)');
    const boom = `select m.*, 1 / 0 as boom from (${MUTATE}) m`;
    const send = (user: string, text: string, i: number) =>
      requestStatement(lanes, c.canvasId, { claims: claimsFor(user) }, text, [c.canvasId, `mid-${i}-${randomUUID()}`, create(`m${i}`)]);
    const outcomes = await Promise.allSettled([send(u, MUTATE, 0), send(u, boom, 1), send(v, MUTATE, 2), send(u, MUTATE, 3), send(v, MUTATE, 4)]);
    await hold;
    expect(outcomes.map((o) => (o.status === 'rejected' ? (o.reason as { code?: string }).code : 'ok'))).toEqual(['ok', '22012', 'ok', 'ok', 'ok']);
    for (const [user, ops] of [[u, 2], [v, 2]] as const) {
      const total = (await minutes(user)).reduce((a, m) => ({ hits: a.hits + m.hits, ops: a.ops + m.ops }), { hits: 0, ops: 0 });
      expect(total).toEqual({ hits: ops, ops });
    }
    expect(lanes.size).toBe(0);
  });

  it('backends killed at random under one user\'s grouped singles and batches on 3 canvases, two processes, clients resending: every op applied once, hits = ops, no deadlock', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const user = c.users.owner!;
    const canvases = [c.canvasId, await addCanvas(fx.db.sql, user, c.workspaceId), await addCanvas(fx.db.sql, user, c.workspaceId)];
    const pools = [fx.pool(2), fx.pool(2)];
    const processes = pools.map((p) => new CanvasLanes(p.sql));
    const start = Date.now();
    const deadline = start + 15_000;
    const sentOps: string[] = [];
    const odd: unknown[] = [];
    let resent = 0;
    const resending = async <T>(send: () => Promise<T>): Promise<T> => {
      for (;;) {
        try {
          return await send();
        } catch (err) {
          if (!isConnectionFailure(err) || Date.now() > deadline) throw err;
          resent++;
          await sleep(2);
        }
      }
    };
    // per process and canvas, two H1 clients of the user (so its singles share groups) and one HTTP client sending batches of 3 and 12
    const singles = async (lanes: CanvasLanes, canvasId: string, tag: string) => {
      for (let k = 0; k < 6 || Date.now() - start < 1600; k++) {
        const op = `kill-${tag}-${k}-${randomUUID()}`;
        sentOps.push(op);
        const a = await resending(() => single(lanes, user, canvasId, op));
        if (a.status !== 'success') odd.push(a);
      }
    };
    const batches = async (lanes: CanvasLanes, canvasId: string, tag: string) => {
      for (let k = 0; k < 2 || Date.now() - start < 1600; k++) {
        const ops = opsOf(k % 2 ? 12 : 3, `kill-${tag}-${k}`);
        sentOps.push(...ops.map((o) => o.client_op_id));
        const a = await resending(() => batch(lanes, user, canvasId, ops));
        if (a.status !== 'success') odd.push(a);
      }
    };
    const storm = (async () => {
      let kills = 0;
      while (Date.now() - start < 1500) {
        await sleep(100 + Math.random() * 100);
        const [{ killed }] = await fx.admin`select count(pg_terminate_backend(pid))::int as killed from (select pid from pg_stat_activity
          where application_name in (${pools[0]!.app}, ${pools[1]!.app}) order by random() limit 1) x` as unknown as [{ killed: number }];
        kills += killed;
      }
      return kills;
    })();
    await withLimit(100_000, () => Promise.all(processes.flatMap((lanes, pi) => canvases.flatMap((canvasId, ci) => [
      singles(lanes, canvasId, `${pi}${ci}a`), singles(lanes, canvasId, `${pi}${ci}b`), batches(lanes, canvasId, `${pi}${ci}`)]))));
    expect(await storm).toBeGreaterThan(2);
    expect(odd).toEqual([]);
    const applied = await appliedOps(user);
    expect(applied.length).toBe(sentOps.length);
    expect(new Set(applied)).toEqual(new Set(sentOps));
    const perMinute = await minutes(user);
    expect(perMinute.map((m) => m.hits)).toEqual(perMinute.map((m) => m.ops));
    for (const canvasId of canvases) {
      const seqs = (await fx.admin`select canvas_seq::int as s from app.block_operations where canvas_id = ${canvasId} and status = 'success'
        order by 1`).map((r) => r.s as number);
      expect(seqs).toEqual(seqs.map((_, k) => k + 1));
    }
    for (const lanes of processes) expect(lanes.size).toBe(0);
    expect(resent).toBeGreaterThan(0);
  }, 30_000);
});
