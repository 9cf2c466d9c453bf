import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PrivateCluster } from '../../scripts/lib/private-cluster.ts';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig } from '../../src/config.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { createCanvas } from '../helpers/fixtures.ts';
import { freePort } from '../helpers/free-port.ts';
import { startMigratedCluster } from '../helpers/migrated-cluster.ts';
import { apiKey } from '../helpers/tokens.ts';
import { sleep, until } from '../helpers/wait.ts';

// PostgreSQL restarting behind PgBouncer (transaction mode, scripts/pgbouncer), and PgBouncer
// itself restarting, under a Potentia process whose DATABASE_URL is the pooler. While the server
// is down every read, mutation (canvas lanes: a reserved connection) and sign-in is answered 503
// unavailable with Retry-After, at once or after PgBouncer's query_wait_timeout (5 s): PgBouncer
// accepts the session and refuses its first query ("server login has been failing"), and
// postgres.js opened such a session again at once for the waiting query, thousands of times a
// second, and never refused a waiting reservation, so a request hung for as long as the server was
// away. After the restart, it serves, and every acknowledged mutation is in the log once.

const config = loadConfig();
/** How long a request may take to be answered while the server or the pooler is down: PgBouncer's query_wait_timeout (5 s) and then some. */
const ANSWER_BOUND_MS = 10_000;
const run = promisify(execFile);
let cluster: PrivateCluster;
let admin: postgres.Sql;
let server: PotentiaProcess;
let runDir = '';
let pgbouncerEnv: NodeJS.ProcessEnv = {};
const pgbouncer = (command: 'start' | 'stop') => run('bash', ['scripts/pgbouncer', command], { env: pgbouncerEnv });

beforeAll(async () => {
  cluster = await startMigratedCluster();
  admin = postgres(cluster.url('potentia'), { max: 1, onnotice: () => {} });
  const poolerPort = await freePort();
  runDir = mkdtempSync(join(tmpdir(), 'potentia-pgbouncer-restart-'));
  pgbouncerEnv = { ...process.env, DIRECT_DATABASE_URL: cluster.url('potentia'), PGBOUNCER_PORT: String(poolerPort), PGBOUNCER_RUN_DIR: runDir, PGBOUNCER_POOL_SIZE: '5' };
  await pgbouncer('start');
  server = await startPotentiaProcess({ DATABASE_URL: `postgres://postgres@127.0.0.1:${poolerPort}/potentia`, DIRECT_DATABASE_URL: cluster.url('potentia'),
    WORKER_MODE: 'off', NODE_ENV: 'development', PORT: '0' });
}, 120_000);

afterAll(async () => {
  await server?.stop();
  await pgbouncer('stop').catch(() => {});
  if (runDir) rmSync(runDir, { recursive: true, force: true });
  await admin?.end({ timeout: 1 });
  await cluster?.destroy();
}, 60_000);

describe('PostgreSQL and PgBouncer restart under a pooled Potentia process', () => {
  it('answers 503 with Retry-After while either is down, without hanging, and serves again after, every acknowledged mutation once', async () => {
    const { canvasId, users } = await createCanvas(admin);
    const bearer = `Bearer ${await signAccessToken(config.auth.jwtSecret, { sub: users.owner! }, { expiresInSeconds: 600 })}`;
    const anon = await apiKey(config.auth.jwtSecret, 'anon');
    const credentials = { email: `pgbouncer-restart-${randomUUID()}@test.local`, password: 'correct horse battery' };
    const auth = (path: string) => fetch(`${server.url}/auth/v1${path}`, { method: 'POST', body: JSON.stringify(credentials),
      headers: { apikey: anon, 'content-type': 'application/json' }, signal: AbortSignal.timeout(15_000) });
    expect((await auth('/signup')).status).toBe(200);

    // client_op_ids of the mutations answered 200, and of those answered otherwise (a client resends them)
    const acked: string[] = [];
    const refused: string[] = [];
    // [status, 'ok' or the error code, Retry-After]; answered within ANSWER_BOUND_MS (the request
    // hung for as long as the server was down: the 15 s abort is only there to name it)
    const request = async (kind: 'read' | 'mutate' | 'sign-in', clientOpId: string = randomUUID()) => {
      const started = performance.now();
      const res = kind === 'sign-in'
        ? await auth('/token?grant_type=password')
        : await fetch(`${server.url}/api/v1/canvas/${canvasId}${kind === 'mutate' ? '/mutate' : ''}`, {
          ...(kind === 'mutate' ? { method: 'POST', body: JSON.stringify({ action: 'create', client_op_id: clientOpId, patch: { type: 'text' } }) } : {}),
          headers: { authorization: bearer, 'content-type': 'application/json' },
          signal: AbortSignal.timeout(15_000),
        });
      const body = await res.json() as { error?: { code: string }; error_code?: string };
      expect(performance.now() - started, `${kind} answered within ${ANSWER_BOUND_MS} ms`).toBeLessThan(ANSWER_BOUND_MS);
      if (kind === 'mutate') (res.status === 200 ? acked : refused).push(clientOpId);
      // sign-in answers in GoTrue's shape: 503 unexpected_failure (supabase-js retries it)
      const code = res.status === 200 ? 'ok' : kind === 'sign-in' ? (body.error_code === 'unexpected_failure' ? 'unavailable' : body.error_code) : body.error?.code;
      return [res.status, code, res.headers.get('retry-after')];
    };
    const kinds = ['read', 'mutate', 'sign-in'] as const;
    for (const kind of kinds) expect(await request(kind)).toEqual([200, 'ok', null]);

    await cluster.stop('fast', 30);
    for (let round = 0; round < 4; round++) {
      for (const kind of kinds) expect(await request(kind), `${kind} while the server is down`).toEqual([503, 'unavailable', '1']);
      await sleep(500);
    }
    // the pooler restarts too while the server is away, then the server comes back
    await pgbouncer('stop');
    for (const kind of kinds) expect(await request(kind), `${kind} while the pooler is down`).toEqual([503, 'unavailable', '1']);
    await pgbouncer('start');
    for (const kind of kinds) expect(await request(kind), `${kind} through a fresh pooler`).toEqual([503, 'unavailable', '1']);
    await cluster.start();
    for (const kind of kinds) await until(async () => (await request(kind))[0] === 200, 30_000, `${kind} to be served again`);
    for (const kind of kinds) expect(await request(kind), `${kind} after the restart`).toEqual([200, 'ok', null]);
    // a client resends what was refused, with its client_op_id: each is applied once
    const resent = refused.splice(0);
    for (const clientOpId of resent) expect(await request('mutate', clientOpId), `${clientOpId} resent`).toEqual([200, 'ok', null]);

    const log = await admin`select client_op_id from app.block_operations where canvas_id = ${canvasId} and status = 'success'`;
    // every acknowledged mutation in the log, once, and nothing else
    expect(log.map((row) => row.client_op_id as string).sort()).toEqual([...acked].sort());
    const [blocks] = await admin`select count(*)::int as n from app.blocks where canvas_id = ${canvasId}`;
    expect(blocks!.n).toBe(acked.length);
    expect(server.exited()).toBeNull();
    expect(server.output()).not.toMatch(/unhandled|uncaught|BUG/i);
  }, 120_000);
});
