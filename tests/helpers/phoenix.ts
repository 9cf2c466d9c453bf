import WebSocket from 'ws';
import { until } from './wait.ts';

/**
 * A raw Phoenix socket on a Potentia server's `/realtime/v1/websocket`: frames written by hand, as
 * an attacker (or a client other than realtime-js) sends them.
 */
export type Phoenix = {
  ws: WebSocket;
  /** Every frame received, in order, as objects (vsn 2.0.0's arrays read back as `{ join_ref, ref, topic, event, payload }`). */
  frames: any[];
  /** Sends `frame` as JSON, as it is. */
  send(frame: unknown): void;
  /** Sends `text` as it is. */
  sendText(text: string): void;
  /** The payload of the `phx_reply` to `ref`, once it has come (within 5 s). */
  reply(ref: string): Promise<any>;
  /**
   * Sends `event` on `topic` (vsn 1.0.0 frame) with a ref of its own, under the topic's join ref (a
   * `phx_join`'s own); resolves 'ok', or the refusal's `reason`.
   */
  ask(topic: string, event: string, payload: unknown): Promise<string>;
};

/**
 * Opens a raw Phoenix socket to `baseUrl` (the server's `http://` URL) with `apikey`; resolves once
 * it is open. `sockets` collects it, for the caller to terminate in afterAll.
 */
export async function openPhoenix(baseUrl: string, apikey: string, opts: { vsn?: '1.0.0' | '2.0.0'; sockets?: WebSocket[] } = {}): Promise<Phoenix> {
  const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/realtime/v1/websocket?apikey=${apikey}&vsn=${opts.vsn ?? '1.0.0'}`);
  opts.sockets?.push(ws);
  const frames: any[] = [];
  // both serializers read back as objects
  ws.on('message', (d) => {
    const f = JSON.parse(String(d));
    frames.push(Array.isArray(f) ? { join_ref: f[0], ref: f[1], topic: f[2], event: f[3], payload: f[4] } : f);
  });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  const reply = async (ref: string) => {
    await until(() => frames.some((f) => f.event === 'phx_reply' && f.ref === ref), 5000, `the reply to ref ${ref}`);
    return frames.find((f) => f.event === 'phx_reply' && f.ref === ref).payload;
  };
  let ref = 0;
  const joinRefs = new Map<string, string>();
  return {
    ws,
    frames,
    send: (frame) => ws.send(JSON.stringify(frame)),
    sendText: (text) => ws.send(text),
    reply,
    async ask(topic, event, payload) {
      const r = String(++ref);
      if (event === 'phx_join') joinRefs.set(topic, r);
      ws.send(JSON.stringify({ topic, event, ref: r, join_ref: joinRefs.get(topic) ?? r, payload }));
      const { status, response } = await reply(r);
      return status === 'ok' ? 'ok' : response.reason;
    },
  };
}
