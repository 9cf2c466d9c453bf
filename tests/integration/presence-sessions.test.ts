import { randomUUID } from 'node:crypto';
import type { RealtimeChannel } from '@supabase/realtime-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import type { ServerMessage } from '../../src/realtime/h1-protocol.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { reservedTransaction, testDatabase } from '../helpers/db.ts';
import { callAs, createCanvas, mutate } from '../helpers/fixtures.ts';
import { openH1, type H1Conn } from '../helpers/h1.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { until } from '../helpers/wait.ts';

// Durable presence decided in SQL (app.presence_sessions, sql/rpc/presence.sql): a user's
// app.presence row lives while one of their sessions (a realtime-js channel, an H1 socket) does,
// on any gateway process. Real gateway processes (`npm start`'s entry point), real
// @supabase/realtime-js clients and raw H1 sockets; an H1 observer of another user counts the
// presence_leave broadcasts. Before, the gateway closing a tab decided from its view of the
// cluster, which did not hold a tab tracked `ok` on another gateway a moment before: a user moving
// between tabs on two gateways got spurious presence_leaves and their row deleted while tracked
// (25 to 29 rounds of 40), and an H1 socket's close left the canvas whatever else the user had open.

const config = loadConfig();
const db = testDatabase(3);
const token = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 3600 });
const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'off', NODE_ENV: 'development' };
/** cluster.ts defaults: dead after 7 s of silence, swept every 0.5 s (+ margin for a loaded machine). */
const DEAD_WAIT_MS = 7000 + 500 + 10_000;

let gateways: PotentiaProcess[] = [];
const realtime = realtimeClients({ timeoutMs: 10_000 });

async function streaming(n: number): Promise<void> {
  await until(async () => (await db.sql`select 1 from pg_stat_replication r join pg_stat_activity a using (pid)
    where a.datname = current_database() and a.application_name = 'potentia-realtime-bus' and r.state = 'streaming'`).length >= n,
  60_000, `${n} gateway streams`);
}

beforeAll(async () => {
  gateways = await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env)]);
  await streaming(2);
}, 120_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await Promise.all(gateways.map((g) => g.stop()));
  await db.close();
});

const is = (type: ServerMessage['type'], extra: (m: any) => boolean = () => true) => (m: ServerMessage) => m.type === type && extra(m);

/**
 * An H1 socket of `userId` on `g` that has resumed (live deltas flow): the observer. `leaves` lists
 * the presence_leave user ids it got, in order; `settled()` writes a block as the canvas owner and
 * waits for its delta: every presence_leave committed before is in `leaves` then (one gateway's
 * bus delivers in commit order).
 */
async function observer(g: PotentiaProcess, canvasId: string, userId: string) {
  const conn = await openH1(g.url, canvasId, await token(userId));
  await conn.next(is('hello'));
  conn.send({ type: 'resume', since_canvas_seq: 0 });
  await conn.next(is('resumed'));
  const leaves = () => conn.inbox.flatMap((m: any) => (m.type === 'presence_leave' ? [m.user_id as string] : []));
  return {
    conn,
    leaves,
    async settled(): Promise<void> {
      const marker = await mutate(db.sql, userId, canvasId, { action: 'create', patch: { type: 'text', content: { text: 'marker' } } });
      await conn.next(is('delta', (m) => Number(m.server_seq) === Number(marker.server_seq)));
    },
  };
}

const present = async (canvasId: string, userId: string) =>
  (await db.sql`select 1 from app.presence where canvas_id = ${canvasId} and user_id = ${userId}`).length === 1;
const sessions = async (canvasId: string, userId: string) =>
  Number((await db.sql`select count(*) as n from app.presence_sessions where canvas_id = ${canvasId} and user_id = ${userId}`)[0]!.n);

