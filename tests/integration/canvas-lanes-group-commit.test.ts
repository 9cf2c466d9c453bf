// Group commit in a canvas lane (src/db/canvas-lanes.ts): the requests that queue up while the
// lane's transaction runs go together in the next one, one COMMIT for all, in callers' order (one
// caller's in arrival order). What must hold, against the real RPC: each request of a group runs as
// its own caller (role, claims, statement_timeout); a caller's several hits of its rate limit in one
// transaction each take a slot of their own; a request that fails fails alone, and the others of its group, rolled back with it, are sent
// again and apply once; a COMMIT that fails (a check deferred to it, culprit unknown) sends each
// request again alone, so only the culprit fails.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CanvasLanes, DEFAULT_LANE_DEPTH } from '../../src/db/canvas-lanes.ts';
import { requestStatement } from '../../src/db/request.ts';
import { pino } from 'pino';
import postgres from 'postgres';
import { testDatabaseUrl } from '../../src/config.ts';
import { backendKillFixture, deferredCheckTable } from '../helpers/db.ts';
import { claimsFor, createCanvasWithEditors } from '../helpers/fixtures.ts';

type Answer = { status: string; canvas_seq: number | null };
type Row = { r: Answer; xid: string; uid: string; timeout: string };

/** The mutation, with what the request ran as: its transaction, its user, its statement_timeout. */
const MUTATE = `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, $3::jsonb) as r,
  pg_current_xact_id()::text as xid, auth.uid()::text as uid, current_setting('statement_timeout') as timeout`;
/** The same, then a pause: the requests sent after it queue up in the lane meanwhile. */
const SLOW = `select m.*, pg_sleep(0.3) as pause from (${MUTATE}) m`;
const create = (text: string) => ({ type: 'text', content: { text } });

