import { randomUUID } from 'node:crypto';
import WebSocket from 'ws';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { createPotentiaClient, type PotentiaClient } from '../../packages/client/src/index.ts';
import { startDevServer, type DevServer } from '../helpers/dev-server.ts';
import { testDatabase } from '../helpers/db.ts';
import { sleep } from '../helpers/wait.ts';
import { freePort } from '../helpers/free-port.ts';

// @potentia/client's access token when the client's wall clock differs from the server's (a step
// after sign-in, or a clock that was wrong all along). The token's exp is the server's wall-clock
// time; the client must refresh it shortly before the server ends it, whatever its own clock
// says: never refreshing (the clock stepped back: the server closes the canvas's socket with 4401
// and refuses the same token again) and refreshing at every call (the clock ahead: every token
// looks expired on arrival) are both defects. The server is a separate process with 60-second
// tokens; only the client's Date steps (vitest's fake Date, advancing with real time).

const TTL_S = 60;
const db = testDatabase(1);
let server: DevServer;
let anonKey: string;
const faults: unknown[] = [];
const onFault = (err: unknown) => void faults.push(err);
const clients: PotentiaClient[] = [];
/** Every H1 socket URL the clients opened (the access token is in it). */
const socketUrls: string[] = [];
class RecordingWebSocket extends WebSocket {
  constructor(url: string) {
    super(url);
    if (url.includes('/ws/canvas/')) socketUrls.push(url);
  }
}


beforeAll(async () => {
  process.on('uncaughtException', onFault);
  process.on('unhandledRejection', onFault);
  const port = await freePort();
  server = await startDevServer({ PORT: String(port), ACCESS_TOKEN_TTL_SECONDS: String(TTL_S) });
  anonKey = server.anonKey;
}, 90_000);
afterAll(async () => {
  process.off('uncaughtException', onFault);
  process.off('unhandledRejection', onFault);
  for (const c of clients) await c.auth.signOut().catch(() => {});
  await server?.stop();
  await db.close();
});
afterEach(() => void vi.useRealTimers());

function steppableWallClock(): void {
  vi.useFakeTimers({ toFake: ['Date'], shouldAdvanceTime: true, now: Date.now() });
}
const stepWallClock = (ms: number) => vi.setSystemTime(Date.now() + ms);

