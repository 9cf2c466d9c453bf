import { RealtimeClient } from '@supabase/realtime-js';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signAccessToken } from '../../src/auth/jwt.ts';
import { loadConfig, testDatabaseUrl } from '../../src/config.ts';
import { startPotentiaProcess, terminateBackends, type PotentiaProcess } from '../helpers/chaos.ts';
import { testDatabase } from '../helpers/db.ts';
import { addMember, createCanvas } from '../helpers/fixtures.ts';
import { sleep, until } from '../helpers/wait.ts';

// Issue 10's fault test: two `npm start` processes on one database, a writer above 30 mutations/s
// and realtime-js and H1 subscribers on both, while the replication, pool and worker connections
// of both processes are terminated again and again. Nothing may end a process, nothing
// acknowledged may be lost or duplicated, and /ready must recover by itself.

const config = loadConfig();
const db = testDatabase(4);
const RATE = Number(process.env.CHAOS_RATE ?? 36); // mutations offered per second
const WRITERS = 12; // H2 allows 10 requests/s per user: twelve editors share the rate, retries included
const WRITE_MS = 14_000;
const MIN_OFFERED = Math.floor((RATE * WRITE_MS) / 1000 * 0.8);
const KILL_EVERY_MS = 1000;
const KILLS_EACH = Number(process.env.CHAOS_KILLS_EACH ?? 5);

type Sub = { name: string; seqs: number[] };
const processes: PotentiaProcess[] = [];
const clients: RealtimeClient[] = [];
const sockets: WebSocket[] = [];
let savedRate: string | undefined;

beforeAll(async () => {
  const [row] = await db.sql`select value from app.settings where key = 'mutations_per_minute'`;
  savedRate = row?.value as string | undefined;
  await db.sql`update app.settings set value = '100000' where key = 'mutations_per_minute'`;
  const env = { DATABASE_URL: testDatabaseUrl(), WORKER_MODE: 'inprocess', NODE_ENV: 'development' };
  processes.push(...(await Promise.all([startPotentiaProcess(env), startPotentiaProcess(env)])));
}, 120_000);

afterAll(async () => {
  for (const ws of sockets) ws.terminate();
  await Promise.all(clients.map((c) => c.disconnect().catch(() => {})));
  await Promise.all(processes.map((p) => p.stop()));
  if (savedRate !== undefined) await db.sql`update app.settings set value = ${savedRate} where key = 'mutations_per_minute'`;
  await db.close();
}, 60_000);

/**
 * The status `path` answers, 0 when the process does not answer: its port refuses or resets (it
 * is gone), or nothing came back within `timeoutMs`. Liveness, not latency: a process starved of
 * CPU by a loaded machine answered /health after the 2.5 s this allowed before, and failed the run.
 */
