import net from 'node:net';

/** What one connection to a silent listener sent, and whether it has closed. */
export type SilentConnection = { text: string; closed: boolean };

/**
 * A TCP listener on 127.0.0.1 that accepts every connection and never answers: a server that hangs
 * after accepting (a request, or a WebSocket upgrade, waits for good). It records what each
 * connection sent and when it closed, so a test can see a request arrive and its connection let go.
 */
export type SilentListener = {
  readonly port: number;
  /** In the order they were accepted. */
  readonly connections: SilentConnection[];
  /** Destroys the connections still open, then stops listening. */
  close(): Promise<void>;
};

export async function startSilentListener(): Promise<SilentListener> {
  const open = new Set<net.Socket>();
  const connections: SilentConnection[] = [];
  const server = net.createServer((socket) => {
    open.add(socket);
    const connection = { text: '', closed: false };
    connections.push(connection);
    socket.on('data', (d) => void (connection.text += d.toString('utf8')));
    socket.on('error', () => {});
    socket.on('close', () => {
      connection.closed = true;
      open.delete(socket);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
