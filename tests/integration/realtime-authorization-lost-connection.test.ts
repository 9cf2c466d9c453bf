// Channel authorization (src/realtime/authorize.ts) when the pooled connection its probe draws is
// already dead: a real server (API and gateway in one process) whose pool goes through a TCP proxy
// that forgets its connections (the server's end closed, the client hearing of it only at its next
// write: a reset, as after a backend terminated while its client had not read the close yet, or a
// NAT's idle timeout). The probe is always rolled back, so it is run again on another connection
// (runAgainOnLostConnection, as API requests are); it was not: a private channel's join was refused
// `unavailable` and a REST broadcast answered 503, though the database answered everything else.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Server } from '../../src/server.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(2);
const realtime = realtimeClients();
let proxy: TcpProxy;
let server: Server;
let anon = '';

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432), { upstreamHost: direct.hostname });
  const proxied = new URL(direct);
  proxied.hostname = '127.0.0.1';
  proxied.port = String(proxy.port);
  // a small pool, every connection of which is forgotten: the one the probe draws is dead (the
  // replication stream goes direct)
  server = await startTestServer({ databaseUrl: proxied.toString(), directDatabaseUrl: direct.toString(), dbPoolMax: 3 }, { realtime: {} });
  anon = await apiKey(server.deps.config.auth.jwtSecret, 'anon');
}, 60_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
  await proxy?.close();
  await db.close();
});

/** Forgets every pooled connection (the next statement on each is reset); checks that there were some. */
function forget(): void {
  const forgotten = proxy.counters.forgotten;
  proxy.forget();
  expect(proxy.counters.forgotten).toBeGreaterThan(forgotten);
}

it('joins a private channel whose authorization probe drew a dead connection', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
  for (let i = 0; i < 3; i++) {
    const client = realtime.connect(server.url, anon, '2.0.0');
    client.setAuth(await tokenFor(server, users[1]!));
    const ch = client.channel(`canvas:${canvasId}`, { config: { private: true } });
    forget();
    expect(await subscribed(ch)).toEqual({ status: 'SUBSCRIBED', err: undefined });
  }
});

it('accepts a REST broadcast to a private channel whose authorization probe drew a dead connection, and delivers it', async () => {
  const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
  const topic = `canvas:${canvasId}`;
  const client = realtime.connect(server.url, anon, '2.0.0');
  client.setAuth(await tokenFor(server, users[0]!));
  const got: string[] = [];
  const ch = client.channel(topic, { config: { private: true } }).on('broadcast', { event: 'n' }, (m) => { got.push((m.payload as { id: string }).id); });
  expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
  const sent: string[] = [];
  for (let i = 0; i < 3; i++) {
    const id = randomUUID();
    forget();
    const res = await fetch(`${server.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: anon, authorization: `Bearer ${await tokenFor(server, users[1]!)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic, event: 'n', payload: { id }, private: true }] }),
    });
    expect({ status: res.status, body: await res.text() }).toEqual({ status: 202, body: '' });
    sent.push(id);
  }
  await until(() => got.length >= sent.length, 10_000, 'the broadcasts on the subscriber');
  expect(got).toEqual(sent);
});
