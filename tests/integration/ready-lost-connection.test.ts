// /ready when the pooled connection it draws is already dead: a real server whose database
// connections go through a TCP proxy that forgets them (the server's end closed, the client hearing
// of it only at its next write: a reset, as after a NAT's idle timeout or a backend terminated
// while its client had not read the close yet). Every API request is run again on another
// connection when that happens (withRequest); /ready was not, and said 503 "the database query
// failed" while the database answered every other request. Now its queries are run again the same
// way, and a database that is really gone still makes it 503.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testDatabaseUrl } from '../../src/config.ts';
import type { Server } from '../../src/server.ts';
import { startTestServer } from '../helpers/http.ts';
import { databaseUrlThrough, startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

let proxy: TcpProxy;
let server: Server;

beforeAll(async () => {
  const direct = new URL(testDatabaseUrl());
  proxy = await startTcpProxy(Number(direct.port || 5432), { upstreamHost: direct.hostname });
  const proxied = databaseUrlThrough(proxy, direct);
  // one pooled connection: the one /ready draws is the one forgotten
  server = await startTestServer({ databaseUrl: proxied, dbPoolMax: 1 });
}, 60_000);
afterAll(async () => {
  await server?.stop();
  await proxy?.close();
});

const ready = async () => {
  const res = await fetch(`${server.url}/ready`);
  return { status: res.status, body: await res.json() as Record<string, unknown> };
};

describe('/ready and a dead pooled connection', () => {
  it('is 200 when the connection it drew was lost (run again on a new one), 503 when the database is really gone', async () => {
    expect(await ready()).toEqual({ status: 200, body: { status: 'ready', checks: { database: 'ok' } } });
    for (let i = 0; i < 3; i++) {
      const forgotten = proxy.counters.forgotten;
      proxy.forget();
      expect(proxy.counters.forgotten).toBe(forgotten + 1);
      expect(await ready()).toEqual({ status: 200, body: { status: 'ready', checks: { database: 'ok' } } });
    }
    // and a database that does not answer is still not ready
    proxy.cut();
    expect(await ready()).toMatchObject({ status: 503, body: { status: 'unavailable', checks: { database: expect.stringMatching(/^(error|timeout)$/) } } });
    proxy.restore();
    expect((await ready()).status).toBe(200);
  });
});