/** Polls with the real clock (a deadline on the stepped Date would step too). */
async function until(check: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const start = performance.now();
  while (!(await check())) {
    if (performance.now() - start > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(100);
  }
}

async function signedIn(on = server): Promise<PotentiaClient> {
  const c = createPotentiaClient({ url: on.url, anonKey, WebSocket: RecordingWebSocket, auth: { persistSession: false }, canvas: { reconnectDelayMs: () => 200 } });
  clients.push(c);
  await c.auth.signUp(`clock-${randomUUID()}@example.com`, 'correct horse battery');
  return c;
}

const tokenOf = (url: string) => new URL(url).searchParams.get('access_token');

/** Refresh grants of a user so far, and its sign-in: each adds a row (src/http/gotrue.ts, sql/auth/refresh_tokens.sql). */
const refreshRows = async (userId: string) =>
  (await db.sql<{ n: number }[]>`select count(*)::int as n from app.refresh_tokens where user_id = ${userId}`)[0]!.n;

describe('the access token when the client\'s wall clock steps', () => {
  it('a step back of an hour: the token is still refreshed before the server ends it, and the canvas stays live', async () => {
    steppableWallClock();
    const c = await signedIn();
    const { workspace_id } = await c.workspaces.create('Clock');
    const { canvas_id } = await c.canvases.create(workspace_id, 'Clock');
    const canvas = c.canvas(canvas_id);
    const errors: unknown[] = [];
    canvas.onError((e) => void errors.push(e));
    await canvas.connect();
    const first = await c.auth.accessToken();
    const opened = socketUrls.length;
    stepWallClock(-3_600_000);
    // before: the client thought its token had an hour and a minute left, so nothing refreshed it;
    // the server closed the socket (4401) when it expired, the same token was refused again, and
    // the canvas ended `unauthorized` at its next access check
    await until(() => canvas.status === 'closed' || (canvas.status === 'live' && socketUrls.length > opened && tokenOf(socketUrls.at(-1)!) !== first),
      3 * TTL_S * 1000, 'the canvas live on a socket with a fresh token (or closed)');
    expect(canvas.status).toBe('live');
    expect(await c.auth.accessToken()).not.toBe(first);
    const block = await canvas.create({ type: 'text', content: { text: 'still here' } });
    expect(block.content['text']).toBe('still here');
    expect(errors).toEqual([]);
    expect(faults).toEqual([]);
    canvas.close();
  }, 4 * TTL_S * 1000);

  it('a socket closed 4401 (its token expired by the server\'s clock, not the client\'s): the next socket carries a token refreshed once', async () => {
    steppableWallClock();
    // no refresh timer (autoRefreshToken off): only the server's refusal can make the client refresh
    const c = createPotentiaClient({ url: server.url, anonKey, WebSocket: RecordingWebSocket, auth: { persistSession: false, autoRefreshToken: false },
      canvas: { reconnectDelayMs: () => 200 } });
    clients.push(c);
    const { id } = await c.auth.signUp(`refused-socket-${randomUUID()}@example.com`, 'correct horse battery');
    // by the client's clock, now an hour back, the token has an hour left: auth-js never refreshes it itself
    stepWallClock(-3_600_000);
    const { workspace_id } = await c.workspaces.create('Refused socket');
    const { canvas_id } = await c.canvases.create(workspace_id, 'Refused socket');
    const canvas = c.canvas(canvas_id);
    const errors: unknown[] = [];
    canvas.onError((e) => void errors.push(e));
    await canvas.connect();
    const first = await c.auth.accessToken();
    expect(tokenOf(socketUrls.at(-1)!)).toBe(first);
    const opened = socketUrls.length;
    expect(await refreshRows(id)).toBe(1); // the sign-up's
    // the server closes the socket with 4401 once the token has expired (exp + 5 s), and the client reconnects
    await until(() => socketUrls.length > opened, 3 * TTL_S * 1000, 'a socket after the 4401 close');
    // before: the refused token again (refused at the upgrade, reconnect after reconnect, until an
    // access check over HTTP refreshed the session or ended the canvas)
    expect(tokenOf(socketUrls[opened]!)).not.toBe(first);
    await until(() => canvas.status === 'live', 30_000, 'the canvas live again');
    expect(socketUrls.length).toBe(opened + 1);
    expect(await refreshRows(id)).toBe(2);
    const block = await canvas.create({ type: 'text', content: { text: 'after the refusal' } });
    expect(block.content['text']).toBe('after the refusal');
    expect(await refreshRows(id)).toBe(2);
    expect(canvas.status).toBe('live');
    expect(errors).toEqual([]);
    expect(faults).toEqual([]);
    canvas.close();
  }, 4 * TTL_S * 1000);

  it('a step forward of an hour: a token refreshed once is used, not refreshed again at every call', async () => {
    // tokens of the default life (an hour): auth-js refreshes one with less than 90 s left at every call anyway
    const standard = await startDevServer();
    try {
      steppableWallClock();
      const c = await signedIn(standard);
      let refreshes = 0;
      c.supabase.auth.onAuthStateChange((event) => void (event === 'TOKEN_REFRESHED' && refreshes++));
      stepWallClock(3_600_000);
      const tokens: Array<string | null> = [];
      for (let i = 0; i < 4; i++) tokens.push(await c.auth.accessToken());
      // the first call finds the token expired by the client's clock and refreshes it; before, so
      // did every later one (the new token's exp, the server's time, was an hour behind the
      // client's clock on arrival)
      expect(refreshes).toBe(1);
      expect(new Set(tokens).size).toBe(1);
      expect(tokens[0]).not.toBeNull();
      expect((await c.workspaces.list()).length).toBe(0); // the token works
      expect(refreshes).toBe(1);
      expect(faults).toEqual([]);
      await c.auth.signOut();
    } finally {
      await standard.stop();
    }
  }, 90_000);
});
