// TCP keepalive on both ends of every database connection, so that a path that stops carrying
// packets without closing is noticed within minutes rather than the OS default (over 2 h):
// the server probes its clients (tcp_keepalives_*, sql/core/session_defaults.sql), and an
// `npm start` process's pools, Graphile Worker's pool and the replication stream probe the server
// (KEEPALIVE_IDLE_SECONDS, src/db/index.ts). Read from the kernel's socket table: the keepalive
// timer pending on each socket, and when it fires. And the server's tcp_user_timeout, for the
// wait keepalive does not cover (what the server wrote, unacknowledged).
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import { KEEPALIVE_IDLE_SECONDS } from '../../src/db/index.ts';
import { startPotentiaProcess, type PotentiaProcess } from '../helpers/chaos.ts';
import { establishedTcpSockets, processTcpSockets } from '../helpers/sockets.ts';
import { sleep, until } from '../helpers/wait.ts';

const DB_PORT = Number(new URL(testDatabaseUrl()).port || 5432);
let admin: postgres.Sql;
let server: PotentiaProcess | undefined;

beforeAll(() => { admin = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} }); });
afterAll(async () => {
  await server?.stop();
  await admin?.end();
});

describe('TCP keepalive', () => {
  it('the server probes a fresh TCP connection after 60 s idle, every 10 s, 6 times', async () => {
    const fresh = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    try {
      const rows = await fresh<{ name: string; setting: string }[]>`
        select name, setting from pg_settings where name in ('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count')`;
      expect(Object.fromEntries(rows.map((r) => [r.name, r.setting])))
        .toEqual({ tcp_keepalives_idle: '60', tcp_keepalives_interval: '10', tcp_keepalives_count: '6' });
      // and the backend's socket has them: its keepalive timer fires within the 60 s, not the OS's 2 h
      const [me] = await fresh<{ port: number }[]>`select inet_client_port() as port`;
      // (just after it answered, its retransmission timer until the answer is acknowledged)
      const backendSide = () => establishedTcpSockets().find((s) => s.localPort === DB_PORT && s.remotePort === me!.port);
      await until(() => backendSide()?.timer !== 'retransmit', 5_000, 'the answer acknowledged', 50);
      expect(backendSide()).toMatchObject({ timer: 'keepalive' });
      expect(backendSide()!.timerSeconds).toBeLessThanOrEqual(60);
    } finally {
      await fresh.end();
    }
  });

  it('the server gives up a TCP connection whose data waits 120 s unacknowledged: tcp_user_timeout, the keepalive\'s own bound', async () => {
    // keepalive is silent while a backend's result waits on a stalled path: without it that ended
    // only on TCP's retransmission limit (about 15 minutes). 120 s, and no other value: on Linux a
    // user timeout also replaces the keepalive's probe count (sql/core/session_defaults.sql)
    const fresh = postgres(testDatabaseUrl(), { max: 1, onnotice: () => {} });
    try {
      // (SHOW reads the backend's own socket: on a TCP connection, the option as set on it)
      const rows = await fresh<{ name: string; setting: string; unit: string }[]>`
        select name, setting, unit from pg_settings
        where name in ('tcp_user_timeout', 'tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count')`;
      const value = (name: string) => Number(rows.find((r) => r.name === name)!.setting);
      expect(rows.find((r) => r.name === 'tcp_user_timeout')).toEqual({ name: 'tcp_user_timeout', setting: '120000', unit: 'ms' });
      expect(value('tcp_user_timeout'))
        .toBe((value('tcp_keepalives_idle') + value('tcp_keepalives_interval') * value('tcp_keepalives_count')) * 1000);
    } finally {
      await fresh.end();
    }
  });

  it("an npm start process's connections to the database (pools, Graphile Worker, replication) probe the server", async () => {
    server = await startPotentiaProcess({ DATABASE_URL: testDatabaseUrl(), POTENTIA_ROLE: 'all', WORKER_MODE: 'inprocess',
      WORKER_CRONTAB: '' });
    const pid = server.pid;
    const expected = ['potentia-server', 'potentia-realtime-bus', 'potentia-worker', 'potentia-worker-queue'];
    // each kind of connection open (the gateway's stream once it streams, the pools at their first query)
    const byName = async () => {
      const ports = processTcpSockets(pid).filter((s) => s.remotePort === DB_PORT).map((s) => s.localPort);
      return admin<{ name: string; port: number }[]>`
        select application_name as name, client_port as port from pg_stat_activity where client_port = any(${ports})`;
    };
    await until(async () => (await fetch(`${server!.url}/ready`)).status === 200, 60_000, 'the process ready', 200);
    await until(async () => { const names = new Set((await byName()).map((r) => r.name)); return expected.every((n) => names.has(n)); },
      30_000, `connections named ${expected.join(', ')}`, 200);

    const check = async () => {
      const connections = await byName();
      const sockets = processTcpSockets(pid);
      return connections.map(({ name, port }) => {
        const s = sockets.find((x) => x.localPort === port);
        return { name, port, timer: s?.timer, seconds: s?.timerSeconds };
      });
    };
    // the first probe within KEEPALIVE_IDLE_SECONDS (60), not the OS default's 7200; a socket in the
    // middle of an exchange shows its retransmission timer instead for a moment: looked at again
    const probes = (c: { timer?: string; seconds?: number }) => c.timer === 'keepalive' && c.seconds! <= KEEPALIVE_IDLE_SECONDS;
    let seen = await check();
    for (let i = 0; i < 10 && !seen.every(probes); i++) {
      await sleep(300);
      seen = await check();
    }
    expect(seen.filter((c) => !probes(c)), JSON.stringify(seen)).toEqual([]);
  }, 120_000);
});
