import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createClient, type SupabaseClient } from '@supabase/supabase-js';
import postgres from 'postgres';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { assertMigrated } from '../../src/db/migrated.ts';
import { startPotentiaProcess, startWorkerProcess, type PotentiaProcess, type ScriptProcess } from '../helpers/chaos.ts';
import { printedAnonKey } from '../helpers/dev-server.ts';
import { createUser } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { subscribed } from '../helpers/realtime.ts';
import { waitFor } from '../helpers/worker.ts';

// The supported least-privilege split (docs/self-hosting.md, "Database"): the processes connect as
// a login role that is a member of potentia_app (made by the migrations) and owns nothing. The api,
// gateway and worker processes run on it end to end (a mutation over HTTP, the delta on a
// realtime-js private channel, the block's embed job done by the worker), the refresh-token rotation,
// the worker's crontab tasks (cleanup, cleanup_files: scheduled by Graphile Worker's cron as the
// role, and run), and the role can neither drop nor alter Potentia's tables.

const role = `potentia_test_app_${process.pid}`;
const password = 'app-role-test';
const admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
const asRole = (() => { const u = new URL(testDatabaseUrl()); u.username = role; u.password = password; return u.toString(); })();
const processes: ScriptProcess[] = [];
const clients: SupabaseClient[] = [];
let api: PotentiaProcess;
let gateway: PotentiaProcess;
let h1: H1Conn | undefined;
/** The anon key the api process printed at its start. */
const anonKey = () => printedAnonKey(api);

// The worker's crontab (src/config.ts WORKER_CRONTAB's tasks and options), each item with an id of
// its own and a backfill: known as if it last ran 3 minutes ago, so the worker's cron schedules
// the missed minutes at once (graphile-worker cron.js registerAndBackfillItems, the statement its
// every tick runs) instead of at the next minute boundary.
const cronIds = ['app_role_cleanup', 'app_role_cleanup_files'];
const crontab = `* * * * * cleanup ?max=1&jobKey=cleanup&fill=2m&id=${cronIds[0]}\n`
  + `* * * * * cleanup_files ?max=1&jobKey=cleanup_files&fill=2m&id=${cronIds[1]}`;
// what those tasks find to do: an expired refresh token (cleanup), an upload never completed (cleanup_files)
const expiredToken = `app-role-expired-${randomUUID()}`;
let abandonedFile = '';
/** The database's clock before the worker started: failures of the tasks after it are this file's. */
let since: Date;
// the worker's bucket: the local S3-compatible server it runs (src/storage/config.ts)
const filesDir = mkdtempSync(join(tmpdir(), 'potentia-app-role-files-'));

beforeAll(async () => {
  await admin.unsafe(`drop role if exists ${role}`);
  // as docs/self-hosting.md has the DBA create it
  await admin.unsafe(`create role ${role} login replication bypassrls password '${password}' in role potentia_app`);
  const user = await createUser(admin, 'app-role-cron');
  await admin`insert into app.refresh_tokens (token_hash, family_id, user_id, expires_at)
              values (${expiredToken}, ${randomUUID()}, ${user}, now() - interval '1 second')`;
  const [file] = await admin`insert into app.files (uploaded_by, object_key, filename, content_type, size_bytes, created_at)
                             values (${user}, ${`canvas/app-role/${randomUUID()}`}, 'never.txt', 'text/plain', 3, now() - interval '1 day')
                             returning file_id`;
  abandonedFile = file!.file_id as string;
  const [clock] = await admin`select now() as now`;
  since = clock!.now as Date;
  await admin`delete from graphile_worker._private_known_crontabs where identifier = any(${cronIds})`;
  await admin`insert into graphile_worker._private_known_crontabs (identifier, known_since, last_execution)
              select unnest(${cronIds}::text[]), now() - interval '1 hour', now() - interval '3 minutes'`;
  const env = { DATABASE_URL: asRole, LOG_LEVEL: 'warn', POTENTIA_PROFILE: 'development', WORKER_MODE: 'off' };
  api = await startPotentiaProcess({ ...env, POTENTIA_ROLE: 'api' });
  processes.push(api);
  gateway = await startPotentiaProcess({ ...env, POTENTIA_ROLE: 'gateway' });
  processes.push(gateway);
  processes.push(await startWorkerProcess({
    DATABASE_URL: asRole, LOG_LEVEL: 'warn', NODE_ENV: 'test', EMBEDDING_PROVIDER: 'local', EMBEDDING_BATCH_WINDOW_MS: '0',
    WORKER_HEARTBEAT_MS: '300', WORKER_POLL_INTERVAL_MS: '200', WORKER_CRONTAB: crontab, EMBED_DEBOUNCE_MS: '100', EMBED_DRAIN_INTERVAL_MS: '100',
    POTENTIA_LOCAL_S3_DIR: filesDir,
  }));
}, 120_000);
afterAll(async () => {
  for (const c of clients) await c.removeAllChannels();
  h1?.ws.close();
  await Promise.all(processes.map((p) => p.stop()));
  // its leftovers (a worker's heartbeat row names no role; slots and connections end with the processes)
  await admin.unsafe(`drop role if exists ${role}`);
  await admin`delete from graphile_worker._private_known_crontabs where identifier = any(${cronIds})`;
  if (abandonedFile) await admin`delete from app.files where file_id = ${abandonedFile}`;
  await admin.end();
  rmSync(filesDir, { recursive: true, force: true });
});

