// Channel authorization (src/realtime/authorize.ts) when the connection under its probe is lost: a
// real server (API and gateway in one process) whose pool goes through a proxy that resets the
// connection carrying the probe's first statement (found by the topic it sends), as a backend
// terminated under it or a pooler's or NAT's dropped connection does. The probe is always rolled
// back, so it is run again on another connection (runAgainOnLostConnection, as API requests are);
// it was not: a private channel's join was refused `unavailable` and a REST broadcast answered 503,
// though the database answered everything else.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Server } from '../../src/server.ts';
import { startCommitLossProxy, type CommitLossProxy } from '../helpers/commit-loss-proxy.ts';
import { testDatabase } from '../helpers/db.ts';
import { createCanvasWithEditors } from '../helpers/fixtures.ts';
import { startTestServer, tokenFor } from '../helpers/http.ts';
import { realtimeClients, subscribed } from '../helpers/realtime.ts';
import { databaseUrlThrough } from '../helpers/tcp-proxy.ts';
import { apiKey } from '../helpers/tokens.ts';
import { until } from '../helpers/wait.ts';

const db = testDatabase(2);
const realtime = realtimeClients();
let proxy: CommitLossProxy;
let server: Server;
let anon = '';

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startCommitLossProxy(Number(direct.port || 5432));
  const proxied = databaseUrlThrough(proxy, direct);
  // the pool through the proxy; the replication stream direct
  server = await startTestServer({ databaseUrl: proxied, directDatabaseUrl: direct.toString() }, { realtime: {} });
  anon = await apiKey(server.deps.config.auth.jwtSecret, 'anon');
}, 60_000);

afterAll(async () => {
  await realtime.disconnectAll();
  await server?.stop();
  await proxy?.close();
  await db.close();
});

it('joins a private channel whose authorization probe lost its connection', async () => {
  for (let i = 0; i < 3; i++) {
    const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
    const topic = `canvas:${canvasId}`;
    const client = realtime.connect(server.url, anon, '2.0.0');
    client.setAuth(await tokenFor(server, users[1]!));
    const reset = proxy.reset;
    proxy.resetOnMarker(topic);
    expect(await subscribed(client.channel(topic, { config: { private: true } }))).toEqual({ status: 'SUBSCRIBED', err: undefined });
    expect(proxy.reset).toBe(reset + 1);
  }
});

it('accepts a REST broadcast to a private channel whose authorization probe lost its connection, and delivers it', async () => {
  const got: string[] = [];
  const sent: string[] = [];
  for (let i = 0; i < 3; i++) {
    const { canvasId, users } = await createCanvasWithEditors(db.sql, 1);
    const topic = `canvas:${canvasId}`;
    const client = realtime.connect(server.url, anon, '2.0.0');
    client.setAuth(await tokenFor(server, users[0]!));
    const ch = client.channel(topic, { config: { private: true } }).on('broadcast', { event: 'n' }, (m) => { got.push((m.payload as { id: string }).id); });
    expect((await subscribed(ch)).status).toBe('SUBSCRIBED');
    const id = randomUUID();
    const reset = proxy.reset;
    proxy.resetOnMarker(topic);
    const res = await fetch(`${server.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: anon, authorization: `Bearer ${await tokenFor(server, users[1]!)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic, event: 'n', payload: { id }, private: true }] }),
    });
    expect({ status: res.status, body: await res.text() }).toEqual({ status: 202, body: '' });
    expect(proxy.reset).toBe(reset + 1);
    sent.push(id);
  }
  await until(() => got.length >= sent.length, 10_000, 'the broadcasts on their subscribers');
  expect(got).toEqual(sent);
});
