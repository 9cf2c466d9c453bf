// requestStatement and withRequest under pg_terminate_backend, with requests waiting for the pool:
// the case the single-request tests miss. A connection that closes while reserved is reconnected
// at once for the next waiting caller; what the closed reservation (or transaction) does next must
// not touch it. Before the fix in patches/postgres+3.4.9.patch, releasing the closed reservation
// put the reconnecting connection in the open queue and handed it to further waiting callers:
// every queued request, and every later one, failed with CONNECTION_CLOSED (a pool of one never
// recovered), and the caller the connection reconnected for waited forever; a killed transaction's
// ROLLBACK failed the query the connection was reconnecting for.
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { testDatabaseUrl } from '../../src/config.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement, withRequest } from '../../src/db/request.ts';
import { backendKillFixture } from '../helpers/db.ts';
import { claimsFor, createUser } from '../helpers/fixtures.ts';

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown } | { hang: true };

/** Settles `p` within `ms`, else reports a hang (a promise that never settles is the bug). */
const settle = <T>(p: Promise<T>, ms = 5000): Promise<Outcome<T>> => Promise.race([
  p.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })),
  new Promise<Outcome<T>>((resolve) => setTimeout(() => resolve({ hang: true }), ms)),
]);

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('requestStatement and withRequest: backends killed with callers waiting for the pool', () => {
  const fx = backendKillFixture('rsa');

  /** Kills the pool's backends running pg_sleep once `count` of them are; returns how many. */
  async function killSleeping(app: string, count: number): Promise<number> {
    await fx.running(app, 'pg_sleep', count);
    return fx.killRunning(app, 'pg_sleep');
  }

  const whoAmI = `select current_user as role, auth.uid()::text as uid, $1::int as call, pg_sleep(0.1) as pause`;
  type Who = { role: string; uid: string | null; call: number };

  /** What a request leaves on its connection for the next one: no role, claims or open transaction. */
  const bare = async (sql: postgres.Sql) => {
    // fails (25001) in a transaction that already ran a query; outside one it only warns
    await sql`set transaction isolation level serializable`;
    return sql`select current_user as role, coalesce(current_setting('request.jwt.claims', true), '') as claims`;
  };

  for (const [max, calls] of [[1, 6], [5, 12]] as const) {
    it(`pool of ${max}, ${calls} concurrent calls: the killed ones fail as connection failures, the waiting ones answer as their callers, the pool goes on`, async () => {
      const { sql, lanes, app } = fx.pool(max);
      const users = await Promise.all(Array.from({ length: calls }, () => createUser(fx.db.sql, 'rsa')));
      // a lane per call (as calls on different canvases): each needs a connection of its own
      const pending = users.map((user, call) => settle(requestStatement<Who>(lanes, `call-${call}`, { claims: claimsFor(user) }, whoAmI, [call])));
      const killed = await killSleeping(app, max);
      expect(killed).toBe(max);
      const outcomes = await Promise.all(pending);

      let failed = 0;
      outcomes.forEach((outcome, call) => {
        expect(outcome, `call ${call} must settle`).not.toHaveProperty('hang');
        if ('ok' in outcome && !outcome.ok) {
          failed++;
          expect(isConnectionFailure(outcome.error), `call ${call}: ${String(outcome.error)}`).toBe(true);
        } else {
          expect((outcome as { value: Who[] }).value, `call ${call}`).toEqual([{ role: 'authenticated', uid: users[call], call, pause: '' }]);
        }
      });
      // only the calls whose backends were killed fail: the waiting ones get a new connection
      expect(failed).toBe(killed);

      for (let call = 0; call < 3; call++) {
        const user = await createUser(fx.db.sql, 'rsa');
        const after = await settle(requestStatement<Who>(lanes, `call-${call}`, { claims: claimsFor(user) }, whoAmI, [call]));
        expect(after, `call ${call} after the kill`).toEqual({ ok: true, value: [{ role: 'authenticated', uid: user, call, pause: '' }] });
      }
      expect(await settle(bare(sql))).toMatchObject({ ok: true, value: [{ role: 'postgres', claims: ''}] });
    });
  }

  it('backends killed at random moments under load: nothing runs twice or as another caller, every call settles', async () => {
    const { sql, lanes, app } = fx.pool(3);
    const users = await Promise.all(Array.from({ length: 4 }, () => createUser(fx.db.sql, 'rsa')));
    const calls = Array.from({ length: 40 }, (_, i) => ({ user: users[i % users.length]!, name: `rsa-${randomUUID()}` }));
    // each call creates a workspace named for it, recorded with auth.uid() as created_by
    // a lane per call: calls that each need a connection of their own from a pool of 3 (canvas-lanes.test.ts kills lanes)
    const pending = calls.map(({ user, name }, i) => sleep(i * 10).then(() => settle(requestStatement<{ r: { workspace_id: string } }>(lanes, `call-${i}`,
      { claims: claimsFor(user) }, 'select api.create_workspace($1) as r, pg_sleep($2) as pause', [name, (i % 5) / 50]))));
    // a bounded storm (KILLS backends): on a loaded machine, where a new connection takes longer
    // than the gap between kills, an endless one can fail every call; what must hold then is that
    // each call settles, applied at most once and as its caller, and that the pool serves every
    // call sent once the storm is over
    const KILLS = 8;
    let settled = false;
    const storm = (async () => {
      let kills = 0;
      while (!settled && kills < KILLS) {
        // any backend of the pool: idle between requests, before BEGIN is answered, mid-statement, at COMMIT
        const [{ killed }] = await fx.admin`select count(pg_terminate_backend(pid))::int as killed from (select pid from pg_stat_activity
          where application_name = ${app} order by random() limit 1) b` as unknown as [{ killed: number }];
        kills += killed;
        await sleep(20 + Math.random() * 30);
      }
      return kills;
    })();
    const outcomes = await Promise.all(pending);
    settled = true;
    expect(await storm).toBeGreaterThan(3);

    // after the storm: every call of a concurrent burst answers, as its caller
    const later = users.flatMap((user) => [0, 1].map(() => ({ user, name: `rsa-${randomUUID()}` })));
    const laterOutcomes = await Promise.all(later.map(({ user, name }, i) => settle(requestStatement<{ r: { workspace_id: string } }>(lanes, `later-${i}`,
      { claims: claimsFor(user) }, 'select api.create_workspace($1) as r, pg_sleep($2) as pause', [name, (i % 5) / 50]))));
    laterOutcomes.forEach((outcome, i) => expect(outcome, `later call ${i}`).toMatchObject({ ok: true }));

    const all = [...calls, ...later];
    const rows = await fx.db.sql`select name, created_by::text as created_by from app.workspaces where name in ${fx.db.sql(all.map((c) => c.name))}`;
    const byName = new Map<string, string[]>();
    for (const r of rows) byName.set(r.name as string, [...(byName.get(r.name as string) ?? []), r.created_by as string]);
    later.forEach(({ user, name }, i) => expect(byName.get(name), `later call ${i}: applied once, as its caller`).toEqual([user]));
    outcomes.forEach((outcome, i) => {
      const { user, name } = calls[i]!;
      expect(outcome, `call ${i} must settle`).not.toHaveProperty('hang');
      const created = byName.get(name) ?? [];
      if ('ok' in outcome && outcome.ok) {
        expect(created, `call ${i}: applied once, as its caller`).toEqual([user]);
      } else {
        expect(isConnectionFailure((outcome as { error: unknown }).error), `call ${i}: ${String((outcome as { error: unknown }).error)}`).toBe(true);
        // a loss around COMMIT may have committed: then once, and as the caller
        expect(created.length, `call ${i}`).toBeLessThanOrEqual(1);
        created.forEach((by) => expect(by, `call ${i}`).toBe(user));
      }
    });

    const user = users[0]!;
    const after = await settle(requestStatement<Who>(lanes, 'after', { claims: claimsFor(user) }, whoAmI, [0]));
    expect(after).toEqual({ ok: true, value: [{ role: 'authenticated', uid: user, call: 0, pause: '' }] });
    expect(await settle(bare(sql))).toMatchObject({ ok: true, value: [{ role: 'postgres', claims: ''}] });
  });

  it('a failing statement (raise, statement_timeout) rolls back and leaves its connection clean', async () => {
    const { sql, lanes } = fx.pool(1);
    const user = await createUser(fx.db.sql, 'rsa');
    const name = `rsa-${randomUUID()}`;
    await expect(requestStatement(lanes, 'rsa', { claims: claimsFor(user), statementTimeoutMs: 20 },
      'select api.create_workspace($1), pg_sleep(1)', [name])).rejects.toMatchObject({ code: '57014' });
    expect(await bare(sql)).toEqual([{ role: 'postgres', claims: ''}]);
    await expect(requestStatement(lanes, 'rsa', { claims: claimsFor(user) },
      // fails after the write, at run time: 1 / 0 computed from the created row
      `select r, 1 / (r ->> 'workspace_id' is null)::int as boom from (select api.create_workspace($1) as r) w`, [name]))
      .rejects.toMatchObject({ code: '22012' });
    const [{ n }] = await fx.db.sql`select count(*)::int as n from app.workspaces where name = ${name}` as unknown as [{ n: number }];
    expect(n).toBe(0);
    // the next caller gets its own settings, the default statement_timeout among them
    const [next] = await requestStatement<{ uid: string; timeout: string }>(lanes, 'rsa', { claims: claimsFor(user) },
      `select auth.uid()::text as uid, current_setting('statement_timeout') as timeout`, []);
    expect(next).toEqual({ uid: user, timeout: '5s' });
    expect(await bare(sql)).toEqual([{ role: 'postgres', claims: ''}]);
  });

  it('withRequest killed mid-query on a pool of one: the queries waiting for the pool are answered', async () => {
    const { sql, app } = fx.pool(1);
    const user = await createUser(fx.db.sql, 'rsa');
    let attempts = 0;
    const request = settle(withRequest(sql, { claims: claimsFor(user) }, async (tx) => {
      attempts++;
      const [row] = await tx`select auth.uid()::text as uid, pg_sleep(${attempts === 1 ? 5 : 0}) as pause`;
      return row!.uid as string;
    }));
    await fx.running(app, 'pg_sleep');
    // queued behind the transaction: the first is the one the killed connection reconnects for
    const waiting = [0, 1, 2].map((i) => settle(sql`select ${i}::int as i, current_user as role`));
    await sleep(20);
    expect(await killSleeping(app, 1)).toBe(1);
    // lost before COMMIT: run again on the replaced connection
    expect(await request).toEqual({ ok: true, value: user });
    expect(attempts).toBe(2);
    expect(await Promise.all(waiting)).toEqual([0, 1, 2].map((i) => ({ ok: true, value: [{ i, role: 'postgres' }] })));
  });

  it('a connection killed while it starts (in its array types fetch) does not fail the query it connects for', async () => {
    // a scratch database: the fetch is held by locking pg_type, which would stall other tests' new connections
    const name = `potentia_rsa_types_${process.pid}`;
    const at = (database: string) => { const u = new URL(testDatabaseUrl()); u.pathname = `/${database}`; return u.toString(); };
    const root = postgres(at('postgres'), { max: 1, onnotice: () => {} });
    await root.unsafe(`drop database if exists ${name} with (force)`);
    await root.unsafe(`create database ${name}`);
    const locker = postgres(at(name), { max: 1, onnotice: () => {} });
    const app = `potentia-test-rsa-types-${process.pid}`;
    const sql = postgres(at(name), { max: 1, onnotice: () => {}, connection: { application_name: app } });
    try {
      const lock = await locker.reserve();
      await lock`begin`;
      await lock`lock table pg_catalog.pg_type in access exclusive mode`;
      const query = settle(sql`select 1 as one`);
      let killed = 0;
      for (let i = 0; i < 200 && killed === 0; i++) {
        await sleep(10);
        // from another database: a new backend here would wait for pg_type too
        killed = (await root`select pg_terminate_backend(pid) from pg_stat_activity
          where application_name = ${app} and query like '%typarray%'`).length;
      }
      expect(killed).toBe(1);
      await lock`commit`;
      lock.release();
      // the next session starts afresh and runs the query (it failed with the killed session's 57P01)
      expect(await query).toEqual({ ok: true, value: [{ one: 1 }] });
    } finally {
      await sql.end();
      await locker.end();
      await root.unsafe(`drop database if exists ${name} with (force)`);
      await root.end();
    }
  });
});
