// Creating a workspace or a canvas with a client-chosen id (api.create_workspace's p_workspace_id,
// api.create_canvas's p_canvas_id; `workspace_id` / `canvas_id` in the HTTP body): a create whose
// answer is lost can be sent again without making a second row. Found by an attacker killing
// database connections under load: a connection dropped during COMMIT was answered 503 with
// Retry-After while the row was committed, and the client's retry created a second one.
//  - two transactions creating one id at once make one row: the second waits for the first, then
//    answers its row (or creates it, if the first rolled back);
//  - through real HTTP, with the server's database connection reset right after Postgres answered
//    COMMIT (tests/helpers/commit-loss-proxy.ts): the create is answered 503, its row exists, and
//    the same body sent again is answered 201 with that row, one row and one audit row in all;
//  - @potentia/client does that by itself: its create chooses the id, and sends the request again
//    with it while the outcome is unknown (503), also past the rate limit its lost attempt spent.
import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPotentiaClient, PotentiaError } from '../../packages/client/src/index.ts';
import { testDatabaseUrl } from '../../src/config.ts';
import { apiKeys } from '../../src/dev.ts';
import type { Server } from '../../src/server.ts';
import { startCommitLossProxy, type CommitLossProxy } from '../helpers/commit-loss-proxy.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { callAs, claimsFor, createCanvas, createUser } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';
import { awayFromWindowEdge, until } from '../helpers/wait.ts';

const db = testDatabase(4);
afterAll(() => db.close());

/** The rows a create of `id` left: the canvas or workspace rows with that id, and their create audit rows. */
async function footprint(kind: 'canvas' | 'workspace', id: string): Promise<{ rows: number; audited: number }> {
  const [row] = kind === 'canvas'
    ? await db.sql`select (select count(*)::int from app.canvases where canvas_id = ${id}) as rows,
                          (select count(*)::int from app.system_audit where action = 'canvas.create' and entity_id = ${id}) as audited`
    : await db.sql`select (select count(*)::int from app.workspaces where workspace_id = ${id}) as rows,
                          (select count(*)::int from app.system_audit where action = 'workspace.create' and entity_id = ${id}) as audited`;
  return { rows: row!.rows as number, audited: row!.audited as number };
}

/** The error of a rejected promise as {code, field} (PX errors carry the code as hint, the field in detail). */
const refusal = (p: Promise<unknown>) => p.then(() => null, (err: { hint?: string; detail?: string }) =>
  ({ code: err.hint, field: (JSON.parse(err.detail ?? '{}') as { field?: string }).field }));

