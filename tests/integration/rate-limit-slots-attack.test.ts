// Attacks on the per-user mutation limit's slots (internal.take_limit_slot, sql/rpc/endpoint_limits.sql)
// and on canvas lanes that carry several mutations of one user per transaction
// (src/db/canvas-lanes.ts), against real Postgres, the real RPC, several processes' lanes and
// killed backends. What must hold (docs/limits.md): at most the limit of a user's hits commit per
// window, exactly (a hit is a row keyed by its slot number, 1 .. the limit); a hit never waits for
// another (a slot held in flight is skipped), so hits never deadlock whatever else their
// transactions lock; a rolled-back or killed transaction gives its slots back; every applied op
// counts one hit, once.
import { randomUUID } from 'node:crypto';
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

// The hits counted by hand (internal.take_limit_slot) use a window of an hour, so that one test
// never straddles two windows.
const HOUR = 3600;
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

describe('rate-limit slots under attack', () => {
  const fx = backendKillFixture('rl-slots');

  /** A transaction on a connection of its own. */
  const open = async (sql: Sql): Promise<ReservedSql> => {
    const c = await sql.reserve();
    await c`begin`;
    return c;
  };
  /** One hit; the slot it took. */
  const hit = async (c: ReservedSql, user: string, limit = 100_000, window = HOUR) =>
    (await c`select internal.take_limit_slot(${user}::uuid, 'mutations', ${limit}, ${window}) as slot`)[0]!.slot as number;
  /** The user's committed slots in the window, in order. */
  const committed = async (user: string, window = HOUR) => (await fx.admin`
    select coalesce(array_agg(slot order by slot), '{}') as slots from app.rate_limit_slots
    where user_id = ${user}::uuid and bucket = 'mutations' and window_start = internal.rate_window_start(${window})`)[0]!.slots as number[];
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

  it('random transactions of 1 to 12 hits, 6 at a time, pausing between hits: none fails or waits, and the slots are 1 .. their sum', async () => {
    const user = randomUUID();
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
          for (const pause of pauses[k]!) {
            // a hit waits for no one: 6 transactions in flight never hold one back
            expect(await within(hit(c, user), 2000)).toBe('done');
            await sleep(pause);
          }
          await end(c);
        } catch (err) {
          failures.push(`${sizes[k]} hits: ${(err as { code?: string }).code ?? String(err)}`);
          await end(c, 'rollback');
        }
      }
    };
    await Promise.all(Array.from({ length: 6 }, worker));
    expect(failures).toEqual([]);
    expect(await committed(user)).toEqual(range(1, sizes.reduce((a, b) => a + b, 0)));
  });

  it('under a limit of 40, transactions of 1 to 12 hits, 8 at a time, each committing only when all its hits pass: exactly 40 hits commit, slots 1-40', async () => {
    const user = randomUUID();
    const limit = 40;
    const p = fx.pool(9);
    const random = prng(42);
    const sizes = Array.from({ length: 40 }, () => [1, 1, 1, 2, 3, 5, 8, 12][Math.floor(random() * 8)]!);
    const odd: unknown[] = [];
    let refusals = 0;
    let next = 0;
    const worker = async () => {
      while (next < sizes.length) {
        const n = sizes[next++]!;
        const c = await open(p.sql);
        try {
          for (let i = 0; i < n; i++) {
            await hit(c, user, limit);
            await sleep(1);
          }
          await end(c);
        } catch (err) {
          if ((err as { code?: string }).code === 'PX429') refusals++;
          else odd.push(err);
          await end(c, 'rollback');
        }
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    // then single hits one at a time until one is refused: they fill what rolled back
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
    expect(refusals).toBeGreaterThan(0);
    expect(await committed(user)).toEqual(range(1, limit));
  });

  it('a slot held in flight is skipped, never waited for: under a limit of 5, with 1-3 in flight, others take 4 and 5 and the next is refused at once; when the three roll back, 1 is free', async () => {
    const user = randomUUID();
    const p = fx.pool(3);
    const t1 = await open(p.sql);
    expect([await hit(t1, user, 5), await hit(t1, user, 5), await hit(t1, user, 5)]).toEqual([1, 2, 3]);
    const t2 = await open(p.sql);
    expect(await within(hit(t2, user, 5), 3000)).toBe('done');
    expect(await hit(t2, user, 5)).toBe(5);
    await end(t2);
    const t3 = await open(p.sql);
    // full above 5, and 1-3 are held: refused without waiting for t1
    const refused = hit(t3, user, 5).then(() => 'taken', (err) => (err as { code?: string }).code);
    expect(await within(refused, 3000)).toBe('done');
    expect(await refused).toBe('PX429');
    await end(t3, 'rollback');
    await end(t1, 'rollback');
    const t4 = await open(p.sql);
    expect(await hit(t4, user, 5)).toBe(1);
    await end(t4);
    expect(await committed(user)).toEqual([1, 4, 5]);
  });

  it('a savepoint rolled back gives its slot back at once: another transaction takes it while the first is still open', async () => {
    const user = randomUUID();
    const p = fx.pool(2);
    const t = await open(p.sql);
    expect(await hit(t, user, 3)).toBe(1);
    await t`savepoint s`;
    expect(await hit(t, user, 3)).toBe(2);
    expect(await hit(t, user, 3)).toBe(3);
    await t`rollback to savepoint s`;
    const u = await open(p.sql);
    const taken = hit(u, user, 3);
    expect(await within(taken, 3000)).toBe('done');
    expect(await taken).toBe(2);
    await end(u);
    expect(await hit(t, user, 3)).toBe(3);
    await end(t);
    expect(await committed(user)).toEqual([1, 2, 3]);
  });

  it('a backend killed while holding slots gives them back: its hits never committed, and the next transaction takes them', async () => {
    const user = randomUUID();
    const victim = fx.pool(1);
    const t = await open(victim.sql);
    for (let i = 0; i < 4; i++) await hit(t, user, 4);
    const [{ pid }] = await t`select pg_backend_pid() as pid` as unknown as [{ pid: number }];
    await fx.admin`select pg_terminate_backend(${pid})`;
    while ((await fx.admin`select 1 from pg_stat_activity where pid = ${pid}`).length > 0) await sleep(10);
    t.release();
    const u = await open(fx.db.sql);
    expect([await hit(u, user, 4), await hit(u, user, 4), await hit(u, user, 4), await hit(u, user, 4)]).toEqual([1, 2, 3, 4]);
    await end(u);
    expect(await committed(user)).toEqual([1, 2, 3, 4]);
  });

  it('a transaction begun in one window keeps counting there after the window changes; the next window\'s hits do not wait for it', async () => {
    const user = randomUUID();
    const p = fx.pool(2);
    // windows of one second here; start early in one
    while (Date.now() % 1000 > 300) await sleep(20);
    const a = await open(p.sql);
    const [{ w }] = await a`select internal.rate_window_start(1) as w` as unknown as [{ w: Date }];
    for (let i = 0; i < 8; i++) await hit(a, user, 1000, 1);
    await sleep(1000 - (Date.now() % 1000) + 50);
    const b = await open(p.sql);
    const first = hit(b, user, 1000, 1);
    expect(await within(first, 3000)).toBe('done');
    expect(await first).toBe(1);
    expect(await hit(a, user, 1000, 1)).toBe(9);  // a's 9th: its own window still
    await end(b);
    await end(a);
    const windows = await fx.admin`select window_start, count(*)::int as hits from app.rate_limit_slots where user_id = ${user}::uuid
      group by 1 order by 1` as unknown as { window_start: Date; hits: number }[];
    expect(windows.map((r) => r.hits)).toEqual([9, 1]);
    expect(windows[0]!.window_start.getTime()).toBe(w.getTime());
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
    with h as (select window_start, count(*)::int as hits from app.rate_limit_slots where user_id = ${user}::uuid and bucket = 'mutations' group by 1),
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
    // (the two batches of 12 deadlocked on the user's counter rows once: one answered failed, 'deadlock detected')
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

  it('rejected attempts inside one group count exactly: under a limit of 3, ok, invalid, ok, invalid, ok → success, invalid_input, success, then rate_limited twice (the window is full before the second invalid one is read); slots 1-3', async () => {
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
    expect(answers.map((a) => a.error?.code ?? a.status)).toEqual(['success', 'invalid_input', 'success', 'rate_limited', 'rate_limited']);
    expect(lanes.sent).toEqual({ transactions: 2, requests: 6, pipelined: 0 });
    expect(await committed(user, 60)).toEqual([1, 2, 3]);
  });

  it('a rejected attempt\'s hit waits for no canvas: with the canvas held by another transaction, it is answered at once, and that transaction\'s own hits of the same user pass while this one waits for the canvas; no deadlock', async () => {
    // two processes' lanes on one canvas: T3 = [U's attempt, rejected; V's mutation],
    // T1 = [W's mutation (the canvas lock); then U's mutation (a hit of U's, with T3's in flight)]
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
      return (row!.r as Answer).error?.code ?? (row!.r as Answer).status;
    };
    const t1 = await open(p.sql);
    expect(await mutate(t1, owner, create('w'))).toBe('success'); // T1 holds the canvas row
    const t3 = await open(p.sql);
    // U's attempt is rejected (no such type) before the canvas lock, and counted without it
    const rejected = mutate(t3, u, { type: 'Not A Type' });
    expect(await within(rejected, 3000)).toBe('done');
    expect(await rejected).toBe('invalid_input');
    const then = mutate(t3, v, create('v'));
    expect(await within(then, 300)).toBe('waiting'); // V's mutation waits for the canvas
    expect(await mutate(t1, u, create('u'))).toBe('success'); // U's hit skips the slot T3 holds
    await end(t1);
    expect(await then).toBe('success');
    await end(t3);
    expect(await committed(u, 60)).toEqual([1, 2]);
  });

  it('a lane group of 3 mutations of one user while another transaction holds its slots 1-13 in flight: the group takes 14-16 at once', async () => {
    const c = await createCanvas(fx.db.sql, []);
    const owner = c.users.owner!;
    const user = await addMember(fx.db.sql, owner, c.workspaceId, 'editor', 'high');
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    await earlyInMinute(4);
    const others = await open(fx.db.sql);
    for (let i = 0; i < 13; i++) await hit(others, user, 100_000, 60);
    const hold = requestStatement(lanes, c.canvasId, { claims: claimsFor(owner) }, 'select pg_sleep(0.2)', []);
    await fx.running(p.app, 'pg_sleep(0.2)');
    const three = [0, 1, 2].map((i) => single(lanes, user, c.canvasId, `high-${i}-${randomUUID()}`));
    await hold;
    expect((await Promise.all(three)).map((a) => a.status)).toEqual(['success', 'success', 'success']);
    expect(lanes.sent).toEqual({ transactions: 2, requests: 4, pipelined: 0 });
    expect(await committed(user, 60)).toEqual([14, 15, 16]);
    await end(others, 'rollback');
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