describe('a login role in potentia_app, not the owner', () => {
  it('passes the start check', async () => {
    await expect(assertMigrated(asRole)).resolves.toBeUndefined();
  });

  it('the api and the gateway are ready (the gateway: its replication stream up, REPLICATION on the login role)', async () => {
    for (const p of [api, gateway]) {
      const res = await waitFor(`${p.url}/ready`, async () => {
        const r = await fetch(`${p.url}/ready`);
        return r.status === 200 ? r : undefined;
      }, 30_000, 200); // a stream waits for transactions open anywhere on the server before its slot is made
      expect(res.status).toBe(200);
    }
  }, 70_000);

  it('runs api, gateway and worker: a mutation over HTTP, its delta on a realtime-js private channel and on H1, an H1 mutation, the embed job', async () => {
    const client = (url: string) => {
      const c = createClient(url, anonKey(), {
        auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
        realtime: { transport: WebSocket as never },
      });
      clients.push(c);
      return c;
    };
    const http = client(api.url);
    const { data: signedUp, error } = await http.auth.signUp({ email: `app-role-${randomUUID()}@example.com`, password: 'correct horse battery' });
    expect(error).toBeNull();
    const token = signedUp.session!.access_token;
    const call = async (path: string, body: unknown) => {
      const res = await fetch(`${api.url}/functions/v1/${path}`, {
        method: 'POST', headers: { apikey: anonKey(), authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
      });
      const json = await res.json() as any;
      expect(res.status, JSON.stringify(json)).toBeLessThan(300);
      return json;
    };
    const workspace = await call('workspaces', { name: 'Least privilege' });
    const { canvas_id: canvasId } = await call('canvas', { workspace_id: workspace.workspace_id, title: 'Plans' });

    // the realtime client talks to the gateway process (the access checks run as the connecting role there)
    const live = client(gateway.url);
    await live.realtime.setAuth(token);
    const received: any[] = [];
    const channel = live.channel(`canvas:${canvasId}`, { config: { private: true } })
      .on('broadcast', { event: 'block_op' }, ({ payload }) => { received.push(payload); });
    expect((await subscribed(channel)).status).toBe('SUBSCRIBED');
    // H1's join also checks the canvas role as the connecting role (internal.can_write_role)
    h1 = await openH1(gateway.url, canvasId, token, '&since_canvas_seq=0'); // deltas from the start (a replay, then live)
    expect(await h1.next((m) => m.type === 'hello')).toMatchObject({ canvas_id: canvasId, can_write: true });

    const text = `least privilege ${randomUUID()}`;
    const clientOpId = randomUUID();
    const result = await call(`canvas/${canvasId}/mutate`, { action: 'create', client_op_id: clientOpId, patch: { type: 'text', content: { text } } });
    expect(result.status).toBe('success');
    const delta = await waitFor('the delta on the private channel', async () => received.find((p) => p.client_op_id === clientOpId), 15_000, 50);
    expect(delta).toMatchObject({ action: 'create', block: { content: { text } } });
    expect(JSON.stringify(await h1.next((m) => m.type === 'delta'))).toContain(text);
    // and a mutation over H1 (the gateway's write path)
    const h1Op = randomUUID();
    h1.send({ type: 'mutate', client_op_id: h1Op, action: 'create', patch: { type: 'text', content: { text: 'over H1' } } });
    expect(await h1.next((m) => m.type === 'ack')).toMatchObject({ client_op_id: h1Op, status: 'success' });

    const blockId = result.block_id ?? delta.block.block_id;
    await waitFor('the worker to embed the block', async () => {
      const [b] = await admin`select embedded_hash is not null and embedded_hash = content_hash as ok from app.blocks where block_id = ${blockId}`;
      return b?.ok;
    }, 20_000, 200);
  }, 60_000);

  it('rotates refresh tokens (POST /auth/v1/token?grant_type=refresh_token): a successor each time, the same one for a resend within the reuse interval', async () => {
    const auth = async (path: string, init: { body?: unknown; token?: string } = {}) => {
      const res = await fetch(`${api.url}/auth/v1/${path}`, {
        method: init.body === undefined ? 'GET' : 'POST',
        headers: { apikey: anonKey(), 'content-type': 'application/json', ...(init.token ? { authorization: `Bearer ${init.token}` } : {}) },
        body: init.body === undefined ? undefined : JSON.stringify(init.body),
      });
      const json = await res.json() as any;
      expect(res.status, `${path}: ${JSON.stringify(json)}`).toBe(200);
      return json;
    };
    const signedUp = await auth('signup', { body: { email: `app-role-refresh-${randomUUID()}@example.com`, password: 'correct horse battery' } });
    const refresh = (token: string) => auth('token?grant_type=refresh_token', { body: { refresh_token: token } });
    const first = await refresh(signedUp.refresh_token);
    expect(first.refresh_token).not.toBe(signedUp.refresh_token);
    expect(first.user.id).toBe(signedUp.user.id);
    // a resend of the same token (a lost answer, two tabs) within the reuse interval: the same successor
    expect((await refresh(signedUp.refresh_token)).refresh_token).toBe(first.refresh_token);
    const second = await refresh(first.refresh_token);
    expect(second.refresh_token).not.toBe(first.refresh_token);
    // the access token it minted names a live session (GET /user: internal.auth_session_user)
    expect((await auth('user', { token: second.access_token })).id).toBe(signedUp.user.id);
    const [family] = await admin`select count(*)::int as tokens, count(used_at)::int as used, count(revoked_at)::int as revoked
                                 from app.refresh_tokens where user_id = ${signedUp.user.id}`;
    expect(family).toEqual({ tokens: 3, used: 2, revoked: 0 });
  });

  it('runs the worker\'s crontab tasks: cron schedules cleanup and cleanup_files, and they do their work', async () => {
    const state = async () => {
      const [s] = await admin`
        select (select count(*)::int from app.refresh_tokens where token_hash = ${expiredToken}) as expired_token_left,
               (select purged_at is not null from app.files where file_id = ${abandonedFile}) as file_purged,
               (select coalesce(array_agg(identifier || ' ' || coalesce(last_execution::text, 'never')), '{}')
                  from graphile_worker._private_known_crontabs where identifier = any(${cronIds})
                  and last_execution > now() - interval '3 minutes') as scheduled,
               (select coalesce(array_agg(task_identifier || ': ' || last_error), '{}') from graphile_worker.jobs
                  where task_identifier in ('cleanup', 'cleanup_files') and last_error is not null and updated_at >= ${since}) as failures`;
      return s as { expired_token_left: number; file_purged: boolean; scheduled: string[]; failures: string[] };
    };
    try {
      await waitFor('the expired token deleted and the abandoned upload purged', async () => {
        const s = await state();
        return s.expired_token_left === 0 && s.file_purged && s.scheduled.length === cronIds.length;
      }, 20_000, 200);
    } catch (err) {
      throw new Error(`${(err as Error).message}: ${JSON.stringify(await state())}`);
    }
    expect((await state()).failures).toEqual([]);
    const [file] = await admin`select status from app.files where file_id = ${abandonedFile}`;
    expect(file!.status).toBe('deleted');
  }, 30_000);

  it('runs what a canvas lane sends as the connecting role: internal.lock_callers (a transaction of several callers)', async () => {
    const sql = postgres(asRole, { max: 1, onnotice: () => {} });
    try {
      const users = (await admin<{ id: string }[]>`select id::text from auth.users limit 2`).map((u) => u.id);
      await sql.begin(async (tx) => { await tx`select internal.lock_callers(${users}::text[])`; });
    } finally {
      await sql.end();
    }
  });

  it('cannot drop or alter what the migrations made', async () => {
    const sql = postgres(asRole, { max: 1, onnotice: () => {} });
    try {
      await expect(sql`drop table app.blocks`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`alter table app.blocks add column x int`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`alter function internal.can_write_role(app.member_role) stable`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`drop table graphile_worker._private_jobs`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`create table app.x (id int)`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`create table graphile_worker.x (id int)`).rejects.toMatchObject({ code: '42501' });
      await expect(sql`alter table realtime.messages disable row level security`).rejects.toMatchObject({ code: '42501' });
    } finally {
      await sql.end();
    }
  });
});