/** A realtime-js tab of the user on gateway `g`, subscribed to the canvas's private channel (not tracked yet). */
async function tab(g: PotentiaProcess, canvasId: string, userToken: string, key: string): Promise<RealtimeChannel> {
  const ch = realtime.connect(g.url, userToken, '2.0.0')
    .channel(`canvas:${canvasId}`, { config: { private: true, presence: { key } } })
    .on('presence', { event: 'sync' }, () => {});
  expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  return ch;
}

/** Closes a tab's socket (the channel's close, as a tab closing does). */
async function closeTab(ch: RealtimeChannel): Promise<void> {
  await ch.socket.disconnect();
}

/** An H1 socket of the user on `g` that has sent a presence, seen by the observer `obs`. */
async function h1Present(g: PotentiaProcess, canvasId: string, userToken: string, userId: string, obs: H1Conn, x: number): Promise<H1Conn> {
  const conn = await openH1(g.url, canvasId, userToken);
  await conn.next(is('hello'));
  conn.send({ type: 'presence', cursor: { x }, typing: false });
  await obs.next(is('presence', (m) => m.user_id === userId && m.cursor?.x === x));
  return conn;
}

describe('durable presence per session, across gateway processes', () => {
  it('a user who moves between tabs on two gateways (new tab tracked, then the old one closed; 40 rounds) never leaves; their last tab\'s close leaves once', { timeout: 180_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const editorToken = await token(users.editor!);
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    let old = await tab(gateways[0]!, canvasId, editorToken, 'tab-0');
    expect(await old.track({ name: 'editor' })).toBe('ok');
    const spurious: number[] = [];
    const rowGone: number[] = [];
    for (let round = 1; round <= 40; round++) {
      const next = await tab(gateways[round % 2]!, canvasId, editorToken, `tab-${round}`);
      expect(await next.track({ name: 'editor' })).toBe('ok');
      await closeTab(old);
      // the old tab's leave has committed once only the new tab's session is left
      await until(async () => (await sessions(canvasId, users.editor!)) === 1, 10_000, `round ${round}: the old tab's session gone`);
      await obs.settled();
      if (obs.leaves().length > spurious.length) spurious.push(round);
      if (!(await present(canvasId, users.editor!))) rowGone.push(round);
      old = next;
    }
    expect({ spurious, rowGone }).toEqual({ spurious: [], rowGone: [] });

    await closeTab(old);
    await until(() => obs.leaves().length > 0, 10_000, 'the presence_leave of the last tab');
    await obs.settled();
    expect(obs.leaves()).toEqual([users.editor]);
    expect(await present(canvasId, users.editor!)).toBe(false);
    expect(await sessions(canvasId, users.editor!)).toBe(0);
    obs.conn.ws.close();
  });

  it('a tab that untracks and tracks again within the write interval is present again (a new session, written at once)', { timeout: 60_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    const t = await tab(gateways[1]!, canvasId, await token(users.editor!), 'tab');
    expect(await t.track({ name: 'editor' })).toBe('ok');
    expect(await t.untrack()).toBe('ok');
    await until(() => obs.leaves().length === 1, 10_000, 'the presence_leave of the untrack');
    // before, the write was throttled per channel (30 s): the row stayed deleted while the tab was tracked
    expect(await t.track({ name: 'editor', cursor: { x: 1 } })).toBe('ok');
    expect(await present(canvasId, users.editor!)).toBe(true);
    expect(await sessions(canvasId, users.editor!)).toBe(1);
    obs.conn.ws.close();
  });

  it('two H1 sockets of a user on two gateways: closing one leaves nothing (10 rounds of moving between them); closing the last leaves once', { timeout: 120_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const editorToken = await token(users.editor!);
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    let old = await h1Present(gateways[0]!, canvasId, editorToken, users.editor!, obs.conn, 0);
    const spurious: number[] = [];
    for (let round = 1; round <= 10; round++) {
      const next = await h1Present(gateways[round % 2]!, canvasId, editorToken, users.editor!, obs.conn, round);
      old.ws.close();
      await old.closed;
      await until(async () => (await sessions(canvasId, users.editor!)) === 1, 10_000, `round ${round}: the old socket's session gone`);
      await obs.settled();
      if (obs.leaves().length > spurious.length || !(await present(canvasId, users.editor!))) spurious.push(round);
      old = next;
    }
    expect(spurious).toEqual([]);
    old.ws.close();
    await until(() => obs.leaves().length > 0, 10_000, 'the presence_leave of the last socket');
    await obs.settled();
    expect(obs.leaves()).toEqual([users.editor]);
    expect(await present(canvasId, users.editor!)).toBe(false);
    obs.conn.ws.close();
  });

  it('an H1 socket and a realtime-js tab of one user: the H1 socket\'s close leaves the row to the tab', { timeout: 60_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const editorToken = await token(users.editor!);
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    const t = await tab(gateways[1]!, canvasId, editorToken, 'tab');
    expect(await t.track({ name: 'editor' })).toBe('ok');
    const h1 = await h1Present(gateways[0]!, canvasId, editorToken, users.editor!, obs.conn, 1);
    expect(await sessions(canvasId, users.editor!)).toBe(2);
    h1.ws.close();
    await until(async () => (await sessions(canvasId, users.editor!)) === 1, 10_000, 'the H1 socket\'s session gone');
    await obs.settled();
    expect(obs.leaves()).toEqual([]);
    expect(await present(canvasId, users.editor!)).toBe(true);
    await closeTab(t);
    await until(() => obs.leaves().length > 0, 10_000, 'the presence_leave of the tab');
    expect(await present(canvasId, users.editor!)).toBe(false);
    obs.conn.ws.close();
  });

  it('a gateway killed with SIGKILL: the user whose only tab it held leaves once it is taken for dead; a user also on another gateway does not', { timeout: 120_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const g3 = await startPotentiaProcess(env);
    try {
      await streaming(3);
      const obs = await observer(gateways[0]!, canvasId, users.owner!);
      const editorToken = await token(users.editor!);
      const viewerToken = await token(users.viewer!);
      // the editor: one tab, on gateway 3; the viewer: a tab on gateway 3 and one on gateway 2
      const only = await tab(g3, canvasId, editorToken, 'editor');
      expect(await only.track({ name: 'editor' })).toBe('ok');
      const onDead = await tab(g3, canvasId, viewerToken, 'viewer-3');
      expect(await onDead.track({ name: 'viewer' })).toBe('ok');
      const onLive = await tab(gateways[1]!, canvasId, viewerToken, 'viewer-2');
      expect(await onLive.track({ name: 'viewer' })).toBe('ok');
      expect(await sessions(canvasId, users.viewer!)).toBe(2);
      g3.child.kill('SIGKILL');
      await until(() => obs.leaves().length > 0, DEAD_WAIT_MS, 'the editor\'s presence_leave once gateway 3 is taken for dead');
      await until(async () => (await sessions(canvasId, users.viewer!)) === 1, 10_000, 'the viewer\'s session on gateway 3 removed');
      await obs.settled();
      expect(obs.leaves()).toEqual([users.editor]);
      expect(await present(canvasId, users.editor!)).toBe(false);
      expect(await present(canvasId, users.viewer!)).toBe(true);
      obs.conn.ws.close();
    } finally {
      await g3.stop();
    }
  });

  it('a gateway stopped normally removes its own sessions: the user whose only tab it held leaves', { timeout: 90_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const g3 = await startPotentiaProcess(env);
    try {
      await streaming(3);
      const obs = await observer(gateways[0]!, canvasId, users.owner!);
      const only = await tab(g3, canvasId, await token(users.editor!), randomUUID());
      expect(await only.track({ name: 'editor' })).toBe('ok');
      await g3.stop();
      await until(() => obs.leaves().length > 0, 10_000, 'the editor\'s presence_leave');
      await obs.settled();
      expect(obs.leaves()).toEqual([users.editor]);
      expect(await present(canvasId, users.editor!)).toBe(false);
      obs.conn.ws.close();
    } finally {
      await g3.stop();
    }
  });
});

