import type { Duplex } from 'node:stream';

/**
 * Coalesces what a fan-out writes to one socket within a turn of the event loop into one write.
 *
 * A database message reaches every subscriber of a topic with one ws.send each, and each send is
 * a `writev` system call — most of a gateway's CPU at 1,000 subscribers (profiled). When messages
 * come faster than they are sent (a burst of commits, a busy machine), the replication stream
 * hands over several in one turn; corking each recipient socket until the turn ends sends them all
 * in one call, so the busier the gateway, the fewer calls per message. One message per turn costs
 * what it did (one write per socket). Everything written to a corked socket waits alike, so the
 * order of frames on a socket never changes.
 */
const corked = new Set<Duplex>();

export function batchWrites(socket: Duplex): void {
  if (corked.has(socket)) return;
  if (corked.size === 0) setImmediate(flush);
  corked.add(socket);
  socket.cork();
}

function flush(): void {
  for (const socket of corked) socket.uncork();
  corked.clear();
}
