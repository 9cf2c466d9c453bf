// requestStatement (src/db/request.ts): one statement as one request transaction, BEGIN, the
// caller's settings, the statement and COMMIT written to Postgres in one go. What it must keep from
// withRequest: the statement runs as the caller and commits; a failing statement writes nothing
// and leaves the connection clean for the next request; and, its own rule, a connection lost
// mid-statement is thrown as a connection failure and never run a second time.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import postgres from 'postgres';
import { testDatabaseUrl } from '../../src/config.ts';
import { createDatabase, type Database } from '../../src/db/index.ts';
import { isConnectionFailure } from '../../src/db/faults.ts';
import { requestStatement } from '../../src/db/request.ts';
import { testDatabase } from '../helpers/db.ts';
import { claimsFor, createCanvas, createUser } from '../helpers/fixtures.ts';

describe('requestStatement: one pipelined request transaction', () => {
  let db: Database;
  let one: Database; // a pool of ONE connection: what one request leaves behind, the next one meets
  const app = `potentia-test-rs-${process.pid}`;

  beforeAll(() => {
    db = testDatabase();
    one = createDatabase(testDatabaseUrl(), { max: 1, applicationName: app });
  });
  afterAll(async () => {
    await one.close();
    await db.close();
  });

  const workspaces = async (name: string) =>
    Number((await db.sql`select count(*)::int as n from app.workspaces where name = ${name}`)[0]!.n);

  it('runs the statement as the caller (role, claims, headers) and commits it', async () => {
    const user = await createUser(db.sql, 'rs');
    const [who] = await requestStatement<{ role: string; uid: string; ua: string }>(one.lanes, 'rs',
      { claims: claimsFor(user), headers: { 'User-Agent': 'rs-test' } },
      `select current_user as role, auth.uid()::text as uid, current_setting('request.headers', true)::jsonb ->> 'user-agent' as ua`, []);
    expect(who).toEqual({ role: 'authenticated', uid: user, ua: 'rs-test' });

    const name = `rs-${randomUUID()}`;
    const [row] = await requestStatement<{ r: { workspace_id: string } }>(one.lanes, 'rs', { claims: claimsFor(user) },
      'select api.create_workspace($1) as r', [name]);
    expect(row!.r.workspace_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await workspaces(name)).toBe(1);
  });

  it('rolls a failing statement back and leaves its connection clean for the next request', async () => {
    const user = await createUser(db.sql, 'rs');
    const name = `rs-${randomUUID()}`;
    const failing = requestStatement(one.lanes, 'rs', { claims: claimsFor(user) }, 'select api.create_workspace($1), 1 / 0 as boom', [name]);
    await expect(failing).rejects.toMatchObject({ code: '22012' });
    expect(await workspaces(name)).toBe(0);
    // the same (only) connection: idle, not in a failed transaction, and no caller settings left over
    const [next] = await requestStatement<{ ok: number; uid: string | null }>(one.lanes, 'rs', { claims: claimsFor(user) },
      'select 1 as ok, auth.uid()::text as uid', []);
    expect(next).toEqual({ ok: 1, uid: user });
    // a transaction left open would still hold the caller's role and claims (set_config is local to it)
    const [bare] = await one.sql`select current_user as role, current_setting('request.jwt.claims', true) as claims`;
    expect(bare!.role).toBe('postgres');
    expect(bare!.claims ?? '').toBe('');
  });

  it('throws a connection lost mid-statement as a connection failure and does not run it again', async () => {
    const { users, canvasId } = await createCanvas(db.sql, ['editor']);
    const opId = randomUUID();
    const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    try {
      // the mutation, then a pause inside the same statement: the backend is killed in the pause,
      // after the mutation's writes and before COMMIT, so nothing may stay applied
      const call = requestStatement(one.lanes, 'rs', { claims: claimsFor(users.editor!) },
        `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, '{"type":"text","content":{"text":"lost"}}'::jsonb) as r,
                pg_sleep(5) as pause`, [canvasId, opId]);
      const outcome = call.then(() => null, (err: unknown) => err);
      let killed = 0;
      for (let i = 0; i < 100 && killed === 0; i++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        [{ killed }] = await admin`select count(pg_terminate_backend(pid))::int as killed from pg_stat_activity
          where application_name = ${app} and query like '%pg_sleep(5)%' and state = 'active'` as unknown as [{ killed: number }];
      }
      expect(killed).toBe(1);
      const err = await outcome;
      expect(err, 'the call must fail, not answer').not.toBeNull();
      expect(isConnectionFailure(err), String(err)).toBe(true);
      // rolled back, and not run again behind the caller's back (the op id is nowhere)
      await new Promise((resolve) => setTimeout(resolve, 200));
      const [{ ops }] = await admin`select count(*)::int as ops from app.block_operations where client_op_id = ${opId}` as unknown as [{ ops: number }];
      expect(ops).toBe(0);
      // the pool replaced the connection: the client's resend applies once
      const [again] = await requestStatement<{ r: { status: string } }>(one.lanes, 'rs', { claims: claimsFor(users.editor!) },
        `select api.upsert_block_atomic($1::uuid, null, 'create', $2, null, '{"type":"text","content":{"text":"resent"}}'::jsonb) as r`, [canvasId, opId]);
      expect(again!.r.status).toBe('success');
    } finally {
      await admin.end();
    }
  });

  it('refuses a caller whose role is not an API role, before touching the database', async () => {
    await expect(requestStatement(one.lanes, 'rs', { claims: { sub: randomUUID(), role: 'postgres' } }, 'select 1', []))
      .rejects.toThrow(/not an API role/);
  });
});