async function status(url: string, path: string, timeoutMs = 15_000): Promise<number> {
  try {
    const res = await fetch(url + path, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

function realtimeSubscriber(p: PotentiaProcess, token: string, canvasId: string, name: string): Promise<Sub> {
  const sub: Sub = { name, seqs: [] };
  const client = new RealtimeClient(`${p.url.replace(/^http/, 'ws')}/realtime/v1`, {
    params: { apikey: token }, transport: WebSocket as any, heartbeatIntervalMs: 5000, timeout: 10_000,
  });
  clients.push(client);
  const channel = client.channel(`canvas:${canvasId}`, { config: { private: true } })
    .on('broadcast', { event: 'block_op' }, (m) => sub.seqs.push(Number(m.payload.server_seq)));
  return new Promise((resolve, reject) => channel.subscribe((s, err) => {
    if (s === 'SUBSCRIBED') resolve(sub);
    else if (s !== 'CLOSED') reject(err ?? new Error(s));
  }));
}

function h1Subscriber(p: PotentiaProcess, token: string, canvasId: string, name: string): Promise<Sub> {
  const sub: Sub = { name, seqs: [] };
  const ws = new WebSocket(`${p.url.replace(/^http/, 'ws')}/ws/canvas/${canvasId}?access_token=${token}&since_seq=0`);
  sockets.push(ws);
  return new Promise((resolve, reject) => {
    ws.on('message', (data) => {
      const m = JSON.parse(String(data));
      if (m.type === 'delta') sub.seqs.push(m.server_seq);
      if (m.type === 'resumed') resolve(sub);
    });
    ws.on('error', reject);
    ws.on('close', () => reject(new Error(`${name} closed before resuming`)));
  });
}

describe('two npm start processes while Postgres kills their connections', () => {
  it('stay up, deliver every acknowledged mutation once and in order, and become ready again', async () => {
    const [a, b] = processes as [PotentiaProcess, PotentiaProcess];
    const { canvasId, workspaceId, users } = await createCanvas(db.sql, ['editor', 'viewer']);
    const writers = [users.owner!, users.editor!];
    while (writers.length < WRITERS) writers.push(await addMember(db.sql, users.owner!, workspaceId, 'editor', 'writer'));
    const tokenOf = (sub: string) => signAccessToken(config.auth.jwtSecret, { sub }, { expiresInSeconds: 600 });
    const viewerToken = await tokenOf(users.viewer!);
    const subs = await Promise.all([
      realtimeSubscriber(a, viewerToken, canvasId, 'realtime-js@1'), realtimeSubscriber(b, viewerToken, canvasId, 'realtime-js@2'),
      h1Subscriber(a, viewerToken, canvasId, 'h1@1'), h1Subscriber(b, viewerToken, canvasId, 'h1@2'),
    ]);
    // the replication streams must be up before the first kill, or there is nothing to kill
    await until(async () => {
      const [r] = await db.sql`select count(*)::int as n from pg_stat_replication r join pg_stat_activity a using (pid)
        where a.datname = current_database() and r.application_name = 'potentia-realtime-bus'`;
      return r!.n >= 2;
    }, 30_000, 'both replication streams');

    let running = true;
    const health = { checks: 0, failures: [] as string[] };
    const healthLoop = (async () => {
      while (running) {
        for (const p of processes) {
          health.checks++;
          const s = await status(p.url, '/health');
          if (s !== 200) health.failures.push(`${p.url} /health → ${s}`);
        }
        await sleep(200);
      }
    })();

    // the writer: open loop at RATE creates/s through HTTP, spread over the editors and both
    // processes; each mutation is retried with the same client_op_id until acknowledged (a 503 or
    // a dropped request is what a fault may cost, never a loss)
    const tokens = await Promise.all(writers.map(tokenOf));
    const acked = new Map<string, number>();
    const answers: Record<string, number> = {};
    const latencies: number[] = [];
    const writeOne = async (n: number) => {
      const opId = `chaos-${n}`;
      const token = tokens[n % tokens.length]!;
      for (let attempt = 0; ; attempt++) {
        const target = processes[(n + attempt) % 2]!;
        const started = Date.now();
        let code = 0;
        let body: { server_seq?: number } | undefined;
        try {
          const res = await fetch(`${target.url}/api/v1/canvas/${canvasId}/mutate`, {
            method: 'POST', signal: AbortSignal.timeout(30_000), // a queued request is not retried: that would double the load
            headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
            body: JSON.stringify({ action: 'create', client_op_id: opId, patch: { type: 'text', content: { text: opId } } }),
          });
          code = res.status;
          latencies.push(Date.now() - started);
          body = await res.json() as { server_seq?: number };
          if (res.ok) acked.set(opId, Number(body.server_seq));
        } catch { /* the request was dropped: retry */ }
        answers[code] = (answers[code] ?? 0) + 1;
        if (code === 200) return;
        // on anything else, the answer and what the server logged at error level say why
        expect([0, 429, 503], `mutation ${opId} answered ${code} ${JSON.stringify(body)}; the servers logged:\n${
          processes.map((p) => p.output().split('\n').filter((l) => l.includes('"level":50') && /rpc failed|unhandled error/.test(l)).slice(-3).join('\n')).join('\n')}`).toContain(code);
        if (attempt > 40) throw new Error(`mutation ${opId} was never acknowledged`);
        await sleep(200 + Math.random() * 300);
      }
    };
    const inFlight: Promise<void>[] = [];
    let killing = true;
    let offeredSeconds = 0;
    const writeStart = Date.now();
    const writing = (async () => {
      // at RATE for WRITE_MS and while the kills go on, and at least MIN_OFFERED in all: on a busy
      // machine this process offers slower, and the load the faults meet is a count, not a rate
      for (let n = 0; Date.now() - writeStart < WRITE_MS || killing || n < MIN_OFFERED; n++) {
        inFlight.push(writeOne(n));
        await sleep(Math.max(0, writeStart + ((n + 1) * 1000) / RATE - Date.now()));
      }
      offeredSeconds = (Date.now() - writeStart) / 1000;
      await Promise.all(inFlight);
    })();

    // the killer: rounds over both processes' replication and pool connections, and every other
    // round their worker connections
    const kinds = {
      replication: ['potentia-realtime-bus'],
      pool: ['potentia-server'],
      worker: ['potentia-worker', 'potentia-worker-queue'],
    };
    const kills: Record<string, number> = {};
    const required = ['replication@1', 'replication@2', 'pool@1', 'pool@2'];
    const killStart = Date.now();
    await sleep(500);
    // at least KILLS_EACH terminations of each, spread over WRITE_MS, and never longer than a minute
    for (let round = 0; required.some((k) => (kills[k] ?? 0) < KILLS_EACH) || Date.now() - killStart < WRITE_MS - 2000; round++) {
      if (Date.now() - killStart > 60_000) break;
      for (const kind of (round % 2 ? ['replication', 'pool', 'worker'] : ['replication', 'pool']) as (keyof typeof kinds)[]) {
        for (const [i, p] of processes.entries()) {
          if (p.exited()) throw new Error(`process ${i + 1} ended (${JSON.stringify(p.exited())}):\n${p.output().slice(-4000)}`);
          if (KILLS_EACH > 0 && await terminateBackends(db.sql, p.pid, kinds[kind]) > 0) kills[`${kind}@${i + 1}`] = (kills[`${kind}@${i + 1}`] ?? 0) + 1;
          await sleep(KILL_EVERY_MS / 2);
        }
      }
    }
    killing = false;
    await writing;

    // every acknowledged mutation reaches every subscriber: once, in order
    const expected = [...acked.values()].sort((x, y) => x - y);
    await until(() => subs.every((s) => s.seqs.length >= expected.length), 20_000, 'every delta at every subscriber')
      .catch(() => { /* the assertions below say which */ });
    const summary = subs.map((s) => {
      const missing = expected.filter((seq) => !s.seqs.includes(seq));
      return `${s.name}: ${s.seqs.length} received, missing ${missing.length} [${missing.slice(0, 8).join(',')}…]`;
    });
    if (process.env.CHAOS_DEBUG) for (const p of processes) console.log(p.output().split('\n').filter((l) => !l.includes('"level":30')).slice(-60).join('\n'));
    console.log(`chaos delivery (${expected.length} acknowledged, seqs ${expected[0]}..${expected.at(-1)}):\n${summary.join('\n')}`);
    for (const s of subs) {
      const missing = expected.filter((seq) => !s.seqs.includes(seq));
      const duplicated = s.seqs.length - new Set(s.seqs).size;
      const outOfOrder = s.seqs.filter((seq, i) => i > 0 && seq <= s.seqs[i - 1]!).length;
      expect({ subscriber: s.name, missing: missing.length, duplicated, outOfOrder })
        .toEqual({ subscriber: s.name, missing: 0, duplicated: 0, outOfOrder: 0 });
    }

    // /ready recovers without a restart
    for (const p of processes) await until(async () => (await status(p.url, '/ready', 2500)) === 200, 20_000, `${p.url}/ready`);
    running = false;
    await healthLoop;

    latencies.sort((x, y) => x - y);
    const report = { p50ms: latencies[latencies.length >> 1], p99ms: latencies[Math.floor(latencies.length * 0.99)], acked: acked.size, perSecond: Math.round(acked.size / offeredSeconds), answers, kills, health };
    console.log('chaos:', JSON.stringify(report));
    expect(inFlight.length).toBeGreaterThanOrEqual(MIN_OFFERED);
    expect(acked.size).toBe(inFlight.length); // every one offered was acknowledged (writeOne retries until then)
    for (const key of required) {
      expect(kills[key] ?? 0, `${key} terminations`).toBeGreaterThanOrEqual(5);
    }
    expect(health.failures).toEqual([]);
    for (const p of processes) {
      expect(p.exited(), p.output()).toBeNull();
      expect(p.output()).not.toMatch(/unhandled|uncaught/i);
    }
  }, 150_000);
});
