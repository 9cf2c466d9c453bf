// Attacks on group commit in canvas lanes (src/db/canvas-lanes.ts, src/db/request.ts), against real
// Postgres and the real RPC: several callers' requests share one transaction, so what one request
// leaves in it (its caller's settings, the rows it locks, the counts it takes) is there when the
// next one runs. What must hold: each request runs as its own caller or not at all; groups on
// different lanes (canvases, processes) never deadlock on the per-user rate-limit rows; one user's
// mutations stay within the documented rate-limit bound (docs/limits.md); failures of every kind,
// repeated, and backends killed at random leave every op applied exactly once, canvas_seq gap-free,
// each client's ops in its order, and nothing unsettled.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { TransactionSql } from 'postgres';
import { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement, type RequestContext } from '../../src/db/request.ts';
import { sendMutation } from '../../src/http/rpc.ts';
import { backendKillFixture, deferredCheckTable } from '../helpers/db.ts';
import { addCanvas, claimsFor, createCanvasWithEditors } from '../helpers/fixtures.ts';

type Answer = { status: string; canvas_seq: number | null; error?: { code: string; message: string } };
type Row = { r: Answer; uid: string | null; xid: string };

/** The mutation, with who it ran as and in which transaction. */
const MUTATE = `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, $3::jsonb) as r,
  auth.uid()::text as uid, pg_current_xact_id()::text as xid`;
