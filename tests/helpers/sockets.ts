import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

/**
 * The machine's established TCP sockets as the kernel lists them (/proc/net/tcp and tcp6), and the
 * ones a process holds (by the socket inodes of its file descriptors). Linux only, like the
 * machines tests run on.
 */
export type TcpSocket = {
  localPort: number;
  remotePort: number;
  inode: string;
  /**
   * The timer pending on the socket (the `tr` column): `keepalive` when SO_KEEPALIVE is on and
   * nothing waits to be acknowledged (an established socket's sk_timer is its keepalive timer),
   * `retransmit` while data waits, `none` without keepalive.
   */
  timer: 'none' | 'retransmit' | 'keepalive' | 'zero_window_probe';
  /** Seconds until that timer fires (`tm->when`, in clock ticks of 1/100 s). */
  timerSeconds: number;
};

const TIMERS = { 0: 'none', 1: 'retransmit', 2: 'keepalive', 4: 'zero_window_probe' } as Record<number, TcpSocket['timer']>;
const ESTABLISHED = '01';

/** The machine's established TCP sockets (/proc/net/tcp and tcp6). */
export function establishedTcpSockets(): TcpSocket[] {
  const sockets: TcpSocket[] = [];
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let text = '';
    try { text = readFileSync(table, 'utf8'); } catch { continue; }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10 || f[3] !== ESTABLISHED) continue;
      const [tr, when] = f[5]!.split(':');
      sockets.push({
        localPort: parseInt(f[1]!.split(':')[1]!, 16), remotePort: parseInt(f[2]!.split(':')[1]!, 16), inode: f[9]!,
        timer: TIMERS[parseInt(tr!, 16)] ?? 'none', timerSeconds: parseInt(when!, 16) / 100,
      });
    }
  }
  return sockets;
}

/** The established TCP sockets `pid` holds. */
export function processTcpSockets(pid: number): TcpSocket[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]!);
    } catch { /* fd closed meanwhile */ }
  }
  return establishedTcpSockets().filter((s) => inodes.has(s.inode));
}