describe('two transactions creating one id at once', () => {
  /** Runs `api.<fn>(args)` as `user` in a transaction of its own, left open: the caller commits or rolls back. */
  async function openCreate(user: string, fn: 'create_canvas' | 'create_workspace', args: unknown[]) {
    const tx = await reservedTransaction(db.sql);
    try {
      await tx.conn`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify(claimsFor(user))}, true)`;
      const params = args.map((_, i) => `$${i + 1}`).join(', ');
      const [row] = await tx.conn.unsafe(`select api.${fn}(${params}) as result`, args as never[]);
      return { tx, result: row!.result as Record<string, unknown> };
    } catch (err) {
      await tx.release();
      throw err;
    }
  }

  it('canvas: the second waits for the first, then answers the row the first committed (one row, audited once)', async () => {
    const { workspaceId, users } = await createCanvas(db.sql);
    const id = randomUUID();
    const first = await openCreate(users.owner!, 'create_canvas', [workspaceId, 'Race', { a: 1 }, id]);
    try {
      const second = callAs(db.sql, users.owner!, 'create_canvas', [workspaceId, 'Race', { a: 1 }, id]);
      await first.tx.waitedFor('the second create waiting for the first one\'s row');
      await first.tx.end('commit');
      expect(await second).toEqual(first.result);
      expect(first.result).toEqual({ canvas_id: id });
    } finally {
      await first.tx.release();
    }
    expect(await footprint('canvas', id)).toEqual({ rows: 1, audited: 1 });
  });

  it('canvas: when the first rolls back, the second creates it (one row, audited once)', async () => {
    const { workspaceId, users } = await createCanvas(db.sql);
    const id = randomUUID();
    const first = await openCreate(users.owner!, 'create_canvas', [workspaceId, 'Race', {}, id]);
    try {
      const second = callAs(db.sql, users.owner!, 'create_canvas', [workspaceId, 'Race', {}, id]);
      await first.tx.waitedFor('the second create waiting for the first one\'s row');
      await first.tx.end('rollback');
      expect(await second).toEqual({ canvas_id: id });
    } finally {
      await first.tx.release();
    }
    expect(await footprint('canvas', id)).toEqual({ rows: 1, audited: 1 });
  });

  it('workspace: the second answers the first one\'s Workspace; another user racing for the id gets conflict, writing nothing', async () => {
    const maker = await createUser(db.sql, 'race');
    const rival = await createUser(db.sql, 'rival');
    const id = randomUUID();
    const first = await openCreate(maker, 'create_workspace', ['Race', id]);
    try {
      const second = callAs(db.sql, maker, 'create_workspace', [' Race ', id]);
      const other = refusal(callAs(db.sql, rival, 'create_workspace', ['Race', id]));
      await first.tx.waitedFor('the other creates waiting for the first one\'s row');
      await until(async () => (await db.sql`select count(*)::int as n from pg_stat_activity
        where ${first.tx.pid}::int = any(pg_blocking_pids(pid))`)[0]!.n === 2, 10_000, 'both creates waiting for the first one\'s row');
      await first.tx.end('commit');
      expect(await second).toEqual(first.result);
      expect(await other).toEqual({ code: 'conflict', field: 'workspace_id' });
    } finally {
      await first.tx.release();
    }
    expect(first.result).toMatchObject({ workspace_id: id, name: 'Race', role: 'owner', created_by: maker });
    expect(await footprint('workspace', id)).toEqual({ rows: 1, audited: 1 });
    const members = await db.sql`select user_id from app.workspace_members where workspace_id = ${id}`;
    expect(members.map((m) => m.user_id)).toEqual([maker]);
  });
});

/** A server whose database connections go through a proxy that can lose a COMMIT's answer. */
async function serverBehindProxy(profile: 'development' | 'standard') {
  const url = new URL(testDatabaseUrl());
  const proxy = await startCommitLossProxy(Number(url.port || 5432));
  const server = await startTestServer({ databaseUrl: databaseUrlThrough(proxy, url), profile });
  return { proxy, server };
}