/** The same, then a pause (after the RPC's writes and rate-limit hit): what queues meanwhile forms the next group. */
const slow = (seconds: number) => `select m.*, pg_sleep(${seconds}) as pause from (${MUTATE}) m`;
const create = (text: string) => ({ type: 'text', content: { text } });
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('canvas lanes: group commit under attack', () => {
  const fx = backendKillFixture('lanes-gattack');
  // a unique check deferred to COMMIT: a request that violates it fails at its transaction's COMMIT
  const table = deferredCheckTable(() => fx.admin, 'lane_gattack');


  const logged = async (canvasId: string) => fx.admin`
    select client_op_id, actor_id::text as actor_id, canvas_seq::int as canvas_seq from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by canvas_seq` as unknown as
    Promise<{ client_op_id: string; actor_id: string; canvas_seq: number }[]>;

  it('a request whose caller cannot be serialized is refused before it is sent: its statement never runs as the caller before it', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const [owner, editor] = users as [string, string];
    const p = fx.pool(1);
    const lanes = new CanvasLanes(p.sql);
    const send = (claims: Record<string, unknown>, text: string, op: string) =>
      requestStatement<Row>(lanes, canvasId, { claims }, text, [canvasId, op, create(op)]);
    // the lane's connection has run (prepared) the statements; a request holds it while the two below queue up
    await send(claimsFor(editor), MUTATE, `warm-${randomUUID()}`);
    await send(claimsFor(editor), slow(0.01), `warm-slow-${randomUUID()}`);
    const hold = send(claimsFor(editor), slow(0.2), `hold-${randomUUID()}`);
    await fx.running(p.app, 'pg_sleep(0.2)');
    const ops = [`a-${randomUUID()}`, `b-${randomUUID()}`];
    // the owner's claims serialize to nothing (a toJSON that returns undefined): no setting can be sent for them
    const outcomes = await Promise.allSettled([
      send(claimsFor(editor), MUTATE, ops[0]!),
      send({ ...claimsFor(owner), toJSON: () => undefined }, MUTATE, ops[1]!),
    ]);
    await hold;
    expect(outcomes[0]).toMatchObject({ status: 'fulfilled' });
    expect(outcomes[1]).toMatchObject({ status: 'rejected' });
    // refused, so not applied: neither as the owner nor as the editor whose settings were still in force
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id)).not.toContain(ops[1]);
    expect(log.filter((r) => r.client_op_id === ops[0]).map((r) => r.actor_id)).toEqual([editor]);
    expect(lanes.size).toBe(0);
  });

  it('callers of every kind in one group each run as themselves: role, claims, headers, statement_timeout', async () => {
    const { users } = await createCanvasWithEditors(fx.db.sql, 2);
    const p = fx.pool(1);
    const lanes = new CanvasLanes(p.sql);
    const key = randomUUID();
    const WHO = `select current_user::text as role, auth.uid()::text as uid, current_setting('request.jwt.claims')::jsonb ->> 'tag' as tag,
      current_setting('request.headers')::jsonb ->> 'user-agent' as ua, current_setting('statement_timeout') as timeout,
      current_setting('request.path') as path, pg_current_xact_id()::text as xid`;
    const huge = 'x'.repeat(1 << 20);
    const callers: RequestContext[] = [
      { claims: { role: 'service_role', tag: 's' }, headers: { 'User-Agent': 'svc' }, statementTimeoutMs: 1111, path: '/s' },
      { claims: { role: 'anon', tag: 'a' } },
      { claims: claimsFor(users[0]!, { tag: huge }), headers: { 'user-agent': huge }, statementTimeoutMs: 2222, path: '/o' },
      // NUL in a claim: the settings take it (JSON escapes it), jsonb refuses it: that request fails, alone
      { claims: claimsFor(users[1]!, { tag: 'nul\u0000' }) },
      { claims: claimsFor(users[2]!, { tag: 'e' }), headers: { 'user-agent': 'e' }, statementTimeoutMs: 3333 },
    ];
    const hold = requestStatement(lanes, key, { claims: { role: 'anon' } }, 'select pg_sleep(0.2)', []);
    await fx.running(p.app, 'pg_sleep(0.2)');
    const outcomes = await Promise.allSettled(callers.map((ctx) => requestStatement<Record<string, string>>(lanes, key, ctx, WHO, [])));
    await hold;
    expect(outcomes[3]).toMatchObject({ status: 'rejected', reason: { code: '22P05' } });
    const rows = outcomes.map((o) => (o.status === 'fulfilled' ? o.value[0]! : null));
    expect(rows[0]).toMatchObject({ role: 'service_role', uid: null, tag: 's', ua: 'svc', timeout: '1111ms', path: '/s' });
    expect(rows[1]).toMatchObject({ role: 'anon', uid: null, tag: 'a', ua: null, timeout: '5s', path: '' });
    expect(rows[2]).toMatchObject({ role: 'authenticated', uid: users[0], tag: huge, ua: huge, timeout: '2222ms', path: '/o' });
    expect(rows[4]).toMatchObject({ role: 'authenticated', uid: users[2], tag: 'e', ua: 'e', timeout: '3333ms', path: '' });
    // the four went together (again, once the failing one had failed alone)
    expect(new Set([0, 1, 2, 4].map((i) => rows[i]!.xid)).size).toBe(1);
    expect(lanes.size).toBe(0);
  });

  it('one user\'s mutations in groups on several canvases at once stay within the documented bound (the limit a minute, exactly)', async () => {
    const c = await createCanvasWithEditors(fx.db.sql, 0);
    const user = c.users[0]!;
    const canvases = [c.canvasId, await addCanvas(fx.db.sql, user, c.workspaceId), await addCanvas(fx.db.sql, user, c.workspaceId)];
    const limit = 8;
    const [{ saved }] = await fx.admin`select value as saved from app.settings where key = 'mutations_per_minute'` as unknown as [{ saved: unknown }];
    // all in one window (fixed minutes): not in the last seconds of one
    const second = new Date().getUTCSeconds();
    if (second > 56) await sleep((61 - second) * 1000);
    await fx.admin`update app.settings set value = ${String(limit)} where key = 'mutations_per_minute'`;
    try {
      const p = fx.pool(3);
      const lanes = new CanvasLanes(p.sql);
      // 8 mutations of the user on each canvas at once (a script on three canvases): each lane could send them as one group
      const answers = await Promise.all(canvases.flatMap((canvasId) => Array.from({ length: 8 }, (_, i) =>
        requestStatement<Row>(lanes, canvasId, { claims: claimsFor(user) }, i === 7 ? slow(0.2) : MUTATE, [canvasId, `rl-${i}-${randomUUID()}`, create(`r${i}`)]))));
      const applied = answers.filter(([row]) => row!.r.status === 'success').length;
      expect(applied).toBe(limit);
      expect(answers.filter(([row]) => row!.r.status !== 'success').map(([row]) => row!.r.error?.code)).toEqual(
        Array.from({ length: 24 - applied }, () => 'rate_limited'));
      expect(lanes.size).toBe(0);
    } finally {
      await fx.admin`update app.settings set value = ${saved as string} where key = 'mutations_per_minute'`;
    }
  });

  it('two users on two canvases, grouped in opposite orders: no deadlock on their rate-limit rows', async () => {
    // fresh users: their first hits of the minute (slots 1, …) are in flight in both groups at once
    const c = await createCanvasWithEditors(fx.db.sql, 1);
    const [u1, u2] = c.users as [string, string];
    const canvases = [c.canvasId, await addCanvas(fx.db.sql, u1, c.workspaceId)] as const;
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    const send = (canvasId: string, user: string, first: boolean) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(user) },
      first ? slow(0.3) : MUTATE, [canvasId, `dl-${randomUUID()}`, create('d')]);
    // the first canvas's lane: u1 then u2; the second's: u2 then u1 (each pair in one group)
    const answers = await Promise.all([send(canvases[0], u1, true), send(canvases[0], u2, false), send(canvases[1], u2, true), send(canvases[1], u1, false)]);
    expect(answers.map(([row]) => row!.r.error?.message ?? row!.r.status)).toEqual(['success', 'success', 'success', 'success']);
    for (const canvasId of canvases) expect((await logged(canvasId)).map((r) => r.canvas_seq)).toEqual([1, 2]);
    expect(lanes.size).toBe(0);
  });

  it('H2 with its endpoint limit, two processes\' lanes on one canvas: no deadlock', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const [u1, u2] = [...users].sort() as [string, string]; // u1 goes first in a group, whether by arrival or by caller
    const [one, two] = [fx.pool(2), fx.pool(2)];
    const send = (lanes: CanvasLanes, user: string) => sendMutation(lanes, { claims: claimsFor(user) }, 'upsert_block_atomic',
      [canvasId, null, 'create', `h2-${randomUUID()}`, null, create('h')], { endpoint: 'H2', relaxed: false });
    const waiting = async (tx: TransactionSql, n: number) => {
      for (let i = 0; i < 200; i++) {
        await tx`select pg_stat_clear_snapshot()`; // else the transaction sees its first snapshot only
        const [{ w }] = await tx`select count(*)::int as w from pg_stat_activity
          where application_name in (${one.app}, ${two.app}) and wait_event_type = 'Lock'` as unknown as [{ w: number }];
        if (w >= n) return;
        await sleep(10);
      }
      throw new Error(`not ${n} waiting`);
    };
    // another writer holds the canvas: process one's lane sends u1 and u2 in one group, whose first RPC waits for it;
    // process two's lane sends u2's, which has counted its H2 hit by then and waits for the canvas too
    let answers: PromiseSettledResult<Record<string, any> | null | undefined>[] = [];
    await fx.admin.begin(async (tx) => {
      // (held for well under the RPC's lock_timeout of 3 s)
      await tx`select from app.canvases where canvas_id = ${canvasId} for update`;
      const pending = [send(one.lanes, u1), send(one.lanes, u2)];
      await waiting(tx, 1);
      pending.push(send(two.lanes, u2));
      await waiting(tx, 2);
      answers = await Promise.allSettled(pending.map((p) => Promise.race([p, sleep(100).then(() => null)]))); // nothing settles while the canvas is held
      expect(answers.every((a) => a.status === 'fulfilled' && a.value === null)).toBe(true);
      answers = [];
      void Promise.allSettled(pending).then((all) => { answers = all; });
    });
    for (let i = 0; i < 500 && answers.length === 0; i++) await sleep(10);
    expect(answers.map((a) => (a.status === 'fulfilled' ? JSON.parse(a.value!.result).error?.message ?? a.value!.status : String(a.reason))))
      .toEqual(['success', 'success', 'success']);
    expect((await logged(canvasId)).map((r) => r.canvas_seq)).toEqual([1, 2, 3]);
  });

  it('failures of every kind, one after another in one group, and a COMMIT with two culprits: each fails alone, the rest apply once', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 11);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = users.map((_, i) => `fail-${i}-${randomUUID()}`);
    const as = (i: number, text: string, params: unknown[] = [], statementTimeoutMs?: number) =>
      requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[i]!), ...(statementTimeoutMs ? { statementTimeoutMs } : {}) }, text, params);
    const mutate = (i: number) => as(i, MUTATE, [canvasId, ops[i]!, create(`f${i}`)]);
    const hold = as(0, slow(0.2), [canvasId, ops[0]!, create('f0')]);
    await fx.running(p.app, 'pg_sleep(0.2)');
    // behind it, in one group: a division by zero after the RPC's writes, a statement_timeout, a
    // missing table, a bad cast after the writes, then (once those are gone) two requests that fail only at COMMIT and
    // two that fail there only together: each fails alone, in whichever transaction it is found
    const failing: Record<number, Promise<unknown>> = {
      2: as(2, `select m.*, 1 / 0 as boom from (${MUTATE}) m`, [canvasId, ops[2]!, create('f2')]),
      3: as(3, `select m.*, pg_sleep(0.3) from (${MUTATE}) m`, [canvasId, ops[3]!, create('f3')], 100),
      4: as(4, 'select * from no_such_table', []),
      5: as(5, `insert into public.${table} (k) values (1), (1)`),
      6: as(6, `insert into public.${table} (k) values (2), (2)`),
      7: as(7, `insert into public.${table} (k) values (3)`),
      8: as(8, `insert into public.${table} (k) values (3)`),
      9: as(9, `select m.*, (m.r ->> 'status')::int as bad_cast from (${MUTATE}) m`, [canvasId, ops[9]!, create('f9')]),
    };
    const good = [1, 10, 11].map((i) => mutate(i));
    const outcomes = await Promise.allSettled([hold, ...good, ...Object.values(failing)]);
    const kept = (await fx.admin.unsafe(`delete from public.${table} returning k`)).map((r) => r.k);
    const byIndex = new Map([0, 1, 10, 11, ...Object.keys(failing).map(Number)].map((i, k) => [i, outcomes[k]!]));
    for (const i of [0, 1, 10, 11]) expect(byIndex.get(i), `request ${i}`).toMatchObject({ status: 'fulfilled', value: [{ r: { status: 'success' } }] });
    expect(byIndex.get(2)).toMatchObject({ status: 'rejected', reason: { code: '22012' } });
    expect(byIndex.get(3)).toMatchObject({ status: 'rejected', reason: { code: '57014' } });
    expect(byIndex.get(4)).toMatchObject({ status: 'rejected', reason: { code: '42P01' } });
    expect(byIndex.get(5)).toMatchObject({ status: 'rejected', reason: { code: '23505' } });
    expect(byIndex.get(6)).toMatchObject({ status: 'rejected', reason: { code: '23505' } });
    // of the two that fail only together, the one sent first (in callers' order) commits
    const [x, y] = [7, 8].sort((a, b) => (users[a]! < users[b]! ? -1 : 1)) as [number, number];
    expect(byIndex.get(x)).toMatchObject({ status: 'fulfilled' });
    expect(byIndex.get(y)).toMatchObject({ status: 'rejected', reason: { code: '23505' } });
    expect(byIndex.get(9)).toMatchObject({ status: 'rejected', reason: { code: '22P02' } });
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id).sort()).toEqual([0, 1, 10, 11].map((i) => ops[i]).sort());
    expect(log.map((r) => r.canvas_seq)).toEqual([1, 2, 3, 4]);
    for (const r of log) expect(r.actor_id).toBe(users[ops.indexOf(r.client_op_id)]);
    expect(kept).toEqual([3]);
    expect(lanes.size).toBe(0);
  });

  it('backends killed at random under grouped load, clients resending on failure: every op once, gap-free, each client in its order, as its caller', async () => {
    const canvases = await Promise.all([0, 1].map(() => createCanvasWithEditors(fx.db.sql, 4)));
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const start = Date.now();
    const deadline = start + 15_000;
    let resent = 0;
    let stop = false;
    const applied: { canvas: number; client: number; seq: number; op: string }[] = [];
    const odd: unknown[] = [];
    // a client per user per canvas, as an H1 socket: one op at a time, the same op again after a
    // lost connection; between ops, a request that fails (alone, or at its group's COMMIT)
    const client = async (ci: number, ui: number) => {
      const { canvasId, users } = canvases[ci]!;
      const ctx = { claims: claimsFor(users[ui]!) };
      // six ops at least, and on until the storm is over (the ops can outrun it)
      for (let k = 0; k < 6 || Date.now() - start < 1600; k++) {
        const op = `storm-${ci}-${ui}-${k}-${randomUUID()}`;
        for (;;) {
          try {
            const [row] = await requestStatement<Row>(lanes, canvasId, ctx, MUTATE, [canvasId, op, create(op)]);
            if (row!.r.status !== 'success' || row!.uid !== users[ui]) odd.push(row);
            applied.push({ canvas: ci, client: ui, seq: Number(row!.r.canvas_seq), op });
            break;
          } catch (err) {
            if (!isConnectionFailure(err) || Date.now() > deadline) throw err;
            resent++;
            await sleep(2);
          }
        }
        if (k % 2 === 1) {
          await requestStatement(lanes, canvasId, ctx, ui % 2 === 0 ? 'select 1 / 0' : `insert into public.${table} (k) values (${ci * 10 + ui}), (${ci * 10 + ui})`, [])
            .then((ok) => odd.push(ok), (err: { code?: string }) => { if (!isConnectionFailure(err) && !['22012', '23505'].includes(err.code ?? '')) odd.push(err); });
        }
      }
    };
    // a kill every 100-200 ms for the first 1.5 s
    const storm = (async () => {
      let kills = 0;
      while (!stop && Date.now() - start < 1500) {
        await sleep(100 + Math.random() * 100);
        const [{ killed }] = await fx.admin`select count(pg_terminate_backend(pid))::int as killed from (select pid from pg_stat_activity
          where application_name = ${p.app} order by random() limit 1) x` as unknown as [{ killed: number }];
        kills += killed;
      }
      return kills;
    })();
    try {
      await Promise.all(canvases.flatMap((c, ci) => c.users.map((_, ui) => client(ci, ui))));
    } finally {
      stop = true;
    }
    expect(await storm).toBeGreaterThan(2);
    expect(odd).toEqual([]);
    for (const [ci, { canvasId, users }] of canvases.entries()) {
      const log = await logged(canvasId);
      const mine = applied.filter((a) => a.canvas === ci);
      expect(log.map((r) => r.client_op_id).sort()).toEqual(mine.map((a) => a.op).sort());
      expect(log.map((r) => r.canvas_seq)).toEqual(log.map((_, k) => k + 1));
      const answered = new Map(mine.map((a) => [a.op, a.seq]));
      for (const r of log) {
        expect(answered.get(r.client_op_id)).toBe(r.canvas_seq); // a resend of an applied op answers its numbers
        expect(r.actor_id).toBe(users[Number(r.client_op_id.split('-')[2])]);
      }
      for (let ui = 0; ui < users.length; ui++) {
        const seqs = mine.filter((a) => a.client === ui).map((a) => a.seq);
        expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      }
    }
    expect((await fx.admin.unsafe(`select count(*)::int as n from public.${table}`))[0]!.n).toBe(0);
    expect(lanes.size).toBe(0);
  }, 30_000);

  it('a pool of one: a hot canvas of eight writers in full groups hands the connection over after its turns; every canvas applies', async () => {
    const [hot, ...cold] = await Promise.all([createCanvasWithEditors(fx.db.sql, 7), createCanvasWithEditors(fx.db.sql, 1), createCanvasWithEditors(fx.db.sql, 1)]);
    const p = fx.pool(1);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    let hotDone = 0;
    const coldAt: number[] = [];
    // eight writers on the hot canvas, each sending its next op as soon as the last is answered: full groups
    const writer = async (ui: number) => {
      for (let k = 0; k < 20; k++) {
        await requestStatement<Row>(lanes, hot.canvasId, { claims: claimsFor(hot.users[ui]!) }, MUTATE, [hot.canvasId, `hot-${ui}-${k}-${randomUUID()}`, create('h')]);
        hotDone++;
      }
    };
    const writers = hot.users.map((_, ui) => writer(ui));
    await sleep(20);
    const others = cold.flatMap((c) => c.users.map((u, ui) => requestStatement<Row>(lanes, c.canvasId, { claims: claimsFor(u) }, MUTATE,
      [c.canvasId, `cold-${ui}-${randomUUID()}`, create('c')]).then(() => { coldAt.push(hotDone); })));
    await Promise.all([...writers, ...others]);
    // the other canvases were served while the hot one was still busy (after at most one turn of 64)
    expect(coldAt.length).toBe(4);
    for (const at of coldAt) expect(at).toBeLessThan(160 - 8);
    expect((await logged(hot.canvasId)).map((r) => r.canvas_seq)).toEqual(Array.from({ length: 160 }, (_, k) => k + 1));
    for (const c of cold) expect((await logged(c.canvasId)).map((r) => r.canvas_seq)).toEqual([1, 2]);
    expect(lanes.size).toBe(0);
  });
});
