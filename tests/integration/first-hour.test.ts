import { randomUUID } from 'node:crypto';
import { createClient, FunctionsHttpError, type SupabaseClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { subscribed } from '../helpers/realtime.ts';

// A Supabase developer's first hour, with nothing but supabase-js and what `npm start` prints:
// the anon key from its banner, two people signing up and in, a workspace shared by email, a
// canvas, a private realtime channel each, a mutation through functions.invoke that the other
// receives, then refreshSession and signOut. The server is a real `src/main.ts` process.

let server: DevServer;
let anonKey: string;
const clients: SupabaseClient[] = [];

beforeAll(async () => {
  server = await startDevServer();
  anonKey = server.anonKey;
}, 90_000);
afterAll(async () => {
  for (const c of clients) await c.removeAllChannels();
  await server?.stop();
});

function app(): SupabaseClient {
  const client = createClient(server.url, anonKey, {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    realtime: { transport: WebSocket as never },
  });
  clients.push(client);
  return client;
}

/** functions.invoke, throwing with the server's error body when it fails. */
async function invoke<T = any>(client: SupabaseClient, path: string, options: { method?: 'GET' | 'POST' | 'PATCH'; body?: unknown } = {}): Promise<T> {
  const { data, error } = await client.functions.invoke(path, options as never);
  if (error) {
    const body = error instanceof FunctionsHttpError ? await (error.context as Response).text() : String(error);
    throw new Error(`${options.method ?? 'POST'} ${path}: ${body}`);
  }
  return data as T;
}

describe("a Supabase developer's first hour, with supabase-js only", () => {
  it('sign up, share a workspace, open the canvas channel, see the other’s edit live, refresh and sign out', async () => {
    expect(anonKey).toMatch(/^ey/);
    const alice = app();
    const bob = app();
    const password = 'correct horse battery';
    const [aliceEmail, bobEmail] = [`alice-${randomUUID()}@example.com`, `bob-${randomUUID()}@example.com`];

    // sign up, then sign in with the password (as a returning user would)
    for (const [client, email] of [[alice, aliceEmail], [bob, bobEmail]] as const) {
      const { error } = await client.auth.signUp({ email, password });
      expect(error).toBeNull();
      await client.auth.signOut();
      const { data, error: signInError } = await client.auth.signInWithPassword({ email, password });
      expect(signInError).toBeNull();
      expect(data.user?.email).toBe(email);
    }

    // alice creates a workspace, adds bob by email, and creates a canvas in it
    const workspace = await invoke(alice, 'workspaces', { method: 'POST', body: { name: 'First hour' } });
    const added = await invoke(alice, `workspaces/${workspace.workspace_id}/members`, { method: 'POST', body: { email: bobEmail, role: 'editor' } });
    expect(added.kind).toBe('member');
    const { workspaces } = await invoke(bob, 'workspaces', { method: 'GET' });
    expect(workspaces.map((w: any) => w.workspace_id)).toContain(workspace.workspace_id);
    const { canvas_id: canvasId } = await invoke(alice, 'canvas', { method: 'POST', body: { workspace_id: workspace.workspace_id, title: 'Plans' } });

    // both open the private canvas channel (anon key as apikey, each one's session as access_token).
    // realtime-js keeps one channel per topic and client (docs/realtime.md): bob's carries the
    // database events, presence and client broadcasts together, configured before subscribe()
    const received: any[] = [];
    const cursors: any[] = [];
    const bobId = (await bob.auth.getUser()).data.user!.id;
    const aliceId = (await alice.auth.getUser()).data.user!.id;
    const bobChannel = bob.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: bobId }, broadcast: { self: false, ack: true } } })
      .on('broadcast', { event: 'block_op' }, ({ payload }) => { received.push(payload); })
      .on('broadcast', { event: 'cursor' }, ({ payload }) => { cursors.push(payload); })
      .on('presence', { event: 'sync' }, () => {});
    expect(bob.channel(`canvas:${canvasId}`, { config: { private: false } })).toBe(bobChannel); // the same channel, its config kept
    const aliceChannel = alice.channel(`canvas:${canvasId}`, { config: { private: true, presence: { key: aliceId }, broadcast: { ack: true } } })
      .on('presence', { event: 'sync' }, () => {}); // a presence handler turns presence on for the join (realtime-js)
    expect((await subscribed(bobChannel)).status).toBe('SUBSCRIBED');
    expect((await subscribed(aliceChannel)).status).toBe('SUBSCRIBED');
    expect(await bobChannel.track({ name: 'Bob', cursor: { x: 1, y: 2 } })).toBe('ok');
    expect(await aliceChannel.send({ type: 'broadcast', event: 'cursor', payload: { x: 3, y: 4 } })).toBe('ok');
    const seen = Date.now() + 10_000;
    while ((!aliceChannel.presenceState()[bobId] || cursors.length === 0) && Date.now() < seen) await new Promise((r) => setTimeout(r, 50));
    expect(aliceChannel.presenceState()[bobId]).toMatchObject([{ name: 'Bob', cursor: { x: 1, y: 2 } }]);
    expect(cursors).toEqual([{ x: 3, y: 4 }]);

    // alice creates a block through functions.invoke; bob receives it on his channel
    const clientOpId = randomUUID();
    const result = await invoke(alice, `canvas/${canvasId}/mutate`, {
      method: 'POST', body: { action: 'create', client_op_id: clientOpId, patch: { type: 'text', content: { text: 'hello bob' } } },
    });
    expect(result.status).toBe('success');
    const deadline = Date.now() + 10_000;
    while (!received.some((p) => p.client_op_id === clientOpId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    const delta = received.find((p) => p.client_op_id === clientOpId);
    expect(delta).toMatchObject({ action: 'create', canvas_seq: 1, block: { content: { text: 'hello bob' } } });

    // refreshSession gives a new session that works; signOut ends it
    const before = (await alice.auth.getSession()).data.session!;
    const { data: refreshed, error: refreshError } = await alice.auth.refreshSession();
    expect(refreshError).toBeNull();
    expect(refreshed.session!.refresh_token).not.toBe(before.refresh_token);
    expect((await invoke(alice, 'canvas', { method: 'GET' })).canvases.map((c: any) => c.canvas_id)).toContain(canvasId);
    const { error: signOutError } = await alice.auth.signOut();
    expect(signOutError).toBeNull();
    const replay = await app().auth.refreshSession({ refresh_token: refreshed.session!.refresh_token });
    expect(replay.error?.status).toBe(400);
  }, 60_000);
});