describe('through HTTP, the answer to COMMIT lost', () => {
  let proxy: CommitLossProxy;
  let server: Server;
  beforeAll(async () => {
    ({ proxy, server } = await serverBehindProxy('development')); // endpoint limits 100x: the resend is not refused for the rate
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await proxy?.close();
  });

  const post = async (path: string, token: string, body: unknown) => {
    const res = await fetch(`${server.url}${path}`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() as Record<string, any> };
  };

  it('POST /api/v1/canvas with canvas_id: 503 though committed, and the resend answers 201 with the same canvas: one row, one audit row', async () => {
    const { workspaceId, users } = await createCanvas(db.sql);
    const token = await tokenFor(server, users.owner!, { role: 'authenticated' });
    const id = randomUUID();
    const body = { workspace_id: workspaceId, title: 'Lost answer', settings: { grid: true }, canvas_id: id };

    const lost = proxy.loseCommitAnswer(id);
    const first = await post('/api/v1/canvas', token, body);
    expect(first).toMatchObject({ status: 503, retryAfter: '1', body: { error: { code: 'unavailable' } } });
    await lost;
    expect(await footprint('canvas', id), 'the 503 was answered after COMMIT: the canvas exists').toEqual({ rows: 1, audited: 1 });

    const resent = await post('/api/v1/canvas', token, body);
    expect(resent).toMatchObject({ status: 201, body: { canvas_id: id } });
    expect(await footprint('canvas', id)).toEqual({ rows: 1, audited: 1 });
    const [canvas] = await db.sql`select title, settings, created_by from app.canvases where canvas_id = ${id}`;
    expect(canvas).toEqual({ title: 'Lost answer', settings: { grid: true }, created_by: users.owner });
    expect(Number((await db.sql`select count(*) from app.canvases where workspace_id = ${workspaceId} and title = 'Lost answer'`)[0]!.count)).toBe(1);

    // the same id with another title is not that create: refused, nothing written
    expect(await post('/api/v1/canvas', token, { ...body, title: 'Another' }))
      .toMatchObject({ status: 409, body: { error: { code: 'conflict', field: 'title' } } });
    // nor is it anyone else's to take
    const other = await createUser(db.sql, 'other');
    const stranger = await tokenFor(server, other, { role: 'authenticated' });
    const { workspace_id: theirs } = await callAs(db.sql, other, 'create_workspace', ['Theirs']);
    expect(await post('/api/v1/canvas', stranger, { ...body, workspace_id: theirs }))
      .toMatchObject({ status: 409, body: { error: { code: 'conflict', field: 'canvas_id' } } });
    expect(await footprint('canvas', id)).toEqual({ rows: 1, audited: 1 });
  });

  it('POST /api/v1/workspaces with workspace_id: 503 though committed, and the resend answers the same Workspace', async () => {
    const user = await createUser(db.sql, 'lost');
    const token = await tokenFor(server, user, { role: 'authenticated' });
    const id = randomUUID();

    const lost = proxy.loseCommitAnswer(id);
    const first = await post('/api/v1/workspaces', token, { name: 'Lost answer', workspace_id: id });
    expect(first).toMatchObject({ status: 503, body: { error: { code: 'unavailable' } } });
    await lost;
    expect(await footprint('workspace', id)).toEqual({ rows: 1, audited: 1 });

    const resent = await post('/api/v1/workspaces', token, { name: 'Lost answer', workspace_id: id });
    expect(resent).toMatchObject({ status: 201, body: { workspace_id: id, name: 'Lost answer', role: 'owner', created_by: user } });
    expect(await footprint('workspace', id)).toEqual({ rows: 1, audited: 1 });
    const [{ n }] = await db.sql`select count(*)::int as n from app.workspaces where created_by = ${user}` as unknown as [{ n: number }];
    expect(n).toBe(1);
    expect(await post('/api/v1/workspaces', token, { name: 'Renamed', workspace_id: id }))
      .toMatchObject({ status: 409, body: { error: { code: 'conflict', field: 'name' } } });
  });

  it('without an id, as before: the server chooses one, and each request creates', async () => {
    const user = await createUser(db.sql, 'plain');
    const token = await tokenFor(server, user, { role: 'authenticated' });
    const a = await post('/api/v1/workspaces', token, { name: 'Plain' });
    const b = await post('/api/v1/workspaces', token, { name: 'Plain' });
    expect([a.status, b.status]).toEqual([201, 201]);
    expect(a.body.workspace_id).not.toBe(b.body.workspace_id);
  });
});

