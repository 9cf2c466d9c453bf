// Canvas lanes (src/db/canvas-lanes.ts): one process's mutations of a canvas go down one pooled
// connection, in arrival order, pipelined. What they must hold, against the real RPC: arrival order
// is canvas_seq order; one request's failure leaves the others on the lane untouched; a killed
// backend fails only the requests that were on the wire (the waiting ones go down a new lane and
// apply), resending the failed ones applies each exactly once; two processes' lanes on one canvas
// still number every operation once, without a gap; the connection goes back to the pool after.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement } from '../../src/db/request.ts';
import { backendKillFixture } from '../helpers/db.ts';
import { claimsFor, createCanvas } from '../helpers/fixtures.ts';

type Answer = { status: string; canvas_seq: number | null; block_id: string; error?: { code: string } };
type Row = { r: Answer; pid: number };

const MUTATE = `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, $3::jsonb) as r, pg_backend_pid() as pid`;
const create = (text: string) => ({ type: 'text', content: { text } });

describe('canvas lanes: a process\'s mutations of one canvas down one connection', () => {
  const fx = backendKillFixture('lanes');

  const logged = async (canvasId: string) => fx.db.sql`
    select client_op_id, canvas_seq::int as canvas_seq from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by canvas_seq` as unknown as Promise<{ client_op_id: string; canvas_seq: number }[]>;

  it('applies concurrent requests in arrival order on one backend, pipelined, and releases the connection after', async () => {
    const { users, canvasId } = await createCanvas(fx.db.sql, ['editor']);
    const p = fx.pool(4);
    const lanes = new CanvasLanes(p.sql, { depth: 3 }); // fewer slots than requests: the hand-over keeps the order
    const ops = Array.from({ length: 30 }, (_, i) => `lane-order-${i}-${randomUUID()}`);
    const answers = await Promise.all(ops.map((op, i) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users.editor!) },
      MUTATE, [canvasId, op, create(`n${i}`)])));
    expect(answers.map(([row]) => row!.r.status)).toEqual(ops.map(() => 'success'));
    // one backend served them all, and canvas_seq follows the order the requests were made in
    expect(new Set(answers.map(([row]) => row!.pid)).size).toBe(1);
    const seqs = answers.map(([row]) => Number(row!.r.canvas_seq));
    expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    expect((await logged(canvasId)).map((r) => r.client_op_id)).toEqual(ops);
    // the lane is gone and its connection back in the pool: a pool of 4 serves 4 reservations
    expect(lanes.size).toBe(0);
    const held = await Promise.all(Array.from({ length: 4 }, () => p.sql.reserve()));
    held.forEach((conn) => conn.release());
  });

  it('a failing request rolls back alone: the requests around it on the lane apply', async () => {
    const { users, canvasId } = await createCanvas(fx.db.sql, ['editor']);
    const p = fx.pool(2);
    const ops = Array.from({ length: 9 }, (_, i) => `lane-fail-${i}-${randomUUID()}`);
    const outcomes = await Promise.allSettled(ops.map((op, i) => requestStatement<Row>(p.lanes, canvasId, { claims: claimsFor(users.editor!) },
      // the fifth: the mutation, then a division by zero in the same statement (after its writes)
      i === 4 ? `select r, 1 / 0 as boom from (${MUTATE}) m` : MUTATE, [canvasId, op, create(`f${i}`)])));
    outcomes.forEach((o, i) => {
      if (i === 4) expect(o).toMatchObject({ status: 'rejected', reason: { code: '22012' } });
      else expect(o, `request ${i}`).toMatchObject({ status: 'fulfilled' });
    });
    expect((await logged(canvasId)).map((r) => r.client_op_id)).toEqual(ops.filter((_, i) => i !== 4));
    expect(p.lanes.size).toBe(0);
  });

  it('a killed backend fails only the requests on the wire; the waiting ones apply on a new lane; resent, each applies once', async () => {
    const { users, canvasId } = await createCanvas(fx.db.sql, ['editor']);
    const p = fx.pool(3);
    const depth = 4;
    const lanes = new CanvasLanes(p.sql, { depth });
    const ops = Array.from({ length: 16 }, (_, i) => `lane-kill-${i}-${randomUUID()}`);
    // the first request sleeps after its writes, so the lane's first `depth` requests are on the wire when it is killed
    const send = (i: number) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users.editor!) },
      i === 0 ? `select r, pid, pg_sleep(5) as pause from (${MUTATE}) m` : MUTATE, [canvasId, ops[i]!, create(`k${i}`)]);
    const pending = ops.map((_, i) => send(i).then(() => null, (err: unknown) => err));
    expect(await fx.killRunning(p.app, 'pg_sleep(5)')).toBe(1);
    const errors = await Promise.all(pending);
    const failed = errors.flatMap((err, i) => (err === null ? [] : [i]));
    for (const i of failed) expect(isConnectionFailure(errors[i]), `request ${i}: ${String(errors[i])}`).toBe(true);
    // only what had been sent can fail: the killed request and those pipelined behind it, in its
    // transaction and in the one the lane pipelined behind that (two on the wire at most)
    expect(failed.length).toBeGreaterThanOrEqual(1);
    expect(failed.length).toBeLessThanOrEqual(2 * depth);
    expect(lanes.sent.pipelined).toBeGreaterThan(0);
    expect(failed).toEqual(failed.map((_, k) => k)); // the first ones, in order
    // the client's resend (same client_op_id): every op applied exactly once, the killed one included
    for (const i of failed) {
      const [row] = await requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users.editor!) }, MUTATE, [canvasId, ops[i]!, create(`k${i}`)]);
      expect(row!.r.status).toBe('success');
    }
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id).sort()).toEqual([...ops].sort());
    expect(log.map((r) => r.canvas_seq)).toEqual(log.map((_, k) => k + 1));
    expect(lanes.size).toBe(0);
  });

  it('two processes\' lanes on one canvas: every operation once, canvas_seq gap-free', async () => {
    const { users, canvasId } = await createCanvas(fx.db.sql, ['editor']);
    const [a, b] = [fx.pool(3), fx.pool(3)];
    const ops = Array.from({ length: 40 }, (_, i) => `lane-two-${i}-${randomUUID()}`);
    const answers = await Promise.all(ops.map((op, i) => requestStatement<Row>(i % 2 === 0 ? a.lanes : b.lanes, canvasId,
      { claims: claimsFor(users.editor!) }, MUTATE, [canvasId, op, create(`t${i}`)])));
    expect(new Set(answers.map(([row]) => row!.pid)).size).toBe(2);
    // each process's own requests apply in the order it sent them
    for (const parity of [0, 1]) {
      const seqs = answers.filter((_, i) => i % 2 === parity).map(([row]) => Number(row!.r.canvas_seq));
      expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    }
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id).sort()).toEqual([...ops].sort());
    expect(log.map((r) => r.canvas_seq)).toEqual(ops.map((_, k) => k + 1));
  });

  it('two processes, backends killed at random under load, clients resending on failure: every op applied exactly once, gap-free, no hang', async () => {
    const { users, canvasId } = await createCanvas(fx.db.sql, ['editor', 'admin']);
    const [a, b] = [fx.pool(2), fx.pool(2)];
    const ops = Array.from({ length: 80 }, (_, i) => ({ id: `lane-storm-${i}-${randomUUID()}`, user: i % 2 === 0 ? users.editor! : users.admin! }));
    let resent = 0;
    const deadline = Date.now() + 25_000;
    // what a client does on a 503 (its connection was lost): send the same op again
    const until = async (i: number): Promise<Answer> => {
      for (;;) {
        try {
          const [row] = await requestStatement<Row>(i % 2 === 0 ? a.lanes : b.lanes, canvasId, { claims: claimsFor(ops[i]!.user) },
            MUTATE, [canvasId, ops[i]!.id, create(`s${i}`)]);
          return row!.r;
        } catch (err) {
          if (!isConnectionFailure(err) || Date.now() > deadline) throw err;
          resent++;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      }
    };
    const pending = ops.map((_, i) => new Promise((resolve) => setTimeout(resolve, i * 4)).then(() => until(i)));
    // 12 kills of a random backend of either process, 40-100 ms apart, while the ops are sent
    const storm = (async () => {
      let kills = 0;
      for (let k = 0; k < 12; k++) {
        await new Promise((resolve) => setTimeout(resolve, 40 + Math.random() * 60));
        const [{ killed }] = await fx.admin`select count(pg_terminate_backend(pid))::int as killed from (select pid from pg_stat_activity
          where application_name in (${a.app}, ${b.app}) order by random() limit 1) x` as unknown as [{ killed: number }];
        kills += killed;
      }
      return kills;
    })();
    const [answers, kills] = await Promise.all([Promise.all(pending), storm]);
    expect(kills).toBeGreaterThan(2);
    expect(resent).toBeGreaterThan(0);
    // a resend of an op that had applied is answered as a duplicate with its original numbers
    answers.forEach((r, i) => expect(r.status, `op ${i}`).toBe('success'));
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id).sort()).toEqual(ops.map((o) => o.id).sort());
    expect(log.map((r) => r.canvas_seq)).toEqual(ops.map((_, k) => k + 1));
    const byOp = new Map(log.map((r) => [r.client_op_id, r.canvas_seq]));
    answers.forEach((r, i) => expect(Number(r.canvas_seq), `op ${i}`).toBe(byOp.get(ops[i]!.id)));
    expect(a.lanes.size + b.lanes.size).toBe(0);
  }, 60_000);

  it('a server that cannot be reached fails the lane\'s requests and keeps no lane; the next request tries again', async () => {
    const unreachable = postgres('postgres://postgres@127.0.0.1:1/potentia', { max: 1, connect_timeout: 2, onnotice: () => {} });
    try {
      const lanes = new CanvasLanes(unreachable);
      const key = randomUUID();
      const outcomes = await Promise.allSettled(Array.from({ length: 3 }, () => requestStatement(lanes, key, { claims: { role: 'anon' } }, 'select 1', [])));
      outcomes.forEach((o) => expect(o).toMatchObject({ status: 'rejected', reason: { code: 'ECONNREFUSED' } }));
      expect(lanes.size).toBe(0);
      await expect(requestStatement(lanes, key, { claims: { role: 'anon' } }, 'select 1', [])).rejects.toMatchObject({ code: 'ECONNREFUSED' });
      expect(lanes.size).toBe(0);
    } finally {
      await unreachable.end({ timeout: 0 });
    }
  });

  it('refuses a depth that is not a whole number of at least 1', () => {
    expect(() => new CanvasLanes(fx.db.sql, { depth: 0 })).toThrow(RangeError);
    expect(() => new CanvasLanes(fx.db.sql, { depth: 1.5 })).toThrow(RangeError);
  });
});
