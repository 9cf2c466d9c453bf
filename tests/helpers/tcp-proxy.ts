import net from 'node:net';

/**
 * A loopback TCP proxy in front of one port, for network-fault tests: `cut()` simulates a
 * network loss between the clients and the upstream server, `restore()` heals it.
 *
 * A cut treats connections in one of two ways each:
 *  - existing ones: `destroy` (default: both ends see a reset, as when a NAT or a Wi-Fi hop
 *    drops them) or `stall` (bytes stop flowing both ways, nothing is lost: after `restore()`
 *    what was sent meanwhile arrives, as after a partition that heals before TCP gives up);
 *  - new ones: `refuse` (default: accepted and reset at once, the client sees a failed connect),
 *    `close` (accepted and closed at once without a word, as a TCP proxy or load balancer in front
 *    of a server that is down does: the client's connect succeeds and its session then ends) or
 *    `blackhole` (accepted and held silent; after `restore()` those still open are connected
 *    upstream and go on normally, as a SYN retransmitted after the partition would).
 * A side that closes during a stall is seen closed by the other side only at `restore()` (bytes
 * it sent just before are then dropped). Otherwise the proxy never changes or drops bytes.
 */
export type CutOptions = { existing?: 'destroy' | 'stall'; incoming?: 'refuse' | 'close' | 'blackhole' };

export type ProxyCounters = {
  /** Open connections forgotten by `forget()`. */
  forgotten: number;
  /** Connections accepted from clients (including refused and blackholed ones). */
  accepted: number;
  /** Connections forwarded to the upstream port. */
  forwarded: number;
  /** Connections refused (reset on accept) during a cut. */
  refused: number;
  /** Connections closed on accept during a `close` cut. */
  closed: number;
  /** Connections accepted and held during a `blackhole` cut. */
  blackholed: number;
  /** Open connections destroyed by `cut()`. */
  destroyed: number;
  /** Open connections stalled by `cut()`. */
  stalled: number;
  /** Number of `cut()` calls. */
  cuts: number;
};

export type TcpProxy = {
  /** The proxy's port on 127.0.0.1. */
  readonly port: number;
  /** `http://127.0.0.1:{port}`, handy for HTTP and WebSocket clients. */
  readonly url: string;
  readonly counters: Readonly<ProxyCounters>;
  /** Whether a cut is in force. */
  readonly isCut: boolean;
  /** Client connections currently open through the proxy (forwarded, stalled, or forgotten and not yet reset). */
  openConnections(): number;
  cut(opts?: CutOptions): void;
  restore(): void;
  /**
   * A middlebox between the clients and the server (a NAT, a load balancer) forgets the open
   * connections at once: the server's end of each is closed; its client hears nothing until it next
   * sends, and then gets a reset, as through a NAT whose mapping timed out (or a backend killed while
   * its client had not yet read the close). New connections go through as usual.
   */
  forget(): void;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
};

/**
 * `url` (a database URL) with its host and port replaced by a loopback proxy's: user, password,
 * database and query parameters are kept, so a client connects through the proxy as it would
 * direct. Takes any proxy listening on 127.0.0.1 (`startTcpProxy`, `startCommitLossProxy`, ...).
 */
export function databaseUrlThrough(proxy: { readonly port: number }, url: string | URL): string {
  const through = new URL(url);
  through.hostname = '127.0.0.1';
  through.port = String(proxy.port);
  return through.toString();
}

type Pair = { client: net.Socket; upstream: net.Socket; stalled: boolean; endedWhileStalled: boolean };

