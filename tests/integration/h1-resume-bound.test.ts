import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { H1_CLOSE_HELD_MESSAGES } from '../../src/realtime/h1-protocol.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startServer, type Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, callAs, createCanvas } from '../helpers/fixtures.ts';
import { openH1 } from '../helpers/h1.ts';
import { until } from '../helpers/wait.ts';

// H1 `resume` replays the operation log page after page (api.get_canvas_changes_since, 500
// operations a page). Each resume ran in turn to the end, so a client sending `resume` since 0 in
// a loop had the gateway page through the whole log once per message. A newer resume now
// supersedes an older one: one still queued is skipped, one running stops before its next page and
// sends no `resumed`. The database work is counted by Postgres: the server under test connects with
// track_functions = all (only its sessions are counted) and its own application_name, and the
// calls are read from pg_stat_user_functions once its sessions have ended (they flush their
// counts when they exit).

const app = `h1-resume-bound-${process.pid}`;
const trackedUrl = (() => {
  const url = new URL(testDatabaseUrl());
  url.searchParams.set('track_functions', 'all');
  url.searchParams.set('application_name', app);
  return url.toString();
})();
const config = { ...loadConfig(), databaseUrl: trackedUrl, directDatabaseUrl: undefined, port: 0, logLevel: 'silent' as const };
const db = testDatabase(3);
const PAGE = 500;
const is = (type: ServerMessage['type']) => (m: ServerMessage) => m.type === type;

/** Calls of api.<fn> counted so far in this database (sessions with track_functions on only). */
async function calls(fn: string): Promise<number> {
  const [row] = await db.sql<{ n: string | null }[]>`select sum(calls) as n from pg_stat_user_functions where schemaname = 'api' and funcname = ${fn}`;
  return Number(row?.n ?? 0);
}

let server: Server | undefined;
let bounded: Server | undefined;
afterAll(async () => {
  await server?.stop();
  await bounded?.stop();
  await db.close();
});

describe('H1 resume in a loop', () => {
  let canvasId: string;
  let owner: string;
  let ops = 0;
  beforeAll(async () => {
    const c = await createCanvas(db.sql);
    canvasId = c.canvasId;
    owner = c.users.owner!;
    // 14 writers x 90 (the limit is 100 mutations a minute per user): 1260 operations, 3 pages
    for (let w = 0; w < 14; w++) {
      const editor = await addMember(db.sql, owner, c.workspaceId, 'editor', `resume-bound-${w}`);
      const r = await callAs(db.sql, editor, 'upsert_blocks_atomic', [canvasId,
        Array.from({ length: 90 }, () => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }))]);
      expect(r.status).toBe('success');
      ops += 90;
    }
  }, 120_000);

  it('ten resumes since 0 at once: the log is read about once, one `resumed`, the newest replay whole and in order', async () => {
    const pagesOfOne = Math.floor(ops / PAGE) + 1; // the last page says has_more false
    const resumes = 10; // the socket's burst (messagesPerSecond)
    server = await startServer(config);
    const before = await calls('get_canvas_changes_since');
    const h1 = await openH1(server.url, canvasId, await signAccessToken(config.auth.jwtSecret, { sub: owner }));
    await h1.next(is('hello'));
    for (let i = 0; i < resumes; i++) h1.send({ type: 'resume', since_canvas_seq: 0 });
    await h1.next(is('resumed'), 30_000);
    // whatever else the gateway would send (before: nine more whole replays) has time to come
    let seen = -1;
    await until(async () => {
      const quiet = seen === h1.inbox.length;
      seen = h1.inbox.length;
      if (!quiet) await new Promise((r) => setTimeout(r, 1000));
      return quiet;
    }, 60_000, 'the socket to go quiet');

    const types = h1.inbox.map((m) => m.type);
    expect(types.filter((t) => t === 'error')).toEqual([]); // none refused: each resume was within the socket's rate
    expect(types.filter((t) => t === 'resumed')).toHaveLength(1); // before: 10
    const deltas = h1.inbox.flatMap((m) => (m.type === 'delta' ? [m.canvas_seq] : []));
    // the replay that answered: the last `ops` deltas before `resumed`, 1..ops in order
    const end = types.indexOf('resumed');
    expect(h1.inbox.slice(end - ops, end).map((m) => (m.type === 'delta' ? m.canvas_seq : m.type))).toEqual(Array.from({ length: ops }, (_, i) => i + 1));
    // a superseded replay sends at most the page it was reading (before: 10 x ops deltas)
    expect(deltas.length).toBeLessThanOrEqual(ops + (resumes - 1) * PAGE);

    // the database work: the sessions end (flushing their counts), then count
    h1.ws.close();
    await server.stop();
    server = undefined;
    await until(async () => (await db.sql`select 1 from pg_stat_activity where application_name = ${app}`).length === 0, 10_000, 'the server\'s sessions to end');
    await until(async () => (await calls('get_canvas_changes_since')) - before >= pagesOfOne, 10_000, 'the counts of the replay');
    const pages = (await calls('get_canvas_changes_since')) - before;
    // one whole replay, and at most the one page a superseded replay was reading (before: 10 x 3 = 30)
    expect(pages).toBeGreaterThanOrEqual(pagesOfOne);
    expect(pages).toBeLessThanOrEqual(pagesOfOne + (resumes - 1));
  }, 120_000);

  it('resume in a loop while the canvas is written: the deltas held for the next replay are bounded (1013, resume on a new socket), none lost', async () => {
    // each superseded replay leaves the live deltas held to the next one: a loop that never lets a
    // replay end held every delta of the canvas for as long as it went on
    const maxHeldDatabaseMessages = 40;
    bounded = await startServer(config, { realtime: { limits: { maxHeldDatabaseMessages, messagesPerSecond: 1000 } } });
    const h1 = await openH1(bounded.url, canvasId, await signAccessToken(config.auth.jwtSecret, { sub: owner }));
    await h1.next(is('hello'));
    let closed: number | null = null;
    void h1.closed.then(({ code }) => { closed = code; });
    const loop = (async () => {
      for (const end = Date.now() + 15_000; closed === null && Date.now() < end;) {
        h1.send({ type: 'resume', since_canvas_seq: 0 });
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 300)); // replays superseding each other
    const editor = await addMember(db.sql, owner, (await db.sql`select workspace_id from app.canvases where canvas_id = ${canvasId}`)[0]!.workspace_id, 'editor', 'resume-bound-live');
    const live = 90;
    const r = await callAs(db.sql, editor, 'upsert_blocks_atomic', [canvasId,
      Array.from({ length: live }, () => ({ action: 'create', client_op_id: randomUUID(), patch: { type: 'text' } }))]);
    expect(r.status).toBe('success');
    ops += live;
    await loop;
    // before: still open after 15 s of the loop, the 90 live deltas (and any more) held
    expect(closed).toBe(H1_CLOSE_HELD_MESSAGES);
    // a new socket resumes and gets the whole log, the live deltas included
    const again = await openH1(bounded.url, canvasId, await signAccessToken(config.auth.jwtSecret, { sub: owner }), '&since_canvas_seq=0');
    await again.next(is('resumed'), 30_000);
    expect(again.inbox.flatMap((m) => (m.type === 'delta' ? [m.canvas_seq] : []))).toEqual(Array.from({ length: ops }, (_, i) => i + 1));
    again.ws.close();
  }, 60_000);
});
