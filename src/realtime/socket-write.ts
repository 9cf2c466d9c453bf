import type { Socket } from 'node:net';
import type { WebSocket } from 'ws';
import type { Encoded } from './serializer.ts';

/**
 * Fan-out writes: one message to many sockets, the WebSocket frame built once.
 *
 * `ws.send` frames the payload for every socket it is called on (a fresh header buffer, then
 * cork + two writes + uncork: a writev of header and payload). A server frame is never masked,
 * so the bytes on the wire are the same for every recipient: wireFrame builds header + payload
 * once per message, and writeShared writes that one buffer straight to each socket's net.Socket
 * (one write call, one syscall, nothing allocated per socket).
 *
 * Order: ws writes a frame synchronously whenever its sender holds nothing back (no
 * permessage-deflate negotiated — this server never offers it — and nothing queued), so a raw
 * write lands in the same byte stream, in call order, between its replies and other frames. When
 * ws does hold frames back (any extension negotiated, a queue), we go through ws.send instead.
 *
 * Backpressure: a socket that does not read (a stalled or too slow client) would keep every
 * message in its write buffer, memory growing without bound. What others cause (fan-out:
 * writeShared; another client's presence: writeBounded) is not sent to a socket holding more than
 * `maxBufferedBytes` unsent: it is terminated instead (realtime-js reconnects and rejoins; H1
 * resumes from its watermark). What the client itself asks for (replies, snapshots, replays) is
 * always sent, however large, but the socket's next request waits until it has drained
 * (InboundQueue with whenWritable), and a long answer (an H1 replay) waits between frames: a
 * client that asks and never reads is dropped after `drainTimeoutMs`, one that reads slowly gets
 * everything. Memory per socket stays bounded either way.
 */

/** ws.send options for the fallback path: one shared object each, nothing allocated per socket. */
const AS_TEXT = { binary: false } as const;
const AS_BINARY = { binary: true } as const;

/** Default bound on a socket's unsent bytes before it is dropped as a slow consumer. */
export const DEFAULT_MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

/** The complete unmasked WebSocket frame (FIN set) of `e`, built once and kept on it. */
export function wireFrame(e: Encoded): Buffer {
  if (e.frame) return e.frame;
  const len = e.data.length;
  const headerLen = len < 126 ? 2 : len < 65536 ? 4 : 10;
  const out = Buffer.allocUnsafe(headerLen + len);
  out[0] = 0x80 | (e.binary ? 0x02 : 0x01); // FIN + opcode
  if (len < 126) out[1] = len;
  else if (len < 65536) {
    out[1] = 126;
    out.writeUInt16BE(len, 2);
  } else {
    out[1] = 127;
    out.writeUInt32BE(Math.floor(len / 2 ** 32), 2);
    out.writeUInt32BE(len >>> 0, 6);
  }
  e.data.copy(out, headerLen);
  e.frame = out;
  return out;
}

type WsInternals = {
  _socket?: Socket | null;
  _sender?: { _state?: number; _queue?: unknown[] } | null;
  _extensions?: Record<string, unknown>;
};

/** Whether ws would write a frame right now, synchronously, with nothing of its own before it. */
function rawWritable(ws: WebSocket): Socket | null {
  const w = ws as unknown as WsInternals;
  const socket = w._socket;
  const sender = w._sender;
  if (!socket || !sender || socket.destroyed || !socket.writable) return null;
  if (sender._state !== 0 || (sender._queue && sender._queue.length > 0)) return null;
  for (const _ in w._extensions) return null; // an extension (permessage-deflate) frames differently
  return socket;
}

/**
 * Sends `e` (encoded once for all recipients) on `ws`: its pre-built frame in one write when ws
 * holds nothing back, else through ws.send. Returns false (and terminates the socket) when it
 * already holds more than `maxBufferedBytes` unsent: a slow consumer.
 */
export function writeShared(ws: WebSocket, e: Encoded, maxBufferedBytes = DEFAULT_MAX_BUFFERED_BYTES): boolean {
  if (!openWithin(ws, maxBufferedBytes)) return false;
  const socket = rawWritable(ws);
  if (socket) socket.write(wireFrame(e));
  else ws.send(e.data, e.binary ? AS_BINARY : AS_TEXT);
  return true;
}

/**
 * Sends one frame another client caused (a presence change) to this socket, with writeShared's
 * bound: a socket already holding more than `maxBufferedBytes` unsent is terminated instead.
 * Returns whether the frame was sent.
 */
export function writeBounded(ws: WebSocket, data: string, maxBufferedBytes: number): boolean {
  if (!openWithin(ws, maxBufferedBytes)) return false;
  ws.send(data);
  return true;
}

/** Whether `ws` is open and holds at most `maxBufferedBytes` unsent; past that it is terminated (a slow consumer). */
function openWithin(ws: WebSocket, maxBufferedBytes: number): boolean {
  if (ws.readyState !== ws.OPEN) return false;
  if (ws.bufferedAmount <= maxBufferedBytes) return true;
  ws.terminate();
  return false;
}

/**
 * Flow control: resolves true once `ws` holds at most `below` bytes unsent (at once when it
 * already does), false when the socket closes or `timeoutMs` passes without the client reading,
 * in which case the socket is terminated as a slow consumer.
 */
export function whenWritable(ws: WebSocket, below: number, timeoutMs: number): Promise<boolean> {
  if (ws.readyState !== ws.OPEN) return Promise.resolve(false);
  if (ws.bufferedAmount <= below) return Promise.resolve(true);
  const socket = (ws as unknown as WsInternals)._socket;
  if (!socket) return Promise.resolve(false);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      clearTimeout(timer);
      socket.off('drain', onDrain);
      ws.off('close', onClose);
      resolve(ok);
    };
    const onDrain = () => { if (ws.bufferedAmount <= below) done(true); };
    const onClose = () => done(false);
    const timer = setTimeout(() => {
      ws.terminate();
      done(false);
    }, timeoutMs);
    socket.on('drain', onDrain);
    ws.on('close', onClose);
  });
}

/** How long a socket closed for a refusal has to answer the close before it is terminated. */
export const CLOSE_GRACE_MS = 2000;

/**
 * Closes `ws` with `code` and `reason`, and terminates it if the client has not completed the
 * closing handshake within `graceMs`: a client that floods and does not read never answers the
 * close frame (it waits behind what it did not read), and `ws` would keep the socket for its own
 * close timeout (30 s), counted as open, before giving up.
 */
export function closeFirmly(ws: WebSocket, code: number, reason: string, graceMs = CLOSE_GRACE_MS): void {
  ws.close(code, reason);
  if (ws.readyState === ws.CLOSED) return;
  const timer = setTimeout(() => ws.terminate(), graceMs);
  timer.unref();
  ws.once('close', () => clearTimeout(timer));
}