describe('@potentia/client creates once, whatever answer is lost', () => {
  type Sent = { path: string; body: Record<string, unknown>; status: number };
  const sent: Sent[] = [];
  const realFetch = globalThis.fetch;
  const servers: { proxy: CommitLossProxy; server: Server }[] = [];

  beforeAll(() => {
    // every POST the client sends to the functions, with the status it got: what went over the wire
    globalThis.fetch = (async (input: RequestInfo | URL, init?: RequestInit) => {
      const res = await realFetch(input, init);
      const url = new URL(input instanceof Request ? input.url : String(input));
      if ((init?.method ?? 'GET') === 'POST' && url.pathname.startsWith('/functions/v1/')) {
        sent.push({ path: url.pathname, body: JSON.parse(String(init!.body)) as Record<string, unknown>, status: res.status });
      }
      return res;
    }) as typeof fetch;
  });
  afterAll(async () => {
    globalThis.fetch = realFetch;
    for (const { server, proxy } of servers) {
      await server.stop();
      await proxy.close();
    }
  });

  async function signedInClient(profile: 'development' | 'standard') {
    const behind = await serverBehindProxy(profile);
    servers.push(behind);
    const client = createPotentiaClient({ url: behind.server.url, anonKey: (await apiKeys(behind.server.deps.config)).anon, WebSocket,
      auth: { persistSession: false, autoRefreshToken: false } });
    const user = await client.auth.signUp(`creates-${randomUUID()}@example.com`, 'correct horse battery');
    return { ...behind, client, user };
  }

  it('workspaces.create: the request answered 503 after COMMIT is sent again with the same workspace_id; one workspace', async () => {
    const { proxy, client, user } = await signedInClient('development');
    const name = `Client ${randomUUID()}`;
    const lost = proxy.loseCommitAnswer(name);
    sent.length = 0;
    const workspace = await client.workspaces.create(name);
    expect(sent.map((s) => s.status)).toEqual([503, 201]);
    await lost;
    expect(new Set(sent.map((s) => s.body.workspace_id))).toEqual(new Set([workspace.workspace_id]));
    expect(workspace).toMatchObject({ name, role: 'owner', created_by: user.id });
    const rows = await db.sql`select workspace_id from app.workspaces where name = ${name}`;
    expect(rows.map((r) => r.workspace_id)).toEqual([workspace.workspace_id]);
    expect(await footprint('workspace', workspace.workspace_id)).toEqual({ rows: 1, audited: 1 });
  }, 60_000);

  it('canvases.create on the standard limits (one canvas per 10 s): 503, then 429 (the lost attempt counted), then the same canvas', async () => {
    const { proxy, client } = await signedInClient('standard');
    const { workspace_id } = await client.workspaces.create('Client canvases');
    const title = `Client ${randomUUID()}`;
    await awayFromWindowEdge(10, 5_000); // the first resend (after the 503's 1 s) falls in the window the lost attempt counted in
    const lost = proxy.loseCommitAnswer(title);
    sent.length = 0;
    const { canvas_id } = await client.canvases.create(workspace_id, title);
    const creates = sent.filter((s) => s.path === '/functions/v1/canvas');
    expect(creates.map((s) => s.status)).toEqual([503, 429, 201]);
    await lost;
    expect(creates.map((s) => s.body)).toEqual(creates.map(() => ({ workspace_id, title, canvas_id })));
    const rows = await db.sql`select canvas_id from app.canvases where workspace_id = ${workspace_id}`;
    expect(rows.map((r) => r.canvas_id)).toEqual([canvas_id]);
    expect(await footprint('canvas', canvas_id)).toEqual({ rows: 1, audited: 1 });
  }, 60_000);

  it('a refusal is not sent again; an id of the caller\'s choosing is used as given', async () => {
    const { client } = await signedInClient('development');
    const { workspace_id } = await client.workspaces.create('Client ids');
    const canvasId = randomUUID();
    sent.length = 0;
    expect(await client.canvases.create(workspace_id, 'Mine', { canvasId })).toEqual({ canvas_id: canvasId });
    expect(await client.canvases.create(workspace_id, 'Mine', { canvasId })).toEqual({ canvas_id: canvasId }); // a resend of its own
    const conflict = await client.canvases.create(workspace_id, 'Other', { canvasId }).catch((err: unknown) => err);
    expect(conflict).toBeInstanceOf(PotentiaError);
    expect(conflict).toMatchObject({ code: 'conflict', field: 'title', status: 409 });
    expect(sent.map((s) => s.status)).toEqual([201, 201, 409]);
    expect(await footprint('canvas', canvasId)).toEqual({ rows: 1, audited: 1 });
  }, 60_000);
});

