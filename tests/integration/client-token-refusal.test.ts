import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPotentiaClient, type PotentiaClient, type PotentiaUser } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { recordFetches } from '../helpers/fetch-recorder.ts';
import { freePort } from '../helpers/free-port.ts';

// @potentia/client when the server refuses an access token the client still holds as valid: the
// server was restarted with JWT_ISSUER set (its tokens until then carried its origin as `iss`,
// which it now refuses: 401 `unauthorized`), while the refresh token, a database row, still
// works. Before, the client sent the refused token again until its refresh timer fired (an hour
// later): every call rejected `unauthorized`. Now a refusal refreshes the session once (one
// refresh for every call refused with that token) and sends the call once more; a refresh the
// server refuses too signs the user out (auth.onChange(null)) and the call rejects, no loop.
// Refresh grants are counted server-side (each one adds a row to app.refresh_tokens) and on the
// wire (the refresh requests the client sent).

const db = testDatabase(2);
let port: number;
let server: DevServer;
let anonKey: string;
const env = () => ({ PORT: String(port) });
let ada: PotentiaClient;
let bob: PotentiaClient;
let adaId: string;
let bobId: string;
let workspaceId: string;
/** Every refresh grant request (POST /auth/v1/token?grant_type=refresh_token) this process sent. */
let fetches: ReturnType<typeof recordFetches>;
const refreshRequests = () => fetches.sent.filter((r) => r.includes('/auth/v1/token') && r.includes('grant_type=refresh_token'));


const refreshRows = async (userId: string) =>
  (await db.sql<{ n: number }[]>`select count(*)::int as n from app.refresh_tokens where user_id = ${userId}`)[0]!.n;

beforeAll(async () => {
  fetches = recordFetches();
  port = await freePort();
  server = await startDevServer(env());
  anonKey = server.anonKey;
  ada = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  bob = createPotentiaClient({ url: server.url, anonKey, WebSocket, auth: { persistSession: false } });
  adaId = (await ada.auth.signUp(`refusal-ada-${randomUUID()}@example.com`, 'correct horse battery')).id;
  bobId = (await bob.auth.signUp(`refusal-bob-${randomUUID()}@example.com`, 'correct horse battery')).id;
  workspaceId = (await ada.workspaces.create('Refused')).workspace_id;
  expect(await bob.workspaces.list()).toEqual([]);
  // the same server, now with an issuer: every token issued so far is refused (wrong_issuer)
  await server.stop();
  server = await startDevServer({ ...env(), JWT_ISSUER: 'https://moved.example.com/auth/v1' });
}, 120_000);

afterAll(async () => {
  fetches?.restore();
  await ada?.auth.signOut().catch(() => {});
  await server?.stop();
  await db.close();
});

describe('@potentia/client: a token the server refuses', () => {
  it('three calls refused with the same token: one refresh, each sent once more and answered', async () => {
    const token = await ada.auth.accessToken();
    expect(await refreshRows(adaId)).toBe(1); // the sign-up's
    const before = refreshRequests().length;
    // before: each rejected `unauthorized` (the token was sent again as it was)
    const [workspaces, canvases, members] = await Promise.all([ada.workspaces.list(), ada.canvases.list(), ada.workspaces.members(workspaceId)]);
    expect(workspaces.map((w) => w.workspace_id)).toEqual([workspaceId]);
    expect(canvases).toEqual([]);
    expect(members.map((m) => m.user_id)).toEqual([adaId]);
    expect(refreshRequests().length - before).toBe(1);
    expect(await refreshRows(adaId)).toBe(2);
    expect(await ada.auth.accessToken()).not.toBe(token);
    expect(ada.auth.user()?.id).toBe(adaId);
    // the new token is taken: nothing is refreshed again
    const { canvas_id } = await ada.canvases.create(workspaceId, 'After the refresh');
    expect((await ada.canvases.list()).map((c) => c.canvas_id)).toEqual([canvas_id]);
    expect(refreshRequests().length - before).toBe(1);
    expect(await refreshRows(adaId)).toBe(2);
  }, 60_000);

  it('a refresh the server refuses too: signed out (onChange(null)), the call rejects `unauthorized`, one refresh request, no loop', async () => {
    const changes: Array<PotentiaUser | null> = [];
    bob.auth.onChange((u) => void changes.push(u));
    // the session is revoked: its refresh token no longer refreshes
    await db.sql`update app.refresh_tokens set revoked_at = now() where user_id = ${bobId}`;
    const before = refreshRequests().length;
    await expect(bob.workspaces.list()).rejects.toMatchObject({ code: 'unauthorized', status: 401 });
    expect(refreshRequests().length - before).toBe(1);
    // before: the session was kept (its token looks valid by this host's clock), the app never told
    expect(changes).toEqual([null]);
    expect(bob.auth.user()).toBeNull();
    expect(await bob.auth.accessToken()).toBeNull();
    // signed out: nothing is left to refresh
    await expect(bob.workspaces.list()).rejects.toMatchObject({ code: 'unauthorized' });
    expect(refreshRequests().length - before).toBe(1);
    expect(changes).toEqual([null]);
    expect(await refreshRows(bobId)).toBe(1); // no grant was made
  }, 60_000);
});
