// Pipelining in a canvas lane (src/db/canvas-lanes.ts): a busy lane sends its next transaction
// behind the one on the wire, so the lane's backend never waits for this process between two
// COMMITs. What must hold, against the real RPC: requests still apply in arrival order, each once;
// a transaction pipelined behind one that rolls back does not commit (its guard fails it unrun),
// and its requests go again behind the rolled-back ones', in order, whatever value another session
// left in the setting the guard reads; a lane that rolled back sends one transaction at a time
// again for a while; behind a transaction pooler nothing is pipelined.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement } from '../../src/db/request.ts';
import { backendKillFixture, deferredCheckTable } from '../helpers/db.ts';
import { claimsFor, createCanvasWithEditors } from '../helpers/fixtures.ts';

type Row = { r: { status: string; canvas_seq: number | null }; xid: string };

const MUTATE = `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, $3::jsonb) as r, pg_current_xact_id()::text as xid`;
/** The same, then a pause: the requests sent after it queue up in the lane meanwhile. */
const SLOW = `select m.*, pg_sleep(0.3) as pause from (${MUTATE}) m`;
/** The same, then a division by zero: applied, then failed, so its transaction rolls back. */
const FAILING = `select m.*, 1 / 0 as boom from (${MUTATE}) m`;
const create = (text: string) => ({ type: 'text', content: { text } });