/** Starts a proxy on 127.0.0.1 (an ephemeral port) forwarding to `127.0.0.1:upstreamPort`. */
export async function startTcpProxy(upstreamPort: number, opts: { upstreamHost?: string } = {}): Promise<TcpProxy> {
  const upstreamHost = opts.upstreamHost ?? '127.0.0.1';
  const counters: ProxyCounters = { forgotten: 0, accepted: 0, forwarded: 0, refused: 0, closed: 0, blackholed: 0, destroyed: 0, stalled: 0, cuts: 0 };
  const pairs = new Set<Pair>();
  const held = new Set<net.Socket>();
  const forgotten = new Set<net.Socket>();
  let cut: Required<CutOptions> | null = null;
  let closing = false;

  const forward = (client: net.Socket): void => {
    counters.forwarded++;
    const upstream = net.connect({ host: upstreamHost, port: upstreamPort });
    const pair: Pair = { client, upstream, stalled: false, endedWhileStalled: false };
    pairs.add(pair);
    // either side closing ends both, as TCP would; errors are expected here, not faults. During a
    // stall the other side learns of it only at restore(), as behind a real partition.
    const end = () => {
      if (pair.stalled) {
        pair.endedWhileStalled = true;
        return;
      }
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  };

  const stall = (pair: Pair): void => {
    pair.stalled = true;
    pair.client.unpipe(pair.upstream);
    pair.upstream.unpipe(pair.client);
    pair.client.pause();
    pair.upstream.pause();
  };

  const resume = (pair: Pair): void => {
    pair.stalled = false;
    if (pair.endedWhileStalled) {
      pairs.delete(pair);
      pair.client.destroy();
      pair.upstream.destroy();
      return;
    }
    pair.client.pipe(pair.upstream);
    pair.upstream.pipe(pair.client);
  };

  const server = net.createServer((client) => {
    counters.accepted++;
    client.setNoDelay(true);
    if (closing) return void client.destroy();
    if (!cut) return forward(client);
    if (cut.incoming === 'refuse') {
      counters.refused++;
      client.on('error', () => {});
      client.resetAndDestroy();
      return;
    }
    if (cut.incoming === 'close') {
      counters.closed++;
      client.on('error', () => {});
      // a FIN, not a reset; what the client sends meanwhile is read and dropped, or its own FIN
      // would never be read and the socket would stay half open
      client.resume();
      client.end();
      return;
    }
    counters.blackholed++;
    client.pause();
    held.add(client);
    client.on('error', () => client.destroy());
    client.on('close', () => held.delete(client));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    counters,
    get isCut() {
      return cut !== null;
    },
    openConnections: () => pairs.size + held.size + forgotten.size,
    cut(o: CutOptions = {}) {
      counters.cuts++;
      cut = { existing: o.existing ?? 'destroy', incoming: o.incoming ?? 'refuse' };
      for (const pair of [...pairs]) {
        if (cut.existing === 'destroy') {
          counters.destroyed++;
          pairs.delete(pair);
          pair.client.resetAndDestroy();
          pair.upstream.resetAndDestroy();
        } else if (!pair.stalled) {
          counters.stalled++;
          stall(pair);
        }
      }
    },
    forget() {
      for (const pair of [...pairs]) {
        if (pair.stalled) continue;
        counters.forgotten++;
        pairs.delete(pair);
        pair.client.unpipe(pair.upstream);
        pair.upstream.unpipe(pair.client);
        // the client must not hear of the server's end closing: only its next bytes get a reset
        pair.upstream.removeAllListeners('close').removeAllListeners('error').on('error', () => {});
        pair.upstream.destroy();
        const client = pair.client;
        forgotten.add(client);
        client.removeAllListeners('close').removeAllListeners('error').on('error', () => {});
        client.on('close', () => forgotten.delete(client));
        client.on('data', () => client.resetAndDestroy());
        client.resume(); // unpiped, it was paused: its next bytes must be read to be answered
      }
    },
    restore() {
      cut = null;
      for (const pair of [...pairs]) if (pair.stalled) resume(pair);
      for (const client of [...held]) {
        held.delete(client);
        if (client.destroyed) continue;
        client.removeAllListeners('error').removeAllListeners('close');
        forward(client);
        client.resume();
      }
    },
    async close() {
      closing = true;
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      for (const client of held) client.destroy();
      held.clear();
      for (const client of forgotten) client.destroy();
      forgotten.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