describe('canvas lanes: group commit', () => {
  const fx = backendKillFixture('lanes-group');
  // a unique check deferred to COMMIT: a request that violates it fails at its transaction's COMMIT
  const table = deferredCheckTable(() => fx.admin, 'lane_deferred');

  /** Sends request 0, waits until it runs (its pause), then sends the others: they queue up behind it. */
  const behindFirst = async <T>(app: string, count: number, send: (i: number) => Promise<T>) => {
    const first = send(0);
    await fx.running(app, 'pg_sleep(0.3)');
    return [first, ...Array.from({ length: count - 1 }, (_, i) => send(i + 1))];
  };

  /** Request indexes of one group in the order the lane sends them: by their callers' ids. */
  const byCaller = (indexes: number[], callerOf: (i: number) => string) =>
    [...indexes].sort((a, b) => (callerOf(a) < callerOf(b) ? -1 : callerOf(a) > callerOf(b) ? 1 : a - b));

  /** Request `failed` failed with SQLSTATE `code`; every other one was answered. */
  const onlyFailed = (outcomes: PromiseSettledResult<unknown>[], failed: number, code: string) => outcomes.forEach((o, i) => {
    if (i === failed) expect(o).toMatchObject({ status: 'rejected', reason: { code } });
    else expect(o, `request ${i}`).toMatchObject({ status: 'fulfilled' });
  });

  const logged = async (canvasId: string) => fx.db.sql`
    select client_op_id, actor_id::text as actor_id, canvas_seq::int as canvas_seq from app.block_operations
    where canvas_id = ${canvasId} and status = 'success' order by canvas_seq` as unknown as
    Promise<{ client_op_id: string; actor_id: string; canvas_seq: number }[]>;

  it('the requests queued behind a transaction share the next one, each as its own caller; a caller\'s several in arrival order, each hit on a slot of its own', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 6);
    // request 0 goes alone; 1-8 queue up behind it: six callers, caller 1 three times (1, 7, 8);
    // 9, caller 3's second, is one more than the depth
    const callerOf = (i: number) => users[i === 7 || i === 8 ? 1 : i === 9 ? 3 : i]!;
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = Array.from({ length: 10 }, (_, i) => `group-${i}-${randomUUID()}`);
    const answers = await Promise.all(await behindFirst(p.app, ops.length, (i) => requestStatement<Row>(lanes, canvasId,
      { claims: claimsFor(callerOf(i)), statementTimeoutMs: 4001 + i }, i === 0 ? SLOW : MUTATE, [canvasId, ops[i]!, create(`g${i}`)])));
    const rows = answers.map(([row]) => row!);
    expect(rows.map((row) => row.r.status)).toEqual(ops.map(() => 'success'));
    // the first went alone; the eight that queued meanwhile went together, in one transaction, the
    // ninth in the next, pipelined behind it (sent once the eight had run, before their COMMIT's answer)
    expect(new Set(rows.slice(1, 9).map((row) => row.xid)).size).toBe(1);
    expect(new Set([rows[0]!.xid, rows[1]!.xid, rows[9]!.xid]).size).toBe(3);
    expect(lanes.sent).toEqual({ transactions: 3, requests: 10, pipelined: 1 });
    // each ran as its caller, with its own statement_timeout, though they shared a transaction
    expect(rows.map((row) => row.uid)).toEqual(ops.map((_, i) => callerOf(i)));
    expect(rows.map((row) => row.timeout)).toEqual(ops.map((_, i) => `${4001 + i}ms`));
    // applied in the group's order (its callers', each caller's in arrival order), each logged as its caller's
    const order = [0, ...byCaller([1, 2, 3, 4, 5, 6, 7, 8], callerOf), 9];
    expect(order.map((i) => Number(rows[i]!.r.canvas_seq))).toEqual(ops.map((_, k) => k + 1));
    expect(await logged(canvasId)).toEqual(order.map((i, k) => ({ client_op_id: ops[i], actor_id: callerOf(i), canvas_seq: k + 1 })));
    // caller 1's three mutations in one transaction: three hits, three slots of its limit (docs/limits.md)
    expect(await fx.admin`select slot from app.rate_limit_slots where user_id = ${callerOf(1)} and bucket = 'mutations' order by slot`)
      .toEqual([{ slot: 1 }, { slot: 2 }, { slot: 3 }]);
    expect(lanes.size).toBe(0);
  });

  it('a caller whose request failed in a group: its others there go again behind the rest, one per transaction', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 2);
    const [honest, failing] = [users[1]!, users[2]!];
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = Array.from({ length: 6 }, (_, i) => `group-failed-caller-${i}-${randomUUID()}`);
    // 1: honest; 2-5: the failing caller, its first one failing after its writes; 5: honest again
    const callerOf = (i: number) => (i === 0 || i === 1 || i === 5 ? honest : failing);
    const outcomes = await Promise.allSettled(await behindFirst(p.app, ops.length, (i) => requestStatement<Row>(lanes, canvasId,
      { claims: claimsFor(callerOf(i)) },
      i === 0 ? SLOW : i === 2 ? `select m.*, 1 / 0 as boom from (${MUTATE}) m` : MUTATE, [canvasId, ops[i]!, create(`x${i}`)])));
    onlyFailed(outcomes, 2, '22012');
    // sent: 0; the group 1-5 (rolled back); 1 and 5 again together; 3, 4, 5 of the failing caller one
    // by one; none pipelined (nothing is sent behind a transaction whose statements failed)
    expect(lanes.sent).toEqual({ transactions: 1 + 1 + 1 + 2, requests: 1 + 5 + 2 + 2, pipelined: 0 });
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id)).toEqual([0, 1, 5, 3, 4].map((i) => ops[i]));
    // each caller's own requests still in their arrival order
    expect(log.filter((r) => r.actor_id === failing).map((r) => r.client_op_id)).toEqual([ops[3], ops[4]]);
    expect(lanes.size).toBe(0);
  });

  it('a caller\'s settings are sent once for its consecutive statements: a request with a `first` alone, a caller\'s requests together', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 1);
    const sent: string[] = [];
    const sql = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {}, debug: (_conn, query) => { sent.push(query); } });
    try {
      const lanes = new CanvasLanes(sql, { depth: 8 });
      const settingsSent = () => sent.filter((q) => q.includes(`set_config('role'`)).length;
      // a request with a `first` in a transaction of its own: both statements as the caller, its settings sent once
      const [alone] = await requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[1]!) }, MUTATE,
        [canvasId, `settings-1-${randomUUID()}`, create('s1')], { first: { text: 'select auth.uid() as first_uid', params: [] } });
      expect(alone!.uid).toBe(users[1]);
      expect(settingsSent()).toBe(1);
      // one caller's three requests with the same settings in one transaction (behind a slow one), then another caller's
      sent.length = 0;
      const ctx = { claims: claimsFor(users[1]!) };
      const slow = requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[0]!) }, SLOW, [canvasId, `settings-slow-${randomUUID()}`, create('s')]);
      await new Promise((resolve) => setTimeout(resolve, 100));
      const rows = await Promise.all([
        ...[2, 3, 4].map((i) => requestStatement<Row>(lanes, canvasId, ctx, MUTATE, [canvasId, `settings-${i}-${randomUUID()}`, create(`s${i}`)])),
        requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[0]!) }, MUTATE, [canvasId, `settings-5-${randomUUID()}`, create('s5')]),
      ]);
      await slow;
      expect(rows.map(([row]) => row!.uid)).toEqual([users[1], users[1], users[1], users[0]]);
      expect(new Set(rows.map(([row]) => row!.xid)).size).toBe(1);
      // the slow one's, then one per caller of the group (the sort puts each caller's together)
      expect(settingsSent()).toBe(1 + 2);
    } finally {
      await sql.end();
    }
  });

  it('a request with a `single` form sends it when alone in its transaction, and its `first` and own statement in a group', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 2);
    const p = fx.pool(1);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const FORM = (form: string) => `select m.*, '${form}' as form from (${MUTATE}) m`;
    const send = (user: string, tag: string) => requestStatement<Row & { form: string }>(lanes, canvasId, { claims: claimsFor(user) },
      FORM('own'), [canvasId, `single-${tag}-${randomUUID()}`, create(tag)],
      { first: { text: 'select 1', params: [] }, single: { text: FORM('single'), params: [canvasId, `single-${tag}-${randomUUID()}`, create(tag)] } });
    const [[alone]] = await Promise.all([send(users[1]!, 'alone')]);
    expect(alone!.form).toBe('single');
    const slow = requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[0]!) }, SLOW, [canvasId, `single-slow-${randomUUID()}`, create('s')]);
    await new Promise((resolve) => setTimeout(resolve, 100));
    const grouped = await Promise.all([send(users[1]!, 'g1'), send(users[2]!, 'g2')]);
    await slow;
    expect(grouped.map(([row]) => row!.form)).toEqual(['own', 'own']);
    expect(grouped[0]![0]!.xid).toBe(grouped[1]![0]!.xid);
  });

  it('the product\'s default depth is 16: sixteen queued share one transaction, the seventeenth goes in the next; one failing among sixteen, the fifteen others apply once each', async () => {
    // the default the process uses (src/db/index.ts names no depth): measured against 8 in docs/performance.md
    expect(DEFAULT_LANE_DEPTH).toBe(16);
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 8);
    const callerOf = (i: number) => users[i % users.length]!;
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql);
    // 0 alone (slow); 1-16 queue behind it and go together; 17 one more than the depth
    const ops = Array.from({ length: 18 }, (_, i) => `default-depth-${i}-${randomUUID()}`);
    const answers = await Promise.all(await behindFirst(p.app, ops.length, (i) => requestStatement<Row>(lanes, canvasId,
      { claims: claimsFor(callerOf(i)) }, i === 0 ? SLOW : MUTATE, [canvasId, ops[i]!, create(`d${i}`)])));
    const rows = answers.map(([row]) => row!);
    expect(rows.map((row) => row.r.status)).toEqual(ops.map(() => 'success'));
    expect(new Set(rows.slice(1, 17).map((row) => row.xid)).size).toBe(1);
    expect(new Set([rows[0]!.xid, rows[1]!.xid, rows[17]!.xid]).size).toBe(3);
    expect(lanes.sent).toMatchObject({ transactions: 3, requests: 18 });
    const order = [0, ...byCaller(Array.from({ length: 16 }, (_, k) => k + 1), callerOf), 17];
    expect((await logged(canvasId)).map((r) => r.client_op_id)).toEqual(order.map((i) => ops[i]));

    // a group of sixteen with one failing after its writes: it fails alone, the others go again and apply once
    const failing = ops.map((_, i) => `default-depth-fail-${i}-${randomUUID()}`).slice(0, 17);
    const outcomes = await Promise.allSettled(await behindFirst(p.app, failing.length, (i) => requestStatement<Row>(lanes, canvasId,
      { claims: claimsFor(callerOf(i)) },
      i === 0 ? SLOW : i === 9 ? `select m.*, 1 / 0 as boom from (${MUTATE}) m` : MUTATE, [canvasId, failing[i]!, create(`e${i}`)])));
    onlyFailed(outcomes, 9, '22012');
    const applied = [0, ...byCaller(Array.from({ length: 16 }, (_, k) => k + 1).filter((i) => i !== 9), callerOf)];
    const log = (await logged(canvasId)).slice(order.length);
    expect(log.map((r) => r.client_op_id)).toEqual(applied.map((i) => failing[i]));
    expect(log.map((r) => r.canvas_seq)).toEqual(applied.map((_, k) => order.length + k + 1));
    expect(lanes.size).toBe(0);
  });

  it('a request failing in a group fails alone; the others are sent again and apply once each', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 7);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = Array.from({ length: 8 }, (_, i) => `group-fail-${i}-${randomUUID()}`);
    const outcomes = await Promise.allSettled(await behindFirst(p.app, ops.length, (i) => requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[i]!) },
      // the fourth: the mutation, then a division by zero in the same statement (after its writes)
      i === 0 ? SLOW : i === 3 ? `select m.*, 1 / 0 as boom from (${MUTATE}) m` : MUTATE, [canvasId, ops[i]!, create(`f${i}`)])));
    onlyFailed(outcomes, 3, '22012');
    // the group's others, sent again: once each, in callers' order
    const applied = [0, ...byCaller([1, 2, 4, 5, 6, 7], (i) => users[i]!)];
    const log = await logged(canvasId);
    expect(log.map((r) => r.client_op_id)).toEqual(applied.map((i) => ops[i]));
    expect(log.map((r) => r.canvas_seq)).toEqual(applied.map((_, k) => k + 1));
    // the answers carry the numbers that were logged (the ones of the transaction that committed)
    const answered = applied.map((i) => Number((outcomes[i] as PromiseFulfilledResult<Row[]>).value[0]!.r.canvas_seq));
    expect(answered).toEqual(applied.map((_, k) => k + 1));
    expect(lanes.size).toBe(0);
  });

  it('a COMMIT that fails (a check deferred to it) fails only its request: the others of the group are sent alone and apply', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 5);
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = Array.from({ length: 6 }, (_, i) => `group-commit-${i}-${randomUUID()}`);
    const outcomes = await Promise.allSettled(await behindFirst(p.app, ops.length, (i) => i === 2
      // two equal keys under a unique check deferred to COMMIT: the statement succeeds, the COMMIT fails
      ? requestStatement(lanes, canvasId, { claims: claimsFor(users[i]!) }, `insert into public.${table} (k) values (1), (1)`, [])
      : requestStatement<Row>(lanes, canvasId, { claims: claimsFor(users[i]!) }, i === 0 ? SLOW : MUTATE, [canvasId, ops[i]!, create(`c${i}`)])));
    onlyFailed(outcomes, 2, '23505');
    const applied = [0, ...byCaller([1, 3, 4, 5], (i) => users[i]!)];
    expect((await logged(canvasId)).map((r) => r.client_op_id)).toEqual(applied.map((i) => ops[i]));
    expect((await fx.admin.unsafe(`select count(*)::int as n from public.${table}`))[0]!.n).toBe(0);
    expect(lanes.size).toBe(0);
  });
  it('a group whose callers\' rows cannot be locked (`lockCallers` fails): one warning with its code and canvas; every request is served, one per transaction', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 4);
    const p = fx.pool(2);
    const warnings: Record<string, unknown>[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => { warnings.push(JSON.parse(line)); } });
    // fails (22012) whenever it is sent: for a transaction of several requests
    const lanes = new CanvasLanes(p.sql, { depth: 8, lockCallers: 'select 1 / (cardinality($1::text[]) * 0 + length($2::text) * 0)', logger });
    const ops = Array.from({ length: 5 }, (_, i) => `lock-fail-${i}-${randomUUID()}`);
    const outcomes = await Promise.allSettled(await behindFirst(p.app, ops.length, (i) => requestStatement<Row>(lanes, canvasId,
      { claims: claimsFor(users[i]!) }, i === 0 ? SLOW : MUTATE, [canvasId, ops[i]!, create(`l${i}`)])));
    expect(outcomes.map((o) => o.status)).toEqual(ops.map(() => 'fulfilled'));
    // 0 alone; 1-4 as one group, whose lock failed: each again in a transaction of its own, in callers' order
    const applied = [0, ...byCaller([1, 2, 3, 4], (i) => users[i]!)];
    expect((await logged(canvasId)).map((r) => r.client_op_id)).toEqual(applied.map((i) => ops[i]));
    const xids = outcomes.map((o) => (o as PromiseFulfilledResult<Row[]>).value[0]!.xid);
    expect(new Set(xids).size).toBe(ops.length);
    expect(warnings).toMatchObject([{ level: 40, code: '22012', canvas_id: canvasId, callers: 4 }]);
    expect(lanes.size).toBe(0);
  });

  it('a stream of failing requests cannot hold another caller back: the ones rolled back with one go again on their own', async () => {
    const { users, canvasId } = await createCanvasWithEditors(fx.db.sql, 2);
    const [honest, flooding] = [users[1]!, users[2]!];
    const p = fx.pool(2);
    const lanes = new CanvasLanes(p.sql, { depth: 8 });
    const ops = Array.from({ length: 3 }, (_, i) => `steady-${i}-${randomUUID()}`);
    // behind a slow request: the honest caller's three, each followed by ten of a caller whose every
    // request fails before its RPC (as an H2 request over its endpoint limit does, in its `first`)
    const sends: ((i: number) => Promise<unknown>)[] = [
      () => requestStatement(lanes, canvasId, { claims: claimsFor(honest) }, SLOW, [canvasId, `steady-slow-${randomUUID()}`, create('s')]),
      ...ops.flatMap((op) => [
        () => requestStatement(lanes, canvasId, { claims: claimsFor(honest) }, MUTATE, [canvasId, op, create(op)]),
        ...Array.from({ length: 10 }, () => () => requestStatement(lanes, canvasId, { claims: claimsFor(flooding) }, MUTATE,
          [canvasId, `flood-${randomUUID()}`, create('f')], { first: { text: 'select 1 / 0', params: [] } })),
      ]),
    ];
    const outcomes = await Promise.allSettled(await behindFirst(p.app, sends.length, (i) => sends[i]!(i)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(4);
    expect(outcomes.filter((o) => o.status === 'rejected').map((o) => (o as PromiseRejectedResult).reason.code)).toEqual(Array(30).fill('22012'));
    expect((await logged(canvasId)).map((r) => r.client_op_id).slice(1)).toEqual(ops);
    // every request sent once, and each honest one at most once more (rolled back with one failing
    // request): 34 + 3, where a group open to newcomers sent each honest one again for every
    // failing request behind it; plus one group (8) pipelined behind the first transaction that
    // rolled back (after it the lane sends one at a time until it commits PIPELINE_AFTER in a row)
    expect(lanes.sent.requests).toBeLessThanOrEqual(34 + 3 + 8);
  });
});
