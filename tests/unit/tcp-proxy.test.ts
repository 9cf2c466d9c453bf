import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.ts';

// The fault-injection proxy of the network tests (tests/helpers/tcp-proxy.ts), against a real
// loopback echo server: what each kind of cut does to existing and new connections.

let echo: net.Server;
let proxy: TcpProxy;

beforeAll(async () => {
  echo = net.createServer((s) => s.on('error', () => {}).pipe(s));
  await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
  proxy = await startTcpProxy((echo.address() as net.AddressInfo).port);
});
afterAll(async () => {
  await proxy.close();
  await new Promise<void>((r) => echo.close(() => r()));
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** A client connection that records what it receives and how it ended. */
function connect() {
  const s = net.connect({ host: '127.0.0.1', port: proxy.port });
  const state = { data: '', ended: null as null | 'error' | 'close', connected: false };
  s.on('connect', () => (state.connected = true));
  s.on('data', (d) => (state.data += String(d)));
  s.on('error', () => (state.ended ??= 'error'));
  s.on('close', () => (state.ended ??= 'close'));
  return { s, state };
}

async function until(check: () => boolean, ms = 2000): Promise<boolean> {
  const end = Date.now() + ms;
  while (!check() && Date.now() < end) await sleep(10);
  return check();
}

describe('tcp-proxy', () => {
  it('forwards bytes both ways', async () => {
    const c = connect();
    c.s.write('hello');
    expect(await until(() => c.state.data === 'hello')).toBe(true);
    c.s.destroy();
  });

  it('cut() destroys open connections and refuses new ones until restore()', async () => {
    const before = { ...proxy.counters };
    const c = connect();
    c.s.write('a');
    expect(await until(() => c.state.data === 'a')).toBe(true);
    proxy.cut();
    expect(await until(() => c.state.ended !== null)).toBe(true);
    const refused = connect();
    expect(await until(() => refused.state.ended !== null)).toBe(true);
    expect(refused.state.data).toBe('');
    proxy.restore();
    const after = connect();
    after.s.write('b');
    expect(await until(() => after.state.data === 'b')).toBe(true);
    after.s.destroy();
    expect(proxy.counters.destroyed - before.destroyed).toBe(1);
    expect(proxy.counters.refused - before.refused).toBe(1);
  });

  it('a stall delivers nothing until restore(), then everything, in order', async () => {
    const c = connect();
    c.s.write('1');
    expect(await until(() => c.state.data === '1')).toBe(true);
    proxy.cut({ existing: 'stall' });
    c.s.write('2');
    c.s.write('3');
    await sleep(200);
    expect(c.state.data).toBe('1');
    expect(c.state.ended).toBeNull();
    proxy.restore();
    expect(await until(() => c.state.data === '123')).toBe(true);
    c.s.destroy();
  });

  it('forget() closes the server\'s end; the client hears of it only when it next sends (a reset); new connections go through', async () => {
    const c = connect();
    c.s.write('a');
    expect(await until(() => c.state.data === 'a')).toBe(true);
    const upstreams = () => new Promise<number>((r) => echo.getConnections((_e, n) => r(n)));
    expect(await upstreams()).toBe(1);
    proxy.forget();
    const closed = Date.now() + 2000;
    while ((await upstreams()) !== 0 && Date.now() < closed) await sleep(10);
    expect(await upstreams()).toBe(0);
    await sleep(100);
    expect(c.state.ended).toBeNull();
    c.s.write('b');
    expect(await until(() => c.state.ended !== null)).toBe(true);
    expect(c.state).toMatchObject({ data: 'a', ended: 'error' });
    const after = connect();
    after.s.write('c');
    expect(await until(() => after.state.data === 'c')).toBe(true);
    after.s.destroy();
  });

  it('a blackhole holds new connections silent, then connects them at restore()', async () => {
    proxy.cut({ incoming: 'blackhole' });
    const c = connect();
    expect(await until(() => c.state.connected)).toBe(true);
    c.s.write('x');
    await sleep(200);
    expect(c.state.data).toBe('');
    expect(proxy.openConnections()).toBe(1);
    proxy.restore();
    expect(await until(() => c.state.data === 'x')).toBe(true);
    c.s.destroy();
    expect(await until(() => proxy.openConnections() === 0)).toBe(true);
  });
});