// The id a client chooses is the row's id for good, and the first caller to send one holds it:
// ids another caller can compute, such as the nil UUID 00000000-…, the max UUID ffffffff-…,
// 00000000-0000-0000-0000-000000000001, or a name-based one (version 5, as the v1 upgrade's
// workspace ids), are nobody's random choice, and were created as given (over HTTP the nil and
// the max UUID passed the body's check; from SQL, as PostgREST calls it, any uuid did), the first
// user to send one holding it. A random UUID (version 4 or 7) is taken.
describe('ids no client chose at random are refused, naming the field, writing nothing', () => {
  let server: Server;
  beforeAll(async () => { server = await startTestServer(); });
  afterAll(async () => { await server?.stop(); });

  /** nil, max; versions 1 (time and node), 3 and 5 (name-based), 6 (time and node, reordered), 8 (custom) */
  const HOSTILE = ['00000000-0000-0000-0000-000000000000', 'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
    'a0eebc99-9c0b-1ef8-8bb6-6bb9bd380a11', 'a0eebc99-9c0b-3ef8-8bb6-6bb9bd380a11', 'a0eebc99-9c0b-5ef8-8bb6-6bb9bd380a11',
    '1ef8a0ee-bc99-6c0b-8bb6-6bb9bd380a11', 'a0eebc99-9c0b-8ef8-8bb6-6bb9bd380a11'];
  /** past the body's check too: version 0, variant 00 (NCS), version 9, variant 111 (reserved) */
  const SQL_ONLY = ['00000000-0000-0000-0000-000000000001', 'a0eebc99-9c0b-4ef8-0bb6-6bb9bd380a11',
    'a0eebc99-9c0b-9ef8-8bb6-6bb9bd380a11', 'a0eebc99-9c0b-4ef8-ebb6-6bb9bd380a11'];

  /** Every row a create of `id` could leave, and the caller's audit rows. */
  async function written(id: string, user: string) {
    const [row] = await db.sql`select (select count(*)::int from app.workspaces where workspace_id = ${id}::uuid)
      + (select count(*)::int from app.canvases where canvas_id = ${id}::uuid) as rows,
      (select count(*)::int from app.system_audit where entity_id = lower(${id}) or user_id = ${user}::uuid) as audited`;
    return row;
  }

  it('POST /api/v1/workspaces and /api/v1/canvas: 400 invalid_input, field workspace_id / canvas_id', async () => {
    for (const id of HOSTILE) {
      const user = await createUser(db.sql, 'hostile');
      const token = await tokenFor(server, user, { role: 'authenticated' });
      const post = async (path: string, body: unknown) => {
        const res = await fetch(`${server.url}${path}`, {
          method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
        });
        return { status: res.status, body: await res.json() as Record<string, any> };
      };
      expect(await post('/api/v1/workspaces', { name: 'Squat', workspace_id: id }), id)
        .toMatchObject({ status: 400, body: { error: { code: 'invalid_input', field: 'workspace_id' } } });
      const { workspace_id: mine } = await callAs(db.sql, user, 'create_workspace', ['Mine']);
      expect(await post('/api/v1/canvas', { workspace_id: mine, canvas_id: id }), id)
        .toMatchObject({ status: 400, body: { error: { code: 'invalid_input', field: 'canvas_id' } } });
      expect(await written(id, user)).toEqual({ rows: 0, audited: 1 }); // Mine's workspace.create alone
    }
  });

  it('a random UUID of version 7 (a timestamp and random bits) is taken, over HTTP and from SQL', async () => {
    const v7 = () => { const hex = randomUUID().replace(/-/g, ''); const ms = Date.now().toString(16).padStart(12, '0');
      return `${ms.slice(0, 8)}-${ms.slice(8, 12)}-7${hex.slice(13, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`; };
    const user = await createUser(db.sql, 'v7');
    const token = await tokenFor(server, user, { role: 'authenticated' });
    const id = v7();
    const res = await fetch(`${server.url}/api/v1/workspaces`, {
      method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Seven', workspace_id: id }),
    });
    expect({ status: res.status, id: ((await res.json()) as { workspace_id?: string }).workspace_id }).toEqual({ status: 201, id });
    const canvas = v7();
    expect(await callAs(db.sql, user, 'create_canvas', [id, 'Seven', {}, canvas])).toMatchObject({ canvas_id: canvas });
  });

  it('api.create_workspace and api.create_canvas (as PostgREST calls them): invalid_input, field workspace_id / canvas_id', async () => {
    for (const id of [...HOSTILE, ...SQL_ONLY]) {
      const user = await createUser(db.sql, 'hostile');
      expect(await refusal(callAs(db.sql, user, 'create_workspace', ['Squat', id])), id).toEqual({ code: 'invalid_input', field: 'workspace_id' });
      const { workspace_id: mine } = await callAs(db.sql, user, 'create_workspace', ['Mine']);
      expect(await refusal(callAs(db.sql, user, 'create_canvas', [mine, 'Squat', {}, id])), id).toEqual({ code: 'invalid_input', field: 'canvas_id' });
      expect(await written(id, user)).toEqual({ rows: 0, audited: 1 });
    }
  });
});