describe('durable presence per session, under faults', () => {
  /**
   * The editor's one session on a new canvas (`open` makes it and returns its close), whose leave's COMMIT waits (a deferred
   * trigger on that canvas's sessions takes a lock this test holds) and loses its connection (pg_terminate_backend): the
   * gateway cannot know whether the leave committed (it did not). Before, the failure was only logged: the session stayed,
   * and with it the row (no presence_leave), while the gateway lived.
   */
  async function leaveLostDuringCommit(open: (canvasId: string, editorToken: string, editor: string, obs: H1Conn) => Promise<() => unknown>) {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    const close = await open(canvasId, await token(users.editor!), users.editor!, obs.conn);
    expect(await sessions(canvasId, users.editor!)).toBe(1);
    const fn = `public.hold_commit_${process.pid}`;
    await db.sql.unsafe(`create function ${fn}() returns trigger language plpgsql as $$
      begin perform pg_advisory_xact_lock(${process.pid}); return null; end $$`);
    await db.sql.unsafe(`create constraint trigger hold_commit_${process.pid} after delete on app.presence_sessions
      deferrable initially deferred for each row when (old.canvas_id = '${canvasId}') execute function ${fn}()`);
    const holder = await reservedTransaction(db.sql);
    try {
      await holder.conn`select pg_advisory_xact_lock(${process.pid})`;
      await close();
      const committing = () => db.sql`select pid from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()
        and wait_event_type = 'Lock' and wait_event = 'advisory' and lower(query) = 'commit'`;
      await until(async () => (await committing()).length === 1, 10_000, 'the leave\'s COMMIT waiting');
      const [killing] = await committing();
      expect((await db.sql`select pg_terminate_backend(${killing!.pid}::int) as done`)[0]!.done).toBe(true);
      await until(async () => (await db.sql`select 1 from pg_stat_activity where pid = ${killing!.pid}::int`).length === 0, 10_000, 'the backend gone');
    } finally {
      await holder.release();
      await db.sql.unsafe(`drop trigger hold_commit_${process.pid} on app.presence_sessions`);
      await db.sql.unsafe(`drop function ${fn}()`);
    }
    await until(async () => (await sessions(canvasId, users.editor!)) === 0, 15_000, 'the lost leave\'s session gone');
    await obs.settled();
    expect(obs.leaves()).toEqual([users.editor]);
    expect(await present(canvasId, users.editor!)).toBe(false);
    obs.conn.ws.close();
  }

  it('a tab\'s leave whose connection is lost during its COMMIT (pg_terminate_backend) is done again: the user\'s last tab gone, they leave, once', { timeout: 60_000 }, async () => {
    await leaveLostDuringCommit(async (canvasId, editorToken) => {
      const t = await tab(gateways[1]!, canvasId, editorToken, 'tab');
      expect(await t.track({ name: 'editor' })).toBe('ok');
      return () => closeTab(t);
    });
  });

  it('an H1 socket\'s leave whose connection is lost during its COMMIT is done again: the user leaves, once', { timeout: 60_000 }, async () => {
    await leaveLostDuringCommit(async (canvasId, editorToken, editor, obs) => {
      const conn = await h1Present(gateways[1]!, canvasId, editorToken, editor, obs, 1);
      return () => conn.ws.close();
    });
  });

  /**
   * The editor's one session (`open` makes it on gateway `g` and returns its close) on a live gateway taken for dead (SIGSTOP
   * past deadAfterMs, then SIGCONT; as a gateway starved on a loaded machine): the other gateways removed its sessions
   * (onNodeGone) and the editor left. Before, nothing recorded them back once it was heard again: the live session's user
   * stayed gone (no row, no session) until it wrote presence again, and its close then broadcast no presence_leave.
   */
  async function liveGatewayTakenForDead(open: (g: PotentiaProcess, canvasId: string, editorToken: string, editor: string, obs: H1Conn) => Promise<() => unknown>) {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const g3 = await startPotentiaProcess(env);
    try {
      await streaming(3);
      const obs = await observer(gateways[0]!, canvasId, users.owner!);
      const close = await open(g3, canvasId, await token(users.editor!), users.editor!, obs.conn);
      await until(async () => (await sessions(canvasId, users.editor!)) === 1, 10_000, 'the session recorded');
      process.kill(g3.pid!, 'SIGSTOP');
      try {
        await until(() => obs.leaves().length > 0, DEAD_WAIT_MS, 'the editor\'s presence_leave once gateway 3 is taken for dead');
        await until(async () => (await sessions(canvasId, users.editor!)) === 0, 10_000, 'gateway 3\'s sessions removed');
      } finally {
        process.kill(g3.pid!, 'SIGCONT');
      }
      // heard again: its live session is recorded again, and with it the user's row
      await until(async () => (await sessions(canvasId, users.editor!)) === 1 && await present(canvasId, users.editor!), 30_000,
        'the live session and row back');
      await close();
      await until(() => obs.leaves().length > 1, 10_000, 'the presence_leave of the close');
      await obs.settled();
      expect({ leaves: obs.leaves(), present: await present(canvasId, users.editor!), sessions: await sessions(canvasId, users.editor!) })
        .toEqual({ leaves: [users.editor, users.editor], present: false, sessions: 0 });
      obs.conn.ws.close();
    } finally {
      await g3.stop();
    }
  }

  it('a live gateway wrongly taken for dead (SIGSTOP past deadAfterMs, then SIGCONT): its live H1 socket\'s session and row come back', { timeout: 120_000 }, async () => {
    await liveGatewayTakenForDead(async (g, canvasId, editorToken, editor, obs) => {
      const conn = await h1Present(g, canvasId, editorToken, editor, obs, 1);
      return () => conn.ws.close();
    });
  });

  it('a live gateway wrongly taken for dead (SIGSTOP past deadAfterMs, then SIGCONT): its live tab\'s session and row come back', { timeout: 120_000 }, async () => {
    await liveGatewayTakenForDead(async (g, canvasId, editorToken) => {
      const t = await tab(g, canvasId, editorToken, 'tab');
      expect(await t.track({ name: 'editor' })).toBe('ok');
      return () => closeTab(t);
    });
  });

  // Seen failing before sweepUnknownNodes (presence-sessions.ts): nobody removed the sessions of a node that no live gateway
  // knew. The cluster's onNodeGone only fires for a node a gateway heard; after every gateway was killed (or one of another
  // cluster secret), the new gateways never heard the old node ids, so their sessions stayed until the user's row expired
  // (presence_expiry_seconds after the last write of any of their sessions): the user's last live tab's close broadcast
  // no presence_leave, the row and cursor stayed up to 120 s more, and the dead sessions counted against
  // presence_sessions_max for as long as the user kept the row written. Now every gateway looks for the sessions of nodes
  // it does not know at start and every 4 x 7 s, and removes them once its cluster has heard every live node since.
  it('the sessions of a cluster killed whole (SIGKILL, no gateway left to see it go) do not keep the row past the user\'s last live tab', { timeout: 120_000 }, async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    const editorToken = await token(users.editor!);
    // a gateway of another cluster (its own secret): no gateway running here sees it die, as when every gateway was killed
    const lone = await startPotentiaProcess({ ...env, REALTIME_CLUSTER_SECRET: 'h224-another-cluster-secret-0123456789abcdef' });
    try {
      const before = await tab(lone, canvasId, editorToken, 'before');
      expect(await before.track({ name: 'editor' })).toBe('ok');
      lone.child.kill('SIGKILL');
      await until(() => lone.exited() !== null, 10_000, 'the lone gateway dead');
    } finally {
      await lone.stop();
    }
    const obs = await observer(gateways[0]!, canvasId, users.owner!);
    // the user comes back on a live gateway (their tab reconnected), then closes it
    const after = await tab(gateways[1]!, canvasId, editorToken, 'after');
    expect(await after.track({ name: 'editor' })).toBe('ok');
    await closeTab(after);
    await until(async () => (await sessions(canvasId, users.editor!)) <= 1, 10_000, 'the live tab\'s session gone');
    // the dead node's: at the live gateways' next round (every 28 s, then 7 s for the proof; + margin for a loaded machine)
    await until(async () => (await sessions(canvasId, users.editor!)) === 0, 60_000, 'the dead gateway\'s session gone');
    await obs.settled();
    // before: the dead gateway's session stayed (nobody removed a node no live gateway knew) and kept the row, with no presence_leave
    expect({ leaves: obs.leaves(), present: await present(canvasId, users.editor!), sessions: await sessions(canvasId, users.editor!) })
      .toEqual({ leaves: [users.editor], present: false, sessions: 0 });
    obs.conn.ws.close();
  });
});