describe('canvas lanes: pipelining', () => {
  const fx = backendKillFixture('lanes-pipeline');
  // a unique check deferred to COMMIT: a request that violates it fails at its transaction's COMMIT
  const table = deferredCheckTable(() => fx.admin, 'lanes_pipeline_deferred');

  const logged = async (canvasId: string) => (await fx.db.sql`
    select client_op_id from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by canvas_seq` as unknown as { client_op_id: string }[]).map((r) => r.client_op_id);

  /** Sends request 0 (SLOW), waits until it runs, then the others: they queue up behind it. */
  const behindFirst = async (lanes: CanvasLanes, app: string, canvasId: string, ops: string[], callerOf: (i: number) => string,
    text: (i: number) => string = (i) => (i === 0 ? SLOW : MUTATE)) => {
    const send = (i: number) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(callerOf(i)) }, text(i), [canvasId, ops[i]!, create(`p${i}`)]);
    const first = send(0);
    await fx.running(app, 'pg_sleep(0.3)');
    return Promise.allSettled([first, ...ops.slice(1).map((_, i) => send(i + 1))]);
  };

  /**
   * On a new canvas: [0] alone, then [1, 2] with [3, 4] pipelined behind it, where request 1 runs
   * `failing` (its transaction rolls back, with SQLSTATE `code`); every other request applies once,
   * in arrival order (2, rolled back with 1 and sent again, before 3 and 4).
   */
  const rollbackWithPipelined = async (lanes: CanvasLanes, app: string, failing = FAILING, code = '22012') => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 2);
    const ops = Array.from({ length: 7 }, (_, i) => `pipe-rollback-${i}-${randomUUID()}`);
    const outcomes = await behindFirst(lanes, app, canvasId, ops, (i) => (i === 1 ? users[2]! : users[1]!),
      (i) => (i === 0 ? SLOW : i === 1 ? failing : MUTATE));
    outcomes.forEach((o, i) => {
      if (i === 1) expect(o).toMatchObject({ status: 'rejected', reason: { code } });
      else expect(o, `request ${i}`).toMatchObject({ status: 'fulfilled' });
    });
    expect(lanes.sent.pipelined).toBeGreaterThanOrEqual(1);
    expect(await logged(canvasId)).toEqual([0, 2, 3, 4, 5, 6].map((i) => ops[i]));
  };

  it('a busy lane sends a full group behind the transaction on the wire; every request applies once, in arrival order', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 2 });
    const ops = Array.from({ length: 7 }, (_, i) => `pipe-${i}-${randomUUID()}`);
    const outcomes = await behindFirst(lanes, p.app, canvasId, ops, () => users[1]!);
    expect(outcomes.map((o) => o.status)).toEqual(ops.map(() => 'fulfilled'));
    // 0 alone (nothing queued when it went); then [1, 2] with [3, 4] pipelined behind it at once
    // (a full group), and [5, 6] behind [3, 4] once [1, 2] was answered
    expect(lanes.sent).toEqual({ transactions: 4, requests: 7, pipelined: 2 });
    const rows = outcomes.map((o) => (o as PromiseFulfilledResult<Row[]>).value[0]!);
    expect(new Set(rows.map((r) => r.xid)).size).toBe(4);
    expect(rows.map((r) => Number(r.r.canvas_seq))).toEqual(ops.map((_, k) => k + 1));
    expect(await logged(canvasId)).toEqual(ops);
    expect(lanes.size).toBe(0);
  });

  it('a transaction pipelined behind one that rolls back fails its guard unrun: its requests go again behind the others, each applies once, in order', async () => {
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 2 });
    // request 1 fails after its writes: [1, 2] rolls back, and [3, 4], pipelined behind it, must not commit
    await rollbackWithPipelined(lanes, p.app);
    // sent: [0]; [1, 2] (rolled back) with [3, 4] pipelined (its guard failed); then, one
    // transaction at a time (the lane rolled back): [2] again alone, [3, 4] again, [5, 6]
    expect(lanes.sent).toEqual({ transactions: 6, requests: 10, pipelined: 1 });
    expect(lanes.size).toBe(0);
  });

  it('a backend killed with a transaction pipelined behind the one on the wire: both fail as lost connections, the waiting ones apply on a new connection; resent, each applies once', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 2 });
    const ops = Array.from({ length: 9 }, (_, i) => `pipe-kill-${i}-${randomUUID()}`);
    const send = (i: number) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[1]!) },
      i === 0 ? `select m.*, pg_sleep(5) as pause from (${MUTATE}) m` : MUTATE, [canvasId, ops[i]!, create(`k${i}`)]);
    // all at once: [0, 1] goes first, [2, 3] pipelined behind it at once (a full group)
    const pending = ops.map((_, i) => send(i).then(() => null, (err: unknown) => err));
    expect(await fx.killRunning(p.app, 'pg_sleep(5)')).toBe(1);
    const errors = await Promise.all(pending);
    // both transactions on the wire failed (their outcome unknown to the lane), nothing else
    expect(errors.flatMap((err, i) => (err === null ? [] : [i]))).toEqual([0, 1, 2, 3]);
    for (const err of errors.slice(0, 4)) expect(isConnectionFailure(err), String(err)).toBe(true);
    // the client's resend by client_op_id: every op applied exactly once, gap-free
    for (const i of [0, 1, 2, 3]) {
      const [row] = await requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[1]!) }, MUTATE, [canvasId, ops[i]!, create(`k${i}`)]);
      expect(row!.r.status, `resend ${i}`).toBe('success');
    }
    const log = await logged(canvasId);
    expect([...log].sort()).toEqual([...ops].sort());
    // the waiting ones applied in arrival order, on a new connection
    expect(log.filter((op) => ops.indexOf(op) >= 4)).toEqual(ops.slice(4));
    expect(lanes.size).toBe(0);
  });

  it('two CanvasLanes objects on one pool: the other one\'s mark left on the connection does not pass the guard of a transaction behind one that rolled back', async () => {
    const p = fx.pool(1);
    // lane object A commits a marked transaction (its second) on the pool's only connection
    const a = new CanvasLanes(p.sql, { depth: 2 });
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const opsA = Array.from({ length: 3 }, (_, i) => `stale-a-${i}-${randomUUID()}`);
    const outA = await behindFirst(a, p.app, canvasId, opsA, () => users[1]!);
    expect(outA.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled']);
    expect(a.sent).toEqual({ transactions: 2, requests: 3, pipelined: 0 });
    const [{ v }] = await p.sql`select current_setting('potentia.lane_tx', true) as v` as unknown as [{ v: string }];
    expect(v).toMatch(/:2$/);
    // lane object B on the same pool, counting its transactions from 1 too: its second rolls back,
    // and A's mark, still on the connection, must not pass the guard of the one behind it (ids
    // carry a random prefix of their object's)
    await rollbackWithPipelined(new CanvasLanes(p.sql, { depth: 2 }), p.app);
  });

  it('a value left in potentia.lane_tx by any session (e.g. through a session pooler without a reset) does not pass the guard', async () => {
    const p = fx.pool(1);
    await p.sql`select set_config('potentia.lane_tx', '2', false)`;
    await rollbackWithPipelined(new CanvasLanes(p.sql, { depth: 2 }), p.app);
  });

  it('the COMMIT of the transaction ahead fails (a check deferred to it) with one pipelined behind: that one fails its guard, every other request applies once, in order', async () => {
    const p = fx.pool(1);
    const lanes = new CanvasLanes(p.sql, { depth: 2 });
    await rollbackWithPipelined(lanes, p.app, `with ins as (insert into public.${table} (k) values (1), (1)) select m.* from (${MUTATE}) m`, '23505');
    expect(lanes.sent.pipelined).toBe(1);
    expect(lanes.size).toBe(0);
  });

  it('behind a transaction pooler (pipeline off) the lane sends one transaction at a time', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 2, pipeline: false });
    const ops = Array.from({ length: 7 }, (_, i) => `pipe-off-${i}-${randomUUID()}`);
    const outcomes = await behindFirst(lanes, p.app, canvasId, ops, () => users[1]!);
    expect(outcomes.map((o) => o.status)).toEqual(ops.map(() => 'fulfilled'));
    expect(lanes.sent).toEqual({ transactions: 4, requests: 7, pipelined: 0 });
    expect(await logged(canvasId)).toEqual(ops);
  });
});
