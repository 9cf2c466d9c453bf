import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPotentiaClient, TimeoutError, type PotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { startSilentListener, type SilentListener } from '../helpers/silent-listener.ts';
import { until } from '../helpers/wait.ts';

// @potentia/client's deadline on its HTTP calls (createPotentiaClient's timeoutMs). Before it, a
// server that accepted a request and never answered, or a request stuck behind a database lock,
// left the app's promise pending for good. Now the call rejects with TimeoutError (code
// `timeout`); a create takes the path of any unknown outcome (sent again with the same id, so one
// row at most), any other call rejects at once. Against a real server process (a canvas create
// held behind a lock on its workspace's row, taken by another transaction) and a real TCP
// listener that accepts and never answers. Outcomes only: no duration is asserted.

const db = testDatabase(2);
let server: DevServer;
let anonKey: string;
let silent: SilentListener;

beforeAll(async () => {
  server = await startDevServer();
  anonKey = server.anonKey;
  silent = await startSilentListener();
}, 90_000);

afterAll(async () => {
  await silent?.close();
  await server?.stop();
  await db.close();
});

/** The request line and JSON body of each request the silent listener got whose line includes `path`. */
function silentlyGot(path: string): Array<{ line: string; body: Record<string, unknown> | null }> {
  return silent.connections.map((c) => c.text).filter((r) => r.split('\r\n', 1)[0]!.includes(path)).map((r) => {
    const body = r.slice(r.indexOf('\r\n\r\n') + 4);
    let parsed: Record<string, unknown> | null = null;
    try {
      parsed = JSON.parse(body) as Record<string, unknown>;
    } catch {
      // no body (a GET)
    }
    return { line: r.split('\r\n', 1)[0]!, body: parsed };
  });
}

describe('@potentia/client: a deadline on every HTTP call', () => {
  it('a server that accepts and never answers: sign-in, list and addMember reject with TimeoutError, each sent once; a create is resent with the same id', async () => {
    const { port } = silent;
    const client = createPotentiaClient({ url: `http://127.0.0.1:${port}`, anonKey, WebSocket, auth: { persistSession: false, autoRefreshToken: false }, timeoutMs: 1000 });
    /** Waits until the listener got `n` requests on `path` (a request may reach it just after its deadline rejected). */
    const got = async (path: string, n: number) => {
      await until(() => silentlyGot(path).filter((r) => r.line.startsWith('GET') || r.body !== null).length >= n, 10_000, `${n} requests on ${path}`);
      return silentlyGot(path);
    };
    const signIn = client.auth.signIn('silent@example.com', 'correct horse battery');
    await expect(signIn).rejects.toBeInstanceOf(TimeoutError);
    await expect(signIn).rejects.toMatchObject({ code: 'timeout', timeoutMs: 1000 });
    expect(await got('/auth/v1/token', 1)).toHaveLength(1);

    await expect(client.workspaces.list()).rejects.toMatchObject({ code: 'timeout', name: 'TimeoutError' });
    expect(await got('GET /functions/v1/workspaces', 1)).toHaveLength(1);

    // not safe to send again (a member added twice is a conflict): the app is told at once
    const workspaceId = randomUUID();
    await expect(client.workspaces.addMember(workspaceId, 'bob@example.com', 'editor')).rejects.toMatchObject({ code: 'timeout' });
    expect(await got(`/functions/v1/workspaces/${workspaceId}/members`, 1)).toHaveLength(1);

    // a create's outcome is unknown: it goes again with the same id, then rejects with TimeoutError
    const canvasId = randomUUID();
    await expect(client.canvases.create(workspaceId, 'Silent', { canvasId })).rejects.toBeInstanceOf(TimeoutError);
    // sent 5 times (once, and 4 resends), each with the same id
    const creates = await got('POST /functions/v1/canvas', 5);
    expect(creates.map((r) => r.body?.['canvas_id'])).toEqual([canvasId, canvasId, canvasId, canvasId, canvasId]);
    expect(new Set(creates.map((r) => JSON.stringify(r.body))).size).toBe(1);
  }, 60_000);

  it('a create stuck behind a lock on its workspace: TimeoutError; once the lock is gone, the same id makes one canvas', async () => {
    const client: PotentiaClient = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false }, timeoutMs: 400 });
    await client.auth.signUp(`timeouts-${randomUUID()}@example.com`, 'correct horse battery');
    const { workspace_id } = await client.workspaces.create('Locked');
    const canvasId = randomUUID();
    const tx = await reservedTransaction(db.sql);
    let stuck: Promise<unknown>;
    try {
      // the canvas's insert checks its workspace (a foreign key: FOR KEY SHARE), which waits for this
      await tx.conn`select 1 from app.workspaces where workspace_id = ${workspace_id} for update`;
      stuck = client.canvases.create(workspace_id, 'Behind a lock', { canvasId });
      stuck.catch(() => {});
      await tx.waitedFor('the canvas create');
      // the client's deadline, not the server's own (a statement is cut at 5 s and answered 504
      // `timeout`: before, that was the end of each attempt, 5 of them, had the lock been held)
      await expect(stuck).rejects.toMatchObject({ code: 'timeout', timeoutMs: 400, status: undefined });
      await expect(stuck).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      await tx.release();
    }
    // what the server still had of the attempts finishes (or was cut) now
    await until(async () => (await db.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock'`)[0]!.n === 0, 15_000, 'no backend waiting for a lock');
    const canvases = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from app.canvases where workspace_id = ${workspace_id}`)[0]!.n;
    expect(await canvases()).toBeLessThanOrEqual(1);
    // the app sends it again with the id it gave: the canvas, once
    expect(await client.canvases.create(workspace_id, 'Behind a lock', { canvasId })).toEqual({ canvas_id: canvasId });
    expect(await canvases()).toBe(1);
    const audits = await db.sql<{ n: number }[]>`
      select count(*)::int as n from app.system_audit where action = 'canvas.create' and entity_id::text = ${canvasId}`;
    expect(audits[0]!.n).toBe(1);
    expect((await client.canvases.list()).filter((c) => c.canvas_id === canvasId)).toHaveLength(1);
    await client.auth.signOut();
  }, 60_000);
});