describe('durable presence per session, in the database', () => {
  /** Acts as `userId` in `tx`'s transaction, as the gateway's transactions do (src/db/request.ts). */
  const actAs = (tx: { conn: any }, userId: string) =>
    tx.conn`select set_config('role', 'authenticated', true), set_config('request.jwt.claims', ${JSON.stringify({ sub: userId, role: 'authenticated' })}, true),
                   set_config('potentia.endpoint_limits', 'server', true)`;

  it('the leaves of a user\'s last two sessions at once (two gateways): the second waits for the first, then the user leaves, once', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    for (const session of ['g1/1', 'g2/1']) await callAs(db.sql, users.editor!, 'update_presence', [canvasId, null, false, session]);
    const first = await reservedTransaction(db.sql);
    const second = await reservedTransaction(db.sql);
    try {
      await actAs(first, users.editor!);
      await actAs(second, users.editor!);
      await first.conn`select api.leave_canvas(${canvasId}::uuid, 'g1/1')`;
      // without the presence row's lock the second saw g1/1 still there (uncommitted), as the first saw g2/1: the row stayed
      const leaving = second.conn`select api.leave_canvas(${canvasId}::uuid, 'g2/1')`.execute();
      await first.waitedFor('the second leave waiting for the first');
      await first.end('commit');
      await leaving;
      await second.end('commit');
    } finally {
      await first.release();
      await second.release();
    }
    expect(await present(canvasId, users.editor!)).toBe(false);
    expect(await sessions(canvasId, users.editor!)).toBe(0);
    expect(await db.sql`select payload from realtime.messages where topic = ${`canvas:${canvasId}`} and event = 'presence_leave'`)
      .toEqual([{ payload: { user_id: users.editor } }]);
  });

  it('a session recorded while the user\'s last other session leaves keeps the row (the leave waits, then sees it)', async () => {
    const { canvasId, users } = await createCanvas(db.sql, ['editor']);
    await callAs(db.sql, users.editor!, 'update_presence', [canvasId, null, false, 'g1/1']);
    const writing = await reservedTransaction(db.sql);
    try {
      await actAs(writing, users.editor!);
      await writing.conn`select api.update_presence(${canvasId}::uuid, null, false, 'g2/1')`;
      const leaving = callAs(db.sql, users.editor!, 'leave_canvas', [canvasId, 'g1/1']);
      await writing.waitedFor('the leave waiting for the write');
      await writing.end('commit');
      await leaving;
    } finally {
      await writing.release();
    }
    expect(await present(canvasId, users.editor!)).toBe(true);
    expect(await sessions(canvasId, users.editor!)).toBe(1);
    expect(await db.sql`select 1 from realtime.messages where topic = ${`canvas:${canvasId}`} and event = 'presence_leave'`).toHaveLength(0);
  });
});
